package mongostore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/imlite/imlite/server"
)

var joined = time.UnixMilli(1_700_000_000_000)

func member(userID string) server.GroupMember {
	return server.GroupMember{UserID: userID, JoinedAt: joined}
}

func TestAddGroupMembersConcurrent(t *testing.T) {
	cases := []struct {
		name string
		// users[i] is added by call i; calls run at once.
		users      []string
		maxMembers int
		wantAdded  int
		wantFull   int
	}{
		{name: "distinct users beyond the limit", users: userIDs("u", 12), maxMembers: 6, wantAdded: 5, wantFull: 7},
		{name: "the same user many times", users: slices.Repeat([]string{"same"}, 8), maxMembers: 6, wantAdded: 1, wantFull: 0},
	}
	s, _ := startStore(t)
	requireAtomicUpdates(t, s)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			groupID := fmt.Sprintf("race-%d", i)
			g := server.Group{ID: groupID, Name: "race", OwnerID: "owner", CreatedAt: joined}
			if err := s.CreateGroup(t.Context(), g, []server.GroupMember{member("owner")}); err != nil {
				t.Fatalf("CreateGroup: %v", err)
			}

			var mu sync.Mutex
			var added []string
			var full int
			var wg sync.WaitGroup
			for _, u := range tc.users {
				wg.Go(func() {
					got, _, err := s.AddGroupMembers(t.Context(), groupID, []server.GroupMember{member(u)}, tc.maxMembers)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case errors.Is(err, server.ErrGroupFull):
						full++
					case err != nil:
						t.Errorf("AddGroupMembers(%s): %v", u, err)
					default:
						added = append(added, got...)
					}
				})
			}
			wg.Wait()

			if len(added) != tc.wantAdded || full != tc.wantFull {
				t.Errorf("concurrent adds: got %d added and %d ErrGroupFull, want %d and %d", len(added), full, tc.wantAdded, tc.wantFull)
			}
			ids, err := s.GroupMemberIDs(t.Context(), groupID)
			if err != nil {
				t.Fatalf("GroupMemberIDs: %v", err)
			}
			if len(ids) != 1+tc.wantAdded || len(ids) > tc.maxMembers {
				t.Errorf("members after the adds: got %d %v, want %d, at most the limit %d", len(ids), ids, 1+tc.wantAdded, tc.maxMembers)
			}
			g, err = s.GetGroup(t.Context(), groupID)
			if err != nil {
				t.Fatalf("GetGroup: %v", err)
			}
			if g.MemberCount != len(ids) {
				t.Errorf("member count: got %d, want %d, the number of member documents", g.MemberCount, len(ids))
			}
		})
	}
}

func userIDs(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%02d", prefix, i)
	}
	return out
}

// insertUnfinishedGroup stores what a CreateGroup that failed after its
// first step leaves behind: the group marked as being created, with some
// of its members.
func insertUnfinishedGroup(t *testing.T, s *Store, groupID, ownerID string, memberIDs ...string) {
	t.Helper()
	doc := groupDoc{ID: groupID, Name: "first attempt", OwnerID: ownerID, CreatedAt: joined, MemberCount: 99, Creating: true}
	if _, err := s.groups.InsertOne(t.Context(), doc); err != nil {
		t.Fatalf("insert unfinished group: %v", err)
	}
	for _, id := range memberIDs {
		if _, err := s.groupMembers.InsertOne(t.Context(), memberDoc{GroupID: groupID, UserID: id, JoinedAt: joined}); err != nil {
			t.Fatalf("insert member of unfinished group: %v", err)
		}
	}
}

