package kafkaqueue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	busv1 "github.com/imlite/imlite/gen/imlite/bus/v1"
	"github.com/imlite/imlite/server"
)

// PushConsumer is one pod's reader of the push topic. It reads every
// partition without a consumer group, from the end offsets it lists at
// start (see the package doc). It implements server.PushConsumer and
// server.Readier.
type PushConsumer struct {
	cfg       ConsumerConfig
	ready     chan struct{}
	readyOnce sync.Once
	started   atomic.Bool
}

var (
	_ server.PushConsumer = (*PushConsumer)(nil)
	_ server.Readier      = (*PushConsumer)(nil)
)

// NewPushConsumer checks cfg and returns a consumer, which connects only
// when ConsumePush runs. cfg.Group is ignored.
func NewPushConsumer(cfg ConsumerConfig) (*PushConsumer, error) {
	cfg, err := cfg.withDefaults(false)
	if err != nil {
		return nil, err
	}
	return &PushConsumer{cfg: cfg, ready: make(chan struct{})}, nil
}

// Ready is closed once ConsumePush has listed the end offsets it starts
// from: every record published after that reaches the handler.
func (c *PushConsumer) Ready() <-chan struct{} { return c.ready }

// ConsumePush lists the topic's end offsets, retrying while the cluster is
// unreachable, closes Ready, and hands the records from there on to handle,
// in offset order per partition, until ctx ends. When the topic is deleted
// and created again, it reads the new topic from its start, because all of
// it was published after Ready. It returns ctx's error, or another error
// when the cluster rejects the consumer. It may be called once per
// PushConsumer.
func (c *PushConsumer) ConsumePush(ctx context.Context, handle server.PushHandler) error {
	if !c.started.CompareAndSwap(false, true) {
		return errors.New("kafkaqueue: ConsumePush called twice on one consumer; create one per caller")
	}
	warn := newThrottledLog(c.cfg.Logger)
	fromStart := false
	for {
		err := c.session(ctx, handle, fromStart, warn)
		if !errors.Is(err, errTopicRecreated) {
			return err
		}
		c.cfg.Logger.Warn("kafka push consumer: the topic was deleted and created again; reading the new topic from its start",
			"topic", c.cfg.Topic)
		fromStart = true
	}
}

// session reads the topic with a client of its own until ctx ends or the
// topic is recreated. The first session starts at the end offsets; a
// session after a recreation starts every partition at its beginning.
func (c *PushConsumer) session(ctx context.Context, handle server.PushHandler, fromStart bool, warn *throttledLog) error {
	cl, err := kgo.NewClient(clientOpts(c.cfg.Addrs, c.cfg.User, c.cfg.Passwd, c.cfg.ClientID, c.cfg.Logger)...)
	if err != nil {
		return fmt.Errorf("create kafka push consumer for topic %q: %w", c.cfg.Topic, err)
	}
	defer cl.Close()

	// 1. Start every existing partition at its end offset.
	adm := kadm.NewClient(cl)
	guard := &pollGuard{adm: adm, topic: c.cfg.Topic}
	starts, err := c.listEndOffsets(ctx, adm, guard, warn)
	if err != nil {
		return err
	}
	if fromStart {
		for p := range starts {
			starts[p] = kgo.NewOffset().AtStart()
		}
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{c.cfg.Topic: starts})
	c.readyOnce.Do(func() { close(c.ready) })

	// 2. Start partitions added later at their beginning. The watcher
	// stops before the client closes.
	watchCtx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		c.watchPartitions(watchCtx, adm, cl, starts, warn)
	}()
	defer func() {
		stopWatch()
		<-watchDone
	}()

	// 3. Hand out records until ctx ends or the topic is recreated.
	return c.poll(ctx, cl, guard, handle, warn)
}

