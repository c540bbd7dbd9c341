package storetest

import (
	"cmp"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/imlite/imlite/server"
)

// TestGroupStore runs the conformance suite of server.GroupStore. newStore
// is called once per subtest.
func TestGroupStore(t *testing.T, newStore func(t *testing.T) server.GroupStore) {
	t.Run("CreateAndGet", func(t *testing.T) {
		testCreateAndGet(t, newStore(t))
	})
	t.Run("CreateDuplicate", func(t *testing.T) {
		testCreateDuplicate(t, newStore(t))
	})
	t.Run("NotFound", func(t *testing.T) {
		testGroupNotFound(t, newStore(t))
	})
	t.Run("AddMembers", func(t *testing.T) {
		testAddMembers(t, newStore(t))
	})
	t.Run("GroupFull", func(t *testing.T) {
		testGroupFull(t, newStore(t))
	})
	t.Run("RemoveMembers", func(t *testing.T) {
		testRemoveMembers(t, newStore(t))
	})
	t.Run("ListMembersPaging", func(t *testing.T) {
		testListMembersPaging(t, newStore(t))
	})
	t.Run("GroupsSeparated", func(t *testing.T) {
		testGroupsSeparated(t, newStore(t))
	})
}

// newGroup returns a group owned by the first of n new members, who joined
// one second apart.
func newGroup(n int) (server.Group, []server.GroupMember) {
	members := make([]server.GroupMember, n)
	for i := range members {
		members[i] = server.GroupMember{UserID: uniqueID("user"), JoinedAt: baseTime.Add(time.Duration(i) * time.Second)}
	}
	g := server.Group{
		ID:        uniqueID("grp"),
		Name:      "Team \u05E6\u05D5\u05D5\u05EA \U0001F469\u200D\U0001F4BB",
		OwnerID:   members[0].UserID,
		Ex:        `{"topic":"e\u0301t\u00E9"}`,
		CreatedAt: baseTime,
	}
	return g, members
}

func mustCreateGroup(t *testing.T, s server.GroupStore, g server.Group, members []server.GroupMember) {
	t.Helper()
	if err := s.CreateGroup(t.Context(), g, members); err != nil {
		t.Fatalf("CreateGroup(%s): %v", g.ID, err)
	}
}

func mustGetGroup(t *testing.T, s server.GroupStore, groupID string) server.Group {
	t.Helper()
	g, err := s.GetGroup(t.Context(), groupID)
	if err != nil {
		t.Fatalf("GetGroup(%s): %v", groupID, err)
	}
	return g
}

func checkMember(t *testing.T, s server.GroupStore, groupID, userID string, want bool) {
	t.Helper()
	got, err := s.IsGroupMember(t.Context(), groupID, userID)
	if err != nil {
		t.Fatalf("IsGroupMember(%s, %s): %v", groupID, userID, err)
	}
	if got != want {
		t.Errorf("IsGroupMember(%s, %s): got %v, want %v", groupID, userID, got, want)
	}
}

func checkMemberIDs(t *testing.T, s server.GroupStore, groupID string, want []string) {
	t.Helper()
	got, err := s.GroupMemberIDs(t.Context(), groupID)
	if err != nil {
		t.Fatalf("GroupMemberIDs(%s): %v", groupID, err)
	}
	if g, w := sortedCopy(got), sortedCopy(want); !slices.Equal(g, w) {
		t.Errorf("GroupMemberIDs(%s): got %s, want %s", groupID, fmtIDs(g), fmtIDs(w))
	}
}

func memberIDs(members []server.GroupMember) []string {
	out := make([]string, len(members))
	for i, m := range members {
		out[i] = m.UserID
	}
	return out
}

func testCreateAndGet(t *testing.T, s server.GroupStore) {
	g, members := newGroup(3)
	mustCreateGroup(t, s, g, members)

	got := mustGetGroup(t, s, g.ID)
	if got.ID != g.ID || got.Name != g.Name || got.OwnerID != g.OwnerID || got.Ex != g.Ex {
		t.Errorf("GetGroup:\n got id %q name %q owner %q ex %q\nwant id %q name %q owner %q ex %q",
			got.ID, got.Name, got.OwnerID, got.Ex, g.ID, g.Name, g.OwnerID, g.Ex)
	}
	checkTime(t, "CreatedAt", got.CreatedAt, g.CreatedAt)
	if got.MemberCount != 3 {
		t.Errorf("member count: got %d, want 3", got.MemberCount)
	}
	for _, m := range members {
		checkMember(t, s, g.ID, m.UserID, true)
	}
	checkMember(t, s, g.ID, uniqueID("user"), false)
	checkMemberIDs(t, s, g.ID, memberIDs(members))
}

