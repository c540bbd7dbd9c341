package server_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/apierr"
)

func TestGroupLifecycle(t *testing.T) {
	h := newHarnessWith(t, harnessOptions{limits: server.Limits{MaxGroupMembers: 4}})
	alice := h.as("alice")

	// 1. A user creates a group it owns.
	created, err := h.svc.CreateGroup(alice, &imlitev1.CreateGroupRequest{Name: "Book club 📚", MemberIds: []string{"bob", "bob"}})
	if err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	g := created.GetGroup()
	if g.GetOwnerId() != "alice" || g.GetMemberCount() != 2 || g.GetConversationId() != "g:"+g.GetGroupId() {
		t.Fatalf("group = %v, want owner alice, 2 members, conversation g:<id>", g)
	}
	gid := g.GetGroupId()
	for i := 1; i <= 3; i++ {
		h.send(alice, &imlitev1.SendMsgRequest{ClientMsgId: fmt.Sprint(i), GroupId: gid, Content: "before"})
	}

	// 2. A member added later sees only what follows the add.
	added, err := h.svc.AddGroupMembers(alice, &imlitev1.AddGroupMembersRequest{GroupId: gid, MemberIds: []string{"carol", "bob"}})
	if err != nil {
		t.Fatalf("AddGroupMembers: %v", err)
	}
	if !slices.Equal(added.GetAddedIds(), []string{"carol"}) || added.GetMemberCount() != 3 {
		t.Errorf("added = %v, want [carol] and 3 members", added)
	}
	h.send(alice, &imlitev1.SendMsgRequest{ClientMsgId: "4", GroupId: gid, Content: "after"})
	carol := h.as("carol")
	pulled, err := h.svc.PullMsg(carol, &imlitev1.PullMsgRequest{ConversationId: "g:" + gid})
	if err != nil {
		t.Fatalf("PullMsg as carol: %v", err)
	}
	if got := seqsOf(pulled.GetMessages()); !slices.Equal(got, []int64{4}) || pulled.GetMinSeq() != 4 {
		t.Errorf("carol pulls %v, min_seq %d; want [4], 4", got, pulled.GetMinSeq())
	}
	if c := listConversations(t, h, carol, false)["g:"+gid]; c.GetUnreadCount() != 1 {
		t.Errorf("carol's unread = %d, want 1", c.GetUnreadCount())
	}

	// 3. Size limit, permissions and owner protection.
	_, err = h.svc.AddGroupMembers(alice, &imlitev1.AddGroupMembersRequest{GroupId: gid, MemberIds: []string{"d1", "d2"}})
	wantCode(t, err, codes.FailedPrecondition, "limit 4")
	_, err = h.svc.AddGroupMembers(h.as("bob"), &imlitev1.AddGroupMembersRequest{GroupId: gid, MemberIds: []string{"eve"}})
	wantCode(t, err, codes.PermissionDenied, "owner")
	_, err = h.svc.RemoveGroupMembers(alice, &imlitev1.RemoveGroupMembersRequest{GroupId: gid, MemberIds: []string{"alice"}})
	wantCode(t, err, codes.FailedPrecondition, "owner")

	// 4. A removed member loses access and the conversation leaves its list.
	removed, err := h.svc.RemoveGroupMembers(alice, &imlitev1.RemoveGroupMembersRequest{GroupId: gid, MemberIds: []string{"carol", "zed"}})
	if err != nil {
		t.Fatalf("RemoveGroupMembers: %v", err)
	}
	if !slices.Equal(removed.GetRemovedIds(), []string{"carol"}) || removed.GetMemberCount() != 2 {
		t.Errorf("removed = %v, want [carol] and 2 members", removed)
	}
	_, err = h.svc.PullMsg(carol, &imlitev1.PullMsgRequest{ConversationId: "g:" + gid})
	wantCode(t, err, codes.PermissionDenied, "carol")
	if _, ok := listConversations(t, h, carol, false)["g:"+gid]; ok {
		t.Error("removed member still lists the group")
	}
	_, err = h.svc.SendMsg(carol, &imlitev1.SendMsgRequest{ClientMsgId: "x", GroupId: gid, Content: "let me in"})
	wantCode(t, err, codes.PermissionDenied, "carol")
}

