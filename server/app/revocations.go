package app

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/auth"
)

// durableRevocations is a revocation store whose record survives the loss
// of its cache: kicks go to the durable store and then to the cache, and
// checks read the cache after refilling it when it lost its data.
type durableRevocations struct {
	durable interface {
		server.RevocationStore
		RevocationsSince(ctx context.Context, since time.Time) ([]server.Revocation, error)
	}
	cache interface {
		server.RevocationStore
		RevocationsLoaded(ctx context.Context) (bool, error)
		LoadRevocations(ctx context.Context, revs []server.Revocation) error
	}
	// reload makes concurrent checks after a loss wait for one refill.
	reload sync.Mutex
}

var _ server.RevocationStore = (*durableRevocations)(nil)

// Revoke records the kick durably first, so a kick that returned success
// survives a cache loss.
func (r *durableRevocations) Revoke(ctx context.Context, userID string, platforms []string, at time.Time) error {
	if err := r.durable.Revoke(ctx, userID, platforms, at); err != nil {
		return err
	}
	return r.cache.Revoke(ctx, userID, platforms, at)
}

// RevokedBefore reads the cache, refilling it from the durable store first
// when it lost its data.
func (r *durableRevocations) RevokedBefore(ctx context.Context, userID, platform string) (time.Time, error) {
	loaded, err := r.cache.RevocationsLoaded(ctx)
	if err != nil {
		return time.Time{}, err
	}
	if !loaded {
		if err := r.refill(ctx); err != nil {
			return time.Time{}, err
		}
	}
	return r.cache.RevokedBefore(ctx, userID, platform)
}

func (r *durableRevocations) refill(ctx context.Context) error {
	r.reload.Lock()
	defer r.reload.Unlock()
	if loaded, err := r.cache.RevocationsLoaded(ctx); err != nil || loaded {
		return err
	}
	// No token outlives auth.MaxTTL, so older kicks revoke nothing valid.
	revs, err := r.durable.RevocationsSince(ctx, time.Now().Add(-auth.MaxTTL-time.Hour))
	if err != nil {
		return fmt.Errorf("refill revocations: %w", err)
	}
	return r.cache.LoadRevocations(ctx, revs)
}