func TestUnfinishedGroupCreate(t *testing.T) {
	s, _ := startStore(t)

	t.Run("reads as missing", func(t *testing.T) {
		insertUnfinishedGroup(t, s, "hidden", "alice", "alice")
		if _, err := s.GetGroup(t.Context(), "hidden"); !errors.Is(err, server.ErrNotFound) {
			t.Errorf("GetGroup of an unfinished group: got %v, want %v", err, server.ErrNotFound)
		}
		if _, err := s.IsGroupMember(t.Context(), "hidden", "alice"); !errors.Is(err, server.ErrNotFound) {
			t.Errorf("IsGroupMember in an unfinished group: got %v, want %v", err, server.ErrNotFound)
		}
		if _, _, err := s.AddGroupMembers(t.Context(), "hidden", []server.GroupMember{member("bob")}, 10); !errors.Is(err, server.ErrNotFound) {
			t.Errorf("AddGroupMembers to an unfinished group: got %v, want %v", err, server.ErrNotFound)
		}
	})

	t.Run("finished by the same owner", func(t *testing.T) {
		insertUnfinishedGroup(t, s, "retried", "alice", "alice", "bob")
		g := server.Group{ID: "retried", Name: "second attempt", OwnerID: "alice", CreatedAt: joined.Add(time.Hour)}
		if err := s.CreateGroup(t.Context(), g, []server.GroupMember{member("alice"), member("carol")}); err != nil {
			t.Fatalf("CreateGroup of an unfinished group by its owner: %v", err)
		}
		got, err := s.GetGroup(t.Context(), "retried")
		if err != nil {
			t.Fatalf("GetGroup after the retried create: %v", err)
		}
		if got.MemberCount != 3 || got.Name != "first attempt" {
			t.Errorf("group after the retried create: got %d members named %q, want 3 (alice, bob, carol) named %q",
				got.MemberCount, got.Name, "first attempt")
		}
		ids, err := s.GroupMemberIDs(t.Context(), "retried")
		if err != nil {
			t.Fatalf("GroupMemberIDs: %v", err)
		}
		if want := []string{"alice", "bob", "carol"}; !slices.Equal(ids, want) {
			t.Errorf("members after the retried create: got %v, want %v", ids, want)
		}
	})

	t.Run("taken for another owner", func(t *testing.T) {
		insertUnfinishedGroup(t, s, "claimed", "alice", "alice")
		g := server.Group{ID: "claimed", Name: "intruder", OwnerID: "mallory", CreatedAt: joined}
		err := s.CreateGroup(t.Context(), g, []server.GroupMember{member("mallory")})
		if !errors.Is(err, server.ErrAlreadyExists) {
			t.Fatalf("CreateGroup of another owner's unfinished group: got %v, want %v", err, server.ErrAlreadyExists)
		}
		n, err := s.groupMembers.CountDocuments(t.Context(), bson.D{{Key: "group_id", Value: "claimed"}, {Key: "user_id", Value: "mallory"}})
		if err != nil {
			t.Fatalf("count members: %v", err)
		}
		if n != 0 {
			t.Errorf("member documents of the rejected creator: got %d, want 0", n)
		}
	})
}

func TestRemoveGroupMembersConcurrent(t *testing.T) {
	s, _ := startStore(t)
	requireAtomicUpdates(t, s)
	g := server.Group{ID: "shrinking", Name: "shrinking", OwnerID: "owner", CreatedAt: joined}
	members := []server.GroupMember{member("owner")}
	for _, id := range userIDs("m", 6) {
		members = append(members, member(id))
	}
	if err := s.CreateGroup(t.Context(), g, members); err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}

	// Four calls remove the same three users at once; each user must be
	// reported removed by exactly one call.
	victims := []string{"m01", "m03", "m05"}
	var mu sync.Mutex
	var removed []string
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			got, _, err := s.RemoveGroupMembers(t.Context(), g.ID, victims)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("RemoveGroupMembers: %v", err)
			}
			removed = append(removed, got...)
		})
	}
	wg.Wait()

	slices.Sort(removed)
	if !slices.Equal(removed, victims) {
		t.Errorf("users reported removed over all calls: got %v, want each of %v once", removed, victims)
	}
	got, err := s.GetGroup(t.Context(), g.ID)
	if err != nil {
		t.Fatalf("GetGroup: %v", err)
	}
	if got.MemberCount != 4 {
		t.Errorf("member count: got %d, want 4 (7 created, 3 removed)", got.MemberCount)
	}
}