func testCreateDuplicate(t *testing.T, s server.GroupStore) {
	g, members := newGroup(2)
	mustCreateGroup(t, s, g, members)

	again := g
	again.Name = "another name"
	intruder := server.GroupMember{UserID: uniqueID("user"), JoinedAt: baseTime}
	err := s.CreateGroup(t.Context(), again, append(members[:1:1], intruder))
	if !errors.Is(err, server.ErrAlreadyExists) {
		t.Fatalf("second CreateGroup(%s): got %v, want %v", g.ID, err, server.ErrAlreadyExists)
	}

	got := mustGetGroup(t, s, g.ID)
	if got.Name != g.Name || got.MemberCount != 2 {
		t.Errorf("group after the rejected create: got name %q with %d members, want %q with 2", got.Name, got.MemberCount, g.Name)
	}
	checkMember(t, s, g.ID, intruder.UserID, false)
	checkMemberIDs(t, s, g.ID, memberIDs(members))
}

func testGroupNotFound(t *testing.T, s server.GroupStore) {
	missing := uniqueID("grp")
	member := server.GroupMember{UserID: uniqueID("user"), JoinedAt: baseTime}
	cases := []struct {
		name string
		call func() error
	}{
		{name: "GetGroup", call: func() error {
			_, err := s.GetGroup(t.Context(), missing)
			return err
		}},
		{name: "AddGroupMembers", call: func() error {
			_, _, err := s.AddGroupMembers(t.Context(), missing, []server.GroupMember{member}, 100)
			return err
		}},
		{name: "IsGroupMember", call: func() error {
			_, err := s.IsGroupMember(t.Context(), missing, member.UserID)
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, server.ErrNotFound) {
				t.Errorf("%s of a missing group: got %v, want %v", tc.name, err, server.ErrNotFound)
			}
		})
	}

	// A failed add must not create the group as a side effect.
	if _, err := s.GetGroup(t.Context(), missing); !errors.Is(err, server.ErrNotFound) {
		t.Errorf("GetGroup after an add to a missing group: got %v, want %v", err, server.ErrNotFound)
	}
}

func testAddMembers(t *testing.T, s server.GroupStore) {
	g, members := newGroup(3)
	mustCreateGroup(t, s, g, members)

	new1 := server.GroupMember{UserID: uniqueID("user"), JoinedAt: baseTime.Add(time.Hour)}
	new2 := server.GroupMember{UserID: uniqueID("user"), JoinedAt: baseTime.Add(2 * time.Hour)}
	added, count, err := s.AddGroupMembers(t.Context(), g.ID, []server.GroupMember{members[1], new1, new2, new1}, 10)
	if err != nil {
		t.Fatalf("AddGroupMembers: %v", err)
	}
	if got, want := sortedCopy(added), sortedCopy([]string{new1.UserID, new2.UserID}); !slices.Equal(got, want) {
		t.Errorf("added users: got %s, want %s (existing members and repeats left out)", fmtIDs(got), fmtIDs(want))
	}
	if count != 5 {
		t.Errorf("returned member count: got %d, want 5", count)
	}
	if got := mustGetGroup(t, s, g.ID).MemberCount; got != 5 {
		t.Errorf("stored member count: got %d, want 5", got)
	}
	checkMember(t, s, g.ID, new1.UserID, true)
	checkMember(t, s, g.ID, new2.UserID, true)
	checkMemberIDs(t, s, g.ID, append(memberIDs(members), new1.UserID, new2.UserID))

	added, count, err = s.AddGroupMembers(t.Context(), g.ID, []server.GroupMember{new1, members[0]}, 10)
	if err != nil {
		t.Fatalf("AddGroupMembers of members only: %v", err)
	}
	if len(added) != 0 || count != 5 {
		t.Errorf("AddGroupMembers of members only: got added %s and count %d, want none and 5", fmtIDs(added), count)
	}
}

func testGroupFull(t *testing.T, s server.GroupStore) {
	cases := []struct {
		name       string
		addNew     int
		addMembers bool
		maxMembers int
		wantFull   bool
	}{
		{name: "one over the limit", addNew: 2, maxMembers: 4, wantFull: true},
		{name: "new and existing over the limit", addNew: 2, addMembers: true, maxMembers: 4, wantFull: true},
		{name: "fills to the limit", addNew: 2, maxMembers: 5},
		{name: "existing members at the limit", addMembers: true, maxMembers: 3},
		{name: "new and existing to the limit", addNew: 1, addMembers: true, maxMembers: 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g, members := newGroup(3)
			mustCreateGroup(t, s, g, members)
			var add []server.GroupMember
			if tc.addMembers {
				add = append(add, members[1:]...)
			}
			var fresh []string
			for range tc.addNew {
				m := server.GroupMember{UserID: uniqueID("user"), JoinedAt: baseTime}
				add = append(add, m)
				fresh = append(fresh, m.UserID)
			}

			added, count, err := s.AddGroupMembers(t.Context(), g.ID, add, tc.maxMembers)
			if !tc.wantFull {
				if err != nil {
					t.Fatalf("AddGroupMembers of %d new users to 3 members, limit %d: %v", tc.addNew, tc.maxMembers, err)
				}
				if len(added) != tc.addNew || count != 3+tc.addNew {
					t.Errorf("got %d added and count %d, want %d and %d", len(added), count, tc.addNew, 3+tc.addNew)
				}
				return
			}
			if !errors.Is(err, server.ErrGroupFull) {
				t.Fatalf("AddGroupMembers of %d new users to 3 members, limit %d: got %v, want %v", tc.addNew, tc.maxMembers, err, server.ErrGroupFull)
			}
			if got := mustGetGroup(t, s, g.ID).MemberCount; got != 3 {
				t.Errorf("member count after the rejected add: got %d, want 3", got)
			}
			for _, u := range fresh {
				checkMember(t, s, g.ID, u, false)
			}
			checkMemberIDs(t, s, g.ID, memberIDs(members))
		})
	}
}

