package kafkaqueue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	busv1 "github.com/imlite/imlite/gen/imlite/bus/v1"
	"github.com/imlite/imlite/internal/testenv"
	"github.com/imlite/imlite/server"
)

// received is the records a handler got, by conversation in arrival order.
type received struct {
	mu     sync.Mutex
	byConv map[string][]string
	total  int
}

func newReceived() *received { return &received{byConv: make(map[string][]string)} }

func (r *received) add(conv, content string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byConv[conv] = append(r.byConv[conv], content)
	r.total++
}

func (r *received) handleMsgs(_ context.Context, recs []*busv1.MsgRecord) error {
	for _, rec := range recs {
		r.add(rec.GetMsg().GetConversationId(), rec.GetMsg().GetContent())
	}
	return nil
}

func (r *received) handlePush(_ context.Context, recs []*busv1.PushRecord) {
	for _, rec := range recs {
		m := rec.GetDelivery().GetMsg()
		r.add(m.GetConversationId(), m.GetServerMsgId())
	}
}

func (r *received) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}

func (r *received) get(conv string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.byConv[conv]...)
}

func (r *received) convs() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]bool, len(r.byConv))
	for c := range r.byConv {
		out[c] = true
	}
	return out
}

// partitionOf returns the partition that the producers' partitioner picks
// for key among n partitions.
func partitionOf(topic, key string, n int) int {
	return kgo.StickyKeyPartitioner(nil).ForTopic(topic).Partition(&kgo.Record{Key: []byte(key)}, n)
}

func TestMsgGroupMembersSharePartitions(t *testing.T) {
	k := testenv.StartKafka(t)
	topic, group := uniqueName("msg"), uniqueName("group")
	p := newMsgProducer(t, producerConfig(k, topic))
	pods := []*received{newReceived(), newReceived()}
	for _, pod := range pods {
		c := newMsgConsumer(t, consumerConfig(k, topic, group))
		runBackground(t, func(ctx context.Context) error { return c.ConsumeMsgs(ctx, pod.handleMsgs) })
	}

	// Publish only once both members own partitions, so no rebalance
	// happens while the records flow.
	adm := newAdmin(t, k)
	waitFor(t, "two group members owning all 4 partitions", func() bool {
		groups, err := adm.DescribeGroups(t.Context(), group)
		if err != nil {
			return false
		}
		g := groups[group]
		if g.State != "Stable" || len(g.Members) != 2 {
			return false
		}
		owned := 0
		for _, m := range g.Members {
			assigned, ok := m.Assigned.AsConsumer()
			if !ok {
				return false
			}
			for _, tp := range assigned.Topics {
				owned += len(tp.Partitions)
			}
		}
		return owned == 4
	})

	const convs, perConv = 40, 10
	for i := range perConv {
		for c := range convs {
			if err := p.PublishMsg(t.Context(), testMsg(fmt.Sprintf("conv-%d", c), strconv.Itoa(i))); err != nil {
				t.Fatalf("PublishMsg: %v", err)
			}
		}
	}
	waitFor(t, "all records at the two members", func() bool { return pods[0].count()+pods[1].count() >= convs*perConv })

	a, b := pods[0].convs(), pods[1].convs()
	if len(a) == 0 || len(b) == 0 {
		t.Errorf("conversations per member: got %d and %d, want both members to handle some", len(a), len(b))
	}
	for c := range convs {
		conv := fmt.Sprintf("conv-%d", c)
		if a[conv] && b[conv] {
			t.Errorf("conversation %s reached both members, want one partition owner", conv)
		}
		got := append(pods[0].get(conv), pods[1].get(conv)...)
		want := make([]string, perConv)
		for i := range want {
			want[i] = strconv.Itoa(i)
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("conversation %s: got records %v, want each of %v once in order", conv, got, want)
		}
	}
}

