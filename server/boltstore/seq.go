package boltstore

import (
	"context"
	"fmt"
)

// Allocate reserves counts[c] consecutive seqs for each conversation c and
// returns the first of each. A count of zero reserves nothing and returns the
// next seq, and a negative count fails the call.
//
// The counters live in memory, which is enough in embedded mode. Only one
// process can open the data file, so no other allocator hands out seqs for
// the same conversations. After a restart a counter is seeded from the stored
// max seq on first use, so a seq stored before the restart is never handed
// out again. Seqs allocated but not stored before a crash are simply reused.
// A counter that is ahead of the store because an append failed makes the
// next append report server.ErrSeqGap, and the core then calls Reset.
func (s *Store) Allocate(ctx context.Context, counts map[string]int64) (map[string]int64, error) {
	const op = "allocate seqs"
	for conv, n := range counts {
		if n < 0 {
			return nil, fmt.Errorf("%s: count %d for conversation %s is negative", op, n, conv)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}

	s.seqMu.Lock()
	var unseeded []string
	for conv := range counts {
		if _, ok := s.seqs[conv]; !ok {
			unseeded = append(unseeded, conv)
		}
	}
	s.seqMu.Unlock()

	// The store is read without the lock, so allocation for seeded
	// conversations does not wait for disk.
	var stored map[string]int64
	if len(unseeded) > 0 {
		var err error
		if stored, err = s.MaxSeqs(ctx, unseeded); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}

	s.seqMu.Lock()
	defer s.seqMu.Unlock()
	// Another call may have seeded or reset a counter meanwhile, and its
	// value is at least as recent as the one read here.
	for conv, maxSeq := range stored {
		if _, ok := s.seqs[conv]; !ok {
			s.seqs[conv] = maxSeq
		}
	}
	firsts := make(map[string]int64, len(counts))
	for conv, n := range counts {
		firsts[conv] = s.seqs[conv] + 1
		s.seqs[conv] += n
	}
	return firsts, nil
}

// Reset sets the conversation's counter to storedMax, so the next seq handed
// out is storedMax + 1.
func (s *Store) Reset(ctx context.Context, conversationID string, storedMax int64) error {
	const op = "reset seq counter"
	if storedMax < 0 {
		return fmt.Errorf("%s of conversation %s: stored max seq %d is negative", op, conversationID, storedMax)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	s.seqMu.Lock()
	s.seqs[conversationID] = storedMax
	s.seqMu.Unlock()
	return nil
}
