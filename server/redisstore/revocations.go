package redisstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imlite/imlite/server"
)

// allPlatforms is the hash field of a revocation on every platform. Platform
// names are lowercase letters, digits, '_' and '-', so it cannot clash with
// one.
const allPlatforms = "*"

// revokeScript sets each field ARGV[2..] of the hash KEYS[1] to the time
// ARGV[1] (Unix µs) unless the field holds a later time. A value that is not
// a number is replaced. Lua numbers are doubles, which hold Unix
// microseconds exactly until the year 2255.
var revokeScript = redis.NewScript(`
local at = tonumber(ARGV[1])
for i = 2, #ARGV do
	local stored = tonumber(redis.call('HGET', KEYS[1], ARGV[i]))
	if stored == nil or stored < at then
		redis.call('HSET', KEYS[1], ARGV[i], ARGV[1])
	end
end
return 0
`)

// Revoke records that tokens of userID issued before at are revoked on the
// platforms; no platforms means all. A stored later time is kept, checked
// and written atomically by one Lua script, so concurrent kicks never move
// a time backwards. The time is stored in microseconds; finer digits are
// dropped. Failures to reach Redis wrap server.ErrUnavailable.
//
// A flushed or replaced Redis loses revocations. Distributed mode therefore
// keeps them in MongoDB too and refills Redis with LoadRevocations when
// RevocationsLoaded reports the loss.
func (s *Store) Revoke(ctx context.Context, userID string, platforms []string, at time.Time) error {
	const op = "revoke tokens"
	if userID == "" {
		return fmt.Errorf("%s: user id is empty", op)
	}
	if at.IsZero() {
		return fmt.Errorf("%s of user %s: revocation time is zero", op, userID)
	}
	if len(platforms) == 0 {
		platforms = []string{allPlatforms}
	}
	args := make([]any, 0, 1+len(platforms))
	args = append(args, at.UnixMicro())
	for _, p := range platforms {
		if p == "" {
			return fmt.Errorf("%s of user %s: platform name is empty", op, userID)
		}
		args = append(args, p)
	}

	call := scriptCall{script: revokeScript, keys: []string{s.revokedKey(userID)}, args: args}
	if err := s.runScripts(ctx, []scriptCall{call})[0].Err(); err != nil {
		return wrapErr(fmt.Sprintf("%s of user %s", op, userID), err)
	}
	return nil
}

// RevokedBefore returns the later of the user's revocation on platform and
// on all platforms, or the zero time if neither exists. A stored value that
// is not a number fails the call, so a damaged record rejects tokens
// instead of accepting revoked ones. Failures to reach Redis wrap
// server.ErrUnavailable.
func (s *Store) RevokedBefore(ctx context.Context, userID, platform string) (time.Time, error) {
	const op = "load token revocation"
	if userID == "" {
		return time.Time{}, fmt.Errorf("%s: user id is empty", op)
	}
	if platform == "" {
		return time.Time{}, fmt.Errorf("%s of user %s: platform name is empty", op, userID)
	}
	values, err := s.client.HMGet(ctx, s.revokedKey(userID), platform, allPlatforms).Result()
	if err != nil {
		return time.Time{}, wrapErr(fmt.Sprintf("%s of user %s", op, userID), err)
	}

	var latest time.Time
	for i, field := range []string{platform, allPlatforms} {
		if values[i] == nil {
			continue
		}
		t, err := parseMicros(values[i])
		if err != nil {
			return time.Time{}, fmt.Errorf("%s of user %s on platform %q: %w", op, userID, field, err)
		}
		if t.After(latest) {
			latest = t
		}
	}
	return latest, nil
}

func parseMicros(v any) (time.Time, error) {
	s, ok := v.(string)
	if !ok {
		return time.Time{}, fmt.Errorf("stored value has type %T, want a string of Unix microseconds", v)
	}
	micros, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, errors.New("stored value " + strconv.Quote(s) + " is not Unix microseconds")
	}
	return time.UnixMicro(micros).UTC(), nil
}

// revocationsLoadedKey marks that this Redis holds every revocation of the
// durable store. A flushed or replaced Redis lacks it.
func (s *Store) revocationsLoadedKey() string { return s.prefix + "revocations:loaded" }

// RevocationsLoaded reports whether LoadRevocations filled this Redis since
// it last lost its data.
func (s *Store) RevocationsLoaded(ctx context.Context) (bool, error) {
	n, err := s.client.Exists(ctx, s.revocationsLoadedKey()).Result()
	if err != nil {
		return false, wrapErr("check that revocations are loaded", err)
	}
	return n == 1, nil
}

// LoadRevocations records revs as Revoke would, then marks the
// revocations as loaded. A later time already stored is kept, so a load
// racing with a kick loses nothing.
func (s *Store) LoadRevocations(ctx context.Context, revs []server.Revocation) error {
	const op = "load token revocations"
	calls := make([]scriptCall, 0, len(revs))
	for _, r := range revs {
		platform := r.Platform
		if platform == "" {
			platform = allPlatforms
		}
		calls = append(calls, scriptCall{script: revokeScript, keys: []string{s.revokedKey(r.UserID)}, args: []any{r.At.UnixMicro(), platform}})
	}
	for chunk := range slices.Chunk(calls, 500) {
		for _, cmd := range s.runScripts(ctx, chunk) {
			if err := cmd.Err(); err != nil {
				return wrapErr(op, err)
			}
		}
	}
	if err := s.client.Set(ctx, s.revocationsLoadedKey(), "1", 0).Err(); err != nil {
		return wrapErr(op, err)
	}
	return nil
}
