package kafkaqueue

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	busv1 "github.com/imlite/imlite/gen/imlite/bus/v1"
	"github.com/imlite/imlite/internal/testenv"
	"github.com/imlite/imlite/server"
)

func TestHeaderCarrier(t *testing.T) {
	cases := []struct {
		name     string
		headers  []kgo.RecordHeader
		set      [2]string // key and value to set, or an empty key for none
		get      string
		wantGet  string
		wantKeys []string
	}{
		{name: "no headers", get: "traceparent", wantGet: "", wantKeys: []string{}},
		{
			name:     "first of repeated key",
			headers:  []kgo.RecordHeader{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}, {Key: "a", Value: []byte("3")}},
			get:      "a",
			wantGet:  "1",
			wantKeys: []string{"a", "b"},
		},
		{
			name:     "set replaces every header of the key",
			headers:  []kgo.RecordHeader{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}, {Key: "a", Value: []byte("3")}},
			set:      [2]string{"a", "9"},
			get:      "a",
			wantGet:  "9",
			wantKeys: []string{"b", "a"},
		},
		{
			name:     "set adds a new key",
			headers:  []kgo.RecordHeader{{Key: "b", Value: []byte("2")}},
			set:      [2]string{"traceparent", "00-abc-def-01"},
			get:      "traceparent",
			wantGet:  "00-abc-def-01",
			wantKeys: []string{"b", "traceparent"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := HeaderCarrier{Record: &kgo.Record{Headers: slices.Clone(tc.headers)}}
			if tc.set[0] != "" {
				c.Set(tc.set[0], tc.set[1])
			}
			if got := c.Get(tc.get); got != tc.wantGet {
				t.Errorf("Get(%q): got %q, want %q", tc.get, got, tc.wantGet)
			}
			if got := c.Keys(); !slices.Equal(got, tc.wantKeys) {
				t.Errorf("Keys(): got %v, want %v", got, tc.wantKeys)
			}
		})
	}
}

type traceKey struct{}

func TestTraceHooks(t *testing.T) {
	k := testenv.StartKafka(t)
	inject := func(ctx context.Context, h HeaderCarrier) {
		if id, ok := ctx.Value(traceKey{}).(string); ok {
			h.Set("trace-id", id)
		}
	}
	extract := func(ctx context.Context, hs []HeaderCarrier) context.Context {
		return context.WithValue(ctx, traceKey{}, hs[0].Get("trace-id"))
	}
	var mu sync.Mutex
	seen := map[string]string{}
	record := func(stage string, ctx context.Context) {
		mu.Lock()
		defer mu.Unlock()
		seen[stage], _ = ctx.Value(traceKey{}).(string)
	}
	saw := func(stage string) bool {
		mu.Lock()
		defer mu.Unlock()
		_, ok := seen[stage]
		return ok
	}

	msgTopic, pushTopic := uniqueName("msg"), uniqueName("push")
	pcfg := producerConfig(k, msgTopic)
	pcfg.InjectHeaders = inject
	mp := newMsgProducer(t, pcfg)
	pcfg.Topic = pushTopic
	pp := newPushProducer(t, pcfg)
	ccfg := consumerConfig(k, msgTopic, uniqueName("group"))
	ccfg.BatchContext = extract
	mc := newMsgConsumer(t, ccfg)
	runBackground(t, func(ctx context.Context) error {
		return mc.ConsumeMsgs(ctx, func(ctx context.Context, _ []*busv1.MsgRecord) error {
			record("msg", ctx)
			return nil
		})
	})
	ccfg.Topic = pushTopic
	pc := newPushConsumer(t, ccfg)
	pb := runBackground(t, func(ctx context.Context) error {
		return pc.ConsumePush(ctx, func(ctx context.Context, _ []*busv1.PushRecord) { record("push", ctx) })
	})
	waitReady(t, pc, pb)

	ctx := context.WithValue(t.Context(), traceKey{}, "trace-1")
	if err := mp.PublishMsg(ctx, testMsg("c1", "x")); err != nil {
		t.Fatalf("PublishMsg: %v", err)
	}
	if err := pp.PublishPush(ctx, []server.KeyedPush{testPush("c1", "x")}); err != nil {
		t.Fatalf("PublishPush: %v", err)
	}
	waitFor(t, "both handlers called", func() bool { return saw("msg") && saw("push") })
	for _, stage := range []string{"msg", "push"} {
		mu.Lock()
		got := seen[stage]
		mu.Unlock()
		if got != "trace-1" {
			t.Errorf("%s handler ctx: got trace id %q, want %q carried from the publish ctx through the headers", stage, got, "trace-1")
		}
	}
}
