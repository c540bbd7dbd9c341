package queuetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	busv1 "github.com/imlite/imlite/gen/imlite/bus/v1"
	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
)

// probeGroup marks the records that waitSubscribed publishes, which the
// logs skip.
const probeGroup = "queuetest-probe"

// pushDelivery returns delivery i of conversation conv, with seq i+1.
func pushDelivery(conv string, i int) server.KeyedPush {
	return server.KeyedPush{Key: conv, Record: &busv1.PushRecord{Event: &busv1.PushRecord_Delivery{Delivery: &busv1.Delivery{
		Msg: &imlitev1.Message{
			ServerMsgId:    fmt.Sprintf("%s/%d", conv, i),
			SenderId:       "alice",
			ConversationId: conv,
			Seq:            int64(i + 1),
		},
		OriginPod: "pod-a",
	}}}}
}

// pushLog is the record of what a push handler received.
type pushLog struct {
	mu      sync.Mutex
	records []*busv1.PushRecord
	byKey   map[string][]int
	probed  bool
}

func newPushLog() *pushLog { return &pushLog{byKey: make(map[string][]int)} }

func (l *pushLog) handle(_ context.Context, recs []*busv1.PushRecord) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, rec := range recs {
		if rec.GetGroupChanged().GetGroupId() == probeGroup {
			l.probed = true
			continue
		}
		l.records = append(l.records, rec)
		if msg := rec.GetDelivery().GetMsg(); msg != nil {
			l.byKey[msg.GetConversationId()] = append(l.byKey[msg.GetConversationId()], int(msg.GetSeq()-1))
		}
	}
}

func (l *pushLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.records)
}

func (l *pushLog) sawProbe() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.probed
}

func (l *pushLog) snapshot() (map[string][]int, []*busv1.PushRecord) {
	l.mu.Lock()
	defer l.mu.Unlock()
	byKey := make(map[string][]int, len(l.byKey))
	for k, v := range l.byKey {
		byKey[k] = append([]int(nil), v...)
	}
	return byKey, append([]*busv1.PushRecord(nil), l.records...)
}

// waitSubscribed returns once records published from now on reach the
// consumer. A server.Readier signals that by closing Ready. For other consumers
// the suite publishes probe records until one arrives, because such a
// consumer gives no other signal that it subscribed.
func waitSubscribed(t *testing.T, topics Topics, c server.PushConsumer, r *running, log *pushLog) {
	t.Helper()
	if readier, ok := c.(server.Readier); ok {
		select {
		case <-readier.Ready():
		case <-r.done:
			t.Fatalf("%s returned before Ready was closed: %v", r.name, r.err)
		case <-time.After(waitTimeout):
			t.Fatalf("%s: Ready not closed within %v", r.name, waitTimeout)
		}
		return
	}
	probe := []server.KeyedPush{{Key: probeGroup, Record: &busv1.PushRecord{Event: &busv1.PushRecord_GroupChanged{
		GroupChanged: &busv1.GroupChanged{GroupId: probeGroup},
	}}}}
	waitFor(t, r.name+" to receive a probe record", func() bool {
		if err := topics.PushProducer.PublishPush(context.Background(), probe); err != nil {
			t.Fatalf("PublishPush(probe): %v", err)
		}
		time.Sleep(20 * time.Millisecond)
		return log.sawProbe()
	}, r)
}

func testPushEveryConsumer(t *testing.T, topics Topics) {
	const perConv = 20
	convs := keyNames("conv", 10)
	logs := []*pushLog{newPushLog(), newPushLog()}
	runs := make([]*running, len(logs))
	for i, log := range logs {
		c := topics.NewPushConsumer(t)
		runs[i] = startPushConsumer(t, fmt.Sprintf("push consumer %d", i+1), c, log.handle)
		waitSubscribed(t, topics, c, runs[i], log)
	}

	// Each call carries one record of every conversation, so one call
	// spans keys and partitions.
	for i := range perConv {
		recs := make([]server.KeyedPush, 0, len(convs))
		for _, conv := range convs {
			recs = append(recs, pushDelivery(conv, i))
		}
		if err := topics.PushProducer.PublishPush(context.Background(), recs); err != nil {
			t.Fatalf("PublishPush(call %d): %v", i, err)
		}
	}

	want := len(convs) * perConv
	for i, log := range logs {
		who := runs[i].name
		waitFor(t, fmt.Sprintf("%d push records at %s", want, who), func() bool { return log.count() >= want }, runs[i])
		byKey, _ := log.snapshot()
		checkSequences(t, who, byKey, convs, perConv)
	}
}

