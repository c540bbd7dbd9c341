// Package redisstore keeps the state that distributed mode shares between
// pods in Redis: seq counters (server.SeqAllocator), presence
// (server.Presence) and token revocations (server.RevocationStore).
//
// Key layout, after Config.KeyPrefix (default "imlite:"):
//
//	seq:<conversation id>   string  last seq handed out
//	presence:<user id>      zset    member "<platform>|<pod>|<conn id>", score its expiry in Unix ms
//	revoked:<user id>       hash    field platform or "*" (all platforms), value Unix µs
//	revocations:loaded      string  set once the revocations of the durable store are loaded
//
// Redis holds no state that cannot be rebuilt: seq counters are seeded
// again from the message store, each pod writes its presence entries again
// within a third of Config.PresenceTTL, and revocations are loaded again
// from the durable store (LoadRevocations).
//
// go-redis writes its connection pool messages, such as failed dials, to
// the standard log package unless the process-wide redis.SetLogger replaces
// it. A program calls LogClientTo to send them to its slog logger instead.
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/imlite/imlite/server"
)

// Defaults of Config.
const (
	// DefaultKeyPrefix is the KeyPrefix of a Config that sets none.
	DefaultKeyPrefix = "imlite:"
	// DefaultPresenceTTL is the PresenceTTL of a Config that sets none.
	DefaultPresenceTTL = 30 * time.Second
	// MinPresenceTTL bounds Config.PresenceTTL from below, because entries
	// are refreshed every third of it.
	MinPresenceTTL = 100 * time.Millisecond
)

// Client timeouts. They are short so that a Redis that is down or hangs
// fails a request within a few seconds instead of stalling the store stage
// and the connection handshakes.
const (
	dialTimeout  = 2 * time.Second
	readTimeout  = 2 * time.Second
	writeTimeout = 2 * time.Second
	poolTimeout  = 3 * time.Second
	// maxRetries is the number of retries of a command after a network
	// error. One retry replaces a pooled connection that a Redis restart
	// closed.
	maxRetries = 1
)

// memberSeparator separates platform, pod and connection id in a presence
// member. Platforms and pod names must not contain it.
const memberSeparator = "|"

// Config configures a Store.
type Config struct {
	// Addr is the Redis address, host:port.
	Addr string
	// Password is the password of the default user; empty sends none.
	Password string
	// DB is the Redis database number.
	DB int
	// KeyPrefix starts every key, so several deployments can share one
	// Redis. Empty means DefaultKeyPrefix.
	KeyPrefix string
	// Logger receives the failures of the background presence refresh and
	// warnings about malformed presence entries. Nil discards them.
	Logger *slog.Logger
	// PodName identifies this process in presence entries. It is required
	// and must not contain "|".
	PodName string
	// PresenceTTL is how long a presence entry counts without a refresh.
	// This pod refreshes its entries every PresenceTTL/3, so an entry of a
	// pod that died stops counting at most PresenceTTL after its last
	// refresh. Zero means DefaultPresenceTTL; otherwise it must be at least
	// MinPresenceTTL.
	PresenceTTL time.Duration
	// MaxSeqs returns the max stored seq of each conversation, 0 for none:
	// the MessageStore.MaxSeqs of the message store. Allocate seeds missing
	// counters from it. It is required.
	MaxSeqs func(ctx context.Context, conversationIDs []string) (map[string]int64, error)
}

// Store implements server.SeqAllocator, server.Presence and
// server.RevocationStore on Redis. It is safe for concurrent use. New starts
// a goroutine that refreshes this pod's presence entries until Close.
type Store struct {
	client  *redis.Client
	log     *slog.Logger
	prefix  string
	pod     string
	ttl     time.Duration
	maxSeqs func(ctx context.Context, conversationIDs []string) (map[string]int64, error)

	conns localConns

	stopRefresh context.CancelFunc
	refreshDone chan struct{}
	closeOnce   sync.Once
	closeErr    error
}

var (
	_ server.SeqAllocator    = (*Store)(nil)
	_ server.Presence        = (*Store)(nil)
	_ server.RevocationStore = (*Store)(nil)
	_ server.Pinger          = (*Store)(nil)
)

// New checks cfg, creates the Redis client and starts the presence
// refresh. It does not contact Redis, so it succeeds while Redis is down;
// call Ping to check the connection.
func New(cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("configure redis store: %w", err)
	}
	client := redis.NewClient(&redis.Options{
		Addr:                  cfg.Addr,
		Password:              cfg.Password,
		DB:                    cfg.DB,
		DialTimeout:           dialTimeout,
		ReadTimeout:           readTimeout,
		WriteTimeout:          writeTimeout,
		PoolTimeout:           poolTimeout,
		MaxRetries:            maxRetries,
		ContextTimeoutEnabled: true,
		// Redis before 7.2 rejects CLIENT SETINFO, only newer servers know
		// CLIENT MAINT_NOTIFICATIONS, and this store needs neither.
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		client:      client,
		log:         cfg.Logger,
		prefix:      cfg.KeyPrefix,
		pod:         cfg.PodName,
		ttl:         cfg.PresenceTTL,
		maxSeqs:     cfg.MaxSeqs,
		conns:       localConns{users: make(map[string]map[string]*localConn)},
		stopRefresh: cancel,
		refreshDone: make(chan struct{}),
	}
	go s.refreshLoop(ctx)
	return s, nil
}