func TestCreateGroupRules(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name  string
		req   *imlitev1.CreateGroupRequest
		code  codes.Code
		parts []string
	}{
		{"user creates for someone else", &imlitev1.CreateGroupRequest{GroupId: "g1", OwnerId: "bob"}, codes.PermissionDenied, []string{"owner_id"}},
		{"bad group id", &imlitev1.CreateGroupRequest{GroupId: "has space"}, codes.InvalidArgument, []string{"group_id"}},
		{"bad member id", &imlitev1.CreateGroupRequest{GroupId: "g2", MemberIds: []string{"ok", "no/slash"}}, codes.InvalidArgument, []string{"member_ids[1]"}},
		{"invalid UTF-8 name", &imlitev1.CreateGroupRequest{GroupId: "g3", Name: "\xff"}, codes.InvalidArgument, []string{"name", "UTF-8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.svc.CreateGroup(h.as("alice"), tt.req)
			wantCode(t, err, tt.code, tt.parts...)
		})
	}

	t.Run("taken id", func(t *testing.T) {
		h.createGroup("taken", "admin")
		_, err := h.svc.CreateGroup(h.as("alice"), &imlitev1.CreateGroupRequest{GroupId: "taken"})
		wantCode(t, err, codes.AlreadyExists, "taken")
	})
	t.Run("retry by owner returns the group", func(t *testing.T) {
		req := &imlitev1.CreateGroupRequest{GroupId: "again", MemberIds: []string{"bob"}}
		first, err := h.svc.CreateGroup(h.as("alice"), req)
		if err != nil {
			t.Fatalf("first create: %v", err)
		}
		second, err := h.svc.CreateGroup(h.as("alice"), req)
		if err != nil {
			t.Fatalf("retried create: %v", err)
		}
		if second.GetGroup().GetMemberCount() != first.GetGroup().GetMemberCount() {
			t.Errorf("retry member count %d, want %d", second.GetGroup().GetMemberCount(), first.GetGroup().GetMemberCount())
		}
	})
}

func TestListGroupMembersPages(t *testing.T) {
	h := newHarness(t)
	var ids []string
	for i := range 7 {
		ids = append(ids, fmt.Sprintf("m%d", i))
	}
	h.createGroup("paged", "m0", ids...)
	var got []string
	token := ""
	for range 10 {
		resp, err := h.svc.ListGroupMembers(h.as("m3"), &imlitev1.ListGroupMembersRequest{GroupId: "paged", PageSize: 3, PageToken: token})
		if err != nil {
			t.Fatalf("ListGroupMembers: %v", err)
		}
		for _, m := range resp.GetMembers() {
			got = append(got, m.GetUserId())
		}
		token = resp.GetNextPageToken()
		if token == "" {
			break
		}
	}
	if !slices.Equal(got, ids) {
		t.Errorf("members = %v, want %v", got, ids)
	}
	_, err := h.svc.ListGroupMembers(h.as("outsider"), &imlitev1.ListGroupMembersRequest{GroupId: "paged"})
	wantCode(t, err, codes.PermissionDenied, "outsider")
	_, err = h.svc.ListGroupMembers(h.as("m1"), &imlitev1.ListGroupMembersRequest{GroupId: "paged", PageSize: 1001})
	wantCode(t, err, codes.InvalidArgument, "page_size")

	// A token must be one that this group's listing returned.
	h.createGroup("other", "m0", "m1")
	first, err := h.svc.ListGroupMembers(h.as("m1"), &imlitev1.ListGroupMembersRequest{GroupId: "paged", PageSize: 1})
	if err != nil {
		t.Fatalf("ListGroupMembers: %v", err)
	}
	for _, tc := range []struct{ name, group, token string }{
		{"garbage", "paged", "garbage"},
		{"bare user id", "paged", "m2"},
		{"token of another group", "other", first.GetNextPageToken()},
	} {
		_, err := h.svc.ListGroupMembers(h.as("m1"), &imlitev1.ListGroupMembersRequest{GroupId: tc.group, PageToken: tc.token})
		if code := apierr.Code(err); code != codes.InvalidArgument || !strings.Contains(err.Error(), "page_token") {
			t.Errorf("%s: code %v, err %v; want InvalidArgument naming page_token", tc.name, code, err)
		}
	}
}

