// Package mempresence records online users in memory, for embedded mode,
// where the only connections are this process's own.
package mempresence

import (
	"context"
	"slices"
	"sync"

	"github.com/imlite/imlite/server"
)

// Presence maps user -> platform -> live connection ids. It is safe for
// concurrent use.
type Presence struct {
	mu    sync.RWMutex
	users map[string]map[string]map[string]struct{}
}

var _ server.Presence = (*Presence)(nil)

// New returns an empty Presence.
func New() *Presence {
	return &Presence{users: make(map[string]map[string]map[string]struct{})}
}

// Connect records a live connection.
func (p *Presence) Connect(_ context.Context, userID, platform, connID string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	platforms := p.users[userID]
	if platforms == nil {
		platforms = make(map[string]map[string]struct{})
		p.users[userID] = platforms
	}
	conns := platforms[platform]
	if conns == nil {
		conns = make(map[string]struct{})
		platforms[platform] = conns
	}
	conns[connID] = struct{}{}
	return nil
}

// Disconnect removes a connection; removing an unknown one is a no-op.
func (p *Presence) Disconnect(_ context.Context, userID, platform, connID string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	platforms := p.users[userID]
	conns := platforms[platform]
	delete(conns, connID)
	if len(conns) == 0 {
		delete(platforms, platform)
	}
	if len(platforms) == 0 {
		delete(p.users, userID)
	}
	return nil
}

// Platforms returns the sorted platforms of each online user.
func (p *Presence) Platforms(_ context.Context, userIDs []string) (map[string][]string, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make(map[string][]string)
	for _, id := range userIDs {
		platforms := p.users[id]
		if len(platforms) == 0 {
			continue
		}
		list := make([]string, 0, len(platforms))
		for pl := range platforms {
			list = append(list, pl)
		}
		slices.Sort(list)
		out[id] = list
	}
	return out, nil
}
