package redisstore

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imlite/imlite/internal/testenv"
	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/storetest"
)

func TestPresence(t *testing.T) {
	r := testenv.StartRedis(t)
	storetest.TestPresence(t, func(t *testing.T) server.Presence { return newStore(t, r.Addr, Config{}) })
}

func connect(t *testing.T, s *Store, userID, platform, connID string) {
	t.Helper()
	if err := s.Connect(t.Context(), userID, platform, connID); err != nil {
		t.Fatalf("Connect(%s, %s, %s) on %s: %v", userID, platform, connID, s.pod, err)
	}
}

// checkOnline fails unless Platforms, called on s, returns want for the
// users: sorted platforms of online users, no entry for offline ones.
func checkOnline(t *testing.T, label string, s *Store, userIDs []string, want map[string][]string) {
	t.Helper()
	got, err := s.Platforms(t.Context(), userIDs)
	if err != nil {
		t.Fatalf("%s: Platforms on %s: %v", label, s.pod, err)
	}
	for _, id := range userIDs {
		if !slices.Equal(got[id], want[id]) {
			t.Errorf("%s: platforms of %s seen from %s: got %v, want %v", label, id, s.pod, got[id], want[id])
		}
		if _, ok := got[id]; ok != (len(want[id]) > 0) {
			t.Errorf("%s: user %s in the map seen from %s: got %v, want %v", label, id, s.pod, ok, len(want[id]) > 0)
		}
	}
}

func TestPresenceAcrossPods(t *testing.T) {
	r := testenv.StartRedis(t)
	podA := newStore(t, r.Addr, Config{PodName: "pod-a"})
	podB := newStore(t, r.Addr, Config{PodName: "pod-b"})
	users := []string{"alice", "bob"}

	steps := []struct {
		name string
		pod  *Store
		// connect or disconnect the connection
		disconnect         bool
		user, platform, id string
		want               map[string][]string
	}{
		{
			name: "alice connects on pod a", pod: podA, user: "alice", platform: "web", id: "c1",
			want: map[string][]string{"alice": {"web"}},
		},
		{
			name: "alice connects on pod b", pod: podB, user: "alice", platform: "ios", id: "c1",
			want: map[string][]string{"alice": {"ios", "web"}},
		},
		{
			name: "bob connects on pod b with the connection id of alice's", pod: podB, user: "bob", platform: "web", id: "c1",
			want: map[string][]string{"alice": {"ios", "web"}, "bob": {"web"}},
		},
		{
			name: "alice connects on pod b on the platform of pod a with the same connection id", pod: podB, user: "alice", platform: "web", id: "c1",
			want: map[string][]string{"alice": {"ios", "web"}, "bob": {"web"}},
		},
		{
			name: "pod a closes its web connection of alice", pod: podA, disconnect: true, user: "alice", platform: "web", id: "c1",
			want: map[string][]string{"alice": {"ios", "web"}, "bob": {"web"}},
		},
		{
			name: "pod b closes alice's web connection", pod: podB, disconnect: true, user: "alice", platform: "web", id: "c1",
			want: map[string][]string{"alice": {"ios"}, "bob": {"web"}},
		},
		{
			name: "pod b closes bob's connection", pod: podB, disconnect: true, user: "bob", platform: "web", id: "c1",
			want: map[string][]string{"alice": {"ios"}},
		},
	}
	for _, step := range steps {
		var err error
		if step.disconnect {
			err = step.pod.Disconnect(t.Context(), step.user, step.platform, step.id)
		} else {
			err = step.pod.Connect(t.Context(), step.user, step.platform, step.id)
		}
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		checkOnline(t, step.name, podA, users, step.want)
		checkOnline(t, step.name, podB, users, step.want)
	}
}

