package kafkaqueue

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	busv1 "github.com/imlite/imlite/gen/imlite/bus/v1"
	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/internal/testenv"
	"github.com/imlite/imlite/server"
)

func TestTraceTravelsInHeaders(t *testing.T) {
	trace := map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "k=v"}
	rec := &busv1.MsgRecord{Msg: &imlitev1.Message{ConversationId: "s:a:b", Content: "x"}, Trace: trace}

	r, err := newRecord("s:a:b", rec)
	if err != nil {
		t.Fatalf("newRecord: %v", err)
	}
	headers := map[string]string{}
	for _, h := range r.Headers {
		headers[h.Key] = string(h.Value)
	}
	if !maps.Equal(headers, trace) {
		t.Errorf("headers = %v, want the trace context %v", headers, trace)
	}
	var inValue busv1.MsgRecord
	if err := proto.Unmarshal(r.Value, &inValue); err != nil {
		t.Fatal(err)
	}
	if len(inValue.GetTrace()) != 0 {
		t.Errorf("value carries trace %v, want it in the headers only", inValue.GetTrace())
	}
	if !maps.Equal(rec.GetTrace(), trace) {
		t.Errorf("the published record lost its trace field: %v", rec.GetTrace())
	}

	decoded := decodeRecords[busv1.MsgRecord]([]*kgo.Record{r}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if len(decoded) != 1 || !maps.Equal(decoded[0].GetTrace(), trace) {
		t.Errorf("decoded = %v, want the trace context restored from the headers", decoded)
	}
}

func TestTraceCrossesTheBroker(t *testing.T) {
	k := testenv.StartKafka(t)
	topic := uniqueName("push")
	pp := newPushProducer(t, producerConfig(k, topic))
	pc := newPushConsumer(t, consumerConfig(k, topic, ""))
	got := make(chan *busv1.PushRecord, 1)
	b := runBackground(t, func(ctx context.Context) error {
		return pc.ConsumePush(ctx, func(_ context.Context, recs []*busv1.PushRecord) {
			for _, r := range recs {
				got <- r
			}
		})
	})
	waitReady(t, pc, b)
	push := testPush("c1", "x")
	push.Record.Trace = map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	if err := pp.PublishPush(t.Context(), []server.KeyedPush{push}); err != nil {
		t.Fatalf("PublishPush: %v", err)
	}
	select {
	case r := <-got:
		if r.GetTrace()["traceparent"] != push.Record.Trace["traceparent"] {
			t.Errorf("consumed trace %v, want %v", r.GetTrace(), push.Record.Trace)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no record consumed within 10s")
	}
}