func testRemoveMembers(t *testing.T, s server.GroupStore) {
	g, members := newGroup(4)
	mustCreateGroup(t, s, g, members)

	stranger := uniqueID("user")
	removed, count, err := s.RemoveGroupMembers(t.Context(), g.ID, []string{members[1].UserID, stranger, members[3].UserID})
	if err != nil {
		t.Fatalf("RemoveGroupMembers: %v", err)
	}
	if got, want := sortedCopy(removed), sortedCopy([]string{members[1].UserID, members[3].UserID}); !slices.Equal(got, want) {
		t.Errorf("removed users: got %s, want %s (non-members left out)", fmtIDs(got), fmtIDs(want))
	}
	if count != 2 {
		t.Errorf("returned member count: got %d, want 2", count)
	}
	if got := mustGetGroup(t, s, g.ID).MemberCount; got != 2 {
		t.Errorf("stored member count: got %d, want 2", got)
	}
	checkMember(t, s, g.ID, members[1].UserID, false)
	checkMember(t, s, g.ID, members[0].UserID, true)
	checkMemberIDs(t, s, g.ID, []string{members[0].UserID, members[2].UserID})

	removed, count, err = s.RemoveGroupMembers(t.Context(), g.ID, []string{members[1].UserID})
	if err != nil {
		t.Fatalf("second RemoveGroupMembers: %v", err)
	}
	if len(removed) != 0 || count != 2 {
		t.Errorf("second RemoveGroupMembers of the same user: got removed %s and count %d, want none and 2", fmtIDs(removed), count)
	}
}

func testListMembersPaging(t *testing.T, s server.GroupStore) {
	g, members := newGroup(7)
	mustCreateGroup(t, s, g, members)
	want := slices.Clone(members)
	slices.SortFunc(want, func(x, y server.GroupMember) int { return cmp.Compare(x.UserID, y.UserID) })

	const pageSize = 3
	var got []server.GroupMember
	after := ""
	for page := 0; ; page++ {
		if page > len(members) {
			t.Fatalf("paging did not end after %d pages", page)
		}
		rows, err := s.ListGroupMembers(t.Context(), g.ID, after, pageSize)
		if err != nil {
			t.Fatalf("ListGroupMembers(after %q): %v", after, err)
		}
		if len(rows) > pageSize {
			t.Fatalf("ListGroupMembers(limit %d) returned %d members", pageSize, len(rows))
		}
		if len(rows) == 0 {
			break
		}
		got = append(got, rows...)
		after = rows[len(rows)-1].UserID
	}
	if !slices.Equal(memberIDs(got), memberIDs(want)) {
		t.Fatalf("members over all pages: got %s, want %s in user id order", fmtIDs(memberIDs(got)), fmtIDs(memberIDs(want)))
	}
	for i := range got {
		checkTime(t, "JoinedAt of "+got[i].UserID, got[i].JoinedAt, want[i].JoinedAt)
	}

	// after need not be a member: the page starts at the next id above it.
	between := want[2].UserID + "0"
	rows, err := s.ListGroupMembers(t.Context(), g.ID, between, 2)
	if err != nil {
		t.Fatalf("ListGroupMembers(after a non-member): %v", err)
	}
	if gotIDs, wantIDs := memberIDs(rows), memberIDs(want[3:5]); !slices.Equal(gotIDs, wantIDs) {
		t.Errorf("ListGroupMembers(after %q, limit 2): got %s, want %s", between, fmtIDs(gotIDs), fmtIDs(wantIDs))
	}
}

// testGroupsSeparated creates groups whose ids extend each other, which
// catches prefix scans that run into the neighbouring group.
func testGroupsSeparated(t *testing.T, s server.GroupStore) {
	short, shortMembers := newGroup(2)
	long, longMembers := newGroup(3)
	long.ID = short.ID + "0"
	mustCreateGroup(t, s, long, longMembers)
	mustCreateGroup(t, s, short, shortMembers)

	checkMemberIDs(t, s, short.ID, memberIDs(shortMembers))
	rows, err := s.ListGroupMembers(t.Context(), short.ID, "", 100)
	if err != nil {
		t.Fatalf("ListGroupMembers: %v", err)
	}
	if got, want := sortedCopy(memberIDs(rows)), sortedCopy(memberIDs(shortMembers)); !slices.Equal(got, want) {
		t.Errorf("ListGroupMembers(%s): got %s, want %s", short.ID, fmtIDs(got), fmtIDs(want))
	}
	checkMember(t, s, short.ID, longMembers[0].UserID, false)
}