// TestPresenceDeadPodExpires closes one pod's Store without Disconnect, as
// when the pod dies. Its entries must stop counting within the TTL, while
// the entries of the live pod, refreshed in the background, stay.
func TestPresenceDeadPodExpires(t *testing.T) {
	const ttl = time.Second
	r := testenv.StartRedis(t)
	raw := rawClient(t, r.Addr)
	live := newStore(t, r.Addr, Config{PodName: "live", PresenceTTL: ttl})
	dead, err := New(Config{Addr: r.Addr, PodName: "dead", PresenceTTL: ttl, MaxSeqs: noMessages})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	users := []string{"alice", "bob"}

	connect(t, live, "alice", "web", "c1")
	connect(t, dead, "alice", "ios", "c2")
	connect(t, dead, "bob", "android", "c3")
	checkOnline(t, "before the pod dies", live, users, map[string][]string{"alice": {"ios", "web"}, "bob": {"android"}})

	// Every entry of the dead pod was written before Close, so it has
	// expired once the TTL has passed since Close. The margin covers the
	// millisecond rounding of expiry times.
	closedAt := time.Now()
	if err := dead.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	time.Sleep(time.Until(closedAt.Add(ttl + 50*time.Millisecond)))
	checkOnline(t, "one TTL after the pod died", live, users, map[string][]string{"alice": {"web"}})

	if n, err := raw.Exists(t.Context(), live.presenceKey("bob")).Result(); err != nil || n != 0 {
		t.Errorf("presence key of a user only on the dead pod: got %d keys (err %v), want 0 because the key expires with its last entry", n, err)
	}
	if n, err := raw.ZCard(t.Context(), live.presenceKey("alice")).Result(); err != nil || n != 1 {
		t.Errorf("entries of alice after Platforms: got %d (err %v), want 1 because Platforms deletes expired entries", n, err)
	}

	// The live pod's entry was written before the dead pod closed and
	// outlives several TTLs only through the refresh.
	time.Sleep(2 * ttl)
	checkOnline(t, "three TTLs after the pod died", live, users, map[string][]string{"alice": {"web"}})
}

// TestPresenceRefreshCoversAllBatches keeps more users online than one
// refresh round trip writes, for longer than the TTL.
func TestPresenceRefreshCoversAllBatches(t *testing.T) {
	const ttl = time.Second
	users := 2*refreshBatchSize + 100
	r := testenv.StartRedis(t)
	s := newStore(t, r.Addr, Config{PresenceTTL: ttl})

	ids := make([]string, users)
	want := make(map[string][]string, users)
	for i := range ids {
		ids[i] = fmt.Sprintf("user-%d", i)
		want[ids[i]] = []string{"web"}
		connect(t, s, ids[i], "web", "c1")
	}
	time.Sleep(2 * ttl)
	checkOnline(t, fmt.Sprintf("%d users two TTLs after they connected", users), s, ids, want)
}

func TestPresenceRefreshRestoresFlushedEntries(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStore(t, r.Addr, Config{PresenceTTL: 300 * time.Millisecond})
	connect(t, s, "alice", "web", "c1")
	r.FlushAll()

	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := s.Platforms(t.Context(), []string{"alice"})
		if err != nil {
			t.Fatalf("Platforms: %v", err)
		}
		if slices.Equal(got["alice"], []string{"web"}) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("platforms of alice after FLUSHALL: got %v for 10s, want [web] written again by the refresh", got["alice"])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPresenceRefreshLogsFailureOnce(t *testing.T) {
	r := testenv.StartRedis(t)
	logs := &logBuffer{}
	s := newStore(t, r.Addr, Config{PresenceTTL: 300 * time.Millisecond, Logger: logs.logger()})
	connect(t, s, "alice", "web", "c1")

	r.Stop()
	waitForLog(t, logs, "presence refresh failed", failLimit)
	// Let further rounds fail, which must not log again.
	time.Sleep(time.Second)
	r.Restart()
	waitForLog(t, logs, "presence refresh recovered", failLimit)

	if n := strings.Count(logs.String(), "presence refresh failed"); n != 1 {
		t.Errorf("log lines about the failed refresh: got %d, want 1 for one outage; log:\n%s", n, logs.String())
	}
	for _, want := range []string{"refresh presence of 1 of 1 users", server.ErrUnavailable.Error()} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("refresh failure log does not contain %q; log:\n%s", want, logs.String())
		}
	}
	checkOnline(t, "after Redis restarted", s, []string{"alice"}, map[string][]string{"alice": {"web"}})
}

