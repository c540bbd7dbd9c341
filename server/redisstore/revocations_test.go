package redisstore

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/imlite/imlite/internal/testenv"
	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/storetest"
)

func TestRevocationStore(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStore(t, r.Addr, Config{})
	storetest.TestRevocationStore(t, func(*testing.T) server.RevocationStore { return s })
}

func TestRevocationPrecision(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStore(t, r.Addr, Config{})
	base := time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)
	cases := []struct {
		name string
		at   time.Time
		want time.Time
	}{
		{name: "whole microseconds", at: base.Add(535_897 * time.Microsecond), want: base.Add(535_897 * time.Microsecond)},
		{name: "nanoseconds dropped", at: base.Add(535_897_932 * time.Nanosecond), want: base.Add(535_897 * time.Microsecond)},
		{name: "before the Unix epoch", at: time.Date(1969, 7, 20, 20, 17, 40, 123_456_000, time.UTC), want: time.Date(1969, 7, 20, 20, 17, 40, 123_456_000, time.UTC)},
		{name: "other time zone", at: base.In(time.FixedZone("UTC+8", 8*3600)), want: base},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			user := "precise-" + strings.ReplaceAll(tc.name, " ", "-")
			if err := s.Revoke(t.Context(), user, []string{"ios"}, tc.at); err != nil {
				t.Fatalf("Revoke: %v", err)
			}
			got, err := s.RevokedBefore(t.Context(), user, "ios")
			if err != nil {
				t.Fatalf("RevokedBefore: %v", err)
			}
			if !got.Equal(tc.want) {
				t.Errorf("RevokedBefore after Revoke at %s: got %s, want %s", tc.at.Format(time.RFC3339Nano), got.Format(time.RFC3339Nano), tc.want.Format(time.RFC3339Nano))
			}
		})
	}
}

// TestRevocationMicrosecondOrder revokes twice within one millisecond,
// which a store rounding to milliseconds would merge.
func TestRevocationMicrosecondOrder(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStore(t, r.Addr, Config{})
	later := time.Date(2025, 3, 14, 15, 9, 26, 535_900_000, time.UTC)
	earlier := later.Add(-800 * time.Microsecond)
	for _, at := range []time.Time{later, earlier} {
		if err := s.Revoke(t.Context(), "micro", nil, at); err != nil {
			t.Fatalf("Revoke at %s: %v", at.Format(time.RFC3339Nano), err)
		}
	}
	got, err := s.RevokedBefore(t.Context(), "micro", "web")
	if err != nil {
		t.Fatalf("RevokedBefore: %v", err)
	}
	if !got.Equal(later) {
		t.Errorf("RevokedBefore after a kick and an earlier one in the same millisecond: got %s, want the later %s",
			got.Format(time.RFC3339Nano), later.Format(time.RFC3339Nano))
	}
}

func TestRevocationDamagedRecord(t *testing.T) {
	r := testenv.StartRedis(t)
	raw := rawClient(t, r.Addr)
	s := newStore(t, r.Addr, Config{})
	at := time.Date(2025, 3, 14, 15, 9, 26, 535_897_000, time.UTC)

	cases := []struct {
		name   string
		damage func(key string) error
		// platform of the RevokedBefore call that hits the damage
		platform string
		want     string
	}{
		{
			name:     "platform value not a number",
			damage:   func(key string) error { return raw.HSet(t.Context(), key, "ios", "yesterday").Err() },
			platform: "ios",
			want:     `on platform "ios": stored value "yesterday" is not Unix microseconds`,
		},
		{
			name:     "all-platform value not a number",
			damage:   func(key string) error { return raw.HSet(t.Context(), key, "*", "12.5").Err() },
			platform: "web",
			want:     `on platform "*": stored value "12.5" is not Unix microseconds`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			user := "damaged-" + tc.platform
			if err := tc.damage(s.revokedKey(user)); err != nil {
				t.Fatalf("damage record: %v", err)
			}

			_, err := s.RevokedBefore(t.Context(), user, tc.platform)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("RevokedBefore on a damaged record: got error %v, want one containing %q", err, tc.want)
			}
			if errors.Is(err, server.ErrUnavailable) {
				t.Errorf("RevokedBefore on a damaged record: got %v, want no ErrUnavailable because a retry fails the same way", err)
			}

			// A new kick replaces the damaged value.
			if err := s.Revoke(t.Context(), user, nil, at); err != nil {
				t.Fatalf("Revoke: %v", err)
			}
			if err := s.Revoke(t.Context(), user, []string{"ios"}, at); err != nil {
				t.Fatalf("Revoke: %v", err)
			}
			got, err := s.RevokedBefore(t.Context(), user, tc.platform)
			if err != nil {
				t.Fatalf("RevokedBefore after a new kick: %v", err)
			}
			if !got.Equal(at) {
				t.Errorf("RevokedBefore after a new kick: got %s, want %s", got.Format(time.RFC3339Nano), at.Format(time.RFC3339Nano))
			}
		})
	}

	t.Run("key of another type", func(t *testing.T) {
		if err := raw.Set(t.Context(), s.revokedKey("typed"), "x", 0).Err(); err != nil {
			t.Fatalf("write string key: %v", err)
		}
		if _, err := s.RevokedBefore(t.Context(), "typed", "ios"); err == nil || !strings.Contains(err.Error(), "WRONGTYPE") {
			t.Errorf("RevokedBefore: got error %v, want one containing WRONGTYPE", err)
		}
		if err := s.Revoke(t.Context(), "typed", nil, at); err == nil || !strings.Contains(err.Error(), "WRONGTYPE") {
			t.Errorf("Revoke: got error %v, want one containing WRONGTYPE", err)
		}
	})
}

