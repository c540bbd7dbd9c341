package app_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/internal/wstest"
	"github.com/imlite/imlite/server/app"
	"github.com/imlite/imlite/server/config"
	"github.com/imlite/imlite/ws"
)

// stageNames are the spans of one message's trace, in causal order.
var stageNames = []string{"imlite.send", "imlite.store", "imlite.push", "imlite.deliver"}

// checkTrace finds the trace of the message with clientMsgID and checks
// that its four stages form one chain of parent and child spans.
func checkTrace(t *testing.T, spans tracetest.SpanStubs, clientMsgID string, seq int64) {
	t.Helper()
	var send *tracetest.SpanStub
	for i := range spans {
		if spans[i].Name == "imlite.send" && spans[i].Attributes != nil {
			for _, a := range spans[i].Attributes {
				if string(a.Key) == "imlite.seq" && a.Value.AsInt64() == seq {
					send = &spans[i]
				}
			}
		}
	}
	if send == nil {
		t.Fatalf("no imlite.send span with seq %d among %d spans", seq, len(spans))
	}
	traceID := send.SpanContext.TraceID()
	parent := send.SpanContext.SpanID()
	for _, name := range stageNames[1:] {
		var found *tracetest.SpanStub
		for i := range spans {
			s := &spans[i]
			if s.Name == name && s.SpanContext.TraceID() == traceID && s.Parent.SpanID() == parent {
				found = s
				break
			}
		}
		if found == nil {
			t.Fatalf("trace %s of %s has no %s span whose parent is the previous stage", traceID, clientMsgID, name)
		}
		parent = found.SpanContext.SpanID()
	}
}

