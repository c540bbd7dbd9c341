package storetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/imlite/imlite/server"
)

// TestPresence runs the conformance suite of server.Presence. newPresence is
// called once per subtest; the instances it returns may share one backend.
// The suite uses one instance per subtest, so it also fits a backend that
// keeps presence in process.
func TestPresence(t *testing.T, newPresence func(t *testing.T) server.Presence) {
	t.Run("NeverConnected", func(t *testing.T) {
		testPresenceNeverConnected(t, newPresence(t))
	})
	t.Run("ConnectAndDisconnect", func(t *testing.T) {
		testPresenceConnectAndDisconnect(t, newPresence(t))
	})
	t.Run("ManyUsersInOneCall", func(t *testing.T) {
		testPresenceManyUsers(t, newPresence(t))
	})
	t.Run("UsersSeparated", func(t *testing.T) {
		testPresenceUsersSeparated(t, newPresence(t))
	})
	t.Run("Concurrent", func(t *testing.T) {
		testPresenceConcurrent(t, newPresence(t))
	})
}

// presenceConn is one connection of a presence test.
type presenceConn struct {
	user, platform, id string
}

func mustConnect(t *testing.T, p server.Presence, c presenceConn) {
	t.Helper()
	if err := p.Connect(t.Context(), c.user, c.platform, c.id); err != nil {
		t.Fatalf("Connect(%s, %s, %s): %v", c.user, c.platform, c.id, err)
	}
}

func mustDisconnect(t *testing.T, p server.Presence, c presenceConn) {
	t.Helper()
	if err := p.Disconnect(t.Context(), c.user, c.platform, c.id); err != nil {
		t.Fatalf("Disconnect(%s, %s, %s): %v", c.user, c.platform, c.id, err)
	}
}

func mustPlatforms(t *testing.T, p server.Presence, userIDs []string) map[string][]string {
	t.Helper()
	got, err := p.Platforms(t.Context(), userIDs)
	if err != nil {
		t.Fatalf("Platforms(%s): %v", fmtIDs(userIDs), err)
	}
	return got
}

// checkPlatforms fails unless Platforms returns exactly want for the users:
// each online user with its sorted platforms, and no entry for the others.
func checkPlatforms(t *testing.T, label string, p server.Presence, userIDs []string, want map[string][]string) {
	t.Helper()
	got := mustPlatforms(t, p, userIDs)
	for _, id := range userIDs {
		gotPl, gotOK := got[id]
		wantPl, wantOK := want[id]
		switch {
		case gotOK && !wantOK:
			t.Errorf("%s: user %s: got platforms %v, want the user absent because it is offline", label, id, gotPl)
		case !gotOK && wantOK:
			t.Errorf("%s: user %s absent, want platforms %v", label, id, wantPl)
		case !slices.Equal(gotPl, wantPl):
			t.Errorf("%s: user %s: got platforms %v, want %v (sorted, each once)", label, id, gotPl, wantPl)
		}
	}
	for id := range got {
		if !slices.Contains(userIDs, id) {
			t.Errorf("%s: got user %s, which the call did not ask for", label, id)
		}
	}
}

func testPresenceNeverConnected(t *testing.T, p server.Presence) {
	cases := []struct {
		name  string
		users []string
	}{
		{name: "no users", users: nil},
		{name: "one unknown user", users: []string{uniqueID("user")}},
		{name: "several unknown users", users: []string{uniqueID("user"), uniqueID("user"), uniqueID("user")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkPlatforms(t, "users never connected", p, tc.users, nil)
		})
	}
	t.Run("disconnect unknown connection", func(t *testing.T) {
		user := uniqueID("user")
		mustDisconnect(t, p, presenceConn{user, "web", uniqueID("conn")})
		checkPlatforms(t, "after Disconnect of an unknown connection", p, []string{user}, nil)
	})
}

