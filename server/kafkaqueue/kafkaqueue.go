// Package kafkaqueue carries the msg and push topics of distributed mode over
// Kafka, with the franz-go client. Records are the protobuf encodings of
// busv1.MsgRecord and busv1.PushRecord. A msg record is keyed by its
// conversation id and a push record by its KeyedPush key. The murmur2 hash
// of the key, as in Kafka's Java client, puts one key on one partition, so
// the records of a key stay in order.
//
// # Producers
//
// A producer creates its topic when the topic is missing, with Partition
// partitions and the broker's default replication factor. An existing topic
// is used as it is. Records are written idempotently and acknowledged by
// all in-sync replicas. A publish waits at most PublishTimeout and then fails
// with an error wrapping server.ErrUnavailable. A record of a publish that
// timed out may still be written later, so a retried publish can write it
// twice. The consumers and the service core handle such duplicates, because
// delivery is at least once anyway.
//
// # Msg consumer
//
// The msg consumer is a member of one consumer group that all pods share.
// Each poll is split by partition. Up to Consumers partitions are handled at
// the same time, each in offset order, in batches of up to MaxBatch records.
// Offsets are committed only after the handler returned nil, so a batch
// whose handler failed or whose pod died is delivered again. Rebalances wait
// until the polled records are handled and committed, so a partition that
// moves to another pod is not processed by both at once.
//
// # Push consumer
//
// Every pod must read every push record, which a consumer group gives only
// if each pod has a group of its own. A group named after the pod outlives
// the pod: each restart of a Deployment pod, which gets a new name, would
// leave one more stale group with committed offsets on the brokers. The
// offsets such a group keeps are of no use either, because a restarted pod
// has no connections or waiting senders that older records could reach, and
// its clients catch up by pulling. So the push consumer uses no group. It
// reads all partitions directly, starting at the end offsets it lists at
// start, and closes Ready once they are listed. Partitions added later are
// found by a periodic metadata check and read from their start. Nothing is
// committed and nothing is left on the brokers when a pod goes away.
//
// # Trace context
//
// The trace field of a MsgRecord or PushRecord (W3C trace context) travels
// in the Kafka record headers, one header per key, and not in the value;
// consumers put it back into the decoded record.
package kafkaqueue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/imlite/imlite/server"
)

// clientOpts returns the options that every client of the package shares.
func clientOpts(addrs []string, user, passwd, clientID string, log *slog.Logger) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(addrs...),
		kgo.ClientID(clientID),
		kgo.WithLogger(kgoLogger{log: newThrottledLog(log)}),
	}
	if user != "" && passwd != "" {
		opts = append(opts, kgo.SASL(plain.Auth{User: user, Pass: passwd}.AsMechanism()))
	}
	return opts
}

// wrapErr adds the operation to err and marks it with server.ErrUnavailable
// when the cluster was unreachable or timed out.
func wrapErr(op string, err error) error {
	if isUnavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, server.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// isUnavailable reports whether err is a connectivity failure or a timeout.
// Kafka error codes carry their own retriable flag. A code that is not
// retriable, such as a failed authentication or a record too large, is a
// fault of the request or the configuration, so a retry does not repair it.
func isUnavailable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed) {
		return false
	}
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ke.Retriable
	}
	// Everything else on the request path is a dial failure, a broken
	// connection, or a request or record timeout.
	return true
}

// isFatalConsumeError reports whether a fetch error means the cluster
// rejects this consumer, so that polling on cannot succeed.
func isFatalConsumeError(err error) bool {
	for _, fatal := range []error{
		kerr.SaslAuthenticationFailed,
		kerr.TopicAuthorizationFailed,
		kerr.GroupAuthorizationFailed,
		kerr.ClusterAuthorizationFailed,
		kerr.UnsupportedSaslMechanism,
		kerr.IllegalSaslState,
	} {
		if errors.Is(err, fatal) {
			return true
		}
	}
	return false
}

