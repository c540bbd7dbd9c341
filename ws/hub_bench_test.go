package ws_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server/app"
	"github.com/imlite/imlite/server/auth"
	"github.com/imlite/imlite/server/config"
)

// BenchmarkHubFanOut measures ws.Hub.Deliver of one group message to 1,000
// users, each with one real websocket connection on 127.0.0.1, until every
// client has read its copy. It covers the hub's work (connection lookup,
// one encoding per message, queueing, batched socket writes) and the
// kernel's loopback path, not the store or the queues before the hub. The
// clients run in the same process and share its CPUs. An op is one
// message, so deliveries/s is 1,000 times ops/s.
func BenchmarkHubFanOut(b *testing.B) {
	const members = 1000
	a, signer := startBenchApp(b, members+10)
	fan := dialFanOut(b, a, signer, members)
	hub := a.Hub()
	var seq int64
	deliver := func() {
		seq++
		msg := benchMessage(seq)
		msg.ConversationId, msg.ConversationType, msg.RecvId, msg.GroupId = "g:bench", imlitev1.ConversationType_CONVERSATION_TYPE_GROUP, "", "bench"
		hub.Deliver(context.Background(), msg, fan.users, "", time.Now())
	}

	// one_at_a_time waits for all copies of a message before the next,
	// so ns/op is the latency of a 1,000-member fan-out.
	b.Run("one_at_a_time", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			target := fan.received.Load() + members
			deliver()
			fan.waitFor(b, target)
		}
		b.ReportMetric(float64(b.N*members)/b.Elapsed().Seconds(), "deliveries/s")
	})

	// pipelined keeps up to 32 messages in flight, well under the
	// 256-frame send queue of each connection, so ns/op is the throughput.
	b.Run("pipelined_32", func(b *testing.B) {
		const window = 32
		b.ReportAllocs()
		base := fan.received.Load()
		i := int64(0)
		for b.Loop() {
			if i >= window {
				fan.waitFor(b, base+(i-window+1)*members)
			}
			deliver()
			i++
		}
		fan.waitFor(b, base+i*members)
		b.ReportMetric(float64(b.N*members)/b.Elapsed().Seconds(), "deliveries/s")
	})
}

// startBenchApp runs an embedded imlite on free loopback ports for a
// benchmark and returns it with a signer for its tokens.
func startBenchApp(b *testing.B, maxConns int) (*app.App, *auth.Signer) {
	b.Helper()
	yaml := fmt.Sprintf(`
ListenOn: 127.0.0.1:0
Http: {Host: 127.0.0.1, Port: 0}
Websocket: {Host: 127.0.0.1, Port: 0, MaxConnNum: %d}
Auth: {AccessSecret: %s}
Embedded: {Dir: %s}
Log: {Level: error}
`, maxConns, testSecret, b.TempDir())
	cfg, err := config.Parse([]byte(yaml), func(string) string { return "" })
	if err != nil {
		b.Fatalf("config: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		cancel()
		b.Fatalf("app.New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("Run: %v", err)
		}
	})
	signer, err := auth.NewSigner([]byte(testSecret), time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	return a, signer
}

// fanOutClients are connections that count the frames they read.
type fanOutClients struct {
	users    []string
	received atomic.Int64
	// target and notify let waitFor sleep until received reaches target:
	// the reader whose increment reaches it sends on notify.
	target atomic.Int64
	notify chan struct{}
}

// dialFanOut connects n users and waits until the hub has registered all.
func dialFanOut(b *testing.B, a *app.App, signer *auth.Signer, n int) *fanOutClients {
	b.Helper()
	f := &fanOutClients{notify: make(chan struct{}, 1)}
	f.target.Store(-1)
	dialer := websocket.Dialer{ReadBufferSize: 4096, HandshakeTimeout: 10 * time.Second}
	for i := range n {
		user := fmt.Sprintf("fan-u%d", i)
		tok, _, err := signer.Issue(user, "web", imlitev1.Role_ROLE_USER, 0)
		if err != nil {
			b.Fatal(err)
		}
		h := http.Header{}
		h.Set("Authorization", "Bearer "+tok)
		conn, _, err := dialer.Dial("ws://"+a.WebsocketAddr()+"/ws", h)
		if err != nil {
			b.Fatalf("dial %s: %v", user, err)
		}
		b.Cleanup(func() { conn.Close() })
		f.users = append(f.users, user)
		go f.read(conn)
	}
	deadline := time.Now().Add(10 * time.Second)
	for a.Hub().Count() < n {
		if time.Now().After(deadline) {
			b.Fatalf("hub holds %d of %d connections after 10s", a.Hub().Count(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return f
}

// read counts frames without decoding them, so the clients cost the
// server's CPUs as little as possible.
func (f *fanOutClients) read(conn *websocket.Conn) {
	for {
		_, r, err := conn.NextReader()
		if err != nil {
			return
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			return
		}
		if f.received.Add(1) == f.target.Load() {
			select {
			case f.notify <- struct{}{}:
			default:
			}
		}
	}
}

// waitFor returns once the clients read target frames in total.
func (f *fanOutClients) waitFor(b *testing.B, target int64) {
	f.target.Store(target)
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for f.received.Load() < target {
		select {
		case <-f.notify:
		case <-deadline.C:
			b.Fatalf("clients read %d of %d frames within 30s; a connection may have been closed as a slow consumer", f.received.Load(), target)
		}
	}
}
