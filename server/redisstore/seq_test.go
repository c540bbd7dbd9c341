package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/internal/testenv"
	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/boltstore"
	"github.com/imlite/imlite/server/storetest"
)

func TestSeqAllocator(t *testing.T) {
	r := testenv.StartRedis(t)
	bolt := openBolt(t)
	s := newStore(t, r.Addr, Config{MaxSeqs: bolt.MaxSeqs})
	storetest.TestSeqAllocator(t, func(*testing.T) (server.SeqAllocator, server.MessageStore) { return s, bolt })
}

// storeMessages appends messages with seqs first..last to conv.
func storeMessages(t *testing.T, bolt *boltstore.Store, conv string, first, last int64) {
	t.Helper()
	var msgs []*imlitev1.Message
	for seq := first; seq <= last; seq++ {
		msgs = append(msgs, &imlitev1.Message{
			ServerMsgId:    fmt.Sprintf("srv-%s-%d", conv, seq),
			ClientMsgId:    fmt.Sprintf("cli-%s-%d", conv, seq),
			SenderId:       "alice",
			ConversationId: conv,
			Seq:            seq,
		})
	}
	results, err := bolt.AppendMessages(t.Context(), []server.Append{{ConversationID: conv, Messages: msgs}})
	if err != nil {
		t.Fatalf("AppendMessages(%s, seqs %d..%d): %v", conv, first, last, err)
	}
	if results[0] != nil {
		t.Fatalf("AppendMessages(%s, seqs %d..%d) rejected the append: %v", conv, first, last, results[0])
	}
}

func allocate(t *testing.T, s *Store, conv string, count int64) int64 {
	t.Helper()
	firsts, err := s.Allocate(t.Context(), map[string]int64{conv: count})
	if err != nil {
		t.Fatalf("Allocate(%s: %d): %v", conv, count, err)
	}
	return firsts[conv]
}

func TestAllocateAfterFlushFollowsStoredMax(t *testing.T) {
	r := testenv.StartRedis(t)
	bolt := openBolt(t)
	s := newStore(t, r.Addr, Config{MaxSeqs: bolt.MaxSeqs})

	cases := []struct {
		name      string
		allocated int64 // seqs allocated before the flush
		stored    int64 // of which the first ones are stored
		want      int64 // first seq after the flush
	}{
		{name: "counter equal to the store", allocated: 3, stored: 3, want: 4},
		{name: "counter ahead of the store", allocated: 5, stored: 2, want: 3},
		{name: "nothing stored", allocated: 4, stored: 0, want: 1},
		{name: "new conversation", allocated: 0, stored: 0, want: 1},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conv := server.GroupConversationID(fmt.Sprintf("flush-%d", i))
			if tc.allocated > 0 {
				allocate(t, s, conv, tc.allocated)
			}
			if tc.stored > 0 {
				storeMessages(t, bolt, conv, 1, tc.stored)
			}
			r.FlushAll()
			if got := allocate(t, s, conv, 2); got != tc.want {
				t.Errorf("first seq after FLUSHALL with %d seqs allocated and %d stored: got %d, want %d",
					tc.allocated, tc.stored, got, tc.want)
			}
			if got := allocate(t, s, conv, 1); got != tc.want+2 {
				t.Errorf("next seq after the seeded run: got %d, want %d", got, tc.want+2)
			}
		})
	}
}

func TestAllocateSeedsAndIncrementsInOneCall(t *testing.T) {
	r := testenv.StartRedis(t)
	bolt := openBolt(t)
	s := newStore(t, r.Addr, Config{MaxSeqs: bolt.MaxSeqs})
	counted := server.GroupConversationID("counted")
	seeded := server.GroupConversationID("seeded")
	allocate(t, s, counted, 7)
	storeMessages(t, bolt, seeded, 1, 4)

	firsts, err := s.Allocate(t.Context(), map[string]int64{counted: 2, seeded: 3})
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	if firsts[counted] != 8 {
		t.Errorf("first seq of the conversation with a counter at 7: got %d, want 8", firsts[counted])
	}
	if firsts[seeded] != 5 {
		t.Errorf("first seq of the conversation without a counter and max seq 4: got %d, want 5", firsts[seeded])
	}
}

