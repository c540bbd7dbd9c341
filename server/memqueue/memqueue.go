// Package memqueue provides the in-process msg and push topics of embedded
// mode. They keep the contract of the Kafka topics: records with the same
// key stay in order, the msg topic is consumed in batches by a fixed set of
// workers, and every push consumer sees every push record published after
// it subscribed.
//
// Records live in memory only. A record still queued when the process
// stops is lost; its sender was not yet answered, so no acknowledged
// message is lost. Drain lets a graceful shutdown wait for the queues to
// empty first.
package memqueue

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	busv1 "github.com/imlite/imlite/gen/imlite/bus/v1"
	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/apierr"
)

// Options size the queues. Zero fields take the defaults.
type Options struct {
	// Partitions is the number of push partitions, each served by one
	// worker. Default 8.
	Partitions int
	// MsgPartitions is the number of msg partitions, each served by one
	// store stage worker. Default Partitions.
	MsgPartitions int
	// Capacity is the number of records each partition buffers. Default 4096.
	Capacity int
	// MaxBatch bounds the records handed to one handler call. Default 512.
	MaxBatch int
	// PublishWait bounds how long a publish waits for room in a full
	// partition before it fails with ResourceExhausted. Default 1s.
	PublishWait time.Duration
}

func (o Options) withDefaults() Options {
	if o.Partitions <= 0 {
		o.Partitions = 8
	}
	if o.MsgPartitions <= 0 {
		o.MsgPartitions = o.Partitions
	}
	if o.Capacity <= 0 {
		o.Capacity = 4096
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 512
	}
	if o.PublishWait <= 0 {
		o.PublishWait = time.Second
	}
	return o
}

// ErrClosed is returned by PublishMsg after Close.
var ErrClosed = errors.New("queue closed")

// Bus holds both topics. It implements server.MsgProducer,
// server.MsgConsumer, server.PushProducer and server.PushConsumer.
type Bus struct {
	opts Options
	seed maphash.Seed

	msgs []chan *busv1.MsgRecord
	// msgPending counts msg records published and not yet handled.
	msgPending atomic.Int64
	consumed   atomic.Bool
	closed     atomic.Bool

	mu   sync.RWMutex
	subs []*subscriber
	// unclaimed is the subscriber created with the Bus, which buffers push
	// records until the first ConsumePush claims it, so a push published
	// while the pipeline starts up is not lost.
	unclaimed *subscriber
}

var (
	_ server.MsgProducer  = (*Bus)(nil)
	_ server.MsgConsumer  = (*Bus)(nil)
	_ server.PushProducer = (*Bus)(nil)
	_ server.PushConsumer = (*Bus)(nil)
)

// New returns an empty Bus.
func New(opts Options) *Bus {
	opts = opts.withDefaults()
	b := &Bus{opts: opts, seed: maphash.MakeSeed(), msgs: make([]chan *busv1.MsgRecord, opts.MsgPartitions)}
	for i := range b.msgs {
		b.msgs[i] = make(chan *busv1.MsgRecord, opts.Capacity)
	}
	b.unclaimed = b.newSubscriber()
	b.subs = []*subscriber{b.unclaimed}
	return b
}

func (b *Bus) newSubscriber() *subscriber {
	sub := &subscriber{parts: make([]chan *busv1.PushRecord, b.opts.Partitions)}
	for i := range sub.parts {
		sub.parts[i] = make(chan *busv1.PushRecord, b.opts.Capacity)
	}
	return sub
}

func (b *Bus) partition(key string, n int) int {
	return int(maphash.String(b.seed, key) % uint64(n))
}

// PublishMsg queues rec on the partition of its conversation.
func (b *Bus) PublishMsg(ctx context.Context, rec *busv1.MsgRecord) error {
	if b.closed.Load() {
		return fmt.Errorf("publish msg: %w", ErrClosed)
	}
	b.msgPending.Add(1)
	err := put(ctx, b.msgs[b.partition(rec.GetMsg().GetConversationId(), len(b.msgs))], rec, b.opts.PublishWait, "msg")
	if err != nil {
		b.msgPending.Add(-1)
	}
	return err
}

