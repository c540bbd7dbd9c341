package server

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"

	busv1 "github.com/imlite/imlite/gen/imlite/bus/v1"
	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
)

// Retry pacing of the store stage while a backend is failing.
const (
	minRetryDelay = 50 * time.Millisecond
	maxRetryDelay = 2 * time.Second
	// maxSeqRepairs bounds the seq resets of one conversation in one batch.
	// Each reset follows a concurrent writer or a moved counter; running out
	// means something keeps moving the counter, and the batch is retried.
	maxSeqRepairs = 8
)

// handleMsgs is the store stage. For a batch of msg records it
//  1. completes retries of sends stored earlier (duplicates),
//  2. allocates seqs per conversation and stores the rest,
//  3. repairs the seq counter when the store reports a gap or a taken seq,
//  4. publishes a push record per stored message and per duplicate.
//
// It returns nil only after step 4 succeeded, so the consumer acknowledges
// the batch only when every message is stored and its push is published.
// Backend failures are retried with backoff until ctx ends.
func (s *Service) handleMsgs(ctx context.Context, recs []*busv1.MsgRecord) error {
	b := newStoreBatch(ctx, s, recs)
	defer b.endSpans(ctx.Err())
	var delay time.Duration
	for {
		err := b.storePending(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		delay = nextDelay(delay)
		s.log.Warn("store stage: batch not stored, retrying", "err", err, "pending", b.pendingCount(), "retry_in", delay)
		if err := sleepCtx(ctx, delay); err != nil {
			return err
		}
	}

	pushes := b.pushes()
	delay = 0
	for {
		err := s.b.PushProducer.PublishPush(ctx, pushes)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		delay = nextDelay(delay)
		s.log.Warn("store stage: push publish failed, retrying", "err", err, "records", len(pushes), "retry_in", delay)
		if err := sleepCtx(ctx, delay); err != nil {
			return err
		}
	}
}

// storeBatch tracks one batch of the store stage through its retries.
type storeBatch struct {
	s *Service
	// pending holds the messages to store, grouped by conversation in the
	// order of their first appearance; each group keeps topic order.
	pending map[string][]*busv1.MsgRecord
	order   []string
	// stored and duplicates collect results in the order they became final.
	stored     []storedMsg
	duplicates []*busv1.Duplicate
	failures   []*busv1.Failure
	// inBatchDups repeat the key of an earlier record of the same batch
	// (firstByKey) with another server_msg_id.
	inBatchDups []*busv1.MsgRecord
	firstByKey  map[ClientMsgKey]*busv1.MsgRecord
	// resolved skips the duplicate lookup on later attempts of the same batch.
	resolved bool
	repairs  map[string]int
	// spans are the imlite.store spans by server_msg_id, ended when the
	// push records are built or when the batch is abandoned.
	spans map[string]trace.Span
}

type storedMsg struct {
	rec      *busv1.MsgRecord
	storedAt time.Time
}

func newStoreBatch(ctx context.Context, s *Service, recs []*busv1.MsgRecord) *storeBatch {
	b := &storeBatch{s: s, pending: make(map[string][]*busv1.MsgRecord), repairs: make(map[string]int), spans: make(map[string]trace.Span, len(recs))}
	for _, rec := range recs {
		_, span := s.tracer.Start(extractTrace(ctx, rec.GetTrace()), spanStore, trace.WithSpanKind(trace.SpanKindConsumer))
		setMessageAttributes(span, rec.GetMsg())
		b.spans[rec.GetMsg().GetServerMsgId()] = span
	}
	firstByKey := make(map[ClientMsgKey]*busv1.MsgRecord, len(recs))
	var inBatchDups []*busv1.MsgRecord
	for _, rec := range recs {
		m := rec.GetMsg()
		if m.GetConversationId() == "" || m.GetServerMsgId() == "" || m.GetSenderId() == "" {
			b.failures = append(b.failures, &busv1.Failure{
				ServerMsgId: m.GetServerMsgId(), OriginPod: rec.GetOriginPod(),
				Code: int32(codes.Internal), Message: "malformed msg record: conversation, server_msg_id or sender missing",
			})
			s.log.Error("store stage: dropping malformed msg record", "server_msg_id", m.GetServerMsgId())
			continue
		}
		key := ClientMsgKey{SenderID: m.GetSenderId(), ClientMsgID: m.GetClientMsgId()}
		if first, ok := firstByKey[key]; ok {
			if first.GetMsg().GetServerMsgId() != m.GetServerMsgId() {
				inBatchDups = append(inBatchDups, rec)
			}
			continue
		}
		firstByKey[key] = rec
		conv := m.GetConversationId()
		if _, ok := b.pending[conv]; !ok {
			b.order = append(b.order, conv)
		}
		b.pending[conv] = append(b.pending[conv], rec)
	}
	// A key sent twice in one batch: the second send is completed with the
	// first one's result once that is stored.
	if len(inBatchDups) > 0 {
		b.inBatchDups = inBatchDups
		b.firstByKey = firstByKey
	}
	return b
}

func (b *storeBatch) pendingCount() int {
	n := 0
	for _, recs := range b.pending {
		n += len(recs)
	}
	return n
}

// storePending stores what is still pending. It returns an error when a
// backend call failed; what was stored stays recorded, so a retry continues.
func (b *storeBatch) storePending(ctx context.Context) error {
	if !b.resolved {
		if err := b.resolveStored(ctx, b.order); err != nil {
			return err
		}
		b.resolved = true
	}
	for b.pendingCount() > 0 {
		counts := make(map[string]int64, len(b.pending))
		for conv, recs := range b.pending {
			counts[conv] = int64(len(recs))
		}
		firsts, err := b.s.b.Seqs.Allocate(ctx, counts)
		if err != nil {
			return err
		}
		convs, appends := b.buildAppends(firsts)
		results, err := b.s.b.Messages.AppendMessages(ctx, appends)
		if err != nil {
			// Some appends may have been stored before the failure; the
			// next attempt finds them as duplicates of themselves.
			b.resolved = false
			return err
		}
		now := time.Now()
		var recheck []string
		for i, conv := range convs {
			switch err := results[i]; {
			case err == nil:
				for _, rec := range b.pending[conv] {
					b.stored = append(b.stored, storedMsg{rec: rec, storedAt: now})
					b.s.obs.Stored(rec.GetMsg(), now)
				}
				delete(b.pending, conv)
			case errors.Is(err, ErrSeqGap), errors.Is(err, ErrSeqTaken):
				if err := b.repairSeq(ctx, conv, err); err != nil {
					return err
				}
			case errors.Is(err, ErrDuplicateMsg):
				recheck = append(recheck, conv)
			default:
				return err
			}
		}
		if len(recheck) > 0 {
			if err := b.resolveStored(ctx, recheck); err != nil {
				return err
			}
		}
	}
	return nil
}

// buildAppends assigns seqs from firsts to the pending messages.
func (b *storeBatch) buildAppends(firsts map[string]int64) ([]string, []Append) {
	convs := make([]string, 0, len(b.pending))
	appends := make([]Append, 0, len(b.pending))
	for _, conv := range b.order {
		recs, ok := b.pending[conv]
		if !ok {
			continue
		}
		first := firsts[conv]
		msgs := make([]*imlitev1.Message, len(recs))
		for i, rec := range recs {
			rec.GetMsg().Seq = first + int64(i)
			msgs[i] = rec.GetMsg()
		}
		convs = append(convs, conv)
		appends = append(appends, Append{ConversationID: conv, Messages: msgs})
	}
	return convs, appends
}

// repairSeq resets a conversation's counter to the stored max seq after the
// store reported a gap (allocated seqs that were never stored) or a taken
// seq (a counter behind the store, for example after a Redis flush).
func (b *storeBatch) repairSeq(ctx context.Context, conv string, cause error) error {
	b.repairs[conv]++
	if b.repairs[conv] > maxSeqRepairs {
		b.repairs[conv] = 0
		return errors.New("seq counter of " + conv + " keeps moving: " + cause.Error())
	}
	maxSeqs, err := b.s.b.Messages.MaxSeqs(ctx, []string{conv})
	if err != nil {
		return err
	}
	b.s.log.Info("store stage: resetting seq counter", "conversation_id", conv, "stored_max_seq", maxSeqs[conv], "cause", cause)
	return b.s.b.Seqs.Reset(ctx, conv, maxSeqs[conv])
}

// resolveStored looks up which pending messages of the conversations are
// stored already. One with the same server_msg_id was stored by an earlier
// attempt (its push may be missing, so it is pushed again); one with another
// server_msg_id is a retried send, completed as a duplicate.
func (b *storeBatch) resolveStored(ctx context.Context, convs []string) error {
	var keys []ClientMsgKey
	for _, conv := range convs {
		for _, rec := range b.pending[conv] {
			m := rec.GetMsg()
			keys = append(keys, ClientMsgKey{SenderID: m.GetSenderId(), ClientMsgID: m.GetClientMsgId()})
		}
	}
	if len(keys) == 0 {
		return nil
	}
	found, err := b.s.b.Messages.FindByClientMsgIDs(ctx, keys)
	if err != nil {
		return err
	}
	if err := b.reapplyEffects(ctx, convs, found); err != nil {
		return err
	}
	for _, conv := range convs {
		kept := b.pending[conv][:0]
		for _, rec := range b.pending[conv] {
			m := rec.GetMsg()
			stored, ok := found[ClientMsgKey{SenderID: m.GetSenderId(), ClientMsgID: m.GetClientMsgId()}]
			switch {
			case !ok:
				kept = append(kept, rec)
			case stored.GetServerMsgId() == m.GetServerMsgId():
				b.stored = append(b.stored, storedMsg{rec: &busv1.MsgRecord{Msg: stored, OriginPod: rec.GetOriginPod(), OriginConn: rec.GetOriginConn()}, storedAt: time.Now()})
			default:
				b.duplicates = append(b.duplicates, &busv1.Duplicate{RequestMsgId: m.GetServerMsgId(), Stored: stored, OriginPod: rec.GetOriginPod()})
			}
		}
		if len(kept) == 0 {
			delete(b.pending, conv)
		} else {
			b.pending[conv] = kept
		}
	}
	return nil
}

// reapplyEffects hands the messages that an earlier attempt stored to a
// store that implements AppendEffectsReapplier, because that attempt may
// have failed after storing them and before raising max seq and the
// senders' read seqs. It runs before resolveStored changes the batch, so a
// failure leaves the batch as it was for the retry.
func (b *storeBatch) reapplyEffects(ctx context.Context, convs []string, found map[ClientMsgKey]*imlitev1.Message) error {
	r, ok := b.s.b.Messages.(AppendEffectsReapplier)
	if !ok {
		return nil
	}
	var appends []Append
	for _, conv := range convs {
		var msgs []*imlitev1.Message
		for _, rec := range b.pending[conv] {
			m := rec.GetMsg()
			stored, ok := found[ClientMsgKey{SenderID: m.GetSenderId(), ClientMsgID: m.GetClientMsgId()}]
			if ok && stored.GetServerMsgId() == m.GetServerMsgId() {
				msgs = append(msgs, stored)
			}
		}
		if len(msgs) > 0 {
			slices.SortFunc(msgs, func(x, y *imlitev1.Message) int { return cmp.Compare(x.GetSeq(), y.GetSeq()) })
			appends = append(appends, Append{ConversationID: conv, Messages: msgs})
		}
	}
	if len(appends) == 0 {
		return nil
	}
	return r.ReapplyAppendEffects(ctx, appends)
}

// pushes returns the push records of the finished batch: deliveries in seq
// order per conversation, then the results of duplicates and failures.
func (b *storeBatch) pushes() []KeyedPush {
	out := make([]KeyedPush, 0, len(b.stored)+len(b.duplicates)+len(b.inBatchDups)+len(b.failures))

	convIndex := make(map[string]int)
	for _, sm := range b.stored {
		conv := sm.rec.GetMsg().GetConversationId()
		if _, ok := convIndex[conv]; !ok {
			convIndex[conv] = len(convIndex)
		}
	}
	slices.SortStableFunc(b.stored, func(x, y storedMsg) int {
		mx, my := x.rec.GetMsg(), y.rec.GetMsg()
		if c := convIndex[mx.GetConversationId()] - convIndex[my.GetConversationId()]; c != 0 {
			return c
		}
		return cmp.Compare(mx.GetSeq(), my.GetSeq())
	})
	result := make(map[ClientMsgKey]*imlitev1.Message, len(b.stored)+len(b.duplicates))
	for _, sm := range b.stored {
		m := sm.rec.GetMsg()
		result[ClientMsgKey{SenderID: m.GetSenderId(), ClientMsgID: m.GetClientMsgId()}] = m
		out = append(out, KeyedPush{Key: m.GetConversationId(), Record: &busv1.PushRecord{Event: &busv1.PushRecord_Delivery{Delivery: &busv1.Delivery{
			Msg: m, OriginPod: sm.rec.GetOriginPod(), OriginConn: sm.rec.GetOriginConn(), StoredAtMicros: sm.storedAt.UnixMicro(),
		}}, Trace: b.endSpan(m.GetServerMsgId(), attribute.Int64("imlite.seq", m.GetSeq()))}})
	}
	for _, d := range b.duplicates {
		b.endSpan(d.GetRequestMsgId(), attribute.Bool("imlite.duplicate", true))
		m := d.GetStored()
		result[ClientMsgKey{SenderID: m.GetSenderId(), ClientMsgID: m.GetClientMsgId()}] = m
		out = append(out, KeyedPush{Key: m.GetConversationId(), Record: &busv1.PushRecord{Event: &busv1.PushRecord_Duplicate{Duplicate: d}}})
	}
	for _, rec := range b.inBatchDups {
		m := rec.GetMsg()
		stored, ok := result[ClientMsgKey{SenderID: m.GetSenderId(), ClientMsgID: m.GetClientMsgId()}]
		if !ok {
			continue
		}
		b.endSpan(m.GetServerMsgId(), attribute.Bool("imlite.duplicate", true))
		out = append(out, KeyedPush{Key: m.GetConversationId(), Record: &busv1.PushRecord{Event: &busv1.PushRecord_Duplicate{Duplicate: &busv1.Duplicate{
			RequestMsgId: m.GetServerMsgId(), Stored: stored, OriginPod: rec.GetOriginPod(),
		}}}})
	}
	for _, f := range b.failures {
		out = append(out, KeyedPush{Key: f.GetServerMsgId(), Record: &busv1.PushRecord{Event: &busv1.PushRecord_Failure{Failure: f}}})
	}
	return out
}

// endSpan ends the store span of a message and returns its trace context
// for the push record, so the push stage's span is its child.
func (b *storeBatch) endSpan(serverMsgID string, attrs ...attribute.KeyValue) map[string]string {
	span, ok := b.spans[serverMsgID]
	if !ok {
		return nil
	}
	delete(b.spans, serverMsgID)
	span.SetAttributes(attrs...)
	span.End()
	return injectTrace(trace.ContextWithSpan(context.Background(), span))
}

// endSpans ends the spans left when the batch is abandoned or its records
// were malformed.
func (b *storeBatch) endSpans(cause error) {
	if cause == nil {
		cause = errors.New("message not stored")
	}
	for id, span := range b.spans {
		endSpan(span, cause)
		delete(b.spans, id)
	}
}

func nextDelay(d time.Duration) time.Duration {
	if d == 0 {
		return minRetryDelay
	}
	return min(2*d, maxRetryDelay)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
