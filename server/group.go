package server

import (
	"context"
	"encoding/base64"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	busv1 "github.com/imlite/imlite/gen/imlite/bus/v1"
	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server/apierr"
	"github.com/imlite/imlite/server/auth"
)

const maxGroupNameBytes = 256

// CreateGroup creates a group owned by owner_id (a user creates groups it
// owns). Retrying a create of an existing group with the same owner returns
// the group, so a create that failed halfway can be completed.
func (s *Service) CreateGroup(ctx context.Context, req *imlitev1.CreateGroupRequest) (*imlitev1.CreateGroupResponse, error) {
	p, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	owner := req.GetOwnerId()
	switch {
	case owner == "":
		owner = p.UserID
	case owner != p.UserID && !p.IsAdmin():
		return nil, apierr.PermissionDenied("owner_id %q differs from the caller %q; only admin tokens may create groups for others", printable(owner), p.UserID)
	}
	if err := ValidateID("owner_id", owner); err != nil {
		return nil, err
	}
	groupID := req.GetGroupId()
	if groupID == "" {
		groupID = "grp-" + strings.ReplaceAll(uuid.NewString(), "-", "")
	}
	if err := ValidateID("group_id", groupID); err != nil {
		return nil, err
	}
	if err := validateText("name", req.GetName(), maxGroupNameBytes); err != nil {
		return nil, err
	}
	if err := validateText("ex", req.GetEx(), s.limits.MaxExBytes); err != nil {
		return nil, err
	}
	memberIDs, err := validateUserIDs("member_ids", req.GetMemberIds(), true, s.limits.MaxGroupMembers)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(memberIDs, owner) {
		memberIDs = append(memberIDs, owner)
	}
	if len(memberIDs) > s.limits.MaxGroupMembers {
		return nil, apierr.InvalidArgument("member_ids holds %d users with the owner, more than the group limit %d", len(memberIDs), s.limits.MaxGroupMembers)
	}

	// 1. Store the group with its members.
	now := time.Now()
	g := Group{ID: groupID, Name: req.GetName(), OwnerID: owner, Ex: req.GetEx(), CreatedAt: now}
	members := make([]GroupMember, len(memberIDs))
	for i, id := range memberIDs {
		members[i] = GroupMember{UserID: id, JoinedAt: now}
	}
	err = s.b.Groups.CreateGroup(ctx, g, members)
	if errors.Is(err, ErrAlreadyExists) {
		existing, getErr := s.b.Groups.GetGroup(ctx, groupID)
		if getErr != nil {
			return nil, s.backendError("load existing group", getErr)
		}
		if existing.OwnerID != owner {
			return nil, apierr.AlreadyExists("group_id %q is taken", groupID)
		}
		// A retry: the stored members are authoritative.
		if memberIDs, err = s.b.Groups.GroupMemberIDs(ctx, groupID); err != nil {
			return nil, s.backendError("load group members", err)
		}
	} else if err != nil {
		return nil, s.backendError("create group", err)
	}

	// 2. Give every member a conversation state, so the group shows up in
	// their conversation lists before the first message.
	conv := GroupConversationID(groupID)
	if err := s.b.Conversations.JoinConversation(ctx, conv, memberIDs, 1); err != nil {
		return nil, s.backendError("create member conversation state", err)
	}
	stored, err := s.b.Groups.GetGroup(ctx, groupID)
	if err != nil {
		return nil, s.backendError("load group", err)
	}
	return &imlitev1.CreateGroupResponse{Group: groupView(stored)}, nil
}

