package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// allocateScript adds ARGV[1] to the counter KEYS[1] and returns the new
// value, or nil when the counter does not exist, so that a missing counter
// is seeded from the message store instead of starting at 0.
var allocateScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
	return false
end
return redis.call('INCRBY', KEYS[1], ARGV[1])
`)

// seedScript creates the counter KEYS[1] with the stored max seq ARGV[1]
// unless another allocator created it meanwhile, then adds ARGV[2] and
// returns the new value.
var seedScript = redis.NewScript(`
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('INCRBY', KEYS[1], ARGV[2])
`)

// Allocate reserves counts[c] consecutive seqs for each conversation c and
// returns the first of each. A count of zero reserves nothing and returns
// the next seq, and a negative count fails the call.
//
// All counters are incremented in one pipelined round trip. A counter that
// does not exist (a new conversation, or a flushed or replaced Redis) is
// seeded with the stored max seq from Config.MaxSeqs and incremented in a
// second round trip. So a seq that the message store holds is never handed
// out again, and a new conversation starts at 1.
//
// Seqs that were handed out but not yet stored when Redis lost its data
// can be handed out a second time. The message store rejects the second
// append with server.ErrSeqTaken, and the core then calls Reset. Failures
// to reach Redis wrap server.ErrUnavailable, and seqs reserved by a failed
// call may be skipped, which the core repairs after server.ErrSeqGap.
func (s *Store) Allocate(ctx context.Context, counts map[string]int64) (map[string]int64, error) {
	const op = "allocate seqs"
	if err := checkCounts(counts); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	firsts := make(map[string]int64, len(counts))
	if len(counts) == 0 {
		return firsts, nil
	}

	// 1. Increment the existing counters.
	missing, err := s.incrementCounters(ctx, counts, firsts)
	if err != nil {
		return nil, wrapErr(op, err)
	}
	if len(missing) == 0 {
		return firsts, nil
	}

	// 2. Read the stored max seq of the conversations without a counter.
	stored, err := s.maxSeqs(ctx, missing)
	if err != nil {
		return nil, wrapErr(op, fmt.Errorf("load stored max seqs: %w", err))
	}

	// 3. Seed those counters and increment them.
	if err := s.seedCounters(ctx, missing, stored, counts, firsts); err != nil {
		return nil, wrapErr(op, err)
	}
	return firsts, nil
}

func checkCounts(counts map[string]int64) error {
	for conv, n := range counts {
		if conv == "" {
			return errors.New("conversation id is empty")
		}
		if n < 0 {
			return fmt.Errorf("count %d for conversation %s is negative", n, conv)
		}
	}
	return nil
}

// incrementCounters runs allocateScript for every conversation, records the
// first seq of those with a counter in firsts and returns the others.
func (s *Store) incrementCounters(ctx context.Context, counts, firsts map[string]int64) (missing []string, err error) {
	convs := make([]string, 0, len(counts))
	calls := make([]scriptCall, 0, len(counts))
	for conv, n := range counts {
		convs = append(convs, conv)
		calls = append(calls, scriptCall{script: allocateScript, keys: []string{s.seqKey(conv)}, args: []any{n}})
	}
	for i, cmd := range s.runScripts(ctx, calls) {
		conv := convs[i]
		last, err := cmd.Int64()
		switch {
		case errors.Is(err, redis.Nil):
			missing = append(missing, conv)
		case err != nil:
			return nil, fmt.Errorf("increment seq counter of %s: %w", conv, err)
		default:
			firsts[conv] = last - counts[conv] + 1
		}
	}
	return missing, nil
}

// seedCounters runs seedScript for the conversations in convs and records
// their first seqs in firsts.
func (s *Store) seedCounters(ctx context.Context, convs []string, stored, counts, firsts map[string]int64) error {
	calls := make([]scriptCall, len(convs))
	for i, conv := range convs {
		maxSeq := stored[conv]
		if maxSeq < 0 {
			return fmt.Errorf("stored max seq %d of conversation %s is negative", maxSeq, conv)
		}
		calls[i] = scriptCall{script: seedScript, keys: []string{s.seqKey(conv)}, args: []any{maxSeq, counts[conv]}}
	}
	for i, cmd := range s.runScripts(ctx, calls) {
		last, err := cmd.Int64()
		if err != nil {
			return fmt.Errorf("seed seq counter of %s: %w", convs[i], err)
		}
		firsts[convs[i]] = last - counts[convs[i]] + 1
	}
	return nil
}

// Reset sets the conversation's counter to storedMax, so the next seq handed
// out is storedMax + 1. Failures to reach Redis wrap server.ErrUnavailable.
func (s *Store) Reset(ctx context.Context, conversationID string, storedMax int64) error {
	const op = "reset seq counter"
	if conversationID == "" {
		return fmt.Errorf("%s: conversation id is empty", op)
	}
	if storedMax < 0 {
		return fmt.Errorf("%s of conversation %s: stored max seq %d is negative", op, conversationID, storedMax)
	}
	err := s.client.Set(ctx, s.seqKey(conversationID), strconv.FormatInt(storedMax, 10), 0).Err()
	if err != nil {
		return wrapErr(fmt.Sprintf("%s of conversation %s", op, conversationID), err)
	}
	return nil
}