// TestPresenceFailedCallsForgetConnection checks that a connection whose
// Connect or Disconnect failed is not written again by the refresh once
// Redis is back.
func TestPresenceFailedCallsForgetConnection(t *testing.T) {
	const ttl = 300 * time.Millisecond
	r := testenv.StartRedis(t)
	s := newStore(t, r.Addr, Config{PresenceTTL: ttl})
	connect(t, s, "bob", "ios", "c2")

	r.Stop()
	if err := s.Connect(t.Context(), "alice", "web", "c1"); !errors.Is(err, server.ErrUnavailable) {
		t.Fatalf("Connect with Redis stopped: got %v, want server.ErrUnavailable", err)
	}
	if err := s.Disconnect(t.Context(), "bob", "ios", "c2"); !errors.Is(err, server.ErrUnavailable) {
		t.Fatalf("Disconnect with Redis stopped: got %v, want server.ErrUnavailable", err)
	}
	r.Restart()

	// Several refresh rounds run in this time.
	time.Sleep(4 * ttl)
	checkOnline(t, "after Redis restarted", s, []string{"alice", "bob"}, nil)
}

func TestPlatformsSkipsMalformedEntries(t *testing.T) {
	r := testenv.StartRedis(t)
	raw := rawClient(t, r.Addr)
	logs := &logBuffer{}
	s := newStore(t, r.Addr, Config{Logger: logs.logger()})

	future := float64(time.Now().Add(time.Hour).UnixMilli())
	entries := []redis.Z{
		{Score: future, Member: "garbage"},
		{Score: future, Member: "web|no-connection-id"},
		{Score: future, Member: "|pod-x|c1"},
		{Score: future, Member: "ios|pod-x|c1"},
	}
	if err := raw.ZAdd(t.Context(), s.presenceKey("alice"), entries...).Err(); err != nil {
		t.Fatalf("write entries: %v", err)
	}

	checkOnline(t, "presence set with malformed entries", s, []string{"alice"}, map[string][]string{"alice": {"ios"}})
	for _, want := range []string{"skipping malformed presence entries", "user_id=alice", "count=3"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log does not contain %q; log:\n%s", want, logs.String())
		}
	}
}

func TestPresenceKeyOfAnotherType(t *testing.T) {
	r := testenv.StartRedis(t)
	raw := rawClient(t, r.Addr)
	s := newStore(t, r.Addr, Config{})
	if err := raw.Set(t.Context(), s.presenceKey("typed"), "online", 0).Err(); err != nil {
		t.Fatalf("write string key: %v", err)
	}

	cases := []struct {
		name string
		call func() error
	}{
		{name: "Platforms", call: func() error { _, err := s.Platforms(t.Context(), []string{"alice", "typed"}); return err }},
		{name: "Connect", call: func() error { return s.Connect(t.Context(), "typed", "web", "c1") }},
		{name: "Disconnect", call: func() error { return s.Disconnect(t.Context(), "typed", "web", "c1") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil {
				t.Fatal("got nil error, want one")
			}
			if errors.Is(err, server.ErrUnavailable) {
				t.Errorf("got %v, want no ErrUnavailable because a retry fails the same way", err)
			}
			for _, part := range []string{"typed", "WRONGTYPE"} {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("error %q does not contain %q", err, part)
				}
			}
		})
	}
}

func TestPresenceRejectsInvalidInput(t *testing.T) {
	r := testenv.StartRedis(t)
	s := newStore(t, r.Addr, Config{})
	cases := []struct {
		name                     string
		userID, platform, connID string
		want                     string
	}{
		{name: "empty user id", userID: "", platform: "web", connID: "c1", want: "user id is empty"},
		{name: "empty platform", userID: "alice", platform: "", connID: "c1", want: "platform name of user alice is empty"},
		{name: "platform with separator", userID: "alice", platform: "web|x", connID: "c1", want: `platform name "web|x" of user alice contains "|"`},
		{name: "empty connection id", userID: "alice", platform: "web", connID: "", want: "connection id of user alice is empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Connect(t.Context(), tc.userID, tc.platform, tc.connID)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Connect: got error %v, want one containing %q", err, tc.want)
			}
			err = s.Disconnect(t.Context(), tc.userID, tc.platform, tc.connID)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Disconnect: got error %v, want one containing %q", err, tc.want)
			}
		})
	}
	if _, err := s.Platforms(t.Context(), []string{"alice", ""}); err == nil || !strings.Contains(err.Error(), "user id is empty") {
		t.Errorf("Platforms with an empty user id: got error %v, want one containing %q", err, "user id is empty")
	}
	checkOnline(t, "after rejected calls", s, []string{"alice"}, nil)
}
