package mongostore

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
)

func TestUpdateWithoutChangeKeepsUpdatedAt(t *testing.T) {
	yes := true
	mute := imlitev1.RecvOpt_RECV_OPT_MUTE
	low, high := int64(2), int64(5)
	cases := []struct {
		name string
		u    server.ConversationUpdate
	}{
		{name: "no fields", u: server.ConversationUpdate{}},
		{name: "same pinned", u: server.ConversationUpdate{Pinned: &yes}},
		{name: "same recv_opt", u: server.ConversationUpdate{RecvOpt: &mute}},
		{name: "lower read seq", u: server.ConversationUpdate{ReadSeq: &low}},
		{name: "equal seqs", u: server.ConversationUpdate{ReadSeq: &high, MinSeq: &high, HideSeq: &high}},
	}
	s, _ := startStore(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conv := server.GroupConversationID(fmt.Sprintf("same-%d", i))
			before, err := s.UpdateUserConversation(t.Context(), "alice", conv, server.ConversationUpdate{
				ReadSeq: &high, MinSeq: &high, HideSeq: &high, Pinned: &yes, RecvOpt: &mute,
			})
			if err != nil {
				t.Fatalf("UpdateUserConversation (setup): %v", err)
			}
			// Sleep past the millisecond precision of BSON dates, so a moved
			// UpdatedAt shows.
			time.Sleep(5 * time.Millisecond)

			after, err := s.UpdateUserConversation(t.Context(), "alice", conv, tc.u)
			if err != nil {
				t.Fatalf("UpdateUserConversation: %v", err)
			}
			if after != before {
				t.Errorf("state after an update that changes nothing:\n got %+v\nwant %+v", after, before)
			}
			if stored := stateOf(t, s, "alice", conv); stored != before {
				t.Errorf("stored state after an update that changes nothing:\n got %+v\nwant %+v", stored, before)
			}
		})
	}
}

func TestUpdateConcurrentRaises(t *testing.T) {
	s, _ := startStore(t)
	requireAtomicUpdates(t, s)
	conv := server.GroupConversationID("busy")
	// Concurrent updates of a missing state race to create it; the highest
	// read seq must win whatever the order.
	var wg sync.WaitGroup
	for seq := range int64(16) {
		wg.Go(func() {
			readSeq := seq + 1
			if _, err := s.UpdateUserConversation(t.Context(), "alice", conv, server.ConversationUpdate{ReadSeq: &readSeq}); err != nil {
				t.Errorf("UpdateUserConversation(read seq %d): %v", readSeq, err)
			}
		})
	}
	wg.Wait()
	if got := stateOf(t, s, "alice", conv).ReadSeq; got != 16 {
		t.Errorf("read seq after concurrent updates up to 16: got %d, want 16", got)
	}
	list, err := s.ListUserConversations(t.Context(), "alice")
	if err != nil {
		t.Fatalf("ListUserConversations: %v", err)
	}
	if len(list) != 1 {
		t.Errorf("states of alice: got %d, want 1 despite the concurrent creates", len(list))
	}
}

func TestInvalidIDs(t *testing.T) {
	s, _ := startStore(t)
	conv := server.GroupConversationID("team")
	cases := []struct {
		name string
		call func() error
		want string
	}{
		{"GetUserConversation empty user", func() error { _, err := s.GetUserConversation(t.Context(), "", conv); return err }, "user id is empty"},
		{"JoinConversation empty user", func() error { return s.JoinConversation(t.Context(), conv, []string{"a", ""}, 1) }, "user id is empty"},
		{"LeaveConversation empty conversation", func() error { return s.LeaveConversation(t.Context(), "", []string{"a"}) }, "conversation id is empty"},
		{"CreateGroup empty member", func() error {
			return s.CreateGroup(t.Context(), server.Group{ID: "g", OwnerID: "a"}, []server.GroupMember{{UserID: ""}})
		}, "member user id is empty"},
		{"GetGroup empty id", func() error { _, err := s.GetGroup(t.Context(), ""); return err }, "group id is empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
			if errors.Is(err, server.ErrNotFound) || errors.Is(err, server.ErrUnavailable) {
				t.Errorf("error %v wraps a repository sentinel, want an invalid-argument failure", err)
			}
		})
	}
}
