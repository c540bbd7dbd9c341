package kafkaqueue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	busv1 "github.com/imlite/imlite/gen/imlite/bus/v1"
	"github.com/imlite/imlite/server"
)

// MsgConsumer is this pod's member of the msg topic's consumer group. It
// implements server.MsgConsumer.
type MsgConsumer struct {
	cfg     ConsumerConfig
	running atomic.Bool
}

var _ server.MsgConsumer = (*MsgConsumer)(nil)

// NewMsgConsumer checks cfg and returns a consumer, which connects only
// when ConsumeMsgs runs. cfg.Group is required.
func NewMsgConsumer(cfg ConsumerConfig) (*MsgConsumer, error) {
	cfg, err := cfg.withDefaults(true)
	if err != nil {
		return nil, err
	}
	return &MsgConsumer{cfg: cfg}, nil
}

// ConsumeMsgs joins the group and hands batches to handle until ctx ends,
// committing each partition's offsets once handle returned nil for its
// records. A batch whose handler failed while ctx was live is delivered
// again after a pause. When ctx ends it commits what was handled, leaves
// the group and returns ctx's error. When the topic is deleted and created
// again, it leaves the group and joins it again to read the new topic. It
// returns another error only when the cluster rejects the consumer, for
// example for failed authentication. One ConsumeMsgs call at a time may run
// per MsgConsumer.
func (c *MsgConsumer) ConsumeMsgs(ctx context.Context, handle server.MsgHandler) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("kafkaqueue: ConsumeMsgs is already running on this consumer")
	}
	defer c.running.Store(false)
	warn := newThrottledLog(c.cfg.Logger)
	for {
		err := c.session(ctx, handle, warn)
		if !errors.Is(err, errTopicRecreated) {
			return err
		}
		c.cfg.Logger.Warn("kafka msg consumer: the topic was deleted and created again; joining the group again to read the new topic",
			"topic", c.cfg.Topic, "group", c.cfg.Group)
	}
}

// session is one membership of the group, with a client of its own, until
// ctx ends or the topic is recreated.
func (c *MsgConsumer) session(ctx context.Context, handle server.MsgHandler, warn *throttledLog) error {
	// The client gets a ctx of its own, so that leave can cut short a
	// leave that hangs on an unreachable cluster.
	clientCtx, stopClient := context.WithCancel(context.Background())
	defer stopClient()
	cl, err := c.newClient(clientCtx)
	if err != nil {
		return err
	}
	defer c.leave(cl, stopClient)

	s := &msgSession{cfg: c.cfg, cl: cl, handle: handle, warn: warn,
		guard: &pollGuard{adm: kadm.NewClient(cl), topic: c.cfg.Topic}}
	if err := s.checkAccess(ctx); err != nil {
		return err
	}
	return s.run(ctx)
}

func (c *MsgConsumer) newClient(clientCtx context.Context) (*kgo.Client, error) {
	cl, err := kgo.NewClient(append(clientOpts(c.cfg.Addrs, c.cfg.User, c.cfg.Passwd, c.cfg.ClientID, c.cfg.Logger),
		kgo.WithContext(clientCtx),
		kgo.ConsumeTopics(c.cfg.Topic),
		kgo.ConsumerGroup(c.cfg.Group),
		// A crashed pod's partitions wait this long before another pod
		// takes them over, and their sends wait with them.
		kgo.SessionTimeout(c.cfg.SessionTimeout),
		kgo.HeartbeatInterval(c.cfg.SessionTimeout/5),
		// A group without commits starts at the oldest record, so
		// messages published before the first pod joined are stored.
		kgo.ConsumeStartOffset(kgo.NewOffset().AtStart()),
		// Rebalances wait until polled records are handled and their
		// offsets committed (see the package doc).
		// NOTE: a handler that retries a failing backend for longer than
		// the rebalance timeout (kgo's default, 60s) holds up the
		// rebalance of the whole group until the broker removes this
		// member. Its partitions then move while it may still handle
		// their records, and the new owner handles them again.
		kgo.BlockRebalanceOnPoll(),
		// Only offsets marked after a successful handler call are
		// committed, by this consumer and by kgo at a revoke.
		kgo.AutoCommitMarks(),
	)...)
	if err != nil {
		return nil, fmt.Errorf("create kafka msg consumer for topic %q: %w", c.cfg.Topic, err)
	}
	return cl, nil
}

// leave leaves the group, which commits marked offsets once more in case
// the last commit failed, and closes the client. CommitTimeout bounds the
// leave, because a cluster that is down would otherwise hold the stop.
func (c *MsgConsumer) leave(cl *kgo.Client, stopClient context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.CommitTimeout)
	defer cancel()
	cl.AllowRebalance()
	if err := cl.LeaveGroupContext(ctx); err != nil {
		c.cfg.Logger.Warn("kafka msg consumer: leaving the group failed; its partitions move after the session timeout",
			"group", c.cfg.Group, "err", err)
		stopClient()
	}
	cl.Close()
}

// msgSession is one ConsumeMsgs run.
type msgSession struct {
	cfg    ConsumerConfig
	cl     *kgo.Client
	handle server.MsgHandler
	warn   *throttledLog
	guard  *pollGuard
	// retryDelay grows while handlers keep failing.
	retryDelay time.Duration
}

// partitionResult is the outcome of handling one partition's records of
// one poll.
type partitionResult struct {
	// done is the last record handled, nil if none.
	done *kgo.Record
	// failed is the first record not handled because the handler failed,
	// nil if all were handled.
	failed *kgo.Record
}