func TestMsgStopCommitsHandledPartitions(t *testing.T) {
	k := testenv.StartKafka(t)
	topic, group := uniqueName("msg"), uniqueName("group")
	cfg := producerConfig(k, topic)
	cfg.Partition = 2
	p := newMsgProducer(t, cfg)

	// One conversation per partition: the handler acknowledges "fast" and
	// holds "slow" until the stop, as the core does while a backend is down.
	// A poll may return one partition only, and a held batch holds the
	// polls, so "slow" fails until "fast" is handled and is delivered again.
	fast, slow := "conv-0", ""
	for i := 1; slow == ""; i++ {
		if key := fmt.Sprintf("conv-%d", i); partitionOf(topic, key, 2) != partitionOf(topic, fast, 2) {
			slow = key
		}
	}
	const perConv = 5
	for i := range perConv {
		for _, conv := range []string{fast, slow} {
			if err := p.PublishMsg(t.Context(), testMsg(conv, strconv.Itoa(i))); err != nil {
				t.Fatalf("PublishMsg: %v", err)
			}
		}
	}

	first := newReceived()
	slowStarted := make(chan struct{})
	var once sync.Once
	c := newMsgConsumer(t, consumerConfig(k, topic, group))
	run := runBackground(t, func(ctx context.Context) error {
		return c.ConsumeMsgs(ctx, func(ctx context.Context, recs []*busv1.MsgRecord) error {
			if recs[0].GetMsg().GetConversationId() == slow {
				if first.count() < perConv {
					return errors.New("not before the fast conversation")
				}
				once.Do(func() { close(slowStarted) })
				<-ctx.Done()
				return ctx.Err()
			}
			return first.handleMsgs(ctx, recs)
		})
	})
	waitFor(t, "the fast conversation handled", func() bool { return first.count() >= perConv })
	<-slowStarted
	if err := run.stop(t); !errors.Is(err, context.Canceled) {
		t.Errorf("ConsumeMsgs after the stop: got %v, want context.Canceled", err)
	}

	committed, err := newAdmin(t, k).FetchOffsets(t.Context(), group)
	if err != nil {
		t.Fatalf("fetch committed offsets of group %q: %v", group, err)
	}
	fastPart, slowPart := int32(partitionOf(topic, fast, 2)), int32(partitionOf(topic, slow, 2))
	if o, ok := committed.Lookup(topic, fastPart); !ok || o.At != perConv {
		t.Errorf("committed offset of the handled partition %d: got %v (present %v), want %d", fastPart, o.At, ok, perConv)
	}
	if o, ok := committed.Lookup(topic, slowPart); ok && o.At > 0 {
		t.Errorf("committed offset of the partition %d whose batch was not acknowledged: got %d, want none or 0", slowPart, o.At)
	}

	// The next member of the group gets exactly the records left
	// unacknowledged.
	second := newReceived()
	c2 := newMsgConsumer(t, consumerConfig(k, topic, group))
	runBackground(t, func(ctx context.Context) error { return c2.ConsumeMsgs(ctx, second.handleMsgs) })
	waitFor(t, "the slow conversation at the second consumer", func() bool { return second.count() >= perConv })
	if got := second.get(fast); len(got) != 0 {
		t.Errorf("second consumer got acknowledged records %v again, want none", got)
	}
	if got := second.get(slow); strings.Join(got, ",") != "0,1,2,3,4" {
		t.Errorf("second consumer, slow conversation: got %v, want 0,1,2,3,4", got)
	}
}