func waitSpans(t *testing.T, exp *tracetest.InMemoryExporter, want int) tracetest.SpanStubs {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		spans := exp.GetSpans()
		n := 0
		for _, s := range spans {
			if s.Name == "imlite.deliver" {
				n++
			}
		}
		if n >= want {
			return spans
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d imlite.deliver spans after 10s, want %d", n, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTraceSpansSendStorePushDeliver(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	a := startAppWith(t, "", app.WithTracerProvider(tp))
	url := "ws://" + a.WebsocketAddr() + "/ws"
	alice := wstest.MustDial(t, url, mintToken(t, "alice", false), ws.Binary)
	bob := wstest.MustDial(t, url, mintToken(t, "bob", false), ws.Binary)

	resp := alice.SendText("bob", "", "traced", "hello")
	bob.WaitPush("the traced message", func(m *imlitev1.Message) bool { return m.GetClientMsgId() == "traced" })
	checkTrace(t, waitSpans(t, exp, 1), "traced", resp.GetSeq())
}

func TestTraceCrossesKafkaHops(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	c := newCluster(t, "")
	podA, podB := c.startWith("pod-a", app.WithTracerProvider(tp)), c.startWith("pod-b", app.WithTracerProvider(tp))
	alice, bob := c.dial(podA, "alice", "web"), c.dial(podB, "bob", "web")

	resp := alice.SendText("bob", "", "over-kafka", "hello")
	bob.WaitPush("the traced message on pod b", func(m *imlitev1.Message) bool { return m.GetClientMsgId() == "over-kafka" })
	checkTrace(t, waitSpans(t, exp, 1), "over-kafka", resp.GetSeq())
}

func TestMetricsCountAChat(t *testing.T) {
	a := startApp(t)
	url := "ws://" + a.WebsocketAddr() + "/ws"
	alice := wstest.MustDial(t, url, mintToken(t, "alice", false), ws.Binary)
	bob := wstest.MustDial(t, url, mintToken(t, "bob", false), ws.Binary)
	alice.SendText("bob", "", "m1", "hello")
	bob.WaitPush("the message", func(m *imlitev1.Message) bool { return m.GetClientMsgId() == "m1" })
	bob.Reply(bob.Send(&imlitev1.Frame{Body: &imlitev1.Frame_SendMsg{SendMsg: &imlitev1.SendMsgRequest{RecvId: "alice", Content: "no id"}}}))

	want := []string{
		`imlite_ws_connections{platform="web"} 2`,
		`imlite_messages_accepted_total{kind="stored"} 1`,
		`imlite_messages_stored_total 1`,
		`imlite_messages_pushed_total 1`,
		`imlite_deliveries_total 1`,
		`imlite_send_to_store_seconds_count 1`,
		`imlite_store_to_deliver_seconds_count 1`,
		`imlite_errors_total{code="InvalidArgument",transport="websocket"} 1`,
		`imlite_ws_frames_in_total 2`,
		`go_goroutines`,
		`process_resident_memory_bytes`,
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		body := scrape(t, "http://"+a.HTTPAddr()+"/metrics")
		var missing []string
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %q", missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	return string(body)
}

func TestSIGTERMDrainsWithoutLosingAcknowledgedSends(t *testing.T) {
	dir := t.TempDir()
	yaml := fmt.Sprintf(`
ListenOn: 127.0.0.1:0
Http: {Host: 127.0.0.1, Port: 0}
Websocket: {Host: 127.0.0.1, Port: 0}
Auth: {AccessSecret: %s}
Embedded: {Dir: %s}
Shutdown: {Timeout: 5s}
`, e2eSecret, dir)
	p := startProcess(t, "embedded", yaml)
	watcher := wstest.MustDial(t, "ws://"+p.addrs.Websocket+"/ws", mintToken(t, "bob", false), ws.Binary)
	client, ctx := grpcClientAt(t, p.addrs.GRPC, mintToken(t, "alice", false))

	// Four senders keep sending until the server refuses; SIGTERM lands
	// in the middle.
	var mu sync.Mutex
	acked := map[string]bool{}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for s := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("term-%d-%03d", s, i)
				if _, err := client.SendMsg(ctx, &imlitev1.SendMsgRequest{ClientMsgId: id, RecvId: "bob", Content: id}); err != nil {
					return
				}
				mu.Lock()
				acked[id] = true
				mu.Unlock()
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	exitErr, took := p.terminate(t, 5*time.Second+2*time.Second)
	close(stop)
	wg.Wait()
	if exitErr != nil {
		t.Errorf("exit after SIGTERM: %v; log:\n%s", exitErr, p.stderr.String())
	}
	t.Logf("exited %v after SIGTERM with %d acknowledged sends", took, len(acked))
	if code, _ := watcher.WaitClosed(time.Second); code != ws.CloseGoingAway {
		t.Errorf("websocket closed with %d, want %d (going away)", code, ws.CloseGoingAway)
	}
	if len(acked) == 0 {
		t.Fatal("no send was acknowledged before SIGTERM")
	}

	// Every acknowledged message is stored once.
	q := startProcess(t, "embedded-again", yaml)
	reader, rctx := grpcClientAt(t, q.addrs.GRPC, mintToken(t, "bob", false))
	seen := map[string]int{}
	for next := int64(1); ; {
		pulled, err := reader.PullMsg(rctx, &imlitev1.PullMsgRequest{ConversationId: "s:alice:bob", BeginSeq: next, Limit: 500})
		if err != nil {
			t.Fatalf("pull after restart from seq %d: %v", next, err)
		}
		for _, m := range pulled.GetMessages() {
			seen[m.GetClientMsgId()]++
			if m.GetSeq() != next {
				t.Fatalf("pulled seq %d, want %d: seqs must be contiguous", m.GetSeq(), next)
			}
			next++
		}
		if next > pulled.GetMaxSeq() {
			break
		}
	}
	for id := range acked {
		if seen[id] != 1 {
			t.Errorf("acknowledged %s stored %d times, want once", id, seen[id])
		}
	}
}

// startAppWith is startApp with extra configuration and options.
func startAppWith(t *testing.T, extra string, opts ...app.Option) *app.App {
	t.Helper()
	yaml := `
ListenOn: 127.0.0.1:0
Http: {Host: 127.0.0.1, Port: 0}
Websocket: {Host: 127.0.0.1, Port: 0}
Auth: {AccessSecret: ` + e2eSecret + `}
Embedded: {Dir: ` + t.TempDir() + `}
` + extra
	cfg, err := config.Parse([]byte(yaml), func(string) string { return "" })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), opts...)
	if err != nil {
		cancel()
		t.Fatalf("app.New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return a
}

// TestTakenPortLeavesNoFiles starts a server whose websocket port is taken:
// the start fails naming the port and creates nothing in the data
// directory.
func TestTakenPortLeavesNoFiles(t *testing.T) {
	occupied, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer occupied.Close()
	_, port, _ := net.SplitHostPort(occupied.Addr().String())
	dir := filepath.Join(t.TempDir(), "data")
	yaml := `
ListenOn: 127.0.0.1:0
Http: {Host: 127.0.0.1, Port: 0}
Websocket: {Host: 127.0.0.1, Port: ` + port + `}
Embedded: {Dir: ` + dir + `}
`
	cfg, err := config.Parse([]byte(yaml), func(string) string { return "" })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	_, err = app.New(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "Websocket.Port") {
		t.Fatalf("app.New with a taken port: %v, want an error naming Websocket.Port", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("data directory after the failed start: stat error %v, want it missing", err)
	}
}
