package queuetest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	busv1 "github.com/imlite/imlite/gen/imlite/bus/v1"
	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
)

// msgRecord returns record i of conversation conv, with content i.
func msgRecord(conv string, i int) *busv1.MsgRecord {
	return &busv1.MsgRecord{
		Msg: &imlitev1.Message{
			ServerMsgId:    fmt.Sprintf("%s/%d", conv, i),
			ClientMsgId:    fmt.Sprintf("cli-%s-%d", conv, i),
			SenderId:       "alice",
			ConversationId: conv,
			Content:        strconv.Itoa(i),
		},
		OriginPod: "pod-a",
	}
}

// msgLog is the record of what a msg handler received.
type msgLog struct {
	mu      sync.Mutex
	batches [][]*busv1.MsgRecord
	byKey   map[string][]int
	total   int
}

func newMsgLog() *msgLog { return &msgLog{byKey: make(map[string][]int)} }

func (l *msgLog) add(recs []*busv1.MsgRecord) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.batches = append(l.batches, recs)
	for _, rec := range recs {
		i, err := strconv.Atoi(rec.GetMsg().GetContent())
		if err != nil {
			i = -1
		}
		conv := rec.GetMsg().GetConversationId()
		l.byKey[conv] = append(l.byKey[conv], i)
		l.total++
	}
}

// handle acknowledges every batch.
func (l *msgLog) handle(_ context.Context, recs []*busv1.MsgRecord) error {
	l.add(recs)
	return nil
}

