package server

import (
	"context"
	"errors"
	"slices"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server/apierr"
	"github.com/imlite/imlite/server/auth"
)

// PullMsg returns a page of a conversation's messages in ascending seq order.
// With begin_seq set, the page starts there; otherwise it is the newest page
// ending at end_seq (default: max seq). Seqs below the caller's min seq are
// never returned.
func (s *Service) PullMsg(ctx context.Context, req *imlitev1.PullMsgRequest) (*imlitev1.PullMsgResponse, error) {
	p, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	begin, end, limit := req.GetBeginSeq(), req.GetEndSeq(), int64(req.GetLimit())
	switch {
	case begin < 0:
		return nil, apierr.InvalidArgument("begin_seq %d is negative", begin)
	case end < 0:
		return nil, apierr.InvalidArgument("end_seq %d is negative", end)
	case begin > 0 && end > 0 && begin > end:
		return nil, apierr.InvalidArgument("begin_seq %d is greater than end_seq %d", begin, end)
	case limit < 0:
		return nil, apierr.InvalidArgument("limit %d is negative", limit)
	case limit > int64(s.limits.MaxPullLimit):
		return nil, apierr.InvalidArgument("limit %d exceeds the maximum %d", limit, s.limits.MaxPullLimit)
	case limit == 0:
		limit = int64(s.limits.DefaultPullLimit)
	}
	view, err := s.readView(ctx, p, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	resp := &imlitev1.PullMsgResponse{MaxSeq: view.maxSeq, MinSeq: view.minSeq}

	if end == 0 || end > view.maxSeq {
		end = view.maxSeq
	}
	if begin == 0 {
		begin = max(end-limit+1, 1)
	}
	begin = max(begin, view.minSeq)
	if begin > end {
		return resp, nil
	}
	msgs, err := s.b.Messages.RangeMessages(ctx, view.ref.ID, begin, end, int(limit))
	if err != nil {
		return nil, s.backendError("pull messages", err)
	}
	resp.Messages = msgs
	return resp, nil
}

// PullMsgBySeqs returns the messages with the listed seqs, for filling gaps
// a client noticed. Seqs outside [min seq, max seq] come back in
// not_found_seqs.
func (s *Service) PullMsgBySeqs(ctx context.Context, req *imlitev1.PullMsgBySeqsRequest) (*imlitev1.PullMsgBySeqsResponse, error) {
	p, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	seqs := req.GetSeqs()
	switch {
	case len(seqs) == 0:
		return nil, apierr.InvalidArgument("seqs is empty; list the seqs to pull")
	case len(seqs) > s.limits.MaxPullLimit:
		return nil, apierr.InvalidArgument("seqs has %d entries, more than the maximum %d", len(seqs), s.limits.MaxPullLimit)
	}
	for i, seq := range seqs {
		if seq <= 0 {
			return nil, apierr.InvalidArgument("seqs[%d] is %d; seqs start at 1", i, seq)
		}
	}
	view, err := s.readView(ctx, p, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	resp := &imlitev1.PullMsgBySeqsResponse{MaxSeq: view.maxSeq, MinSeq: view.minSeq}

	wanted := slices.Clone(seqs)
	slices.Sort(wanted)
	wanted = slices.Compact(wanted)
	visible := wanted[:0:0]
	for _, seq := range wanted {
		if seq < view.minSeq || seq > view.maxSeq {
			resp.NotFoundSeqs = append(resp.NotFoundSeqs, seq)
		} else {
			visible = append(visible, seq)
		}
	}
	if len(visible) == 0 {
		return resp, nil
	}
	msgs, err := s.b.Messages.MessagesBySeqs(ctx, view.ref.ID, visible)
	if err != nil {
		return nil, s.backendError("pull messages by seqs", err)
	}
	resp.Messages = msgs
	if len(msgs) < len(visible) {
		got := make(map[int64]bool, len(msgs))
		for _, m := range msgs {
			got[m.GetSeq()] = true
		}
		for _, seq := range visible {
			if !got[seq] {
				resp.NotFoundSeqs = append(resp.NotFoundSeqs, seq)
			}
		}
		slices.Sort(resp.NotFoundSeqs)
	}
	return resp, nil
}

// readView is what one caller may see of one conversation.
type readView struct {
	ref    ConversationRef
	state  UserConversation
	maxSeq int64
	// minSeq is at least 1.
	minSeq int64
	// hasState is whether the caller has stored state in the conversation.
	hasState bool
}

// requireExisting fails a change of the caller's state in a single chat
// that has neither messages nor state for the caller. Storing state there
// would add an empty chat with any user id to the caller's list.
func (v readView) requireExisting() error {
	if v.ref.Type == imlitev1.ConversationType_CONVERSATION_TYPE_SINGLE && v.maxSeq == 0 && !v.hasState {
		return apierr.NotFound("conversation %q has no messages yet; it exists once a message is sent", v.ref.ID)
	}
	return nil
}

// readView checks that the caller belongs to the conversation (admins may
// read any) and loads the caller's state and the conversation's max seq.
func (s *Service) readView(ctx context.Context, p auth.Principal, conversationID string) (readView, error) {
	ref, err := ParseConversationID(conversationID)
	if err != nil {
		return readView{}, err
	}
	if err := s.checkMember(ctx, p, ref); err != nil {
		return readView{}, err
	}
	state, stateErr := s.b.Conversations.GetUserConversation(ctx, p.UserID, ref.ID)
	if stateErr != nil && !errors.Is(stateErr, ErrNotFound) {
		return readView{}, s.backendError("load conversation state", stateErr)
	}
	maxSeqs, err := s.b.Messages.MaxSeqs(ctx, []string{ref.ID})
	if err != nil {
		return readView{}, s.backendError("load max seq", err)
	}
	return readView{ref: ref, state: state, maxSeq: maxSeqs[ref.ID], minSeq: max(state.MinSeq, 1), hasState: stateErr == nil}, nil
}

// checkMember returns PermissionDenied unless the caller is a user of the
// single chat, a member of the group, or an admin; NotFound for an unknown
// group.
func (s *Service) checkMember(ctx context.Context, p auth.Principal, ref ConversationRef) error {
	if ref.Type == imlitev1.ConversationType_CONVERSATION_TYPE_SINGLE {
		if p.IsAdmin() || ref.hasUser(p.UserID) {
			return nil
		}
		return apierr.PermissionDenied("user %q is not part of conversation %q", p.UserID, ref.ID)
	}
	member, err := s.b.Groups.IsGroupMember(ctx, ref.GroupID, p.UserID)
	switch {
	case errors.Is(err, ErrNotFound):
		return apierr.NotFound("conversation %q: group %q does not exist", ref.ID, ref.GroupID)
	case err != nil:
		return s.backendError("check group membership", err)
	case !member && !p.IsAdmin():
		return apierr.PermissionDenied("user %q is not a member of group %q", p.UserID, ref.GroupID)
	}
	return nil
}
