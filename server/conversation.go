package server

import (
	"cmp"
	"context"
	"slices"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server/apierr"
)

// ListConversations returns the caller's conversations (or, for an admin,
// those of user_id) with seq state and unread counts: pinned first, then by
// latest activity. Hidden conversations are left out unless include_hidden.
func (s *Service) ListConversations(ctx context.Context, req *imlitev1.ListConversationsRequest) (*imlitev1.ListConversationsResponse, error) {
	p, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	userID := p.UserID
	if req.GetUserId() != "" && req.GetUserId() != p.UserID {
		if err := requireAdmin(p, "listing another user's conversations"); err != nil {
			return nil, err
		}
		if err := ValidateID("user_id", req.GetUserId()); err != nil {
			return nil, err
		}
		userID = req.GetUserId()
	}

	states, err := s.b.Conversations.ListUserConversations(ctx, userID)
	if err != nil {
		return nil, s.backendError("list conversations", err)
	}
	ids := make([]string, len(states))
	for i, st := range states {
		ids[i] = st.ConversationID
	}
	maxSeqs, err := s.b.Messages.MaxSeqs(ctx, ids)
	if err != nil {
		return nil, s.backendError("load max seqs", err)
	}

	out := make([]*imlitev1.Conversation, 0, len(states))
	latestRefs := make(map[string]int64)
	for _, st := range states {
		c := conversationView(st, maxSeqs[st.ConversationID])
		if c == nil || (c.GetHidden() && !req.GetIncludeHidden()) {
			continue
		}
		out = append(out, c)
		if hasVisibleMessage(c) {
			latestRefs[c.GetConversationId()] = c.GetMaxSeq()
		}
	}
	if err := s.attachLatest(ctx, out, latestRefs); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *imlitev1.Conversation) int {
		if a.GetPinned() != b.GetPinned() {
			if a.GetPinned() {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(b.GetUpdatedAt(), a.GetUpdatedAt()); c != 0 {
			return c
		}
		return cmp.Compare(a.GetConversationId(), b.GetConversationId())
	})
	return &imlitev1.ListConversationsResponse{Conversations: out}, nil
}

// hasVisibleMessage reports whether the message at max seq is one the user
// may see: it exists and lies above the user's cleared history.
func hasVisibleMessage(c *imlitev1.Conversation) bool {
	return c.GetMaxSeq() > 0 && c.GetMaxSeq() >= c.GetMinSeq()
}

// attachLatest sets latest_msg and moves updated_at to the latest message's
// server time where that is newer.
func (s *Service) attachLatest(ctx context.Context, convs []*imlitev1.Conversation, refs map[string]int64) error {
	for _, c := range convs {
		seq, ok := refs[c.GetConversationId()]
		if !ok {
			continue
		}
		msgs, err := s.b.Messages.MessagesBySeqs(ctx, c.GetConversationId(), []int64{seq})
		if err != nil {
			return s.backendError("load latest messages", err)
		}
		if len(msgs) == 1 {
			c.LatestMsg = msgs[0]
			c.UpdatedAt = max(c.GetUpdatedAt(), msgs[0].GetServerTime())
		}
	}
	return nil
}

// conversationView builds the client view of one user's state; nil for a
// malformed conversation id in the store.
func conversationView(st UserConversation, maxSeq int64) *imlitev1.Conversation {
	ref, err := ParseConversationID(st.ConversationID)
	if err != nil {
		return nil
	}
	minSeq := max(st.MinSeq, 1)
	c := &imlitev1.Conversation{
		ConversationId:   st.ConversationID,
		ConversationType: ref.Type,
		GroupId:          ref.GroupID,
		MaxSeq:           maxSeq,
		MinSeq:           minSeq,
		ReadSeq:          st.ReadSeq,
		UnreadCount:      unread(maxSeq, st.ReadSeq, minSeq),
		Pinned:           st.Pinned,
		RecvOpt:          st.RecvOpt,
		Hidden:           maxSeq < st.HideSeq,
		UpdatedAt:        st.UpdatedAt.UnixMilli(),
	}
	if ref.Type == imlitev1.ConversationType_CONVERSATION_TYPE_SINGLE {
		c.PeerId = ref.Peer(st.UserID)
	}
	if c.RecvOpt == imlitev1.RecvOpt_RECV_OPT_UNSPECIFIED {
		c.RecvOpt = imlitev1.RecvOpt_RECV_OPT_NORMAL
	}
	return c
}

// unread counts the messages above both the read seq and the cleared
// history, so a message is never counted twice or after a clear.
func unread(maxSeq, readSeq, minSeq int64) int64 {
	return max(maxSeq-max(readSeq, minSeq-1), 0)
}