func TestReserveMembers(t *testing.T) {
	s, _ := startStore(t)
	g := server.Group{ID: "sized", Name: "sized", OwnerID: "a", CreatedAt: joined}
	if err := s.CreateGroup(t.Context(), g, []server.GroupMember{member("a"), member("b"), member("c")}); err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	insertUnfinishedGroup(t, s, "unfinished", "a", "a")

	// Each case runs on the count the cases before it left.
	cases := []struct {
		name       string
		groupID    string
		n, max     int
		wantCount  int
		wantErr    error
		countAfter int
	}{
		{name: "over the limit by one", groupID: "sized", n: 3, max: 5, wantErr: server.ErrGroupFull, countAfter: 3},
		{name: "up to the limit", groupID: "sized", n: 2, max: 5, wantCount: 5, countAfter: 5},
		{name: "full group", groupID: "sized", n: 1, max: 5, wantErr: server.ErrGroupFull, countAfter: 5},
		{name: "missing group", groupID: "missing", n: 1, max: 5, wantErr: server.ErrNotFound, countAfter: 5},
		{name: "unfinished group", groupID: "unfinished", n: 1, max: 500, wantErr: server.ErrNotFound, countAfter: 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			count, err := s.reserveMembers(t.Context(), tc.groupID, tc.n, tc.max)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("reserve %d of %d in %s: got count %d and error %v, want %v", tc.n, tc.max, tc.groupID, count, err, tc.wantErr)
				}
			} else if err != nil || count != tc.wantCount {
				t.Errorf("reserve %d of %d in %s: got count %d and error %v, want %d", tc.n, tc.max, tc.groupID, count, err, tc.wantCount)
			}
			got, err := s.GetGroup(t.Context(), "sized")
			if err != nil {
				t.Fatalf("GetGroup: %v", err)
			}
			if got.MemberCount != tc.countAfter {
				t.Errorf("stored member count after the reservation: got %d, want %d", got.MemberCount, tc.countAfter)
			}
		})
	}
}

func TestAddGroupMembersSkipsInsertedMember(t *testing.T) {
	s, _ := startStore(t)
	g := server.Group{ID: "crowded", Name: "crowded", OwnerID: "a", CreatedAt: joined}
	if err := s.CreateGroup(t.Context(), g, []server.GroupMember{member("a")}); err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	// insertMembers reports a user who is a member already as a duplicate,
	// which AddGroupMembers turns into room given back.
	dups, err := s.insertMembers(t.Context(), g.ID, []server.GroupMember{member("b"), member("a"), member("c")})
	if err != nil {
		t.Fatalf("insertMembers: %v", err)
	}
	if !slices.Equal(dups, []int{1}) {
		t.Errorf("duplicate indexes: got %v, want [1] for user a", dups)
	}
}

// TestAddGroupMembersFailedInsertGivesBackRoom fails the member insert
// after the room was reserved: the count must return to the members
// stored, so the room is free for the next add.
func TestAddGroupMembersFailedInsertGivesBackRoom(t *testing.T) {
	s, _ := startStore(t)
	g := server.Group{ID: "flaky", Name: "flaky", OwnerID: "a", CreatedAt: joined}
	if err := s.CreateGroup(t.Context(), g, []server.GroupMember{member("a")}); err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	s.beforeInsertMembers = cancel
	if _, _, err := s.AddGroupMembers(ctx, g.ID, []server.GroupMember{member("b"), member("c")}, 3); err == nil {
		t.Fatal("AddGroupMembers with the insert failing: got nil error")
	}
	s.beforeInsertMembers = nil
	got, err := s.GetGroup(t.Context(), g.ID)
	if err != nil {
		t.Fatalf("GetGroup: %v", err)
	}
	if got.MemberCount != 1 {
		t.Errorf("member count after the failed add: got %d, want 1", got.MemberCount)
	}

	added, count, err := s.AddGroupMembers(t.Context(), g.ID, []server.GroupMember{member("b"), member("c")}, 3)
	if err != nil {
		t.Fatalf("AddGroupMembers after the failure: %v", err)
	}
	if !slices.Equal(added, []string{"b", "c"}) || count != 3 {
		t.Errorf("AddGroupMembers after the failure = %v, %d; want [b c], 3", added, count)
	}
}