func TestGroupFanOutFollowsMembership(t *testing.T) {
	h := newHarness(t)
	h.createGroup("live", "alice", "bob")
	alice := h.as("alice")
	h.send(alice, &imlitev1.SendMsgRequest{ClientMsgId: "1", GroupId: "live", Content: "x"})
	if _, err := h.svc.AddGroupMembers(alice, &imlitev1.AddGroupMembersRequest{GroupId: "live", MemberIds: []string{"carol"}}); err != nil {
		t.Fatalf("AddGroupMembers: %v", err)
	}
	resp := h.send(alice, &imlitev1.SendMsgRequest{ClientMsgId: "2", GroupId: "live", Content: "y"})
	h.deliv.waitFor(t, "delivery of seq 2 to carol", func(r *recorder) bool {
		for _, d := range r.deliveries {
			if d.msg.GetSeq() == resp.GetSeq() && d.msg.GetGroupId() == "live" {
				return slices.Contains(d.users, "carol")
			}
		}
		return false
	})
}

func TestOnlineStatusAndTokens(t *testing.T) {
	h := newHarness(t)
	_, err := h.svc.GetOnlineStatus(h.as("alice"), &imlitev1.GetOnlineStatusRequest{})
	wantCode(t, err, codes.InvalidArgument, "user_ids")

	_, err = h.svc.IssueToken(h.as("alice"), &imlitev1.IssueTokenRequest{UserId: "bob", Platform: "web"})
	wantCode(t, err, codes.PermissionDenied, "admin")
	_, err = h.svc.IssueToken(h.asAdmin("ops"), &imlitev1.IssueTokenRequest{UserId: "bob", Platform: "Web"})
	wantCode(t, err, codes.InvalidArgument, "platform")
	_, err = h.svc.IssueToken(h.asAdmin("ops"), &imlitev1.IssueTokenRequest{UserId: "bob", Platform: "web", TtlSeconds: -5})
	wantCode(t, err, codes.InvalidArgument, "ttl_seconds")

	tok, err := h.svc.IssueToken(h.asAdmin("ops"), &imlitev1.IssueTokenRequest{UserId: "bob", Platform: "ios", TtlSeconds: 60})
	if err != nil {
		t.Fatalf("IssueToken: %v", err)
	}
	p, err := h.svc.Authenticate(h.as("x"), tok.GetToken())
	if err != nil {
		t.Fatalf("Authenticate issued token: %v", err)
	}
	if p.UserID != "bob" || p.Platform != "ios" || p.IsAdmin() {
		t.Errorf("principal = %+v, want bob on ios as user", p)
	}
}

func TestMemberLeavesGroup(t *testing.T) {
	h := newHarness(t)
	h.createGroup("club", "alice", "bob", "carol")
	bob := h.as("bob")

	cases := []struct {
		name    string
		ctx     context.Context
		members []string
		code    codes.Code
		want    string
	}{
		{"member removes another member", bob, []string{"carol"}, codes.PermissionDenied, "only the owner"},
		{"member removes itself and another", bob, []string{"bob", "carol"}, codes.PermissionDenied, "only the owner"},
		{"owner leaves", h.as("alice"), []string{"alice"}, codes.FailedPrecondition, "cannot be removed"},
		{"non-member leaves", h.as("dave"), []string{"dave"}, codes.PermissionDenied, "not a member"},
	}
	for _, tc := range cases {
		_, err := h.svc.RemoveGroupMembers(tc.ctx, &imlitev1.RemoveGroupMembersRequest{GroupId: "club", MemberIds: tc.members})
		if code := apierr.Code(err); code != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: code %v, err %v; want %v mentioning %q", tc.name, code, err, tc.code, tc.want)
		}
	}

	resp, err := h.svc.RemoveGroupMembers(bob, &imlitev1.RemoveGroupMembersRequest{GroupId: "club", MemberIds: []string{"bob"}})
	if err != nil {
		t.Fatalf("bob leaves: %v", err)
	}
	if !slices.Equal(resp.GetRemovedIds(), []string{"bob"}) || resp.GetMemberCount() != 2 {
		t.Errorf("leave = %v, want [bob] removed and 2 members", resp)
	}
	_, err = h.svc.SendMsg(bob, &imlitev1.SendMsgRequest{ClientMsgId: "after-leave", GroupId: "club", Content: "x"})
	wantCode(t, err, codes.PermissionDenied, "not a member")
}
