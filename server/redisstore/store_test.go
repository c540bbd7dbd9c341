package redisstore

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imlite/imlite/internal/testenv"
	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/boltstore"
)

// failLimit bounds the wait for an operation against a Redis that is down or
// paused. The client fails within about two read timeouts (one retry), and
// the limit leaves room for a loaded machine.
const failLimit = 20 * time.Second

// TestMain silences the client library's own log, which prints a line per
// failed dial while the outage tests keep Redis down.
func TestMain(m *testing.M) {
	redis.SetLogger(discardLogger{})
	os.Exit(m.Run())
}

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

// noMessages is the MaxSeqs of a message store without messages.
func noMessages(context.Context, []string) (map[string]int64, error) {
	return map[string]int64{}, nil
}

// newStore opens a Store on addr with the test defaults for fields of cfg
// left zero, and closes it when the test ends.
func newStore(t *testing.T, addr string, cfg Config) *Store {
	t.Helper()
	cfg.Addr = addr
	if cfg.PodName == "" {
		cfg.PodName = "pod-a"
	}
	if cfg.MaxSeqs == nil {
		cfg.MaxSeqs = noMessages
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// openBolt opens a message store in a temporary directory, the source of
// stored max seqs.
func openBolt(t *testing.T) *boltstore.Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "imlite.db")
	b, err := boltstore.Open(path)
	if err != nil {
		t.Fatalf("boltstore.Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close bolt store: %v", err)
		}
	})
	return b
}

// rawClient returns a plain client for writing data that the Store would
// never write.
func rawClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// callWithin runs op and returns its error. It fails the test when op has
// not returned after limit, which means that the client timeouts do not
// bound the call.
func callWithin(t *testing.T, limit time.Duration, name string, op func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- op() }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		t.Fatalf("%s has not returned after %v", name, limit)
		return nil
	}
}

