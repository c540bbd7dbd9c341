package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imlite/imlite/server/app"
	"github.com/imlite/imlite/server/config"
)

const e2eSecret = "bench-e2e-secret-0123456789abcdef0123"

// startServer runs an embedded imlite on free loopback ports and returns
// its websocket URL and a function that stops it early.
func startServer(t *testing.T) (wsURL string, stop func()) {
	t.Helper()
	yaml := fmt.Sprintf(`
ListenOn: 127.0.0.1:0
Http: {Host: 127.0.0.1, Port: 0}
Websocket: {Host: 127.0.0.1, Port: 0, MaxConnNum: 1000}
Auth: {AccessSecret: %s}
Embedded: {Dir: %s}
Shutdown: {Timeout: 5s}
Log: {Level: error}
`, e2eSecret, t.TempDir())
	cfg, err := config.Parse([]byte(yaml), func(string) string { return "" })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		cancel()
		t.Fatalf("app.New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("server Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return "ws://" + a.WebsocketAddr() + "/ws", stop
}

// runTool runs the tool with args and returns its report, its stderr and
// its exit status.
func runTool(t *testing.T, args ...string) (*report, string, int) {
	t.Helper()
	jsonPath := filepath.Join(t.TempDir(), "report.json")
	var stderr bytes.Buffer
	args = append(args, "-json", jsonPath, "-progress", "300ms")
	code := runMain(context.Background(), args, io.Discard, &stderr)
	data, err := os.ReadFile(jsonPath)
	if err != nil {
		return nil, stderr.String(), code
	}
	var rep report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, data)
	}
	return &rep, stderr.String(), code
}