// checkAccess looks up the topic, retrying while the cluster is
// unreachable, and returns the error when the cluster rejects the consumer.
// It records the topic's ID in the poll guard.
// A poll does not report a failed login (franz-go v1.22.3), so without this
// check a wrong password would look like an outage forever.
func (s *msgSession) checkAccess(ctx context.Context) error {
	var delay time.Duration
	for {
		details, err := s.guard.adm.ListTopics(ctx, s.cfg.Topic)
		if err == nil {
			err = details[s.cfg.Topic].Err
			s.guard.id = details[s.cfg.Topic].ID
		}
		switch {
		case err == nil, errors.Is(err, kerr.UnknownTopicOrPartition):
			// The group picks up the topic once a producer creates it.
			return nil
		case isFatalConsumeError(err):
			return fmt.Errorf("consume topic %q in group %q: %w", s.cfg.Topic, s.cfg.Group, err)
		case ctx.Err() != nil:
			return ctx.Err()
		}
		s.warn.warn("kafka msg consumer: topic lookup failed; retrying", "topic", s.cfg.Topic, "err", err)
		delay = backoff(delay)
		if err := sleepCtx(ctx, delay); err != nil {
			return err
		}
	}
}

func (s *msgSession) run(ctx context.Context) error {
	for {
		fetches := s.cl.PollRecords(ctx, s.cfg.MaxBatch*s.cfg.Consumers)
		if ctx.Err() != nil {
			// The records of this poll were not handed out, so the
			// next owner of their partitions gets them.
			return ctx.Err()
		}
		if err := pollErrors(fetches, s.warn); err != nil {
			return fmt.Errorf("consume topic %q in group %q: %w", s.cfg.Topic, s.cfg.Group, err)
		}

		// 1. Hand each partition's records to the handler.
		parts := splitByPartition(fetches)
		results := make([]partitionResult, len(parts))
		forEachPartition(parts, s.cfg.Consumers, func(i int, p partitionRecords) {
			results[i] = s.handlePartition(ctx, p)
		})

		// 2. Commit what was handled, also when ctx ended meanwhile.
		s.commit(ctx, results)

		// 3. Deliver failed records again after a pause, unless ctx ended.
		if ctx.Err() != nil {
			return ctx.Err()
		}
		failed := s.rewind(results)
		s.cl.AllowRebalance()
		if err := s.pause(ctx, failed); err != nil {
			return err
		}
		if err := s.guard.after(ctx, fetches); err != nil {
			return err
		}
	}
}

// handlePartition hands the records of one partition to the handler in
// batches of up to MaxBatch, in offset order, and stops at the first batch
// whose handler failed.
func (s *msgSession) handlePartition(ctx context.Context, p partitionRecords) partitionResult {
	var res partitionResult
	for chunk := range slices.Chunk(p.records, s.cfg.MaxBatch) {
		recs := decodeRecords[busv1.MsgRecord](chunk, s.cfg.Logger)
		if len(recs) > 0 {
			err := s.handle(ctx, recs)
			if err != nil {
				if ctx.Err() == nil {
					s.cfg.Logger.Error("kafka msg consumer: handler failed; the batch will be delivered again",
						"topic", p.topic, "partition", p.partition, "offset", chunk[0].Offset, "records", len(recs), "err", err)
				}
				res.failed = chunk[0]
				return res
			}
		}
		res.done = chunk[len(chunk)-1]
	}
	return res
}

// commit marks the handled records and commits the marked offsets.
func (s *msgSession) commit(ctx context.Context, results []partitionResult) {
	var done []*kgo.Record
	for _, r := range results {
		if r.done != nil {
			done = append(done, r.done)
		}
	}
	if len(done) == 0 {
		return
	}
	s.cl.MarkCommitRecords(done...)
	// The commit runs even when ctx just ended, because it records work
	// that is done. CommitTimeout bounds it instead.
	commitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.CommitTimeout)
	defer cancel()
	if err := s.cl.CommitMarkedOffsets(commitCtx); err != nil {
		// The offsets stay marked, so the next commit, the periodic
		// autocommit or the commit at a revoke retries them.
		s.warn.warn("kafka msg consumer: offset commit failed; retrying with the next commit",
			"topic", s.cfg.Topic, "group", s.cfg.Group, "err", err)
	}
}

// rewind moves each partition whose handler failed back to the first record
// not handled, so the next poll delivers it again, and reports whether any
// handler failed. It must run before AllowRebalance, while this member
// still owns the partitions.
func (s *msgSession) rewind(results []partitionResult) bool {
	offsets := make(map[string]map[int32]kgo.EpochOffset)
	for _, r := range results {
		if r.failed == nil {
			continue
		}
		if offsets[r.failed.Topic] == nil {
			offsets[r.failed.Topic] = make(map[int32]kgo.EpochOffset)
		}
		offsets[r.failed.Topic][r.failed.Partition] = kgo.EpochOffset{Epoch: r.failed.LeaderEpoch, Offset: r.failed.Offset}
	}
	if len(offsets) == 0 {
		return false
	}
	s.cl.SetOffsets(offsets)
	return true
}

// pause waits before the next poll while handlers keep failing, so a
// failing handler does not spin.
func (s *msgSession) pause(ctx context.Context, failed bool) error {
	if !failed {
		s.retryDelay = 0
		return nil
	}
	s.retryDelay = backoff(s.retryDelay)
	return sleepCtx(ctx, s.retryDelay)
}