// listEndOffsets returns the end offset of every partition of the topic,
// none if the topic does not exist yet, and records the topic's ID in
// guard. It retries until the listing succeeds for every partition, or ctx
// ends.
func (c *PushConsumer) listEndOffsets(ctx context.Context, adm *kadm.Client, guard *pollGuard, warn *throttledLog) (map[int32]kgo.Offset, error) {
	var delay time.Duration
	for {
		// The ID is looked up first: if the topic is recreated between
		// the two requests, the old ID makes the first poll restart the
		// session.
		id, err := lookupTopicID(ctx, adm, c.cfg.Topic)
		var starts map[int32]kgo.Offset
		if err == nil {
			guard.id = id
			starts, err = c.tryListEndOffsets(ctx, adm)
		} else {
			err = wrapErr(fmt.Sprintf("look up topic %q", c.cfg.Topic), err)
		}
		if err == nil {
			return starts, nil
		}
		if isFatalConsumeError(err) {
			return nil, err
		}
		warn.warn("kafka push consumer: listing end offsets failed; retrying", "topic", c.cfg.Topic, "err", err)
		delay = backoff(delay)
		if err := sleepCtx(ctx, delay); err != nil {
			return nil, err
		}
	}
}

func (c *PushConsumer) tryListEndOffsets(ctx context.Context, adm *kadm.Client) (map[int32]kgo.Offset, error) {
	op := fmt.Sprintf("list end offsets of topic %q", c.cfg.Topic)
	listed, err := adm.ListEndOffsets(ctx, c.cfg.Topic)
	if err != nil {
		return nil, wrapErr(op, err)
	}
	starts := make(map[int32]kgo.Offset)
	for p, o := range listed[c.cfg.Topic] {
		switch {
		case p < 0 && errors.Is(o.Err, kerr.UnknownTopicOrPartition):
			// A missing topic has no records yet. The watcher finds
			// its partitions later and reads them from their start.
			return starts, nil
		case o.Err != nil:
			return nil, wrapErr(fmt.Sprintf("%s, partition %d", op, p), o.Err)
		}
		starts[p] = kgo.NewOffset().At(o.Offset)
	}
	return starts, nil
}

// missingTopicCheckInterval is how often the push consumer looks for the
// topic while it does not exist.
const missingTopicCheckInterval = time.Second

// watchPartitions adds partitions that appear after the start, reading
// them from their first record, because everything in a partition created
// after the start was published after it.
func (c *PushConsumer) watchPartitions(ctx context.Context, adm *kadm.Client, cl *kgo.Client, known map[int32]kgo.Offset, warn *throttledLog) {
	consumed := make(map[int32]bool, len(known))
	for p := range known {
		consumed[p] = true
	}
	for {
		// While the topic is missing, as after a deletion, every push
		// waits for it, so it is checked every second. Once it exists,
		// new partitions are rare and PartitionCheckInterval applies.
		interval := c.cfg.PartitionCheckInterval
		if len(consumed) == 0 {
			interval = min(interval, missingTopicCheckInterval)
		}
		if err := sleepCtx(ctx, interval); err != nil {
			return
		}
		details, err := adm.ListTopics(ctx, c.cfg.Topic)
		if err != nil {
			warn.warn("kafka push consumer: partition check failed", "topic", c.cfg.Topic, "err", err)
			continue
		}
		added := make(map[int32]kgo.Offset)
		for p := range details[c.cfg.Topic].Partitions {
			if !consumed[p] {
				consumed[p] = true
				added[p] = kgo.NewOffset().AtStart()
			}
		}
		if len(added) > 0 {
			c.cfg.Logger.Info("kafka push consumer: reading new partitions", "topic", c.cfg.Topic, "partitions", len(added))
			cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{c.cfg.Topic: added})
		}
	}
}

func (c *PushConsumer) poll(ctx context.Context, cl *kgo.Client, guard *pollGuard, handle server.PushHandler, warn *throttledLog) error {
	for {
		fetches := cl.PollRecords(ctx, c.cfg.MaxBatch*c.cfg.Consumers)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := pollErrors(fetches, warn); err != nil {
			return fmt.Errorf("consume topic %q: %w", c.cfg.Topic, err)
		}
		forEachPartition(splitByPartition(fetches), c.cfg.Consumers, func(_ int, p partitionRecords) {
			for chunk := range slices.Chunk(p.records, c.cfg.MaxBatch) {
				if recs := decodeRecords[busv1.PushRecord](chunk, c.cfg.Logger); len(recs) > 0 {
					handle(ctx, recs)
				}
			}
		})
		if err := guard.after(ctx, fetches); err != nil {
			return err
		}
	}
}