// MarkRead moves the caller's read seq forward to read_seq (zero: max seq).
func (s *Service) MarkRead(ctx context.Context, req *imlitev1.MarkReadRequest) (*imlitev1.MarkReadResponse, error) {
	p, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetReadSeq() < 0 {
		return nil, apierr.InvalidArgument("read_seq %d is negative", req.GetReadSeq())
	}
	view, err := s.readView(ctx, p, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	if err := view.requireExisting(); err != nil {
		return nil, err
	}
	readSeq := req.GetReadSeq()
	if readSeq == 0 {
		readSeq = view.maxSeq
	}
	if readSeq > view.maxSeq {
		return nil, apierr.InvalidArgument("read_seq %d is above the conversation's max seq %d", readSeq, view.maxSeq)
	}
	st, err := s.b.Conversations.UpdateUserConversation(ctx, p.UserID, view.ref.ID, ConversationUpdate{ReadSeq: &readSeq})
	if err != nil {
		return nil, s.backendError("mark read", err)
	}
	return &imlitev1.MarkReadResponse{ReadSeq: st.ReadSeq, UnreadCount: unread(view.maxSeq, st.ReadSeq, max(st.MinSeq, 1))}, nil
}

// ClearHistory hides every message stored so far from the caller only: the
// caller's min seq becomes max seq + 1.
func (s *Service) ClearHistory(ctx context.Context, req *imlitev1.ClearHistoryRequest) (*imlitev1.ClearHistoryResponse, error) {
	p, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	view, err := s.readView(ctx, p, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	if err := view.requireExisting(); err != nil {
		return nil, err
	}
	minSeq := view.maxSeq + 1
	readSeq := view.maxSeq
	st, err := s.b.Conversations.UpdateUserConversation(ctx, p.UserID, view.ref.ID, ConversationUpdate{MinSeq: &minSeq, ReadSeq: &readSeq})
	if err != nil {
		return nil, s.backendError("clear history", err)
	}
	return &imlitev1.ClearHistoryResponse{MinSeq: st.MinSeq}, nil
}

// HideConversation hides the conversation from the caller's list until a
// message newer than the current max seq arrives.
func (s *Service) HideConversation(ctx context.Context, req *imlitev1.HideConversationRequest) (*imlitev1.HideConversationResponse, error) {
	p, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	view, err := s.readView(ctx, p, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	if err := view.requireExisting(); err != nil {
		return nil, err
	}
	hideSeq := view.maxSeq + 1
	if _, err := s.b.Conversations.UpdateUserConversation(ctx, p.UserID, view.ref.ID, ConversationUpdate{HideSeq: &hideSeq}); err != nil {
		return nil, s.backendError("hide conversation", err)
	}
	return &imlitev1.HideConversationResponse{}, nil
}

// UpdateConversation sets the caller's pinned flag and receive option.
func (s *Service) UpdateConversation(ctx context.Context, req *imlitev1.UpdateConversationRequest) (*imlitev1.UpdateConversationResponse, error) {
	p, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	var u ConversationUpdate
	if req.Pinned != nil {
		pinned := req.GetPinned()
		u.Pinned = &pinned
	}
	switch opt := req.GetRecvOpt(); opt {
	case imlitev1.RecvOpt_RECV_OPT_UNSPECIFIED:
	case imlitev1.RecvOpt_RECV_OPT_NORMAL, imlitev1.RecvOpt_RECV_OPT_NO_NOTIFY, imlitev1.RecvOpt_RECV_OPT_MUTE:
		u.RecvOpt = &opt
	default:
		return nil, apierr.InvalidArgument("recv_opt %d is not a known RecvOpt value", int32(opt))
	}
	if u.Pinned == nil && u.RecvOpt == nil {
		return nil, apierr.InvalidArgument("nothing to update: set pinned or recv_opt")
	}
	view, err := s.readView(ctx, p, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	if err := view.requireExisting(); err != nil {
		return nil, err
	}
	st, err := s.b.Conversations.UpdateUserConversation(ctx, p.UserID, view.ref.ID, u)
	if err != nil {
		return nil, s.backendError("update conversation", err)
	}
	c := conversationView(st, view.maxSeq)
	if c != nil && hasVisibleMessage(c) {
		if err := s.attachLatest(ctx, []*imlitev1.Conversation{c}, map[string]int64{c.GetConversationId(): c.GetMaxSeq()}); err != nil {
			return nil, err
		}
	}
	return &imlitev1.UpdateConversationResponse{Conversation: c}, nil
}
