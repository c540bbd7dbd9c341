// Package mempresence records online users in memory, for embedded mode,
// where the only connections are this process's own.
package mempresence

import (
	"context"
	"slices"
	"sync"

	"github.com/imlite/imlite/server"
)

// Presence keeps each user's live connections as a small slice of
// (platform, connection id) pairs. Idle connections dominate its memory, so
// it avoids a map per user and platform; the strings are those the caller
// holds anyway. It is safe for concurrent use.
type Presence struct {
	mu    sync.RWMutex
	users map[string][]entry
}

type entry struct {
	platform, connID string
}

var _ server.Presence = (*Presence)(nil)

// New returns an empty Presence.
func New() *Presence {
	return &Presence{users: make(map[string][]entry)}
}

// Connect records a live connection; recording it twice changes nothing.
func (p *Presence) Connect(_ context.Context, userID, platform, connID string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	conns := p.users[userID]
	if !slices.Contains(conns, entry{platform, connID}) {
		p.users[userID] = append(conns, entry{platform, connID})
	}
	return nil
}

// Disconnect removes a connection; removing an unknown one is a no-op.
func (p *Presence) Disconnect(_ context.Context, userID, platform, connID string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	conns := p.users[userID]
	i := slices.Index(conns, entry{platform, connID})
	if i < 0 {
		return nil
	}
	conns = slices.Delete(conns, i, i+1)
	if len(conns) == 0 {
		delete(p.users, userID)
	} else {
		p.users[userID] = conns
	}
	return nil
}

// Platforms returns the sorted platforms of each online user.
func (p *Presence) Platforms(_ context.Context, userIDs []string) (map[string][]string, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make(map[string][]string)
	for _, id := range userIDs {
		conns := p.users[id]
		if len(conns) == 0 {
			continue
		}
		list := make([]string, 0, len(conns))
		for _, c := range conns {
			list = append(list, c.platform)
		}
		slices.Sort(list)
		out[id] = slices.Compact(list)
	}
	return out, nil
}