func TestMalformedRecordsSkipped(t *testing.T) {
	k := testenv.StartKafka(t)
	// 0xff starts a field with wire type 7, which protobuf does not have.
	garbage := []byte{0xff, 0xff, 0xff}
	raw, err := kgo.NewClient(kgo.SeedBrokers(k.Addrs()...))
	if err != nil {
		t.Fatalf("create client: %v", err)
	}
	t.Cleanup(raw.Close)

	cases := []struct {
		name string
		// run starts a consumer on topic that records into got, after
		// the garbage was produced, and returns the consumer's log.
		run func(t *testing.T, topic string, got *received) *logBuffer
		// publish publishes a valid record of conversation c1.
		publish func(t *testing.T, topic string)
	}{
		{
			name: "msg consumer",
			run: func(t *testing.T, topic string, got *received) *logBuffer {
				cfg := consumerConfig(k, topic, uniqueName("group"))
				log, buf := newLogger()
				cfg.Logger = log
				c := newMsgConsumer(t, cfg)
				runBackground(t, func(ctx context.Context) error { return c.ConsumeMsgs(ctx, got.handleMsgs) })
				return buf
			},
			publish: func(t *testing.T, topic string) {
				if err := newMsgProducer(t, producerConfig(k, topic)).PublishMsg(t.Context(), testMsg("c1", "valid")); err != nil {
					t.Fatalf("PublishMsg: %v", err)
				}
			},
		},
		{
			name: "push consumer",
			run: func(t *testing.T, topic string, got *received) *logBuffer {
				cfg := consumerConfig(k, topic, "")
				log, buf := newLogger()
				cfg.Logger = log
				// Start before the garbage, because it reads from the end.
				c := newPushConsumer(t, cfg)
				b := runBackground(t, func(ctx context.Context) error { return c.ConsumePush(ctx, got.handlePush) })
				waitReady(t, c, b)
				return buf
			},
			publish: func(t *testing.T, topic string) {
				if err := newPushProducer(t, producerConfig(k, topic)).PublishPush(t.Context(), []server.KeyedPush{testPush("c1", "valid")}); err != nil {
					t.Fatalf("PublishPush: %v", err)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			topic := uniqueName("topic")
			cfg := producerConfig(k, topic)
			cfg.Partition = 1
			newPushProducer(t, cfg) // creates the topic with one partition

			got := newReceived()
			buf := tc.run(t, topic, got)
			if err := raw.ProduceSync(t.Context(), &kgo.Record{Topic: topic, Key: []byte("c1"), Value: garbage}).FirstErr(); err != nil {
				t.Fatalf("produce garbage: %v", err)
			}
			tc.publish(t, topic)

			waitFor(t, "the valid record after the garbage", func() bool { return got.count() >= 1 })
			if got := got.get("c1"); len(got) != 1 || !strings.HasSuffix(got[0], "valid") {
				t.Errorf("records of c1: got %v, want only the valid one", got)
			}
			waitFor(t, "a log record about the skipped record", func() bool { return strings.Contains(buf.String(), "does not decode") })
			if line := buf.String(); !strings.Contains(line, "offset=") || !strings.Contains(line, "topic="+topic) {
				t.Errorf("log %q does not name the topic and offset of the skipped record", line)
			}
		})
	}
}

func TestPushConsumerStartsAtEnd(t *testing.T) {
	k := testenv.StartKafka(t)
	topic := uniqueName("push")
	p := newPushProducer(t, producerConfig(k, topic))
	if err := p.PublishPush(t.Context(), []server.KeyedPush{testPush("c1", "old")}); err != nil {
		t.Fatalf("PublishPush: %v", err)
	}

	got := newReceived()
	c := newPushConsumer(t, consumerConfig(k, topic, ""))
	b := runBackground(t, func(ctx context.Context) error { return c.ConsumePush(ctx, got.handlePush) })
	waitReady(t, c, b)
	if err := p.PublishPush(t.Context(), []server.KeyedPush{testPush("c1", "new")}); err != nil {
		t.Fatalf("PublishPush: %v", err)
	}
	waitFor(t, "the record published after Ready", func() bool { return got.count() >= 1 })
	if got := got.get("c1"); strings.Join(got, ",") != "new" {
		t.Errorf("records of c1: got %v, want only the one published after Ready", got)
	}
}

func TestPushConsumerFindsNewPartitions(t *testing.T) {
	cases := []struct {
		name string
		// before prepares the topic before the consumer starts.
		before func(t *testing.T, k *testenv.Kafka, topic string)
		// after changes the topic once the consumer is ready.
		after func(t *testing.T, k *testenv.Kafka, topic string)
	}{
		{
			name: "partitions added",
			before: func(t *testing.T, k *testenv.Kafka, topic string) {
				cfg := producerConfig(k, topic)
				cfg.Partition = 1
				newPushProducer(t, cfg)
			},
			after: func(t *testing.T, k *testenv.Kafka, topic string) {
				if _, err := newAdmin(t, k).CreatePartitions(t.Context(), 3, topic); err != nil {
					t.Fatalf("add 3 partitions to %q: %v", topic, err)
				}
			},
		},
		{
			name:   "topic created after the start",
			before: func(*testing.T, *testenv.Kafka, string) {},
			after: func(t *testing.T, k *testenv.Kafka, topic string) {
				newPushProducer(t, producerConfig(k, topic))
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := testenv.StartKafka(t)
			topic := uniqueName("push")
			tc.before(t, k, topic)
			got := newReceived()
			cfg := consumerConfig(k, topic, "")
			cfg.PartitionCheckInterval = 50 * time.Millisecond
			c := newPushConsumer(t, cfg)
			b := runBackground(t, func(ctx context.Context) error { return c.ConsumePush(ctx, got.handlePush) })
			waitReady(t, c, b)

			tc.after(t, k, topic)
			// A new producer, so its metadata has every partition.
			p := newPushProducer(t, producerConfig(k, topic))
			const convs = 20
			var recs []server.KeyedPush
			for i := range convs {
				recs = append(recs, testPush(fmt.Sprintf("conv-%d", i), "r"))
			}
			if err := p.PublishPush(t.Context(), recs); err != nil {
				t.Fatalf("PublishPush: %v", err)
			}
			if n := partitionCount(t, newAdmin(t, k), topic); n != 4 {
				t.Fatalf("partitions of %q: got %d, want 4", topic, n)
			}
			waitFor(t, fmt.Sprintf("%d records spread over 4 partitions", convs), func() bool { return got.count() >= convs })
		})
	}
}

func TestConsumeRunsOnce(t *testing.T) {
	k := testenv.StartKafka(t)
	topic := uniqueName("topic")
	newPushProducer(t, producerConfig(k, topic))
	mc := newMsgConsumer(t, consumerConfig(k, topic, uniqueName("group")))
	pc := newPushConsumer(t, consumerConfig(k, topic, ""))
	got := newReceived()
	runBackground(t, func(ctx context.Context) error { return mc.ConsumeMsgs(ctx, got.handleMsgs) })
	pb := runBackground(t, func(ctx context.Context) error { return pc.ConsumePush(ctx, got.handlePush) })
	waitReady(t, pc, pb)
	waitFor(t, "the first ConsumeMsgs to run", mc.running.Load)

	cases := []struct {
		name string
		err  error
		want string
	}{
		{name: "second ConsumeMsgs while one runs", err: mc.ConsumeMsgs(t.Context(), got.handleMsgs), want: "already running"},
		{name: "second ConsumePush", err: pc.ConsumePush(t.Context(), got.handlePush), want: "called twice"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", tc.err, tc.want)
			}
		})
	}
}

