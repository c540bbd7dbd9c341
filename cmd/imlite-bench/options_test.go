package main

import (
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"time"
)

const testSecretFlag = "-secret=0123456789abcdef0123456789abcdef"

func TestParseArgs(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "idle", args: []string{"idle", testSecretFlag, "-n", "10"}},
		{name: "scenario flag", args: []string{"-scenario", "single", testSecretFlag}},
		{name: "group", args: []string{"group", testSecretFlag, "-group-size", "10", "-senders", "2"}},
		{name: "pull", args: []string{"pull", testSecretFlag, "-fill", "100", "-page", "100"}},
		{name: "churn", args: []string{"churn", testSecretFlag, "-rate", "10"}},
		{name: "warmup", args: []string{"single", testSecretFlag, "-duration", "20s", "-warmup", "5s"}},
		{name: "localhost with sources", args: []string{"idle", testSecretFlag, "-url", "ws://localhost:1/ws"}},
		{name: "two pods", args: []string{"idle", testSecretFlag, "-url", "ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws"}},
		{name: "remote host without sources", args: []string{"idle", testSecretFlag, "-sources", "0", "-url", "wss://im.example.com/ws"}},

		{name: "no scenario", args: []string{testSecretFlag}, wantErr: "no scenario"},
		{name: "unknown scenario", args: []string{"storm", testSecretFlag}, wantErr: `unknown scenario "storm"`},
		{name: "scenarios differ", args: []string{"idle", "-scenario", "pull", testSecretFlag}, wantErr: "differ"},
		{name: "no secret", args: []string{"idle"}, wantErr: "no signing secret"},
		{name: "secret and file", args: []string{"idle", testSecretFlag, "-f", "x.yaml"}, wantErr: "-secret and -f both set"},
		{name: "http url", args: []string{"idle", testSecretFlag, "-url", "http://127.0.0.1:1/ws"}, wantErr: "not a ws:// or wss:// URL"},
		{name: "remote host with sources", args: []string{"idle", testSecretFlag, "-url", "ws://10.1.2.3:31000/ws"}, wantErr: "reach only an IPv4 loopback server"},
		{name: "bad encoding", args: []string{"idle", testSecretFlag, "-encoding", "xml"}, wantErr: `-encoding "xml"`},
		{name: "zero connections", args: []string{"idle", testSecretFlag, "-n", "0"}, wantErr: "-n 0 is below 1"},
		{name: "zero duration", args: []string{"idle", testSecretFlag, "-duration", "0s"}, wantErr: "-duration 0s is not positive"},
		{name: "window above server limit", args: []string{"single", testSecretFlag, "-window", "65"}, wantErr: "-window 65 is outside 1 to 64"},
		{name: "negative rate", args: []string{"single", testSecretFlag, "-rate", "-1"}, wantErr: "-rate -1 is negative"},
		{name: "content too small for a time", args: []string{"single", testSecretFlag, "-size", "10"}, wantErr: "-size 10 is outside"},
		{name: "more senders than members", args: []string{"group", testSecretFlag, "-group-size", "3", "-senders", "4"}, wantErr: "-senders 4 is outside"},
		{name: "group of one", args: []string{"group", testSecretFlag, "-group-size", "1"}, wantErr: "-group-size 1 is outside"},
		{name: "fill below a page", args: []string{"pull", testSecretFlag, "-fill", "50"}, wantErr: "-fill 50 is below -page 100"},
		{name: "page above server limit", args: []string{"pull", testSecretFlag, "-page", "501", "-fill", "1000"}, wantErr: "-page 501 is outside"},
		{name: "churn without rate", args: []string{"churn", testSecretFlag}, wantErr: "churn needs a connect rate"},
		{name: "warmup as long as the run", args: []string{"single", testSecretFlag, "-duration", "5s", "-warmup", "5s"}, wantErr: "-warmup 5s is outside 0 to -duration 5s"},
		{name: "too many sources", args: []string{"idle", testSecretFlag, "-sources", "251"}, wantErr: "-sources 251 is outside"},
		{name: "prefix with a space", args: []string{"idle", testSecretFlag, "-prefix", "a b"}, wantErr: "-prefix"},
		{name: "metrics not http", args: []string{"idle", testSecretFlag, "-metrics", "ftp://x/metrics"}, wantErr: "-metrics"},
		{name: "extra argument", args: []string{"idle", testSecretFlag, "more"}, wantErr: `unexpected argument "more"`},
		{name: "unknown flag", args: []string{"idle", "-bogus"}, wantErr: "bogus"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseArgs(tc.args, io.Discard)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("parseArgs(%q): %v", tc.args, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("parseArgs(%q) error = %v, want one containing %q", tc.args, err, tc.wantErr)
			}
			if !errors.Is(err, errUsage) {
				t.Errorf("parseArgs(%q) error %v does not wrap errUsage, so the exit status would not be 2", tc.args, err)
			}
		})
	}
}

