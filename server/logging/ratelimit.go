package logging

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Repeated warnings and errors are rate-limited: a backend that is down
// would otherwise log the same failure for every request. Per message
// text, the first burst records of each window are written; the rest are
// counted and the count rides on the next written record as
// "suppressed_repeats".
const (
	repeatWindow = 10 * time.Second
	repeatBurst  = 5
)

type rateLimited struct {
	slog.Handler
	state *repeatState
}

type repeatState struct {
	mu   sync.Mutex
	seen map[string]*repeatCount
	now  func() time.Time
}

type repeatCount struct {
	windowStart time.Time
	written     int
	suppressed  int
}

func newRateLimited(h slog.Handler) *rateLimited {
	return &rateLimited{Handler: h, state: &repeatState{seen: make(map[string]*repeatCount), now: time.Now}}
}

func (h *rateLimited) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return h.Handler.Handle(ctx, r)
	}
	suppressedBefore, write := h.state.admit(r.Level.String() + "\x00" + r.Message)
	if !write {
		return nil
	}
	if suppressedBefore > 0 {
		r.AddAttrs(slog.Int("suppressed_repeats", suppressedBefore))
	}
	return h.Handler.Handle(ctx, r)
}

// admit reports whether a record with key is written, and how many were
// suppressed since the last written one.
func (s *repeatState) admit(key string) (suppressed int, write bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	c := s.seen[key]
	if c == nil || now.Sub(c.windowStart) >= repeatWindow {
		if c == nil {
			if len(s.seen) > 10000 {
				// Messages with ids baked in could grow the map without
				// bound; start over instead.
				clear(s.seen)
			}
			c = &repeatCount{}
			s.seen[key] = c
		}
		c.windowStart, c.written = now, 0
	}
	if c.written >= repeatBurst {
		c.suppressed++
		return 0, false
	}
	c.written++
	suppressed, c.suppressed = c.suppressed, 0
	return suppressed, true
}

func (h *rateLimited) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &rateLimited{Handler: h.Handler.WithAttrs(attrs), state: h.state}
}

func (h *rateLimited) WithGroup(name string) slog.Handler {
	return &rateLimited{Handler: h.Handler.WithGroup(name), state: h.state}
}