func put[T any](ctx context.Context, ch chan T, v T, wait time.Duration, topic string) error {
	select {
	case ch <- v:
		return nil
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case ch <- v:
		return nil
	case <-t.C:
		return apierr.ResourceExhausted("the in-process %s queue is full (%d records per partition); retry later", topic, cap(ch))
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ConsumeMsgs runs one worker per partition until ctx ends. Each worker
// hands handle the records that are queued, up to MaxBatch at a time, and
// retries a batch whose handler failed. It may be called once.
func (b *Bus) ConsumeMsgs(ctx context.Context, handle server.MsgHandler) error {
	if !b.consumed.CompareAndSwap(false, true) {
		return errors.New("memqueue: ConsumeMsgs called twice")
	}
	var wg sync.WaitGroup
	for _, ch := range b.msgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.runMsgWorker(ctx, ch, handle)
		}()
	}
	wg.Wait()
	return ctx.Err()
}

func (b *Bus) runMsgWorker(ctx context.Context, ch chan *busv1.MsgRecord, handle server.MsgHandler) {
	batch := make([]*busv1.MsgRecord, 0, b.opts.MaxBatch)
	for {
		batch = batch[:0]
		select {
		case rec := <-ch:
			batch = append(batch, rec)
		case <-ctx.Done():
			return
		}
		batch = drain(ch, batch, b.opts.MaxBatch)
		// The handler retries backend failures itself and fails only when
		// ctx ends; the batch is then dropped with the process.
		err := handle(ctx, batch)
		b.msgPending.Add(-int64(len(batch)))
		if err != nil {
			return
		}
	}
}

func drain[T any](ch chan T, batch []T, maxBatch int) []T {
	for len(batch) < maxBatch {
		select {
		case v := <-ch:
			batch = append(batch, v)
		default:
			return batch
		}
	}
	return batch
}

// subscriber is one ConsumePush caller with its own partitions.
type subscriber struct {
	parts []chan *busv1.PushRecord
	// pending counts records queued for this subscriber and not yet handled.
	pending atomic.Int64
}

// PublishPush queues the records for every current push consumer, on the
// partition of each record's key.
func (b *Bus) PublishPush(ctx context.Context, recs []server.KeyedPush) error {
	b.mu.RLock()
	subs := b.subs
	b.mu.RUnlock()
	for _, sub := range subs {
		for _, kr := range recs {
			sub.pending.Add(1)
			if err := put(ctx, sub.parts[b.partition(kr.Key, len(sub.parts))], kr.Record, b.opts.PublishWait, "push"); err != nil {
				sub.pending.Add(-1)
				return err
			}
		}
	}
	return nil
}

// ConsumePush subscribes to the push topic and hands records to handle, in
// order per key, until ctx ends. The first call also receives what was
// published since New.
func (b *Bus) ConsumePush(ctx context.Context, handle server.PushHandler) error {
	b.mu.Lock()
	sub := b.unclaimed
	b.unclaimed = nil
	if sub == nil {
		sub = b.newSubscriber()
		b.subs = append(b.subs, sub)
	}
	b.mu.Unlock()
	defer b.unsubscribe(sub)

	var wg sync.WaitGroup
	for _, ch := range sub.parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runPushWorker(ctx, sub, ch, b.opts.MaxBatch, handle)
		}()
	}
	wg.Wait()
	return ctx.Err()
}

func runPushWorker(ctx context.Context, sub *subscriber, ch chan *busv1.PushRecord, maxBatch int, handle server.PushHandler) {
	batch := make([]*busv1.PushRecord, 0, maxBatch)
	for {
		batch = batch[:0]
		select {
		case rec := <-ch:
			batch = append(batch, rec)
		case <-ctx.Done():
			return
		}
		batch = drain(ch, batch, maxBatch)
		handle(ctx, batch)
		sub.pending.Add(-int64(len(batch)))
	}
}

func (b *Bus) unsubscribe(sub *subscriber) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, s := range b.subs {
		if s == sub {
			b.subs = append(b.subs[:i:i], b.subs[i+1:]...)
			return
		}
	}
}

// Close makes further PublishMsg calls fail with ErrClosed, so no new send
// enters during a shutdown. Queued records are still consumed, and push
// records still flow, so queued messages are stored and answered.
func (b *Bus) Close() { b.closed.Store(true) }

// Drain waits until every queued record has been handled, or ctx ends. Call
// it after the transports stopped accepting sends, before cancelling the
// consumers, so in-flight sends finish.
func (b *Bus) Drain(ctx context.Context) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !b.idle() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("drain in-process queues: %w", ctx.Err())
		}
	}
	return nil
}

// idle reports whether no record is queued or being handled. A msg record
// counts as pending until its handler returned, and the handler publishes
// its push records before that, so a push in flight is never missed.
func (b *Bus) idle() bool {
	if b.msgPending.Load() != 0 {
		return false
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, sub := range b.subs {
		if sub.pending.Load() != 0 {
			return false
		}
	}
	return true
}