func (l *msgLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

func (l *msgLog) snapshot() (map[string][]int, [][]*busv1.MsgRecord) {
	l.mu.Lock()
	defer l.mu.Unlock()
	byKey := make(map[string][]int, len(l.byKey))
	for k, v := range l.byKey {
		byKey[k] = append([]int(nil), v...)
	}
	return byKey, append([][]*busv1.MsgRecord(nil), l.batches...)
}

// publishMsgs publishes n records for each conversation, one goroutine per
// conversation, so keys interleave on the topic while each keeps its order.
func publishMsgs(t *testing.T, topics Topics, convs []string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(convs))
	for _, conv := range convs {
		wg.Go(func() {
			for i := range n {
				if err := topics.MsgProducer.PublishMsg(context.Background(), msgRecord(conv, i)); err != nil {
					errs <- fmt.Errorf("PublishMsg(%s, record %d): %w", conv, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func testMsgOrderPerKey(t *testing.T, topics Topics) {
	const perConv = 25
	convs := keyNames("conv", 20)
	log := newMsgLog()
	c := startMsgConsumer(t, "msg consumer", topics.NewMsgConsumer(t), log.handle)

	publishMsgs(t, topics, convs, perConv)

	want := len(convs) * perConv
	waitFor(t, fmt.Sprintf("%d msg records", want), func() bool { return log.count() >= want }, c)
	c.stop(t)
	byKey, _ := log.snapshot()
	checkSequences(t, "msg consumer", byKey, convs, perConv)
}

func testMsgBatches(t *testing.T, topics Topics) {
	const perConv = 50
	convs := keyNames("conv", 4)
	// Records queued before the consumer starts are available together, so
	// a batching consumer hands several to one call.
	publishMsgs(t, topics, convs, perConv)

	log := newMsgLog()
	c := startMsgConsumer(t, "msg consumer", topics.NewMsgConsumer(t), log.handle)
	want := len(convs) * perConv
	waitFor(t, fmt.Sprintf("%d msg records", want), func() bool { return log.count() >= want }, c)
	c.stop(t)

	byKey, batches := log.snapshot()
	checkSequences(t, "msg consumer", byKey, convs, perConv)
	largest := 0
	for i, b := range batches {
		if len(b) == 0 {
			t.Errorf("handler call %d got an empty batch, want at least one record", i)
		}
		largest = max(largest, len(b))
	}
	if largest < 2 {
		t.Errorf("largest batch of %d handler calls: got %d records, want more than 1 for %d queued records", len(batches), largest, want)
	}
}

func testMsgRecordIntact(t *testing.T, topics Topics) {
	want := &busv1.MsgRecord{
		Msg: &imlitev1.Message{
			ServerMsgId:      "srv-1",
			ClientMsgId:      "cli-1",
			SenderId:         "alice",
			SenderPlatform:   "ios",
			ConversationId:   "g:team",
			ConversationType: imlitev1.ConversationType_CONVERSATION_TYPE_GROUP,
			GroupId:          "team",
			ContentType:      101,
			Content:          "h\u00e9llo \U0001F44B",
			ClientTime:       1_700_000_000_123,
			ServerTime:       1_700_000_000_456,
			Options:          &imlitev1.MsgOptions{Storage: proto.Bool(true)},
			OfflinePush:      &imlitev1.OfflinePush{Title: "t", Desc: "d", Ex: "{}"},
			Ex:               `{"k":"v"}`,
		},
		OriginPod:  "pod-a",
		OriginConn: "conn-7",
	}
	log := newMsgLog()
	c := startMsgConsumer(t, "msg consumer", topics.NewMsgConsumer(t), log.handle)
	if err := topics.MsgProducer.PublishMsg(context.Background(), want); err != nil {
		t.Fatalf("PublishMsg: %v", err)
	}
	waitFor(t, "1 msg record", func() bool { return log.count() >= 1 }, c)
	c.stop(t)

	_, batches := log.snapshot()
	if got := batches[0][0]; !proto.Equal(got, want) {
		t.Errorf("consumed msg record differs from the published one:\ngot  %v\nwant %v", got, want)
	}
}

func testMsgRedeliveredAfterRestart(t *testing.T, topics Topics) {
	const perConv = 5
	convs := keyNames("conv", 3)
	publishMsgs(t, topics, convs, perConv)

	// The first consumer never acknowledges: every handler call waits for
	// the stop and fails with ctx's error, as the core's handler does.
	unacked := newMsgLog()
	first := startMsgConsumer(t, "first msg consumer", topics.NewMsgConsumer(t), func(ctx context.Context, recs []*busv1.MsgRecord) error {
		unacked.add(recs)
		<-ctx.Done()
		return ctx.Err()
	})
	waitFor(t, "a batch at the first consumer", func() bool { return unacked.count() > 0 }, first)
	first.stop(t)

	log := newMsgLog()
	second := startMsgConsumer(t, "second msg consumer", topics.NewMsgConsumer(t), log.handle)
	want := len(convs) * perConv
	waitFor(t, fmt.Sprintf("%d msg records at the second consumer", want), func() bool { return log.count() >= want }, second)
	second.stop(t)

	byKey, _ := log.snapshot()
	checkSequences(t, "second msg consumer", byKey, convs, perConv)
}

func testMsgFailedBatchRetried(t *testing.T, topics Topics) {
	const perConv = 10
	convs := keyNames("conv", 1)
	log := newMsgLog()
	var failed guarded[[]*busv1.MsgRecord]
	c := startMsgConsumer(t, "msg consumer", topics.NewMsgConsumer(t), func(ctx context.Context, recs []*busv1.MsgRecord) error {
		first := false
		failed.with(func(v *[]*busv1.MsgRecord) {
			if *v == nil {
				*v, first = recs, true
			}
		})
		if first {
			return errors.New("injected handler failure")
		}
		return log.handle(ctx, recs)
	})
	publishMsgs(t, topics, convs, perConv)

	want := len(convs) * perConv
	waitFor(t, fmt.Sprintf("%d acknowledged msg records", want), func() bool { return log.count() >= want }, c)
	c.stop(t)

	byKey, _ := log.snapshot()
	// The failed records are acknowledged later, and nothing after them
	// is skipped or handed over twice.
	checkSequences(t, "msg consumer", byKey, convs, perConv)
}