// GetGroup returns a group's details to its members and admins.
func (s *Service) GetGroup(ctx context.Context, req *imlitev1.GetGroupRequest) (*imlitev1.GetGroupResponse, error) {
	p, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	g, err := s.groupForMember(ctx, p, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	return &imlitev1.GetGroupResponse{Group: groupView(g)}, nil
}

// AddGroupMembers adds users to a group. New members see messages stored
// after they joined: their min seq is the max seq at the time of the add,
// plus one.
func (s *Service) AddGroupMembers(ctx context.Context, req *imlitev1.AddGroupMembersRequest) (*imlitev1.AddGroupMembersResponse, error) {
	p, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	ids, err := validateUserIDs("member_ids", req.GetMemberIds(), false, s.limits.MaxGroupMembers)
	if err != nil {
		return nil, err
	}
	g, err := s.groupForManager(ctx, p, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	conv := GroupConversationID(g.ID)

	// 1. Read the max seq before adding, so that anything stored after the
	// add is visible to the new members even if they miss its push.
	maxSeqs, err := s.b.Messages.MaxSeqs(ctx, []string{conv})
	if err != nil {
		return nil, s.backendError("load max seq", err)
	}

	// 2. Add them to the group.
	now := time.Now()
	members := make([]GroupMember, len(ids))
	for i, id := range ids {
		members[i] = GroupMember{UserID: id, JoinedAt: now}
	}
	added, count, err := s.b.Groups.AddGroupMembers(ctx, g.ID, members, s.limits.MaxGroupMembers)
	switch {
	case errors.Is(err, ErrGroupFull):
		return nil, apierr.FailedPrecondition("group %q has %d members; adding %d would exceed the limit %d", g.ID, g.MemberCount, len(ids), s.limits.MaxGroupMembers)
	case errors.Is(err, ErrNotFound):
		return nil, apierr.NotFound("group_id %q: no such group", g.ID)
	case err != nil:
		return nil, s.backendError("add group members", err)
	}

	// 3. Create their conversation state. It runs for every requested user,
	// not only the newly added, so a retry repairs an add that failed here;
	// existing state is left as it is.
	if err := s.b.Conversations.JoinConversation(ctx, conv, ids, maxSeqs[conv]+1); err != nil {
		return nil, s.backendError("create member conversation state", err)
	}
	s.groupChanged(ctx, g.ID)
	return &imlitev1.AddGroupMembersResponse{AddedIds: added, MemberCount: int32(count)}, nil
}

// RemoveGroupMembers removes users from a group. Removed users lose access
// to the conversation and it leaves their lists.
func (s *Service) RemoveGroupMembers(ctx context.Context, req *imlitev1.RemoveGroupMembersRequest) (*imlitev1.RemoveGroupMembersResponse, error) {
	p, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	ids, err := validateUserIDs("member_ids", req.GetMemberIds(), false, s.limits.MaxGroupMembers)
	if err != nil {
		return nil, err
	}
	// A member who names only itself leaves the group, which needs no
	// manager. Anything else is a change of the member list.
	load := s.groupForManager
	if len(ids) == 1 && ids[0] == p.UserID {
		load = s.groupForMember
	}
	g, err := load(ctx, p, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	if slices.Contains(ids, g.OwnerID) {
		return nil, apierr.FailedPrecondition("member_ids contains the owner %q, who cannot be removed", g.OwnerID)
	}
	removed, count, err := s.b.Groups.RemoveGroupMembers(ctx, g.ID, ids)
	if err != nil {
		return nil, s.backendError("remove group members", err)
	}
	// As with adds, this runs for every requested user so a retry repairs a
	// removal that failed here.
	if err := s.b.Conversations.LeaveConversation(ctx, GroupConversationID(g.ID), ids); err != nil {
		return nil, s.backendError("delete member conversation state", err)
	}
	s.groupChanged(ctx, g.ID)
	return &imlitev1.RemoveGroupMembersResponse{RemovedIds: removed, MemberCount: int32(count)}, nil
}

// ListGroupMembers pages through members in user id order.
func (s *Service) ListGroupMembers(ctx context.Context, req *imlitev1.ListGroupMembersRequest) (*imlitev1.ListGroupMembersResponse, error) {
	p, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, apierr.InvalidArgument("page_size %d is negative", size)
	case size == 0:
		size = 100
	case size > 1000:
		return nil, apierr.InvalidArgument("page_size %d exceeds the maximum 1000", size)
	}
	g, err := s.groupForMember(ctx, p, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	after, err := decodeMemberPageToken(g.ID, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	// One extra row tells whether another page follows.
	rows, err := s.b.Groups.ListGroupMembers(ctx, g.ID, after, size+1)
	if err != nil {
		return nil, s.backendError("list group members", err)
	}
	resp := &imlitev1.ListGroupMembersResponse{}
	if len(rows) > size {
		rows = rows[:size]
		resp.NextPageToken = encodeMemberPageToken(g.ID, rows[size-1].UserID)
	}
	for _, m := range rows {
		resp.Members = append(resp.Members, &imlitev1.GroupMember{UserId: m.UserID, JoinedAt: m.JoinedAt.UnixMilli()})
	}
	return resp, nil
}

// groupForMember loads a group that the caller belongs to (admins: any).
func (s *Service) groupForMember(ctx context.Context, p auth.Principal, groupID string) (Group, error) {
	g, err := s.loadGroup(ctx, groupID)
	if err != nil {
		return Group{}, err
	}
	if p.IsAdmin() {
		return g, nil
	}
	member, err := s.b.Groups.IsGroupMember(ctx, groupID, p.UserID)
	if err != nil {
		return Group{}, s.backendError("check group membership", err)
	}
	if !member {
		return Group{}, apierr.PermissionDenied("user %q is not a member of group %q", p.UserID, groupID)
	}
	return g, nil
}

// groupForManager loads a group that the caller may change: admins any,
// users the groups they own.
func (s *Service) groupForManager(ctx context.Context, p auth.Principal, groupID string) (Group, error) {
	g, err := s.loadGroup(ctx, groupID)
	if err != nil {
		return Group{}, err
	}
	if !p.IsAdmin() && g.OwnerID != p.UserID {
		return Group{}, apierr.PermissionDenied("only the owner %q or an admin may change the members of group %q", g.OwnerID, groupID)
	}
	return g, nil
}

func (s *Service) loadGroup(ctx context.Context, groupID string) (Group, error) {
	if err := ValidateID("group_id", groupID); err != nil {
		return Group{}, err
	}
	g, err := s.b.Groups.GetGroup(ctx, groupID)
	switch {
	case errors.Is(err, ErrNotFound):
		return Group{}, apierr.NotFound("group_id %q: no such group", groupID)
	case err != nil:
		return Group{}, s.backendError("load group", err)
	}
	return g, nil
}

// groupChanged drops this pod's cached member list and tells the other pods
// to drop theirs. The event is keyed like the group's messages, so pods see
// it in order with them.
func (s *Service) groupChanged(ctx context.Context, groupID string) {
	s.groups.invalidate(groupID)
	rec := &busv1.PushRecord{Event: &busv1.PushRecord_GroupChanged{GroupChanged: &busv1.GroupChanged{GroupId: groupID}}}
	if err := s.b.PushProducer.PublishPush(ctx, []KeyedPush{{Key: GroupConversationID(groupID), Record: rec}}); err != nil {
		// Other pods' caches expire after GroupCacheTTL.
		s.log.Error("publish group change failed", "group_id", groupID, "err", err)
	}
}

// validateUserIDs checks and de-duplicates a list of user ids, keeping order.
// The list may be empty only when allowEmpty; it may hold at most maxCount.
func validateUserIDs(field string, ids []string, allowEmpty bool, maxCount int) ([]string, error) {
	switch {
	case len(ids) == 0 && !allowEmpty:
		return nil, apierr.InvalidArgument("%s is empty", field)
	case len(ids) > maxCount:
		return nil, apierr.InvalidArgument("%s has %d entries, more than the maximum %d", field, len(ids), maxCount)
	}
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for i, id := range ids {
		if err := ValidateID(field+"["+strconv.Itoa(i)+"]", id); err != nil {
			return nil, err
		}
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out, nil
}

func groupView(g Group) *imlitev1.Group {
	return &imlitev1.Group{
		GroupId:        g.ID,
		ConversationId: GroupConversationID(g.ID),
		Name:           g.Name,
		OwnerId:        g.OwnerID,
		MemberCount:    int32(g.MemberCount),
		CreatedAt:      g.CreatedAt.UnixMilli(),
		Ex:             g.Ex,
	}
}

// memberPageTokenPrefix marks the page tokens of ListGroupMembers, so a
// token of another format is rejected instead of read as a user id.
const memberPageTokenPrefix = "m1."

// encodeMemberPageToken returns the token of the page after lastUserID.
// It names the group, so a token of another group is rejected too.
func encodeMemberPageToken(groupID, lastUserID string) string {
	return memberPageTokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(groupID+"\x00"+lastUserID))
}

// decodeMemberPageToken returns the user id after which the page starts,
// "" for the first page.
func decodeMemberPageToken(groupID, token string) (string, error) {
	if token == "" {
		return "", nil
	}
	invalid := apierr.InvalidArgument("page_token %q is not a next_page_token that ListGroupMembers returned for group %q", token, groupID)
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(token, memberPageTokenPrefix))
	if err != nil || !strings.HasPrefix(token, memberPageTokenPrefix) {
		return "", invalid
	}
	group, after, ok := strings.Cut(string(raw), "\x00")
	if !ok || group != groupID || ValidateID("page_token", after) != nil {
		return "", invalid
	}
	return after, nil
}