// TestAllocateConcurrentStores allocates one conversation from several
// Stores, as several pods do, starting without a counter so that the
// Stores also race to seed it.
func TestAllocateConcurrentStores(t *testing.T) {
	const stores, goroutines, rounds, storedMax = 4, 8, 25, 5
	r := testenv.StartRedis(t)
	bolt := openBolt(t)
	conv := server.GroupConversationID("shared")
	storeMessages(t, bolt, conv, 1, storedMax)

	var (
		mu    sync.Mutex
		owner = make(map[int64]string) // seq -> allocating goroutine
		wg    sync.WaitGroup
	)
	for i := range stores {
		s := newStore(t, r.Addr, Config{PodName: fmt.Sprintf("pod-%d", i), MaxSeqs: bolt.MaxSeqs})
		for g := range goroutines {
			name := fmt.Sprintf("store %d goroutine %d", i, g)
			wg.Go(func() {
				for round := range rounds {
					count := int64(1 + (g+round)%3)
					firsts, err := s.Allocate(t.Context(), map[string]int64{conv: count})
					if err != nil {
						t.Errorf("%s: Allocate: %v", name, err)
						return
					}
					mu.Lock()
					for seq := firsts[conv]; seq < firsts[conv]+count; seq++ {
						if other, ok := owner[seq]; ok {
							t.Errorf("seq %d handed out to %s and to %s", seq, other, name)
						}
						owner[seq] = name
					}
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()

	total := int64(len(owner))
	for seq := int64(storedMax + 1); seq <= storedMax+total; seq++ {
		if _, ok := owner[seq]; !ok {
			t.Errorf("seq %d was never handed out, want %d..%d handed out once each", seq, storedMax+1, storedMax+total)
		}
	}
	for seq := range owner {
		if seq <= storedMax {
			t.Errorf("seq %d handed out although the store holds seqs up to %d", seq, storedMax)
		}
	}
}

func TestAllocateDamagedCounter(t *testing.T) {
	r := testenv.StartRedis(t)
	raw := rawClient(t, r.Addr)
	s := newStore(t, r.Addr, Config{})

	cases := []struct {
		name   string
		damage func(key string) error
		want   string
	}{
		{
			name:   "value not an integer",
			damage: func(key string) error { return raw.Set(t.Context(), key, "twelve", 0).Err() },
			want:   "not an integer",
		},
		{
			name:   "key of another type",
			damage: func(key string) error { return raw.HSet(t.Context(), key, "seq", 3).Err() },
			want:   "WRONGTYPE",
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conv := server.GroupConversationID(fmt.Sprintf("damaged-%d", i))
			if err := tc.damage(s.seqKey(conv)); err != nil {
				t.Fatalf("damage counter: %v", err)
			}

			_, err := s.Allocate(t.Context(), map[string]int64{conv: 1})
			if err == nil {
				t.Fatal("Allocate on a damaged counter: got nil error, want one")
			}
			if errors.Is(err, server.ErrUnavailable) {
				t.Errorf("Allocate on a damaged counter: got %v, want no ErrUnavailable because a retry fails the same way", err)
			}
			for _, part := range []string{conv, tc.want} {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("Allocate error %q does not contain %q", err, part)
				}
			}

			// Reset is how the core repairs a counter, and it also repairs
			// a damaged one.
			if err := s.Reset(t.Context(), conv, 9); err != nil {
				t.Fatalf("Reset of a damaged counter: %v", err)
			}
			if got := allocate(t, s, conv, 1); got != 10 {
				t.Errorf("first seq after Reset(9) of a damaged counter: got %d, want 10", got)
			}
		})
	}
}

func TestAllocateMaxSeqsFailure(t *testing.T) {
	r := testenv.StartRedis(t)
	cases := []struct {
		name            string
		maxSeqs         error
		wantUnavailable bool
	}{
		{name: "message store unavailable", maxSeqs: fmt.Errorf("find max seqs: %w", server.ErrUnavailable), wantUnavailable: true},
		{name: "message store failure", maxSeqs: errors.New("decode max seq: corrupt document"), wantUnavailable: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t, r.Addr, Config{MaxSeqs: func(context.Context, []string) (map[string]int64, error) {
				return nil, tc.maxSeqs
			}})
			_, err := s.Allocate(t.Context(), map[string]int64{server.GroupConversationID("unseeded"): 1})
			if !errors.Is(err, tc.maxSeqs) {
				t.Errorf("Allocate: got %v, want it to wrap the MaxSeqs error %v", err, tc.maxSeqs)
			}
			if got := errors.Is(err, server.ErrUnavailable); got != tc.wantUnavailable {
				t.Errorf("Allocate error %v wraps server.ErrUnavailable: got %v, want %v", err, got, tc.wantUnavailable)
			}
		})
	}
}

func TestAllocateRejectsInvalidInput(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStore(t, r.Addr, Config{})
	conv := server.GroupConversationID("valid")
	cases := []struct {
		name string
		call func() error
		want string
	}{
		{
			name: "negative count",
			call: func() error { _, err := s.Allocate(t.Context(), map[string]int64{conv: -1}); return err },
			want: "count -1 for conversation " + conv + " is negative",
		},
		{
			name: "empty conversation id",
			call: func() error { _, err := s.Allocate(t.Context(), map[string]int64{"": 1}); return err },
			want: "conversation id is empty",
		},
		{
			name: "reset to a negative max",
			call: func() error { return s.Reset(t.Context(), conv, -1) },
			want: "stored max seq -1 is negative",
		},
		{
			name: "reset of an empty conversation id",
			call: func() error { return s.Reset(t.Context(), "", 0) },
			want: "conversation id is empty",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got error %v, want one containing %q", err, tc.want)
			}
		})
	}
	if got := allocate(t, s, conv, 1); got != 1 {
		t.Errorf("first seq after rejected calls: got %d, want 1 because they changed nothing", got)
	}

	firsts, err := s.Allocate(t.Context(), nil)
	if err != nil || len(firsts) != 0 {
		t.Errorf("Allocate of no conversations: got %v and %v, want an empty map and no error", firsts, err)
	}
}

func TestKeyPrefixSeparatesDeployments(t *testing.T) {
	r := testenv.StartRedis(t)
	first := newStore(t, r.Addr, Config{KeyPrefix: "one:"})
	second := newStore(t, r.Addr, Config{KeyPrefix: "two:"})
	conv := server.GroupConversationID("prefixed")
	if err := first.Reset(t.Context(), conv, 40); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	if err := second.Reset(t.Context(), conv, 70); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	if got := allocate(t, first, conv, 1); got != 41 {
		t.Errorf("first seq under prefix one: got %d, want 41", got)
	}
	if got := allocate(t, second, conv, 1); got != 71 {
		t.Errorf("first seq under prefix two: got %d, want 71", got)
	}
}
