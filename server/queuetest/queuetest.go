// Package queuetest is the conformance suite of the queue interfaces in
// package server: MsgProducer, MsgConsumer, PushProducer and PushConsumer.
// Each queue implementation runs it from its own tests:
//
//	func TestQueues(t *testing.T) {
//		queuetest.TestQueues(t, queuetest.Capabilities{Durable: true}, func(t *testing.T) queuetest.Topics {
//			return newTopics(t)
//		})
//	}
//
// Besides the contracts written in package server, the suite checks a
// guarantee of both implementations while nothing fails: each record
// reaches each consumer that should see it exactly once. Capabilities switch off the
// parts where an implementation legitimately differs.
package queuetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/imlite/imlite/server"
)

// waitTimeout bounds every wait of the suite for an event.
const waitTimeout = 30 * time.Second

// Topics is one pair of new, empty msg and push topics.
type Topics struct {
	MsgProducer  server.MsgProducer
	PushProducer server.PushProducer
	// NewMsgConsumer returns a member of the msg topic's consumer group, as
	// one pod runs it. The suite calls ConsumeMsgs once on each value, and
	// calls NewMsgConsumer a second time only with Capabilities.Durable,
	// after the first consumer stopped.
	NewMsgConsumer func(t *testing.T) server.MsgConsumer
	// NewPushConsumer returns the push consumer of another pod. The suite
	// calls ConsumePush once on each value.
	NewPushConsumer func(t *testing.T) server.PushConsumer
}

// Capabilities tell the suite which optional behaviour an implementation
// has.
type Capabilities struct {
	// Durable means the msg topic keeps the records that no consumer
	// acknowledged, so that a consumer started after another one stopped
	// receives the batch the stopped one left unacknowledged. A queue in
	// process memory loses that batch with the process.
	Durable bool
	// RetriesFailedBatch means a handler error while ctx is live makes the
	// running consumer deliver the same records again. The core's handler
	// fails only when ctx ended, so a queue may instead stop the worker.
	RetriesFailedBatch bool
}

// TestQueues runs the suite. newTopics is called once per subtest.
func TestQueues(t *testing.T, caps Capabilities, newTopics func(t *testing.T) Topics) {
	t.Run("MsgOrderPerKey", func(t *testing.T) { testMsgOrderPerKey(t, newTopics(t)) })
	t.Run("MsgBatches", func(t *testing.T) { testMsgBatches(t, newTopics(t)) })
	t.Run("MsgRecordIntact", func(t *testing.T) { testMsgRecordIntact(t, newTopics(t)) })
	t.Run("MsgRedeliveredAfterRestart", func(t *testing.T) {
		if !caps.Durable {
			t.Skip("the queue does not keep unacknowledged records across a consumer restart")
		}
		testMsgRedeliveredAfterRestart(t, newTopics(t))
	})
	t.Run("MsgFailedBatchRetried", func(t *testing.T) {
		if !caps.RetriesFailedBatch {
			t.Skip("the queue does not retry a batch whose handler failed while ctx was live")
		}
		testMsgFailedBatchRetried(t, newTopics(t))
	})
	t.Run("PushEveryConsumerGetsEveryRecord", func(t *testing.T) { testPushEveryConsumer(t, newTopics(t)) })
	t.Run("PushRecordsIntact", func(t *testing.T) { testPushRecordsIntact(t, newTopics(t)) })
	t.Run("PushEmptyPublish", func(t *testing.T) { testPushEmptyPublish(t, newTopics(t)) })
	t.Run("ConsumersStopWithContext", func(t *testing.T) { testConsumersStop(t, newTopics(t)) })
}

// running is a consumer running in the background.
type running struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	// checked makes stop report the result once when called again.
	checked sync.Once
}

// start runs consume until the returned consumer is stopped or the test
// ends.
func start(t *testing.T, name string, consume func(ctx context.Context) error) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{name: name, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = consume(ctx)
	}()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func startMsgConsumer(t *testing.T, name string, c server.MsgConsumer, h server.MsgHandler) *running {
	return start(t, name, func(ctx context.Context) error { return c.ConsumeMsgs(ctx, h) })
}

func startPushConsumer(t *testing.T, name string, c server.PushConsumer, h server.PushHandler) *running {
	return start(t, name, func(ctx context.Context) error { return c.ConsumePush(ctx, h) })
}

// stop cancels the consumer's ctx and waits for it to return, which must
// be with nil or context.Canceled.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(waitTimeout):
		t.Fatalf("%s did not return within %v after its ctx was canceled", r.name, waitTimeout)
	}
	r.checked.Do(func() {
		if r.err != nil && !errors.Is(r.err, context.Canceled) {
			t.Errorf("%s returned %v after its ctx was canceled, want nil or context.Canceled", r.name, r.err)
		}
	})
}

// exited returns the consumer's error if it returned on its own.
func (r *running) exited() (error, bool) {
	select {
	case <-r.done:
		return r.err, true
	default:
		return nil, false
	}
}

// waitFor waits until cond holds. It fails the test at the deadline, or
// when one of the consumers returned before it was stopped.
func waitFor(t *testing.T, what string, cond func() bool, consumers ...*running) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		for _, r := range consumers {
			if err, ok := r.exited(); ok {
				t.Fatalf("waiting for %s: %s returned early with %v", what, r.name, err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not reached within %v", what, waitTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkSequences compares the indexes each key received, in arrival order,
// with 0..n-1.
func checkSequences(t *testing.T, who string, got map[string][]int, keys []string, n int) {
	t.Helper()
	want := make([]int, n)
	for i := range want {
		want[i] = i
	}
	for _, k := range keys {
		if !slices.Equal(got[k], want) {
			t.Errorf("%s, key %s: got records %v, want each of 0..%d once in publish order", who, k, got[k], n-1)
		}
	}
	if len(got) != len(keys) {
		t.Errorf("%s: got records of %d keys, want %d", who, len(got), len(keys))
	}
}

// keyNames returns n keys named prefix-0 to prefix-(n-1).
func keyNames(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return keys
}

// guarded is a value shared between handlers and the test.
type guarded[T any] struct {
	mu sync.Mutex
	v  T
}

func (g *guarded[T]) with(fn func(v *T)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	fn(&g.v)
}
