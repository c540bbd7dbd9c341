package kafkaqueue

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	busv1 "github.com/imlite/imlite/gen/imlite/bus/v1"
	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/internal/testenv"
	"github.com/imlite/imlite/server"
)

func testMsg(conv, content string) *busv1.MsgRecord {
	return &busv1.MsgRecord{Msg: &imlitev1.Message{ServerMsgId: conv + "/" + content, SenderId: "alice", ConversationId: conv, Content: content}}
}

func testPush(key, id string) server.KeyedPush {
	return server.KeyedPush{Key: key, Record: &busv1.PushRecord{Event: &busv1.PushRecord_Delivery{Delivery: &busv1.Delivery{
		Msg: &imlitev1.Message{ServerMsgId: id, ConversationId: key},
	}}}}
}

func TestTopicCreation(t *testing.T) {
	k := testenv.StartKafka(t)
	adm := newAdmin(t, k)
	cases := []struct {
		name     string
		existing int // partitions of a topic created beforehand, or 0 for none
		config   int
		want     int
	}{
		{name: "missing topic gets Partition partitions", config: 3, want: 3},
		{name: "zero Partition creates one partition", config: 0, want: 1},
		{name: "existing topic keeps its partitions", existing: 2, config: 6, want: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			topic := uniqueName("topic")
			if tc.existing > 0 {
				if _, err := adm.CreateTopic(t.Context(), int32(tc.existing), -1, nil, topic); err != nil {
					t.Fatalf("create topic %q beforehand: %v", topic, err)
				}
			}
			cfg := producerConfig(k, topic)
			cfg.Partition = tc.config
			newMsgProducer(t, cfg)
			if got := partitionCount(t, adm, topic); got != tc.want {
				t.Errorf("partitions of topic %q: got %d, want %d", topic, got, tc.want)
			}
		})
	}
}

func TestTopicCreationByPodsStartingTogether(t *testing.T) {
	k := testenv.StartKafka(t)
	topic := uniqueName("topic")
	const pods = 6
	errs := make([]error, pods)
	var wg sync.WaitGroup
	for i := range pods {
		wg.Go(func() {
			cfg := producerConfig(k, topic)
			cfg.Partition = 3
			p, err := NewPushProducer(t.Context(), cfg)
			errs[i] = err
			if err == nil {
				p.Close()
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("NewPushProducer of pod %d: %v, want nil when another pod created the topic first", i, err)
		}
	}
	if got := partitionCount(t, newAdmin(t, k), topic); got != 3 {
		t.Errorf("partitions of topic %q: got %d, want 3", topic, got)
	}
}

// checkUnavailable checks that a publish failed with ErrUnavailable because
// of its PublishTimeout or a connection failure, not because the caller's
// ctx ended.
func checkUnavailable(t *testing.T, what string, ctx context.Context, err error) {
	t.Helper()
	if !errors.Is(err, server.ErrUnavailable) {
		t.Errorf("%s: got %v, want an error wrapping server.ErrUnavailable", what, err)
	}
	if ctx.Err() != nil {
		t.Errorf("%s returned only when the caller's ctx ended, want it to give up after PublishTimeout", what)
	}
}

func TestPublishBrokerDown(t *testing.T) {
	cases := []struct {
		name string
		// breakCluster makes the cluster unusable and returns a function
		// that repairs it.
		breakCluster func(t *testing.T, k *testenv.Kafka) (repair func())
		// pingFails is whether Ping notices the outage.
		pingFails bool
	}{
		{
			name:      "listeners stopped",
			pingFails: true,
			breakCluster: func(t *testing.T, k *testenv.Kafka) func() {
				k.Stop()
				return func() { k.Restart(t) }
			},
		},
		{
			name: "broker never answers produce requests",
			breakCluster: func(t *testing.T, k *testenv.Kafka) func() {
				var hang atomic.Bool
				hang.Store(true)
				c := k.Cluster()
				c.ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
					if !hang.Load() {
						c.DropControl()
						return nil, nil, false
					}
					// Handled without a response: the request hangs.
					c.KeepControl()
					return nil, nil, true
				})
				return func() { hang.Store(false) }
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := testenv.StartKafka(t)
			cfg := producerConfig(k, uniqueName("topic"))
			cfg.PublishTimeout = 500 * time.Millisecond
			mp := newMsgProducer(t, cfg)
			pp := newPushProducer(t, cfg)
			if err := mp.PublishMsg(t.Context(), testMsg("c1", "before")); err != nil {
				t.Fatalf("PublishMsg before the outage: %v", err)
			}

			repair := tc.breakCluster(t, k)
			ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
			defer cancel()
			checkUnavailable(t, "PublishMsg during the outage", ctx, mp.PublishMsg(ctx, testMsg("c1", "during")))
			checkUnavailable(t, "PublishPush during the outage", ctx, pp.PublishPush(ctx, []server.KeyedPush{testPush("c1", "during")}))
			if tc.pingFails {
				checkUnavailable(t, "Ping during the outage", ctx, mp.Ping(ctx))
			}

			repair()
			// Reconnecting and retrying a hung request take a while. The
			// producer must recover without being recreated.
			var err error
			waitFor(t, "a publish to succeed after the repair", func() bool {
				err = mp.PublishMsg(t.Context(), testMsg("c1", "after"))
				return err == nil
			})
		})
	}
}