func TestScenariosEndToEnd(t *testing.T) {
	wsURL, _ := startServer(t)
	common := []string{"-url", wsURL, "-secret", e2eSecret, "-server-pid", strconv.Itoa(os.Getpid()), "-duration", "1s", "-drain", "5s", "-sources", "4"}
	cases := []struct {
		name  string
		args  []string
		check func(t *testing.T, rep *report)
	}{
		{
			name: "idle",
			args: []string{"idle", "-n", "50"},
			check: func(t *testing.T, rep *report) {
				if rep.Connections.Held != 50 {
					t.Errorf("held %d connections, want 50", rep.Connections.Held)
				}
				if rep.Server == nil || rep.Server.RSSEndBytes <= 0 {
					t.Errorf("server section %+v, want the RSS read from /proc", rep.Server)
				}
			},
		},
		{
			name: "single",
			args: []string{"single", "-pairs", "5", "-rate", "200"},
			check: func(t *testing.T, rep *report) {
				checkMessages(t, rep, 1)
			},
		},
		{
			name: "single json unlimited rate",
			args: []string{"single", "-pairs", "2", "-encoding", "json", "-window", "8"},
			check: func(t *testing.T, rep *report) {
				checkMessages(t, rep, 1)
			},
		},
		{
			name: "group",
			args: []string{"group", "-group-size", "20", "-senders", "2", "-rate", "50"},
			check: func(t *testing.T, rep *report) {
				checkMessages(t, rep, 19)
			},
		},
		{
			name: "pull",
			args: []string{"pull", "-n", "2", "-fill", "150", "-page", "100"},
			check: func(t *testing.T, rep *report) {
				if rep.Pulls == nil || rep.Pulls.Count == 0 {
					t.Fatalf("pulls %+v, want some", rep.Pulls)
				}
				if rep.Latency["pull"].Count != uint64(rep.Pulls.Count) {
					t.Errorf("pull latency has %d samples for %d pulls", rep.Latency["pull"].Count, rep.Pulls.Count)
				}
			},
		},
		{
			name: "churn",
			args: []string{"churn", "-rate", "40", "-lifetime", "100ms"},
			check: func(t *testing.T, rep *report) {
				if rep.Churn == nil || rep.Churn.Opened < 20 || rep.Churn.Closed != rep.Churn.Opened {
					t.Errorf("churn %+v, want about 40 opened and all closed", rep.Churn)
				}
				if rep.Latency["ping"].Count != uint64(rep.Churn.Opened) {
					t.Errorf("%d ping round trips for %d connections", rep.Latency["ping"].Count, rep.Churn.Opened)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep, stderr, code := runTool(t, append(tc.args, common...)...)
			if code != 0 || rep == nil {
				t.Fatalf("exit status %d, report %v; stderr:\n%s", code, rep != nil, stderr)
			}
			if len(rep.Errors) > 0 {
				t.Errorf("errors %v, want none", rep.Errors)
			}
			if !strings.Contains(stderr, tc.args[0]+" t=") {
				t.Errorf("stderr has no progress line:\n%s", stderr)
			}
			if rep.Tool.OpenFileLimit == 0 || rep.Tool.RSSBytes == 0 {
				t.Errorf("tool section %+v, want the open-file limit and RSS", rep.Tool)
			}
			tc.check(t, rep)
		})
	}
}

// checkMessages checks a run that sent messages: every accepted send
// delivered fanout times, nothing lost or duplicated.
func checkMessages(t *testing.T, rep *report, fanout int64) {
	t.Helper()
	m := rep.Messages
	if m == nil || m.Accepted == 0 {
		t.Fatalf("messages %+v, want accepted sends", m)
	}
	if m.Accepted != m.Sent {
		t.Errorf("accepted %d of %d sends", m.Accepted, m.Sent)
	}
	if m.ExpectedDeliveries != m.Accepted*fanout || m.Delivered != m.ExpectedDeliveries {
		t.Errorf("delivered %d, expected %d, for %d accepted with fan-out %d", m.Delivered, m.ExpectedDeliveries, m.Accepted, fanout)
	}
	if d := rep.Delivery; d == nil || *d != (deliveryAccount{}) {
		t.Errorf("delivery check %+v, want nothing lost, duplicated, out of order or unconfirmed", d)
	}
	if got := rep.Latency["deliver"].Count; got != uint64(m.Delivered) {
		t.Errorf("%d deliver latency samples for %d deliveries", got, m.Delivered)
	}
}

func TestToolFailures(t *testing.T) {
	wsURL, _ := startServer(t)
	closed := closedPortURL(t)
	cases := []struct {
		name      string
		args      []string
		wantCode  int
		wantError string
	}{
		{name: "server down", args: []string{"idle", "-n", "3", "-url", closed, "-secret", e2eSecret}, wantCode: 1, wantError: "dial: connection refused"},
		{name: "wrong secret", args: []string{"idle", "-n", "3", "-url", wsURL, "-secret", "another-secret-0123456789abcdef01234"}, wantCode: 1, wantError: "dial: HTTP 401"},
		{name: "single with server down", args: []string{"single", "-pairs", "1", "-url", closed, "-secret", e2eSecret}, wantCode: 1},
		{name: "server pid gone", args: []string{"idle", "-n", "2", "-url", wsURL, "-secret", e2eSecret, "-server-pid", "999999999"}, wantCode: 0, wantError: "server probe failed"},
		{name: "bad flag", args: []string{"idle", "-n", "x"}, wantCode: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep, stderr, code := runTool(t, append(tc.args, "-duration", "300ms")...)
			if code != tc.wantCode {
				t.Fatalf("exit status %d, want %d; stderr:\n%s", code, tc.wantCode, stderr)
			}
			if tc.wantError == "" {
				return
			}
			if rep == nil {
				t.Fatalf("no report; stderr:\n%s", stderr)
			}
			if rep.Errors[tc.wantError] == 0 {
				t.Errorf("errors %v, want %q counted", rep.Errors, tc.wantError)
			}
		})
	}
}

// closedPortURL returns a websocket URL of a loopback port with no listener.
func closedPortURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "ws://" + addr + "/ws"
}

func TestServerStopsDuringRun(t *testing.T) {
	wsURL, stop := startServer(t)
	go func() {
		time.Sleep(700 * time.Millisecond)
		stop()
	}()
	rep, stderr, code := runTool(t, "single", "-pairs", "3", "-rate", "300", "-duration", "2s", "-drain", "1s", "-url", wsURL, "-secret", e2eSecret)
	if rep == nil {
		t.Fatalf("no report after the server stopped (exit status %d); stderr:\n%s", code, stderr)
	}
	if got := rep.Errors["closed by server: code 1001"]; got != 6 {
		t.Errorf("errors %v, want 6 connections closed with 1001 (going away)", rep.Errors)
	}
	if rep.Connections.Held != 0 {
		t.Errorf("held %d connections after the server stopped, want 0", rep.Connections.Held)
	}
	if rep.Messages == nil || rep.Messages.Accepted == 0 {
		t.Errorf("messages %+v, want the sends accepted before the stop", rep.Messages)
	}
}
