package server_test

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
)

// seqsOf returns the seqs of msgs in order.
func seqsOf(msgs []*imlitev1.Message) []int64 {
	out := make([]int64, len(msgs))
	for i, m := range msgs {
		out[i] = m.GetSeq()
	}
	return out
}

func seqRange(from, to int64) []int64 {
	var out []int64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func TestPullMsgPages(t *testing.T) {
	h := newHarness(t)
	ctx := h.as("alice")
	for i := 1; i <= 30; i++ {
		h.send(ctx, &imlitev1.SendMsgRequest{ClientMsgId: fmt.Sprintf("p%d", i), RecvId: "bob", Content: "x"})
	}
	tests := []struct {
		name string
		req  *imlitev1.PullMsgRequest
		want []int64
	}{
		{"newest page by default", &imlitev1.PullMsgRequest{Limit: 10}, seqRange(21, 30)},
		{"page ending at end_seq", &imlitev1.PullMsgRequest{EndSeq: 15, Limit: 5}, seqRange(11, 15)},
		{"forward from begin_seq", &imlitev1.PullMsgRequest{BeginSeq: 5, Limit: 3}, seqRange(5, 7)},
		{"closed range", &imlitev1.PullMsgRequest{BeginSeq: 28, EndSeq: 29}, seqRange(28, 29)},
		{"end beyond max is clamped", &imlitev1.PullMsgRequest{BeginSeq: 29, EndSeq: 99}, seqRange(29, 30)},
		{"begin beyond max is empty", &imlitev1.PullMsgRequest{BeginSeq: 31}, nil},
		{"default limit covers all", &imlitev1.PullMsgRequest{}, seqRange(1, 30)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.ConversationId = "s:alice:bob"
			resp, err := h.svc.PullMsg(h.as("bob"), tt.req)
			if err != nil {
				t.Fatalf("PullMsg: %v", err)
			}
			if got := seqsOf(resp.GetMessages()); !slices.Equal(got, tt.want) {
				t.Errorf("seqs = %v, want %v", got, tt.want)
			}
			if resp.GetMaxSeq() != 30 || resp.GetMinSeq() != 1 {
				t.Errorf("max_seq, min_seq = %d, %d, want 30, 1", resp.GetMaxSeq(), resp.GetMinSeq())
			}
		})
	}
}

func TestPullRejectsBadRequests(t *testing.T) {
	h := newHarness(t)
	h.createGroup("club", "admin", "alice")
	ctx := h.as("alice")
	tests := []struct {
		name  string
		call  func() error
		code  codes.Code
		parts []string
	}{
		{"begin after end", func() error {
			_, err := h.svc.PullMsg(ctx, &imlitev1.PullMsgRequest{ConversationId: "s:alice:bob", BeginSeq: 5, EndSeq: 3})
			return err
		}, codes.InvalidArgument, []string{"begin_seq 5", "end_seq 3"}},
		{"limit over maximum", func() error {
			_, err := h.svc.PullMsg(ctx, &imlitev1.PullMsgRequest{ConversationId: "s:alice:bob", Limit: 501})
			return err
		}, codes.InvalidArgument, []string{"limit 501", "500"}},
		{"negative begin", func() error {
			_, err := h.svc.PullMsg(ctx, &imlitev1.PullMsgRequest{ConversationId: "s:alice:bob", BeginSeq: -1})
			return err
		}, codes.InvalidArgument, []string{"begin_seq"}},
		{"missing conversation", func() error {
			_, err := h.svc.PullMsg(ctx, &imlitev1.PullMsgRequest{})
			return err
		}, codes.InvalidArgument, []string{"conversation_id"}},
		{"malformed conversation", func() error {
			_, err := h.svc.PullMsg(ctx, &imlitev1.PullMsgRequest{ConversationId: "x:1"})
			return err
		}, codes.InvalidArgument, []string{"conversation_id", "s:", "g:"}},
		{"unsorted single chat id", func() error {
			_, err := h.svc.PullMsg(ctx, &imlitev1.PullMsgRequest{ConversationId: "s:bob:alice"})
			return err
		}, codes.InvalidArgument, []string{"s:alice:bob"}},
		{"other users' chat", func() error {
			_, err := h.svc.PullMsg(ctx, &imlitev1.PullMsgRequest{ConversationId: "s:bob:carol"})
			return err
		}, codes.PermissionDenied, []string{"alice", "s:bob:carol"}},
		{"group of others", func() error {
			_, err := h.svc.PullMsg(h.as("mallory"), &imlitev1.PullMsgRequest{ConversationId: "g:club"})
			return err
		}, codes.PermissionDenied, []string{"mallory", "club"}},
		{"unknown group", func() error {
			_, err := h.svc.PullMsg(ctx, &imlitev1.PullMsgRequest{ConversationId: "g:nope"})
			return err
		}, codes.NotFound, []string{"nope"}},
		{"no seqs", func() error {
			_, err := h.svc.PullMsgBySeqs(ctx, &imlitev1.PullMsgBySeqsRequest{ConversationId: "s:alice:bob"})
			return err
		}, codes.InvalidArgument, []string{"seqs"}},
		{"zero seq", func() error {
			_, err := h.svc.PullMsgBySeqs(ctx, &imlitev1.PullMsgBySeqsRequest{ConversationId: "s:alice:bob", Seqs: []int64{1, 0}})
			return err
		}, codes.InvalidArgument, []string{"seqs[1]"}},
		{"too many seqs", func() error {
			_, err := h.svc.PullMsgBySeqs(ctx, &imlitev1.PullMsgBySeqsRequest{ConversationId: "s:alice:bob", Seqs: seqRange(1, 501)})
			return err
		}, codes.InvalidArgument, []string{"501", "500"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, tt.call(), tt.code, tt.parts...)
		})
	}
}

func TestPullMsgBySeqsFillsGaps(t *testing.T) {
	h := newHarness(t)
	ctx := h.as("alice")
	for i := 1; i <= 5; i++ {
		h.send(ctx, &imlitev1.SendMsgRequest{ClientMsgId: fmt.Sprintf("f%d", i), RecvId: "bob", Content: "x"})
	}
	resp, err := h.svc.PullMsgBySeqs(ctx, &imlitev1.PullMsgBySeqsRequest{ConversationId: "s:alice:bob", Seqs: []int64{4, 2, 9, 2}})
	if err != nil {
		t.Fatalf("PullMsgBySeqs: %v", err)
	}
	if got := seqsOf(resp.GetMessages()); !slices.Equal(got, []int64{2, 4}) {
		t.Errorf("seqs = %v, want [2 4] (sorted, de-duplicated)", got)
	}
	if got := resp.GetNotFoundSeqs(); !slices.Equal(got, []int64{9}) {
		t.Errorf("not_found_seqs = %v, want [9]", got)
	}
}

func TestAdminReadsAnyConversation(t *testing.T) {
	h := newHarness(t)
	h.send(h.as("alice"), &imlitev1.SendMsgRequest{ClientMsgId: "a", RecvId: "bob", Content: "x"})
	resp, err := h.svc.PullMsg(h.asAdmin("ops"), &imlitev1.PullMsgRequest{ConversationId: "s:alice:bob"})
	if err != nil {
		t.Fatalf("admin PullMsg: %v", err)
	}
	if len(resp.GetMessages()) != 1 {
		t.Errorf("admin pulled %d messages, want 1", len(resp.GetMessages()))
	}
}