func TestNewProducerUnreachable(t *testing.T) {
	// A listener that accepts connections and never replies, and an
	// address where nothing listens.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var mu sync.Mutex
	var accepted []net.Conn
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted = append(accepted, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = silent.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range accepted {
			_ = c.Close()
		}
	})
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	closedAddr := closed.Addr().String()
	_ = closed.Close()

	cases := []struct {
		name string
		addr string
	}{
		{name: "nothing listens", addr: closedAddr},
		{name: "broker never answers", addr: silent.Addr().String()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			log, _ := newLogger()
			p, err := NewMsgProducer(ctx, ProducerConfig{Addrs: []string{tc.addr}, Topic: "t", PublishTimeout: 200 * time.Millisecond, Logger: log})
			if err == nil {
				p.Close()
				t.Fatal("NewMsgProducer: got nil error, want one wrapping server.ErrUnavailable")
			}
			if !errors.Is(err, server.ErrUnavailable) {
				t.Errorf("NewMsgProducer: got %v, want an error wrapping server.ErrUnavailable", err)
			}
			if !strings.Contains(err.Error(), `topic "t"`) {
				t.Errorf("NewMsgProducer error %q does not name the topic", err)
			}
		})
	}
}

func TestPublishCanceledContext(t *testing.T) {
	k := testenv.StartKafka(t)
	cfg := producerConfig(k, uniqueName("topic"))
	mp := newMsgProducer(t, cfg)
	pp := newPushProducer(t, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	errs := map[string]error{
		"PublishMsg":  mp.PublishMsg(ctx, testMsg("c1", "x")),
		"PublishPush": pp.PublishPush(ctx, []server.KeyedPush{testPush("c1", "x")}),
	}
	for name, err := range errs {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled ctx: got %v, want context.Canceled", name, err)
		}
		if errors.Is(err, server.ErrUnavailable) {
			t.Errorf("%s with a canceled ctx: got %v, want no server.ErrUnavailable because the caller gave up", name, err)
		}
	}
}

func TestPublishNilRecord(t *testing.T) {
	k := testenv.StartKafka(t)
	cfg := producerConfig(k, uniqueName("topic"))
	mp := newMsgProducer(t, cfg)
	pp := newPushProducer(t, cfg)
	cases := []struct {
		name string
		err  error
		want string
	}{
		{name: "nil msg record", err: mp.PublishMsg(t.Context(), nil), want: "record is nil"},
		{
			name: "nil push record among others",
			err:  pp.PublishPush(t.Context(), []server.KeyedPush{testPush("c1", "a"), {Key: "c2"}}),
			want: `record 1 (key "c2") is nil`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", tc.err, tc.want)
			}
			if errors.Is(tc.err, server.ErrUnavailable) {
				t.Errorf("got %v, want no server.ErrUnavailable for a caller mistake", tc.err)
			}
		})
	}
}

// TestIdleProducerPublishesToRecreatedTopic deletes the topic and creates
// it again elsewhere, as another pod does, while a producer is idle. The
// producer's next publish must succeed at once, although kgo still holds
// the old topic ID.
func TestIdleProducerPublishesToRecreatedTopic(t *testing.T) {
	k := testenv.StartKafka(t)
	topic := uniqueName("topic")
	p := newMsgProducer(t, producerConfig(k, topic))
	if err := p.PublishMsg(t.Context(), testMsg("c1", "before")); err != nil {
		t.Fatalf("publish before the deletion: %v", err)
	}
	adm := newAdmin(t, k)
	oldID, err := lookupTopicID(t.Context(), adm, topic)
	if err != nil {
		t.Fatalf("look up the topic: %v", err)
	}
	if _, err := adm.DeleteTopics(t.Context(), topic); err != nil {
		t.Fatalf("delete topic: %v", err)
	}
	if _, err := adm.CreateTopic(t.Context(), 4, -1, nil, topic); err != nil {
		t.Fatalf("create the topic again: %v", err)
	}
	waitFor(t, "the new topic ID", func() bool {
		id, err := lookupTopicID(t.Context(), adm, topic)
		return err == nil && id != oldID && id != (kadm.TopicID{})
	})

	if err := p.PublishMsg(t.Context(), testMsg("c1", "after")); err != nil {
		t.Errorf("first publish after the topic was created again: %v", err)
	}
}
