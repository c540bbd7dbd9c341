package storetest

import (
	"testing"
	"time"

	"github.com/imlite/imlite/server"
)

// TestRevocationStore runs the conformance suite of server.RevocationStore.
// newStore is called once per subtest.
func TestRevocationStore(t *testing.T, newStore func(t *testing.T) server.RevocationStore) {
	t.Run("NoRevocation", func(t *testing.T) {
		testNoRevocation(t, newStore(t))
	})
	t.Run("LaterTimeWins", func(t *testing.T) {
		testLaterTimeWins(t, newStore(t))
	})
	t.Run("UsersSeparated", func(t *testing.T) {
		testRevocationUsersSeparated(t, newStore(t))
	})
}

func checkRevokedBefore(t *testing.T, s server.RevocationStore, userID, platform string, want time.Time) {
	t.Helper()
	got, err := s.RevokedBefore(t.Context(), userID, platform)
	if err != nil {
		t.Fatalf("RevokedBefore(%s, %s): %v", userID, platform, err)
	}
	checkTime(t, "RevokedBefore("+platform+")", got, want)
}

func testNoRevocation(t *testing.T, s server.RevocationStore) {
	checkRevokedBefore(t, s, uniqueID("user"), "ios", time.Time{})
}

func testLaterTimeWins(t *testing.T, s server.RevocationStore) {
	t1 := baseTime
	t2 := baseTime.Add(90 * time.Minute)
	t3 := baseTime.Add(48 * time.Hour)
	type kick struct {
		platforms []string
		at        time.Time
	}
	all := []string(nil)
	cases := []struct {
		name  string
		kicks []kick
		want  map[string]time.Time
	}{
		{
			name:  "one platform",
			kicks: []kick{{[]string{"ios"}, t1}},
			want:  map[string]time.Time{"ios": t1, "web": {}},
		},
		{
			name:  "all platforms",
			kicks: []kick{{all, t1}},
			want:  map[string]time.Time{"ios": t1, "web": t1},
		},
		{
			name:  "several platforms in one call",
			kicks: []kick{{[]string{"ios", "web"}, t1}},
			want:  map[string]time.Time{"ios": t1, "web": t1, "android": {}},
		},
		{
			name:  "all platforms after one platform",
			kicks: []kick{{[]string{"ios"}, t1}, {all, t2}},
			want:  map[string]time.Time{"ios": t2, "web": t2},
		},
		{
			name:  "one platform after all platforms",
			kicks: []kick{{all, t1}, {[]string{"ios"}, t2}},
			want:  map[string]time.Time{"ios": t2, "web": t1},
		},
		{
			name:  "earlier platform kick ignored",
			kicks: []kick{{[]string{"ios"}, t2}, {[]string{"ios"}, t1}},
			want:  map[string]time.Time{"ios": t2, "web": {}},
		},
		{
			name:  "earlier all-platform kick ignored",
			kicks: []kick{{all, t3}, {all, t1}},
			want:  map[string]time.Time{"ios": t3, "web": t3},
		},
		{
			name:  "earlier all-platform kick below a platform kick",
			kicks: []kick{{[]string{"web"}, t3}, {all, t2}, {[]string{"web"}, t1}},
			want:  map[string]time.Time{"ios": t2, "web": t3},
		},
		{
			name:  "later kick replaces earlier",
			kicks: []kick{{[]string{"ios"}, t1}, {[]string{"ios"}, t3}},
			want:  map[string]time.Time{"ios": t3},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			user := uniqueID("user")
			for _, k := range tc.kicks {
				if err := s.Revoke(t.Context(), user, k.platforms, k.at); err != nil {
					t.Fatalf("Revoke(%s, %v, %s): %v", user, k.platforms, fmtTime(k.at), err)
				}
			}
			for platform, want := range tc.want {
				checkRevokedBefore(t, s, user, platform, want)
			}
		})
	}
}

// testRevocationUsersSeparated revokes a user whose id extends another's,
// which catches prefix scans that run into the neighbouring user.
func testRevocationUsersSeparated(t *testing.T, s server.RevocationStore) {
	user := uniqueID("user")
	extended := user + "0"
	if err := s.Revoke(t.Context(), extended, nil, baseTime); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if err := s.Revoke(t.Context(), extended, []string{"ios"}, baseTime); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	checkRevokedBefore(t, s, user, "ios", time.Time{})
	checkRevokedBefore(t, s, extended, "ios", baseTime)
}
