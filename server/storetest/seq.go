package storetest

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
)

// TestSeqAllocator runs the conformance suite of server.SeqAllocator.
// newStores returns the allocator and the message store it allocates for,
// and it is called once per subtest.
func TestSeqAllocator(t *testing.T, newStores func(t *testing.T) (server.SeqAllocator, server.MessageStore)) {
	t.Run("AllocateContiguous", func(t *testing.T) {
		a, _ := newStores(t)
		testAllocateContiguous(t, a)
	})
	t.Run("AllocateConcurrent", func(t *testing.T) {
		a, _ := newStores(t)
		testAllocateConcurrent(t, a)
	})
	t.Run("Reset", func(t *testing.T) {
		a, _ := newStores(t)
		testReset(t, a)
	})
	t.Run("ResetToStoredMax", func(t *testing.T) {
		testResetToStoredMax(t, newStores)
	})
	t.Run("AllocateAndAppendConcurrent", func(t *testing.T) {
		testAllocateAndAppendConcurrent(t, newStores)
	})
}

func mustAllocate(t *testing.T, a server.SeqAllocator, counts map[string]int64) map[string]int64 {
	t.Helper()
	firsts, err := a.Allocate(t.Context(), counts)
	if err != nil {
		t.Fatalf("Allocate(%v): %v", counts, err)
	}
	return firsts
}

func testAllocateContiguous(t *testing.T, a server.SeqAllocator) {
	c1, c2 := groupChat(), groupChat()
	steps := []struct {
		name   string
		counts map[string]int64
		want   map[string]int64
	}{
		{name: "first run of a new conversation", counts: map[string]int64{c1: 3}, want: map[string]int64{c1: 1}},
		{name: "next run follows", counts: map[string]int64{c1: 2}, want: map[string]int64{c1: 4}},
		{name: "two conversations in one call", counts: map[string]int64{c1: 1, c2: 5}, want: map[string]int64{c1: 6, c2: 1}},
		{name: "second conversation continues", counts: map[string]int64{c2: 1}, want: map[string]int64{c2: 6}},
	}
	for _, step := range steps {
		got := mustAllocate(t, a, step.counts)
		for conv, want := range step.want {
			if got[conv] != want {
				t.Errorf("%s: first seq of %s: got %d, want %d", step.name, conv, got[conv], want)
			}
		}
	}
}

// seqRun is a run of seqs [first, first+count) handed out by one call.
type seqRun struct {
	first, count int64
}

// checkRunsTile fails unless the runs cover 1..total exactly once.
func checkRunsTile(t *testing.T, runs []seqRun, total int64) {
	t.Helper()
	slices.SortFunc(runs, func(x, y seqRun) int { return cmp.Compare(x.first, y.first) })
	next := int64(1)
	for _, r := range runs {
		switch {
		case r.first < next:
			t.Errorf("run %d..%d overlaps seqs handed out before %d", r.first, r.first+r.count-1, next)
		case r.first > next:
			t.Errorf("seqs %d..%d were never handed out", next, r.first-1)
		}
		next = max(next, r.first+r.count)
	}
	if next != total+1 {
		t.Errorf("runs end at seq %d, want %d for %d allocated seqs", next-1, total, total)
	}
}

