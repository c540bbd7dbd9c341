package mongostore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
)

// maxOrBranches bounds the $or branches of one query, so that a large batch
// becomes several queries of moderate size. Tests lower it to run the
// chunking on few documents.
var maxOrBranches = 1000

// maxParallelCalls bounds the calls that one method runs at once, such as
// the per-conversation queries of MaxSeqs.
const maxParallelCalls = 8

// FindByClientMsgIDs returns the stored messages with the given keys; keys
// not stored are absent from the map.
func (s *Store) FindByClientMsgIDs(ctx context.Context, keys []server.ClientMsgKey) (map[server.ClientMsgKey]*imlitev1.Message, error) {
	const op = "find messages by client_msg_id"
	branches := make([]bson.D, len(keys))
	for i, k := range keys {
		branches[i] = clientKeyFilter(k)
	}
	found := make(map[server.ClientMsgKey]*imlitev1.Message, len(keys))
	err := s.findOr(ctx, s.messages, branches, nil, func(cur *mongo.Cursor) error {
		m, err := decodeMessage(cur)
		if err != nil {
			return err
		}
		found[server.ClientMsgKey{SenderID: m.GetSenderId(), ClientMsgID: m.GetClientMsgId()}] = m
		return nil
	})
	if err != nil {
		return nil, wrap(op, err)
	}
	return found, nil
}

func clientKeyFilter(k server.ClientMsgKey) bson.D {
	return bson.D{{Key: "sender_id", Value: k.SenderID}, {Key: "client_msg_id", Value: k.ClientMsgID}}
}

// findOr runs find with {$or: branches} in chunks of maxOrBranches and calls
// fn for each document. projection may be nil for whole documents.
func (s *Store) findOr(ctx context.Context, coll *mongo.Collection, branches []bson.D, projection bson.D, fn func(*mongo.Cursor) error) error {
	for chunk := range slices.Chunk(branches, maxOrBranches) {
		opts := options.Find()
		if projection != nil {
			opts.SetProjection(projection)
		}
		err := s.find(ctx, coll, bson.D{{Key: "$or", Value: chunk}}, opts, fn)
		if err != nil {
			return err
		}
	}
	return nil
}

// find runs one query under the store's timeout and calls fn for each
// document.
func (s *Store) find(ctx context.Context, coll *mongo.Collection, filter bson.D, opts *options.FindOptionsBuilder, fn func(*mongo.Cursor) error) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	cur, err := coll.Find(ctx, filter, opts)
	if err != nil {
		return err
	}
	// Close kills a cursor that still has batches on the server. With ctx
	// expired the kill fails, and the server times the cursor out instead.
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		if err := fn(cur); err != nil {
			return err
		}
	}
	return cur.Err()
}

// MaxSeqs returns the max stored seq of each conversation; a conversation
// without messages maps to 0. It reads the highest seq of each conversation
// from the messages collection through the (conversation_id, seq) index,
// with up to maxParallelCalls queries at once.
func (s *Store) MaxSeqs(ctx context.Context, conversationIDs []string) (map[string]int64, error) {
	const op = "load max seqs"
	ids := slices.Compact(slices.Sorted(slices.Values(conversationIDs)))
	seqs := make([]int64, len(ids))
	err := forEachParallel(ctx, len(ids), func(ctx context.Context, i int) error {
		seq, err := s.maxSeq(ctx, ids[i])
		seqs[i] = seq
		return err
	})
	if err != nil {
		return nil, wrap(op, err)
	}
	out := make(map[string]int64, len(ids))
	for i, id := range ids {
		out[id] = seqs[i]
	}
	return out, nil
}

func (s *Store) maxSeq(ctx context.Context, conversationID string) (int64, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	opts := options.FindOne().
		SetSort(bson.D{{Key: "seq", Value: -1}}).
		SetProjection(bson.D{{Key: "seq", Value: 1}, {Key: "_id", Value: 0}})
	var doc struct {
		Seq int64 `bson:"seq"`
	}
	err := s.messages.FindOne(ctx, bson.D{{Key: "conversation_id", Value: conversationID}}, opts).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("conversation %s: %w", conversationID, err)
	}
	return doc.Seq, nil
}

// forEachParallel calls fn(ctx, i) for i from 0 to n-1, at most
// maxParallelCalls at a time. It returns the first error and cancels the
// context of the calls still running.
func forEachParallel(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, maxParallelCalls)
	var wg sync.WaitGroup
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(ctx, i); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// RangeMessages returns up to limit messages with begin <= seq <= end,
// ascending by seq. A limit of zero or less returns none.
func (s *Store) RangeMessages(ctx context.Context, conversationID string, begin, end int64, limit int) ([]*imlitev1.Message, error) {
	const op = "range messages"
	begin = max(begin, 1)
	if limit <= 0 || end < begin {
		return nil, nil
	}
	filter := bson.D{
		{Key: "conversation_id", Value: conversationID},
		{Key: "seq", Value: bson.D{{Key: "$gte", Value: begin}, {Key: "$lte", Value: end}}},
	}
	opts := options.Find().SetSort(bson.D{{Key: "seq", Value: 1}}).SetLimit(int64(limit))
	out, err := s.findMessages(ctx, filter, opts)
	if err != nil {
		return nil, wrap(fmt.Sprintf("%s %d..%d of %s", op, begin, end, conversationID), err)
	}
	return out, nil
}

// MessagesBySeqs returns the stored messages with the given seqs, ascending
// by seq. A seq listed twice is returned once.
func (s *Store) MessagesBySeqs(ctx context.Context, conversationID string, seqs []int64) ([]*imlitev1.Message, error) {
	const op = "load messages by seq"
	sorted := slices.Compact(slices.Sorted(slices.Values(seqs)))
	sorted = slices.DeleteFunc(sorted, func(seq int64) bool { return seq < 1 })
	if len(sorted) == 0 {
		return nil, nil
	}
	filter := bson.D{
		{Key: "conversation_id", Value: conversationID},
		{Key: "seq", Value: bson.D{{Key: "$in", Value: sorted}}},
	}
	out, err := s.findMessages(ctx, filter, options.Find().SetSort(bson.D{{Key: "seq", Value: 1}}))
	if err != nil {
		return nil, wrap(fmt.Sprintf("%s of %s", op, conversationID), err)
	}
	return out, nil
}

func (s *Store) findMessages(ctx context.Context, filter bson.D, opts *options.FindOptionsBuilder) ([]*imlitev1.Message, error) {
	var out []*imlitev1.Message
	err := s.find(ctx, s.messages, filter, opts, func(cur *mongo.Cursor) error {
		m, err := decodeMessage(cur)
		if err != nil {
			return err
		}
		out = append(out, m)
		return nil
	})
	return out, err
}