func TestRevocationRejectsInvalidInput(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStore(t, r.Addr, Config{})
	at := time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)
	cases := []struct {
		name string
		call func() error
		want string
	}{
		{name: "Revoke of an empty user id", call: func() error { return s.Revoke(t.Context(), "", nil, at) }, want: "user id is empty"},
		{name: "Revoke at the zero time", call: func() error { return s.Revoke(t.Context(), "alice", nil, time.Time{}) }, want: "revocation time is zero"},
		{name: "Revoke on an empty platform", call: func() error { return s.Revoke(t.Context(), "alice", []string{"ios", ""}, at) }, want: "platform name is empty"},
		{
			name: "RevokedBefore of an empty user id",
			call: func() error { _, err := s.RevokedBefore(t.Context(), "", "ios"); return err },
			want: "user id is empty",
		},
		{
			name: "RevokedBefore on an empty platform",
			call: func() error { _, err := s.RevokedBefore(t.Context(), "alice", ""); return err },
			want: "platform name is empty",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got error %v, want one containing %q", err, tc.want)
			}
		})
	}
	got, err := s.RevokedBefore(t.Context(), "alice", "ios")
	if err != nil || !got.IsZero() {
		t.Errorf("RevokedBefore after rejected calls: got %v and %v, want the zero time because they changed nothing", got, err)
	}
}

func TestLoadRevocationsAfterFlush(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStore(t, r.Addr, Config{})
	ctx := t.Context()
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)

	if loaded, err := s.RevocationsLoaded(ctx); err != nil || loaded {
		t.Fatalf("RevocationsLoaded on an empty Redis = %v, %v; want false", loaded, err)
	}
	revs := []server.Revocation{{UserID: "u1", Platform: "web", At: at}, {UserID: "u2", At: at}}
	if err := s.LoadRevocations(ctx, revs); err != nil {
		t.Fatalf("LoadRevocations: %v", err)
	}
	if loaded, err := s.RevocationsLoaded(ctx); err != nil || !loaded {
		t.Fatalf("RevocationsLoaded after loading = %v, %v; want true", loaded, err)
	}
	checks := []struct {
		user, platform string
		want           time.Time
	}{
		{"u1", "web", at},
		{"u1", "ios", time.Time{}},
		{"u2", "android", at},
	}
	for _, c := range checks {
		got, err := s.RevokedBefore(ctx, c.user, c.platform)
		if err != nil || !got.Equal(c.want) {
			t.Errorf("RevokedBefore(%s, %s) = %v, %v; want %v", c.user, c.platform, got, err, c.want)
		}
	}

	r.FlushAll()
	if loaded, err := s.RevocationsLoaded(ctx); err != nil || loaded {
		t.Errorf("RevocationsLoaded after FLUSHALL = %v, %v; want false so the revocations are loaded again", loaded, err)
	}
}