func testAllocateConcurrent(t *testing.T, a server.SeqAllocator) {
	const goroutines, rounds = 50, 20
	conv, other := groupChat(), groupChat()
	var (
		mu    sync.Mutex
		runs  []seqRun
		total int64
		wg    sync.WaitGroup
	)
	for g := range goroutines {
		wg.Go(func() {
			for r := range rounds {
				count := int64(1 + (g+r)%4)
				firsts, err := a.Allocate(t.Context(), map[string]int64{conv: count, other: 1})
				if err != nil {
					t.Errorf("Allocate: %v", err)
					return
				}
				mu.Lock()
				runs = append(runs, seqRun{first: firsts[conv], count: count})
				total += count
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	checkRunsTile(t, runs, total)
	if got := mustAllocate(t, a, map[string]int64{other: 1})[other]; got != goroutines*rounds+1 {
		t.Errorf("next seq of the conversation allocated once per call: got %d, want %d", got, goroutines*rounds+1)
	}
}

func testReset(t *testing.T, a server.SeqAllocator) {
	conv, bystander := groupChat(), groupChat()
	mustAllocate(t, a, map[string]int64{conv: 5, bystander: 3})

	steps := []struct {
		name  string
		reset int64
		want  int64
	}{
		{name: "reset below the counter", reset: 2, want: 3},
		{name: "reset above the counter", reset: 10, want: 11},
		{name: "reset to zero", reset: 0, want: 1},
	}
	for _, step := range steps {
		if err := a.Reset(t.Context(), conv, step.reset); err != nil {
			t.Fatalf("%s: Reset(%d): %v", step.name, step.reset, err)
		}
		if got := mustAllocate(t, a, map[string]int64{conv: 2})[conv]; got != step.want {
			t.Errorf("%s: first seq after Reset(%d): got %d, want %d", step.name, step.reset, got, step.want)
		}
	}
	if got := mustAllocate(t, a, map[string]int64{bystander: 1})[bystander]; got != 4 {
		t.Errorf("first seq of a conversation that was not reset: got %d, want 4", got)
	}
}

// testResetToStoredMax repairs a counter the way the core does after a gap:
// the allocation was lost, and Reset to the stored max seq makes the next
// append fit.
func testResetToStoredMax(t *testing.T, newStores func(t *testing.T) (server.SeqAllocator, server.MessageStore)) {
	a, s := newStores(t)
	conv := groupChat()
	sender := uniqueID("user")

	first := mustAllocate(t, a, map[string]int64{conv: 3})[conv]
	mustAppend(t, s, conv, newMessages(conv, sender, first, 3))
	mustAllocate(t, a, map[string]int64{conv: 4}) // lost: never stored

	next := mustAllocate(t, a, map[string]int64{conv: 2})[conv]
	results, err := s.AppendMessages(t.Context(), []server.Append{{ConversationID: conv, Messages: newMessages(conv, sender, next, 2)}})
	if err != nil {
		t.Fatalf("AppendMessages: %v", err)
	}
	if !errors.Is(results[0], server.ErrSeqGap) {
		t.Fatalf("append at seq %d after max seq 3: got %v, want %v", next, results[0], server.ErrSeqGap)
	}

	maxSeqs, err := s.MaxSeqs(t.Context(), []string{conv})
	if err != nil {
		t.Fatalf("MaxSeqs: %v", err)
	}
	if err := a.Reset(t.Context(), conv, maxSeqs[conv]); err != nil {
		t.Fatalf("Reset(%d): %v", maxSeqs[conv], err)
	}
	next = mustAllocate(t, a, map[string]int64{conv: 2})[conv]
	if next != 4 {
		t.Fatalf("first seq after Reset to the stored max seq 3: got %d, want 4", next)
	}
	mustAppend(t, s, conv, newMessages(conv, sender, next, 2))
	checkMaxSeq(t, s, conv, 5)
}

// testAllocateAndAppendConcurrent has many goroutines allocate runs of one
// conversation and append them. Appends may reach the store out of
// allocation order. A run whose predecessor is not stored yet gets ErrSeqGap,
// and it is retried until the predecessor is stored.
func testAllocateAndAppendConcurrent(t *testing.T, newStores func(t *testing.T) (server.SeqAllocator, server.MessageStore)) {
	const goroutines, rounds = 50, 4
	a, s := newStores(t)
	conv := groupChat()
	deadline := time.Now().Add(30 * time.Second)

	var (
		mu   sync.Mutex
		sent []*imlitev1.Message
		runs []seqRun
		wg   sync.WaitGroup
	)
	for g := range goroutines {
		sender := uniqueID("user")
		wg.Go(func() {
			for r := range rounds {
				count := int64(1 + (g*rounds+r)%5)
				firsts, err := a.Allocate(t.Context(), map[string]int64{conv: count})
				if err != nil {
					t.Errorf("Allocate: %v", err)
					return
				}
				msgs := newMessages(conv, sender, firsts[conv], int(count))
				if err := appendWhenContiguous(t, s, conv, msgs, deadline); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				sent = append(sent, msgs...)
				runs = append(runs, seqRun{first: firsts[conv], count: count})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	total := int64(len(sent))
	checkRunsTile(t, runs, total)
	checkMaxSeq(t, s, conv, total)
	slices.SortFunc(sent, func(x, y *imlitev1.Message) int { return cmp.Compare(x.GetSeq(), y.GetSeq()) })
	checkMessages(t, "messages appended concurrently", rangeAll(t, s, conv), sent)
}

// appendWhenContiguous appends msgs, retrying while the store reports a gap
// because an earlier run is still on its way.
func appendWhenContiguous(t *testing.T, s server.MessageStore, conv string, msgs []*imlitev1.Message, deadline time.Time) error {
	delay := time.Millisecond
	for {
		results, err := s.AppendMessages(t.Context(), []server.Append{{ConversationID: conv, Messages: msgs}})
		if err != nil {
			return err
		}
		switch {
		case results[0] == nil:
			return nil
		case !errors.Is(results[0], server.ErrSeqGap):
			return fmt.Errorf("append of seqs %s: got %w, want it stored or a gap", fmtSeqs(msgs), results[0])
		case time.Now().After(deadline):
			return fmt.Errorf("append of seqs %s still reports a gap at the deadline; an earlier run was never stored", fmtSeqs(msgs))
		}
		time.Sleep(delay)
		delay = min(2*delay, 20*time.Millisecond)
	}
}

func fmtSeqs(msgs []*imlitev1.Message) string {
	seqs := seqsOf(msgs)
	if len(seqs) == 0 {
		return "none"
	}
	return fmt.Sprintf("%d..%d", seqs[0], seqs[len(seqs)-1])
}