func (cfg Config) withDefaults() (Config, error) {
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return cfg, fmt.Errorf("invalid Addr %q: want host:port: %w", cfg.Addr, err)
	}
	if cfg.DB < 0 {
		return cfg, fmt.Errorf("invalid DB %d: want 0 or more", cfg.DB)
	}
	if cfg.PodName == "" {
		return cfg, errors.New("PodName is required: it identifies this pod's presence entries")
	}
	if strings.Contains(cfg.PodName, memberSeparator) {
		return cfg, fmt.Errorf("invalid PodName %q: it must not contain %q", cfg.PodName, memberSeparator)
	}
	if cfg.MaxSeqs == nil {
		return cfg, errors.New("MaxSeqs is required: Allocate seeds missing seq counters from the message store")
	}
	switch {
	case cfg.PresenceTTL == 0:
		cfg.PresenceTTL = DefaultPresenceTTL
	case cfg.PresenceTTL < MinPresenceTTL:
		return cfg, fmt.Errorf("invalid PresenceTTL %v: want at least %v", cfg.PresenceTTL, MinPresenceTTL)
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = DefaultKeyPrefix
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

// Close stops the presence refresh and closes the Redis client. It leaves
// this pod's presence entries in Redis, where they expire within
// PresenceTTL; connections that close normally remove theirs with
// Disconnect. Calls after the first return the first result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.stopRefresh()
		<-s.refreshDone
		if err := s.client.Close(); err != nil {
			s.closeErr = fmt.Errorf("close redis client: %w", err)
		}
	})
	return s.closeErr
}

// Ping sends PING to Redis. Failures wrap server.ErrUnavailable.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx).Err(); err != nil {
		return wrapErr("ping redis", err)
	}
	return nil
}

func (s *Store) seqKey(conversationID string) string {
	return s.prefix + "seq:" + conversationID
}

func (s *Store) presenceKey(userID string) string {
	return s.prefix + "presence:" + userID
}

func (s *Store) revokedKey(userID string) string {
	return s.prefix + "revoked:" + userID
}

// scriptCall is one run of a Lua script.
type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
}

// runScripts runs the calls in one pipelined round trip with EVALSHA.
// A call that finds its script missing from the server's cache (after a
// Redis restart or SCRIPT FLUSH) had no effect, so it runs again with EVAL
// in a second round trip. cmds[i] holds the reply or error of calls[i].
func (s *Store) runScripts(ctx context.Context, calls []scriptCall) []*redis.Cmd {
	cmds := s.pipelineScripts(ctx, calls, func(pipe redis.Pipeliner, c scriptCall) *redis.Cmd {
		return c.script.EvalSha(ctx, pipe, c.keys, c.args...)
	})

	var missing []int
	for i, cmd := range cmds {
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			missing = append(missing, i)
		}
	}
	if len(missing) == 0 {
		return cmds
	}
	retry := make([]scriptCall, len(missing))
	for j, i := range missing {
		retry[j] = calls[i]
	}
	retried := s.pipelineScripts(ctx, retry, func(pipe redis.Pipeliner, c scriptCall) *redis.Cmd {
		return c.script.Eval(ctx, pipe, c.keys, c.args...)
	})
	for j, i := range missing {
		cmds[i] = retried[j]
	}
	return cmds
}

func (s *Store) pipelineScripts(ctx context.Context, calls []scriptCall, queue func(redis.Pipeliner, scriptCall) *redis.Cmd) []*redis.Cmd {
	pipe := s.client.Pipeline()
	cmds := make([]*redis.Cmd, len(calls))
	for i, c := range calls {
		cmds[i] = queue(pipe, c)
	}
	// Exec reports the first failed command, and every command carries its
	// own error, which the callers inspect.
	_, _ = pipe.Exec(ctx)
	return cmds
}

// wrapErr prefixes err with the operation and marks connectivity failures
// and timeouts with server.ErrUnavailable.
func wrapErr(op string, err error) error {
	if isUnavailable(err) && !errors.Is(err, server.ErrUnavailable) {
		return fmt.Errorf("%s: %w: %w", op, server.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// isUnavailable reports whether err means that Redis could not be reached,
// did not reply in time, or cannot serve requests for now (loading its dataset,
// out of memory, a replica, a busy script). Redis errors about the command
// itself, a closed client and a canceled context are not.
func isUnavailable(err error) bool {
	switch {
	case err == nil, errors.Is(err, context.Canceled), errors.Is(err, redis.ErrClosed):
		return false
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, redis.ErrPoolTimeout),
		errors.Is(err, redis.ErrPoolExhausted),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE):
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	return redis.IsLoadingError(err) ||
		redis.IsReadOnlyError(err) ||
		redis.IsMasterDownError(err) ||
		redis.IsClusterDownError(err) ||
		redis.IsTryAgainError(err) ||
		redis.IsMaxClientsError(err) ||
		redis.IsNoReplicasError(err) ||
		redis.IsOOMError(err) ||
		redis.HasErrorPrefix(err, "BUSY ")
}
