package server_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
)

func listConversations(t *testing.T, h *harness, ctx context.Context, includeHidden bool) map[string]*imlitev1.Conversation {
	t.Helper()
	resp, err := h.svc.ListConversations(ctx, &imlitev1.ListConversationsRequest{IncludeHidden: includeHidden})
	if err != nil {
		t.Fatalf("ListConversations: %v", err)
	}
	out := make(map[string]*imlitev1.Conversation)
	for _, c := range resp.GetConversations() {
		out[c.GetConversationId()] = c
	}
	return out
}

func TestUnreadReadAndClear(t *testing.T) {
	h := newHarness(t)
	alice, bob := h.as("alice"), h.as("bob")
	for i := 1; i <= 5; i++ {
		h.send(alice, &imlitev1.SendMsgRequest{ClientMsgId: fmt.Sprintf("u%d", i), RecvId: "bob", Content: fmt.Sprintf("m%d", i)})
	}

	// 1. The receiver sees five unread; the sender's own messages are read.
	c := listConversations(t, h, bob, false)["s:alice:bob"]
	if c == nil {
		t.Fatal("bob's list lacks s:alice:bob")
	}
	if c.GetUnreadCount() != 5 || c.GetMaxSeq() != 5 || c.GetPeerId() != "alice" || c.GetLatestMsg().GetContent() != "m5" {
		t.Errorf("bob's view = %v, want unread 5, max 5, peer alice, latest m5", c)
	}
	if got := listConversations(t, h, alice, false)["s:alice:bob"].GetUnreadCount(); got != 0 {
		t.Errorf("alice's unread = %d, want 0 for her own messages", got)
	}

	// 2. Mark read moves forward only.
	r, err := h.svc.MarkRead(bob, &imlitev1.MarkReadRequest{ConversationId: "s:alice:bob", ReadSeq: 3})
	if err != nil {
		t.Fatalf("MarkRead 3: %v", err)
	}
	if r.GetReadSeq() != 3 || r.GetUnreadCount() != 2 {
		t.Errorf("MarkRead 3 = %v, want read 3 unread 2", r)
	}
	r, err = h.svc.MarkRead(bob, &imlitev1.MarkReadRequest{ConversationId: "s:alice:bob", ReadSeq: 1})
	if err != nil {
		t.Fatalf("MarkRead 1: %v", err)
	}
	if r.GetReadSeq() != 3 {
		t.Errorf("read seq after marking 1 = %d, want it to stay 3", r.GetReadSeq())
	}
	_, err = h.svc.MarkRead(bob, &imlitev1.MarkReadRequest{ConversationId: "s:alice:bob", ReadSeq: 6})
	wantCode(t, err, codes.InvalidArgument, "read_seq 6", "max seq 5")

	// 3. Clearing history hides messages from bob only and clears unread.
	cl, err := h.svc.ClearHistory(bob, &imlitev1.ClearHistoryRequest{ConversationId: "s:alice:bob"})
	if err != nil {
		t.Fatalf("ClearHistory: %v", err)
	}
	if cl.GetMinSeq() != 6 {
		t.Errorf("min_seq after clear = %d, want 6", cl.GetMinSeq())
	}
	h.send(alice, &imlitev1.SendMsgRequest{ClientMsgId: "u6", RecvId: "bob", Content: "m6"})
	pulled, err := h.svc.PullMsg(bob, &imlitev1.PullMsgRequest{ConversationId: "s:alice:bob"})
	if err != nil {
		t.Fatalf("PullMsg: %v", err)
	}
	if got := seqsOf(pulled.GetMessages()); !slices.Equal(got, []int64{6}) || pulled.GetMinSeq() != 6 {
		t.Errorf("bob pulls %v with min_seq %d, want [6] with min_seq 6", got, pulled.GetMinSeq())
	}
	if got := listConversations(t, h, bob, false)["s:alice:bob"].GetUnreadCount(); got != 1 {
		t.Errorf("bob's unread after clear and one new message = %d, want 1", got)
	}
	full, err := h.svc.PullMsg(alice, &imlitev1.PullMsgRequest{ConversationId: "s:alice:bob"})
	if err != nil {
		t.Fatalf("PullMsg as alice: %v", err)
	}
	if len(full.GetMessages()) != 6 {
		t.Errorf("alice pulls %d messages, want all 6: clearing is per user", len(full.GetMessages()))
	}
	bySeqs, err := h.svc.PullMsgBySeqs(bob, &imlitev1.PullMsgBySeqsRequest{ConversationId: "s:alice:bob", Seqs: []int64{2, 6}})
	if err != nil {
		t.Fatalf("PullMsgBySeqs: %v", err)
	}
	if !slices.Equal(bySeqs.GetNotFoundSeqs(), []int64{2}) {
		t.Errorf("cleared seq 2 by seqs: not_found = %v, want [2]", bySeqs.GetNotFoundSeqs())
	}
}