func TestParseArgsDefaults(t *testing.T) {
	o, err := parseArgs([]string{"single", testSecretFlag}, io.Discard)
	if err != nil {
		t.Fatalf("parseArgs: %v", err)
	}
	if !strings.HasPrefix(o.prefix, "b") || len(o.prefix) < 2 {
		t.Errorf("default prefix %q, want b and the start time", o.prefix)
	}
	if o.window != 32 || o.duration != 10*time.Second || len(o.urls) != 1 {
		t.Errorf("defaults: window %d, duration %v, urls %v; want 32, 10s and one URL", o.window, o.duration, o.urls)
	}
}

func TestConnsNeeded(t *testing.T) {
	cases := []struct {
		o    options
		want int
	}{
		{options{scenario: scenarioIdle, conns: 19000}, 19001},
		{options{scenario: scenarioSingle, pairs: 100}, 200},
		{options{scenario: scenarioGroup, groups: 2, groupSize: 1000}, 2001},
		{options{scenario: scenarioChurn, rate: 100, lifetime: time.Second, dialTimeout: time.Second}, 201},
	}
	for _, tc := range cases {
		if got := tc.o.connsNeeded(); got != tc.want {
			t.Errorf("connsNeeded(%s) = %d, want %d", tc.o.scenario, got, tc.want)
		}
	}
}

func TestContentCarriesSendTime(t *testing.T) {
	sent := time.Unix(1_700_000_000, 123456789)
	content := appendContent(nil, sent, 100)
	if len(content) != 100 {
		t.Errorf("content is %d bytes, want 100", len(content))
	}
	got, ok := parseContentTime(string(content))
	if !ok || !got.Equal(sent) {
		t.Errorf("parseContentTime = %v, %v; want %v", got, ok, sent)
	}
	for _, bad := range []string{"", "hello", "abc|x", "-5|x", "|x"} {
		if _, ok := parseContentTime(bad); ok {
			t.Errorf("parseContentTime(%q) reported a time, want none", bad)
		}
	}
}

func TestReqIDCarriesTime(t *testing.T) {
	at := time.Unix(0, 1_700_000_000_000_000_001)
	id := reqIDAt(reqSend, at)
	if got, ok := parseReqTime(id, reqSend); !ok || !got.Equal(at) {
		t.Errorf("parseReqTime(%q) = %v, %v; want %v", id, got, ok, at)
	}
	for _, bad := range []string{"", "s", "p123", "sabc", "c1"} {
		if _, ok := parseReqTime(bad, reqSend); ok {
			t.Errorf("parseReqTime(%q, send) reported a time, want none", bad)
		}
	}
}

func TestStaggerDelaySpreadsSenders(t *testing.T) {
	cases := []struct {
		i    int
		rate float64
		want time.Duration
	}{
		{0, 1000, 0},
		{1, 1000, time.Millisecond},
		{500, 1000, 500 * time.Millisecond},
		{7, 0, 0},
	}
	for _, tc := range cases {
		if got := staggerDelay(tc.i, tc.rate); got != tc.want {
			t.Errorf("staggerDelay(%d, %g) = %v, want %v", tc.i, tc.rate, got, tc.want)
		}
	}
}

func TestRecordLatencySkipsWarmup(t *testing.T) {
	r := &runner{o: options{warmup: time.Hour}}
	h := newHistogram()
	r.measureFrom.Store(math.MaxInt64)
	r.recordLatency(h, time.Now(), time.Now())
	if n := h.Snapshot().total; n != 0 {
		t.Errorf("%d samples recorded before the measured phase, want 0", n)
	}
	start := r.startMeasuring()
	r.recordLatency(h, start.Add(time.Minute), start.Add(time.Minute+time.Millisecond))
	if n := h.Snapshot().total; n != 0 {
		t.Errorf("%d samples recorded during the warm-up, want 0", n)
	}
	r.recordLatency(h, start.Add(2*time.Hour), start.Add(2*time.Hour+time.Millisecond))
	if n := h.Snapshot().total; n != 1 {
		t.Errorf("%d samples recorded after the warm-up, want 1", n)
	}
}