// testPresenceConnectAndDisconnect walks one user through connections on
// several platforms, checking the platforms after each step.
func testPresenceConnectAndDisconnect(t *testing.T, p server.Presence) {
	user := uniqueID("user")
	web1 := presenceConn{user, "web", uniqueID("conn")}
	web2 := presenceConn{user, "web", uniqueID("conn")}
	ios := presenceConn{user, "ios", uniqueID("conn")}
	android := presenceConn{user, "android", uniqueID("conn")}

	steps := []struct {
		name       string
		connect    []presenceConn
		disconnect []presenceConn
		want       []string
	}{
		{name: "first connection", connect: []presenceConn{web1}, want: []string{"web"}},
		{name: "second platform", connect: []presenceConn{ios}, want: []string{"ios", "web"}},
		{name: "second connection on a platform", connect: []presenceConn{web2}, want: []string{"ios", "web"}},
		{name: "third platform sorts first", connect: []presenceConn{android}, want: []string{"android", "ios", "web"}},
		{name: "repeated Connect", connect: []presenceConn{android}, want: []string{"android", "ios", "web"}},
		{name: "one of two web connections closes", disconnect: []presenceConn{web1}, want: []string{"android", "ios", "web"}},
		{name: "last web connection closes", disconnect: []presenceConn{web2}, want: []string{"android", "ios"}},
		{name: "repeated Disconnect", disconnect: []presenceConn{web2}, want: []string{"android", "ios"}},
		{name: "one Disconnect after repeated Connect", disconnect: []presenceConn{android}, want: []string{"ios"}},
		{name: "last connection closes", disconnect: []presenceConn{ios}, want: nil},
		{name: "reconnect", connect: []presenceConn{web1}, want: []string{"web"}},
	}
	for _, step := range steps {
		for _, c := range step.connect {
			mustConnect(t, p, c)
		}
		for _, c := range step.disconnect {
			mustDisconnect(t, p, c)
		}
		want := map[string][]string{}
		if step.want != nil {
			want[user] = step.want
		}
		checkPlatforms(t, step.name, p, []string{user}, want)
	}
}

func testPresenceManyUsers(t *testing.T, p server.Presence) {
	const users = 120
	ids := make([]string, users)
	want := make(map[string][]string)
	for i := range ids {
		ids[i] = uniqueID("user")
		// Every third user stays offline; the others get one or two
		// platforms.
		switch i % 3 {
		case 1:
			mustConnect(t, p, presenceConn{ids[i], "web", uniqueID("conn")})
			want[ids[i]] = []string{"web"}
		case 2:
			mustConnect(t, p, presenceConn{ids[i], "web", uniqueID("conn")})
			mustConnect(t, p, presenceConn{ids[i], "desktop", uniqueID("conn")})
			want[ids[i]] = []string{"desktop", "web"}
		}
	}
	checkPlatforms(t, fmt.Sprintf("%d users in one call", users), p, ids, want)

	repeated := []string{ids[1], ids[0], ids[1]}
	checkPlatforms(t, "user id repeated in one call", p, repeated, want)
}

// testPresenceUsersSeparated connects a user whose id extends another's,
// which catches prefix scans that run into the neighbouring user.
func testPresenceUsersSeparated(t *testing.T, p server.Presence) {
	user := uniqueID("user")
	extended := user + "0"
	mustConnect(t, p, presenceConn{extended, "ios", uniqueID("conn")})
	checkPlatforms(t, "user whose id is a prefix of an online user", p, []string{user, extended},
		map[string][]string{extended: {"ios"}})
}

// testPresenceConcurrent connects and disconnects many connections of the
// same users from many goroutines. Every goroutine leaves its last
// connection open, so each user ends online on the platforms of its
// goroutines.
func testPresenceConcurrent(t *testing.T, p server.Presence) {
	const goroutines, rounds = 16, 10
	platforms := []string{"android", "ios", "web", "desktop"}
	users := []string{uniqueID("user"), uniqueID("user")}

	var wg sync.WaitGroup
	for g := range goroutines {
		user := users[g%len(users)]
		platform := platforms[g%len(platforms)]
		wg.Go(func() {
			for r := range rounds {
				c := presenceConn{user, platform, uniqueID("conn")}
				if err := p.Connect(t.Context(), c.user, c.platform, c.id); err != nil {
					t.Errorf("Connect(%s, %s, %s): %v", c.user, c.platform, c.id, err)
					return
				}
				if r == rounds-1 {
					return
				}
				if err := p.Disconnect(t.Context(), c.user, c.platform, c.id); err != nil {
					t.Errorf("Disconnect(%s, %s, %s): %v", c.user, c.platform, c.id, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	// Goroutine g uses user g%2 and platform g%4, so user 0 gets the even
	// platforms and user 1 the odd ones.
	want := map[string][]string{
		users[0]: sortedCopy([]string{platforms[0], platforms[2]}),
		users[1]: sortedCopy([]string{platforms[1], platforms[3]}),
	}
	checkPlatforms(t, "after concurrent connects and disconnects", p, users, want)
}