func TestHideUntilNewMessage(t *testing.T) {
	h := newHarness(t)
	alice, bob := h.as("alice"), h.as("bob")
	h.send(alice, &imlitev1.SendMsgRequest{ClientMsgId: "h1", RecvId: "bob", Content: "x"})
	if _, err := h.svc.HideConversation(bob, &imlitev1.HideConversationRequest{ConversationId: "s:alice:bob"}); err != nil {
		t.Fatalf("HideConversation: %v", err)
	}
	if _, ok := listConversations(t, h, bob, false)["s:alice:bob"]; ok {
		t.Error("hidden conversation is listed")
	}
	if c := listConversations(t, h, bob, true)["s:alice:bob"]; c == nil || !c.GetHidden() {
		t.Errorf("include_hidden: got %v, want the conversation with hidden=true", c)
	}
	if _, ok := listConversations(t, h, alice, false)["s:alice:bob"]; !ok {
		t.Error("hiding for bob hid it for alice too")
	}
	h.send(alice, &imlitev1.SendMsgRequest{ClientMsgId: "h2", RecvId: "bob", Content: "y"})
	if c := listConversations(t, h, bob, false)["s:alice:bob"]; c == nil || c.GetHidden() {
		t.Errorf("after a new message: got %v, want it listed again", c)
	}
}

func TestUpdateConversationPinsFirst(t *testing.T) {
	h := newHarness(t)
	bob := h.as("bob")
	h.send(h.as("alice"), &imlitev1.SendMsgRequest{ClientMsgId: "1", RecvId: "bob", Content: "old"})
	h.send(h.as("carol"), &imlitev1.SendMsgRequest{ClientMsgId: "1", RecvId: "bob", Content: "new"})

	resp, err := h.svc.UpdateConversation(bob, &imlitev1.UpdateConversationRequest{ConversationId: "s:alice:bob", Pinned: proto.Bool(true), RecvOpt: imlitev1.RecvOpt_RECV_OPT_MUTE})
	if err != nil {
		t.Fatalf("UpdateConversation: %v", err)
	}
	if !resp.GetConversation().GetPinned() || resp.GetConversation().GetRecvOpt() != imlitev1.RecvOpt_RECV_OPT_MUTE {
		t.Errorf("updated = %v, want pinned and muted", resp.GetConversation())
	}
	list, err := h.svc.ListConversations(bob, &imlitev1.ListConversationsRequest{})
	if err != nil {
		t.Fatalf("ListConversations: %v", err)
	}
	var order []string
	for _, c := range list.GetConversations() {
		order = append(order, c.GetConversationId())
	}
	if want := []string{"s:alice:bob", "s:bob:carol"}; !slices.Equal(order, want) {
		t.Errorf("order = %v, want pinned first %v", order, want)
	}

	_, err = h.svc.UpdateConversation(bob, &imlitev1.UpdateConversationRequest{ConversationId: "s:alice:bob"})
	wantCode(t, err, codes.InvalidArgument, "pinned", "recv_opt")
	_, err = h.svc.UpdateConversation(bob, &imlitev1.UpdateConversationRequest{ConversationId: "s:alice:bob", RecvOpt: 99})
	wantCode(t, err, codes.InvalidArgument, "recv_opt 99")
}

