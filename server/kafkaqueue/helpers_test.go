package kafkaqueue

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/imlite/imlite/internal/testenv"
)

// waitTimeout bounds every wait of these tests for an event.
const waitTimeout = 30 * time.Second

var nameCounter atomic.Int64

// uniqueName returns a topic or group name no other call returns, so tests
// can share a cluster.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, nameCounter.Add(1))
}

// logBuffer is a slog destination that tests can read.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newLogger() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

func producerConfig(k *testenv.Kafka, topic string) ProducerConfig {
	log, _ := newLogger()
	return ProducerConfig{Addrs: k.Addrs(), Topic: topic, Partition: 4, Logger: log}
}

func consumerConfig(k *testenv.Kafka, topic, group string) ConsumerConfig {
	log, _ := newLogger()
	return ConsumerConfig{Addrs: k.Addrs(), Topic: topic, Group: group, Consumers: 4, Logger: log}
}

func newMsgProducer(t *testing.T, cfg ProducerConfig) *MsgProducer {
	t.Helper()
	p, err := NewMsgProducer(t.Context(), cfg)
	if err != nil {
		t.Fatalf("NewMsgProducer(topic %q): %v", cfg.Topic, err)
	}
	t.Cleanup(p.Close)
	return p
}

func newPushProducer(t *testing.T, cfg ProducerConfig) *PushProducer {
	t.Helper()
	p, err := NewPushProducer(t.Context(), cfg)
	if err != nil {
		t.Fatalf("NewPushProducer(topic %q): %v", cfg.Topic, err)
	}
	t.Cleanup(p.Close)
	return p
}

func newMsgConsumer(t *testing.T, cfg ConsumerConfig) *MsgConsumer {
	t.Helper()
	c, err := NewMsgConsumer(cfg)
	if err != nil {
		t.Fatalf("NewMsgConsumer(topic %q): %v", cfg.Topic, err)
	}
	return c
}

func newPushConsumer(t *testing.T, cfg ConsumerConfig) *PushConsumer {
	t.Helper()
	c, err := NewPushConsumer(cfg)
	if err != nil {
		t.Fatalf("NewPushConsumer(topic %q): %v", cfg.Topic, err)
	}
	return c
}

// newAdmin returns an admin client of the cluster, closed when t ends.
func newAdmin(t *testing.T, k *testenv.Kafka, opts ...kgo.Opt) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(k.Addrs()...)}, opts...)...)
	if err != nil {
		t.Fatalf("create admin client: %v", err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// partitionCount returns the number of partitions of topic.
func partitionCount(t *testing.T, adm *kadm.Client, topic string) int {
	t.Helper()
	details, err := adm.ListTopics(t.Context(), topic)
	if err != nil {
		t.Fatalf("list topic %q: %v", topic, err)
	}
	d, ok := details[topic]
	if !ok || d.Err != nil {
		t.Fatalf("topic %q: not listed (listed %v, err %v)", topic, ok, d.Err)
	}
	return len(d.Partitions)
}

// background is a function running until the test stops it or ends.
type background struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func runBackground(t *testing.T, fn func(ctx context.Context) error) *background {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b := &background{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		b.err = fn(ctx)
	}()
	t.Cleanup(func() { b.stop(t) })
	return b
}

// stop cancels fn's ctx and returns fn's error.
func (b *background) stop(t *testing.T) error {
	t.Helper()
	b.cancel()
	select {
	case <-b.done:
	case <-time.After(waitTimeout):
		t.Fatalf("consumer did not return within %v after its ctx was canceled", waitTimeout)
	}
	return b.err
}

// waitFor waits until cond holds, and fails the test at the deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not reached within %v", what, waitTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitReady waits for the push consumer's Ready.
func waitReady(t *testing.T, c *PushConsumer, b *background) {
	t.Helper()
	select {
	case <-c.Ready():
	case <-b.done:
		t.Fatalf("ConsumePush returned before Ready: %v", b.err)
	case <-time.After(waitTimeout):
		t.Fatalf("push consumer: Ready not closed within %v", waitTimeout)
	}
}