// runningQueues is a producer and a consumer of each topic, running until
// the test ends.
type runningQueues struct {
	msgTopic, pushTopic string
	mp                  *MsgProducer
	pp                  *PushProducer
	msgs, pushes        *received
	consumers           map[string]*background
}

func startQueues(t *testing.T, k *testenv.Kafka) *runningQueues {
	t.Helper()
	q := &runningQueues{msgTopic: uniqueName("msg"), pushTopic: uniqueName("push"), msgs: newReceived(), pushes: newReceived()}
	q.mp = newMsgProducer(t, producerConfig(k, q.msgTopic))
	q.pp = newPushProducer(t, producerConfig(k, q.pushTopic))
	mc := newMsgConsumer(t, consumerConfig(k, q.msgTopic, uniqueName("group")))
	mb := runBackground(t, func(ctx context.Context) error { return mc.ConsumeMsgs(ctx, q.msgs.handleMsgs) })
	// The default PartitionCheckInterval, so a push consumer that waits
	// for a deleted topic must rely on its own faster check.
	pc := newPushConsumer(t, consumerConfig(k, q.pushTopic, ""))
	pb := runBackground(t, func(ctx context.Context) error { return pc.ConsumePush(ctx, q.pushes.handlePush) })
	waitReady(t, pc, pb)
	q.consumers = map[string]*background{"ConsumeMsgs": mb, "ConsumePush": pb}
	return q
}

// publish writes one record with content to each topic.
func (q *runningQueues) publish(t *testing.T, content string) error {
	if err := q.mp.PublishMsg(t.Context(), testMsg("c1", content)); err != nil {
		return err
	}
	return q.pp.PublishPush(t.Context(), []server.KeyedPush{testPush("c1", content)})
}

// TestQueuesRecover breaks the cluster under running producers and
// consumers. After the repair, publishes must succeed again and both
// consumers must receive them without being restarted.
func TestQueuesRecover(t *testing.T) {
	cases := []struct {
		name string
		// disrupt breaks the cluster, checks the producers during the
		// break, and repairs it, or leaves the repair to the producers.
		disrupt func(t *testing.T, k *testenv.Kafka, q *runningQueues)
	}{
		{
			name: "outage",
			disrupt: func(t *testing.T, k *testenv.Kafka, q *runningQueues) {
				k.Stop()
				if err := q.publish(t, "during"); !errors.Is(err, server.ErrUnavailable) {
					t.Fatalf("publish during the outage: got %v, want server.ErrUnavailable", err)
				}
				k.Restart(t)
			},
		},
		{
			// As a wiped cluster does. The producers create the topics
			// again, and the consumers switch to the new topic IDs.
			name: "topics deleted",
			disrupt: func(t *testing.T, k *testenv.Kafka, q *runningQueues) {
				if _, err := newAdmin(t, k).DeleteTopics(t.Context(), q.msgTopic, q.pushTopic); err != nil {
					t.Fatalf("delete topics: %v", err)
				}
				for _, p := range []server.Pinger{q.mp, q.pp} {
					waitFor(t, "Ping to succeed once the topic exists again", func() bool { return p.Ping(t.Context()) == nil })
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := testenv.StartKafka(t)
			q := startQueues(t, k)
			if err := q.publish(t, "before"); err != nil {
				t.Fatalf("publish before the disruption: %v", err)
			}
			waitFor(t, "the records published before the disruption", func() bool { return q.msgs.count() >= 1 && q.pushes.count() >= 1 })

			tc.disrupt(t, k, q)
			waitFor(t, "a publish to succeed after the disruption", func() bool {
				err := q.publish(t, "after")
				if err != nil {
					t.Logf("publish after the disruption: %v", err)
				}
				return err == nil
			})
			waitFor(t, "the records published after the disruption", func() bool {
				return slices.Contains(q.msgs.get("c1"), "after") && slices.Contains(q.pushes.get("c1"), "after")
			})
			for name, b := range q.consumers {
				select {
				case <-b.done:
					t.Errorf("%s returned after the disruption with %v, want it to keep consuming", name, b.err)
				default:
				}
			}
		})
	}
}