func TestListConversationsOfAnotherUserNeedsAdmin(t *testing.T) {
	h := newHarness(t)
	h.send(h.as("alice"), &imlitev1.SendMsgRequest{ClientMsgId: "1", RecvId: "bob", Content: "x"})
	_, err := h.svc.ListConversations(h.as("mallory"), &imlitev1.ListConversationsRequest{UserId: "bob"})
	wantCode(t, err, codes.PermissionDenied, "admin")
	resp, err := h.svc.ListConversations(h.asAdmin("ops"), &imlitev1.ListConversationsRequest{UserId: "bob"})
	if err != nil {
		t.Fatalf("admin ListConversations: %v", err)
	}
	if len(resp.GetConversations()) != 1 {
		t.Errorf("bob's conversations via admin = %d, want 1", len(resp.GetConversations()))
	}
}

// TestStateChangesNeedAnExistingChat changes state in single chats that
// never had a message: each call fails with NotFound and adds nothing to
// the caller's list.
func TestStateChangesNeedAnExistingChat(t *testing.T) {
	h := newHarness(t)
	alice := h.as("alice")
	pinned := true
	calls := map[string]func(conv string) error{
		"MarkRead": func(conv string) error {
			_, err := h.svc.MarkRead(alice, &imlitev1.MarkReadRequest{ConversationId: conv})
			return err
		},
		"ClearHistory": func(conv string) error {
			_, err := h.svc.ClearHistory(alice, &imlitev1.ClearHistoryRequest{ConversationId: conv})
			return err
		},
		"HideConversation": func(conv string) error {
			_, err := h.svc.HideConversation(alice, &imlitev1.HideConversationRequest{ConversationId: conv})
			return err
		},
		"UpdateConversation": func(conv string) error {
			_, err := h.svc.UpdateConversation(alice, &imlitev1.UpdateConversationRequest{ConversationId: conv, Pinned: &pinned})
			return err
		},
	}
	for name, call := range calls {
		wantCode(t, call("s:alice:nobody"), codes.NotFound, "no messages yet")
		if got := listConversations(t, h, alice, true); len(got) != 0 {
			t.Errorf("after %s, alice's list = %v, want it empty", name, slices.Collect(maps.Keys(got)))
		}
	}

	// Once a message exists, the same calls succeed.
	h.send(h.as("bob"), &imlitev1.SendMsgRequest{ClientMsgId: "first", RecvId: "alice", Content: "hi"})
	for name, call := range calls {
		if err := call("s:alice:bob"); err != nil {
			t.Errorf("%s after a message: %v", name, err)
		}
	}
}

func TestUpdateConversationReturnsLatestMessage(t *testing.T) {
	h := newHarness(t)
	alice := h.as("alice")
	h.send(alice, &imlitev1.SendMsgRequest{ClientMsgId: "l1", RecvId: "bob", Content: "first"})
	h.send(alice, &imlitev1.SendMsgRequest{ClientMsgId: "l2", RecvId: "bob", Content: "second"})
	pinned := true
	resp, err := h.svc.UpdateConversation(alice, &imlitev1.UpdateConversationRequest{ConversationId: "s:alice:bob", Pinned: &pinned})
	if err != nil {
		t.Fatalf("UpdateConversation: %v", err)
	}
	c := resp.GetConversation()
	if !c.GetPinned() {
		t.Errorf("pinned = false, want true")
	}
	if got := c.GetLatestMsg().GetContent(); got != "second" {
		t.Errorf("latest_msg content = %q, want %q", got, "second")
	}
}