func testPushRecordsIntact(t *testing.T, topics Topics) {
	const key = "g:team"
	stored := &imlitev1.Message{
		ServerMsgId: "srv-1", ClientMsgId: "cli-1", SenderId: "alice", SenderPlatform: "web",
		ConversationId: key, ConversationType: imlitev1.ConversationType_CONVERSATION_TYPE_GROUP,
		GroupId: "team", Seq: 41, Content: "stored", ServerTime: 1_700_000_000_456,
	}
	// A transient message (storage=false) is published straight to the
	// push topic, with seq 0.
	transient := &imlitev1.Message{
		ServerMsgId: "srv-2", ClientMsgId: "cli-2", SenderId: "alice", ConversationId: key,
		ConversationType: imlitev1.ConversationType_CONVERSATION_TYPE_GROUP, GroupId: "team",
		Content: "typing", Options: &imlitev1.MsgOptions{Storage: proto.Bool(false)},
	}
	want := []*busv1.PushRecord{
		{Event: &busv1.PushRecord_Delivery{Delivery: &busv1.Delivery{Msg: stored, OriginPod: "pod-a", OriginConn: "conn-1", StoredAtMicros: 1_700_000_000_456_789}}},
		{Event: &busv1.PushRecord_Delivery{Delivery: &busv1.Delivery{Msg: transient, OriginPod: "pod-b", OriginConn: "conn-2"}}},
		{Event: &busv1.PushRecord_Duplicate{Duplicate: &busv1.Duplicate{RequestMsgId: "srv-3", Stored: stored, OriginPod: "pod-a"}}},
		{Event: &busv1.PushRecord_Failure{Failure: &busv1.Failure{ServerMsgId: "srv-4", OriginPod: "pod-a", Code: 13, Message: "malformed"}}},
		{Event: &busv1.PushRecord_Kick{Kick: &busv1.Kick{UserId: "bob", Platforms: []string{"ios", "web"}, Reason: "admin", KickedAtMicros: 1_700_000_001_000_000}}},
		{Event: &busv1.PushRecord_GroupChanged{GroupChanged: &busv1.GroupChanged{GroupId: "team"}}},
		{Event: &busv1.PushRecord_ConnReplaced{ConnReplaced: &busv1.ConnReplaced{UserId: "bob", Platform: "ios", KeepPod: "pod-b", KeepConn: "conn-9", ConnectedAtMicros: 1_700_000_002_000_000}}},
	}
	log := newPushLog()
	c := topics.NewPushConsumer(t)
	r := startPushConsumer(t, "push consumer", c, log.handle)
	waitSubscribed(t, topics, c, r, log)

	recs := make([]server.KeyedPush, len(want))
	for i, rec := range want {
		recs[i] = server.KeyedPush{Key: key, Record: rec}
	}
	if err := topics.PushProducer.PublishPush(context.Background(), recs); err != nil {
		t.Fatalf("PublishPush: %v", err)
	}
	waitFor(t, fmt.Sprintf("%d push records", len(want)), func() bool { return log.count() >= len(want) }, r)

	_, got := log.snapshot()
	if len(got) != len(want) {
		t.Fatalf("push records: got %d, want %d", len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("push record %d (same key, so in publish order):\ngot  %v\nwant %v", i, got[i], want[i])
		}
	}
}

func testPushEmptyPublish(t *testing.T, topics Topics) {
	if err := topics.PushProducer.PublishPush(context.Background(), nil); err != nil {
		t.Errorf("PublishPush(nil): got %v, want nil", err)
	}
	if err := topics.PushProducer.PublishPush(context.Background(), []server.KeyedPush{}); err != nil {
		t.Errorf("PublishPush(empty slice): got %v, want nil", err)
	}
}

func testConsumersStop(t *testing.T, topics Topics) {
	msgs := newMsgLog()
	m := startMsgConsumer(t, "msg consumer", topics.NewMsgConsumer(t), msgs.handle)
	pushes := newPushLog()
	pc := topics.NewPushConsumer(t)
	p := startPushConsumer(t, "push consumer", pc, pushes.handle)
	waitSubscribed(t, topics, pc, p, pushes)

	// stop fails the test unless each returns with nil or context.Canceled.
	m.stop(t)
	p.stop(t)
}