// kgoLogger is the kgo.Logger that forwards the client's warnings and
// errors to slog, throttled,
// because the client logs every failed dial while a broker is down. The
// client logs brokers, topics and partitions, never record values or
// credentials.
type kgoLogger struct{ log *throttledLog }

func (kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (l kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lvl := slog.LevelWarn
	if level == kgo.LogLevelError {
		lvl = slog.LevelError
	}
	l.log.logAt(lvl, "kafka client: "+msg, keyvals...)
}

// throttledLog is a logger that writes each distinct message at most once per interval
// (10s), so a long outage does not flood the log. The next record of a
// message carries the count of its records dropped since the last one.
type throttledLog struct {
	log   *slog.Logger
	every time.Duration

	mu    sync.Mutex
	byMsg map[string]*throttleState
}

type throttleState struct {
	next    time.Time
	dropped int
}

func newThrottledLog(log *slog.Logger) *throttledLog {
	return &throttledLog{log: log, every: 10 * time.Second, byMsg: make(map[string]*throttleState)}
}

func (l *throttledLog) warn(msg string, args ...any) { l.logAt(slog.LevelWarn, msg, args...) }

func (l *throttledLog) logAt(level slog.Level, msg string, args ...any) {
	l.mu.Lock()
	st, ok := l.byMsg[msg]
	if !ok {
		st = &throttleState{}
		l.byMsg[msg] = st
	}
	now := time.Now()
	if now.Before(st.next) {
		st.dropped++
		l.mu.Unlock()
		return
	}
	dropped := st.dropped
	st.dropped = 0
	st.next = now.Add(l.every)
	l.mu.Unlock()
	if dropped > 0 {
		args = append(args, "suppressed_since_last", dropped)
	}
	l.log.Log(context.Background(), level, msg, args...)
}

// backoff returns the wait after d before the next retry: 100ms at first,
// doubling up to 5s.
func backoff(d time.Duration) time.Duration {
	if d == 0 {
		return 100 * time.Millisecond
	}
	return min(2*d, 5*time.Second)
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

// errTopicRecreated ends a consume session whose topic was deleted and
// created again. kgo keeps fetching by the ID of the deleted topic, so only
// a session with a new client reads the new topic.
var errTopicRecreated = errors.New("topic was deleted and created again")

// pollGuard paces the poll loop of a consume session and detects a topic
// that was deleted and created again.
type pollGuard struct {
	adm   *kadm.Client
	topic string
	// id is the topic's ID when the session started, zero if the topic
	// was missing then.
	id kadm.TopicID
	// delay is the wait before the next poll, grown while polls return
	// only errors.
	delay time.Duration
}

// lookupTopicID returns the topic's ID, zero if the topic does not exist.
func lookupTopicID(ctx context.Context, adm *kadm.Client, topic string) (kadm.TopicID, error) {
	details, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return kadm.TopicID{}, err
	}
	d := details[topic]
	if errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
		return kadm.TopicID{}, nil
	}
	return d.ID, d.Err
}

// after runs once a poll returned. A poll with records resets the pacing.
// A poll with only errors waits before the next one, because kgo returns
// some fetch errors, such as UnknownTopicID, at once and would spin. When
// a fetch failed with UnknownTopicID and the topic's ID is no longer the
// one the session started with, after returns errTopicRecreated.
func (g *pollGuard) after(ctx context.Context, fetches kgo.Fetches) error {
	if fetches.NumRecords() > 0 || len(fetches.Errors()) == 0 {
		g.delay = 0
		return nil
	}
	g.delay = backoff(g.delay)
	unknownID := false
	fetches.EachError(func(_ string, _ int32, err error) {
		unknownID = unknownID || errors.Is(err, kerr.UnknownTopicID)
	})
	if unknownID {
		id, err := lookupTopicID(ctx, g.adm, g.topic)
		// A zero session ID means the topic appeared after the start, so
		// there is no ID to compare and the session restarts. A missing
		// topic has the zero ID, which differs from any session ID.
		if err == nil && (g.id == kadm.TopicID{} || id != g.id) {
			return errTopicRecreated
		}
	}
	return sleepCtx(ctx, g.delay)
}
