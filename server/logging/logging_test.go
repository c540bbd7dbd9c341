package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imlite/imlite/server/config"
)

func TestJSONRecordFields(t *testing.T) {
	var out bytes.Buffer
	log, _, err := New(config.LogConfig{Mode: "console", Encoding: "json", Level: "info", ServiceName: "svc", TimeFormat: "2006-01-02"}, "pod-a", &out)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hidden")
	log.Info("shutting down", "timeout", 1500*time.Millisecond)
	log.Log(t.Context(), LevelSevere, "disk full")

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d records, want 2 (debug is below info):\n%s", len(lines), out.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	checks := []struct{ key, want string }{
		{"timeout", "1.5s"},
		{"service", "svc"},
		{"pod", "pod-a"},
		{"time", time.Now().Format("2006-01-02")},
	}
	for _, c := range checks {
		if got := rec[c.key]; got != c.want {
			t.Errorf("field %s = %v, want %q", c.key, got, c.want)
		}
	}
	if !strings.Contains(lines[1], `"level":"SEVERE"`) {
		t.Errorf("severe record %s lacks level SEVERE", lines[1])
	}
}

func TestFileModesWriteUnderPath(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		mode, want string
	}{
		{"file", filepath.Join(dir, "svc.log")},
		{"volume", filepath.Join(dir, "pod-b", "svc.log")},
	} {
		log, closer, err := New(config.LogConfig{Mode: tc.mode, Encoding: "plain", Level: "info", ServiceName: "svc", Path: dir, MaxSize: 1}, "pod-b", os.Stderr)
		if err != nil {
			t.Fatalf("%s: %v", tc.mode, err)
		}
		log.Info("hello", "user_id", "alice")
		closer.Close()
		data, err := os.ReadFile(tc.want)
		if err != nil || !strings.Contains(string(data), "user_id=alice") {
			t.Errorf("%s mode: %s holds %q, %v; want the record", tc.mode, tc.want, data, err)
		}
	}
}

func TestRejectsUnknownLevelAndMode(t *testing.T) {
	if _, _, err := New(config.LogConfig{Mode: "console", Level: "loud"}, "", os.Stderr); err == nil {
		t.Error("level loud accepted")
	}
	if _, _, err := New(config.LogConfig{Mode: "syslog", Level: "info"}, "", os.Stderr); err == nil {
		t.Error("mode syslog accepted")
	}
}

func TestRepeatedErrorsAreRateLimited(t *testing.T) {
	var out bytes.Buffer
	h := newRateLimited(slog.NewTextHandler(&out, nil))
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h.state.now = func() time.Time { return clock }
	log := slog.New(h)

	for range 20 {
		log.Error("backend unavailable", "op", "store")
	}
	log.Info("info is never limited")
	clock = clock.Add(repeatWindow)
	log.Error("backend unavailable", "op", "store")

	got := strings.Count(out.String(), "backend unavailable")
	if got != repeatBurst+1 {
		t.Errorf("wrote %d error records, want %d in the first window and 1 after", got, repeatBurst+1)
	}
	if !strings.Contains(out.String(), "suppressed_repeats=15") {
		t.Errorf("output lacks the count of 15 suppressed records:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "info is never limited") {
		t.Error("info record missing")
	}
}