// logBuffer collects a Store's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// waitForLog waits until the log contains want.
func waitForLog(t *testing.T, logs *logBuffer, want string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !strings.Contains(logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("log has no line with %q after %v; log:\n%s", want, limit, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	valid := Config{Addr: "127.0.0.1:6379", PodName: "pod-a", MaxSeqs: noMessages}
	cases := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{name: "missing address", change: func(c *Config) { c.Addr = "" }, want: "invalid Addr"},
		{name: "address without port", change: func(c *Config) { c.Addr = "127.0.0.1" }, want: "invalid Addr"},
		{name: "negative database", change: func(c *Config) { c.DB = -1 }, want: "invalid DB -1"},
		{name: "missing pod name", change: func(c *Config) { c.PodName = "" }, want: "PodName is required"},
		{name: "pod name with separator", change: func(c *Config) { c.PodName = "pod|a" }, want: `invalid PodName "pod|a"`},
		{name: "missing MaxSeqs", change: func(c *Config) { c.MaxSeqs = nil }, want: "MaxSeqs is required"},
		{name: "negative presence TTL", change: func(c *Config) { c.PresenceTTL = -time.Second }, want: "invalid PresenceTTL"},
		{name: "presence TTL below minimum", change: func(c *Config) { c.PresenceTTL = 10 * time.Millisecond }, want: "invalid PresenceTTL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid
			tc.change(&cfg)
			s, err := New(cfg)
			if err == nil {
				_ = s.Close()
				t.Fatalf("New: got nil error, want one containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: got error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestNewAppliesDefaults(t *testing.T) {
	s, err := New(Config{Addr: "127.0.0.1:6379", PodName: "pod-a", MaxSeqs: noMessages})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer s.Close()
	if s.prefix != DefaultKeyPrefix {
		t.Errorf("key prefix: got %q, want the default %q", s.prefix, DefaultKeyPrefix)
	}
	if s.ttl != DefaultPresenceTTL {
		t.Errorf("presence TTL: got %v, want the default %v", s.ttl, DefaultPresenceTTL)
	}
}

func TestPing(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStore(t, r.Addr, Config{})
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping of a running Redis: %v", err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := s.Ping(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Ping with a canceled context: got %v, want context.Canceled", err)
	}
	if errors.Is(err, server.ErrUnavailable) {
		t.Errorf("Ping with a canceled context: got %v, want no ErrUnavailable because the caller gave up", err)
	}
}

func TestWrongPasswordIsNotUnavailable(t *testing.T) {
	r := testenv.StartRedis(t)
	if err := rawClient(t, r.Addr).ConfigSet(t.Context(), "requirepass", "the-password").Err(); err != nil {
		t.Fatalf("set a password: %v", err)
	}
	s := newStore(t, r.Addr, Config{Password: "not-the-password"})
	err := s.Ping(t.Context())
	if err == nil {
		t.Fatal("Ping with a wrong password: got nil error, want an authentication error")
	}
	if errors.Is(err, server.ErrUnavailable) {
		t.Errorf("Ping with a wrong password: got %v, want an error without ErrUnavailable because retrying cannot fix a configuration error", err)
	}
}

// storeOps are one call of each Store method that contacts Redis, on ids
// that no other test uses.
func storeOps(s *Store) []struct {
	name string
	call func(ctx context.Context) error
} {
	conv := server.GroupConversationID("outage")
	return []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"Ping", s.Ping},
		{"Allocate", func(ctx context.Context) error {
			_, err := s.Allocate(ctx, map[string]int64{conv: 1})
			return err
		}},
		{"Reset", func(ctx context.Context) error { return s.Reset(ctx, conv+"-reset", 0) }},
		{"Connect", func(ctx context.Context) error { return s.Connect(ctx, "outage-user", "web", "conn-1") }},
		{"Disconnect", func(ctx context.Context) error { return s.Disconnect(ctx, "outage-user", "ios", "conn-2") }},
		{"Platforms", func(ctx context.Context) error {
			_, err := s.Platforms(ctx, []string{"outage-user", "other-user"})
			return err
		}},
		{"Revoke", func(ctx context.Context) error { return s.Revoke(ctx, "outage-user", []string{"ios"}, time.Now()) }},
		{"RevokedBefore", func(ctx context.Context) error {
			_, err := s.RevokedBefore(ctx, "outage-user", "ios")
			return err
		}},
	}
}

// checkOpsUnavailable runs every operation concurrently and fails unless
// each returns an error wrapping server.ErrUnavailable in time.
func checkOpsUnavailable(t *testing.T, s *Store, state string) {
	t.Helper()
	ops := storeOps(s)
	errs := make([]error, len(ops))
	var wg sync.WaitGroup
	for i, op := range ops {
		wg.Go(func() { errs[i] = op.call(t.Context()) })
	}
	_ = callWithin(t, failLimit, "operations against a Redis that is "+state, func() error {
		wg.Wait()
		return nil
	})
	for i, op := range ops {
		if !errors.Is(errs[i], server.ErrUnavailable) {
			t.Errorf("%s with Redis %s: got %v, want an error wrapping server.ErrUnavailable", op.name, state, errs[i])
		}
	}
}

func checkOpsWork(t *testing.T, s *Store, state string) {
	t.Helper()
	for _, op := range storeOps(s) {
		if err := op.call(t.Context()); err != nil {
			t.Errorf("%s after Redis %s: %v", op.name, state, err)
		}
	}
}

func TestRedisStoppedIsUnavailable(t *testing.T) {
	r := testenv.StartRedis(t)
	bolt := openBolt(t)
	s := newStore(t, r.Addr, Config{MaxSeqs: bolt.MaxSeqs})
	checkOpsWork(t, s, "started")
	conv := server.GroupConversationID("outage")
	storeMessages(t, bolt, conv, 1, 1)

	r.Stop()
	checkOpsUnavailable(t, s, "stopped")

	// The restarted Redis has no counters and no cached scripts: the
	// Allocate of checkOpsWork seeds the counter from the stored seq 1.
	r.Restart()
	checkOpsWork(t, s, "restarted")
	if got := allocate(t, s, conv, 1); got != 3 {
		t.Errorf("second seq allocated after the restart with max seq 1 stored: got %d, want 3", got)
	}
}

func TestRedisPausedIsUnavailable(t *testing.T) {
	r := testenv.StartRedis(t)
	bolt := openBolt(t)
	s := newStore(t, r.Addr, Config{MaxSeqs: bolt.MaxSeqs})
	checkOpsWork(t, s, "started")

	r.Pause()
	checkOpsUnavailable(t, s, "paused")

	r.Resume()
	checkOpsWork(t, s, "resumed")
}

func TestContextDeadlineIsUnavailable(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStore(t, r.Addr, Config{})
	r.Pause()
	defer r.Resume()

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	err := s.Ping(ctx)
	if !errors.Is(err, server.ErrUnavailable) {
		t.Errorf("Ping past the context deadline: got %v, want an error wrapping server.ErrUnavailable", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Ping past the context deadline: got %v, want an error wrapping context.DeadlineExceeded", err)
	}
}

func TestClosedStore(t *testing.T) {
	r := testenv.StartRedis(t)
	s, err := New(Config{Addr: r.Addr, PodName: "pod-a", MaxSeqs: noMessages})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	for _, op := range storeOps(s) {
		err := op.call(t.Context())
		if err == nil || errors.Is(err, server.ErrUnavailable) {
			t.Errorf("%s on a closed store: got %v, want an error without ErrUnavailable because retrying cannot help", op.name, err)
		}
	}
}

func TestIsUnavailable(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{name: "deadline", err: context.DeadlineExceeded, want: true},
		{name: "canceled", err: context.Canceled, want: false},
		{name: "closed client", err: redis.ErrClosed, want: false},
		{name: "pool timeout", err: redis.ErrPoolTimeout, want: true},
		{name: "loading dataset", err: redisError("LOADING Redis is loading the dataset in memory"), want: true},
		{name: "busy script", err: redisError("BUSY Redis is busy running a script."), want: true},
		{name: "out of memory", err: redisError("OOM command not allowed when used memory > 'maxmemory'."), want: true},
		{name: "read-only replica", err: redisError("READONLY You can't write against a read only replica."), want: true},
		{name: "wrong type", err: redisError("WRONGTYPE Operation against a key holding the wrong kind of value"), want: false},
		{name: "not an integer", err: redisError("ERR value is not an integer or out of range"), want: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := isUnavailable(tc.err); got != tc.want {
				t.Errorf("isUnavailable(%v): got %v, want %v", tc.err, got, tc.want)
			}
			wrapped := wrapErr("test op", tc.err)
			if got := errors.Is(wrapped, server.ErrUnavailable); got != tc.want {
				t.Errorf("wrapErr(%v) wraps server.ErrUnavailable: got %v, want %v", tc.err, got, tc.want)
			}
			if !errors.Is(wrapped, tc.err) {
				t.Errorf("wrapErr(%v) = %v, want it to wrap the cause", tc.err, wrapped)
			}
		})
	}
}

// redisError is an error reply as the client returns it.
type redisError string

func (e redisError) Error() string { return string(e) }
func (e redisError) RedisError()   {}
