package boltstore

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// allPlatforms is the platform key of a revocation on every platform.
const allPlatforms = "*"

// Revoke records that tokens of userID issued before at are revoked on the
// platforms; no platforms means all. A stored later time is kept.
func (s *Store) Revoke(ctx context.Context, userID string, platforms []string, at time.Time) error {
	const op = "revoke tokens"
	if err := checkID("user id", userID); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if len(platforms) == 0 {
		platforms = []string{allPlatforms}
	}
	return s.update(ctx, op, func(tx *bbolt.Tx) error {
		bucket := tx.Bucket(bucketRevocations)
		for _, p := range platforms {
			k := joinKey(userID, p)
			if v := bucket.Get(k); v != nil {
				stored, err := decodeTimeValue(v)
				if err != nil {
					return fmt.Errorf("revocation of user %s on %q: %w", userID, p, err)
				}
				if !at.After(stored) {
					continue
				}
			}
			if err := bucket.Put(k, encodeTimeValue(at)); err != nil {
				return fmt.Errorf("put revocation of user %s on %q: %w", userID, p, err)
			}
		}
		return nil
	})
}

// RevokedBefore returns the later of the user's revocation on platform and
// on all platforms, or the zero time if neither exists.
func (s *Store) RevokedBefore(ctx context.Context, userID, platform string) (time.Time, error) {
	const op = "load token revocation"
	if err := checkID("user id", userID); err != nil {
		return time.Time{}, fmt.Errorf("%s: %w", op, err)
	}
	var latest time.Time
	err := s.view(ctx, op, func(tx *bbolt.Tx) error {
		bucket := tx.Bucket(bucketRevocations)
		for _, p := range []string{platform, allPlatforms} {
			v := bucket.Get(joinKey(userID, p))
			if v == nil {
				continue
			}
			t, err := decodeTimeValue(v)
			if err != nil {
				return fmt.Errorf("revocation of user %s on %q: %w", userID, p, err)
			}
			if t.After(latest) {
				latest = t
			}
		}
		return nil
	})
	if err != nil {
		return time.Time{}, err
	}
	return latest, nil
}
