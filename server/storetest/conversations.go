package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
)

// TestConversationStore runs the conformance suite of
// server.ConversationStore. newStore is called once per subtest.
func TestConversationStore(t *testing.T, newStore func(t *testing.T) server.ConversationStore) {
	t.Run("GetMissing", func(t *testing.T) {
		testGetMissing(t, newStore(t))
	})
	t.Run("UpdateCreates", func(t *testing.T) {
		testUpdateCreates(t, newStore(t))
	})
	t.Run("SeqFieldsOnlyMoveForward", func(t *testing.T) {
		testSeqFieldsOnlyMoveForward(t, newStore(t))
	})
	t.Run("PinnedAndRecvOpt", func(t *testing.T) {
		testPinnedAndRecvOpt(t, newStore(t))
	})
	t.Run("UpdatedAtMoves", func(t *testing.T) {
		testUpdatedAtMoves(t, newStore(t))
	})
	t.Run("ListUserConversations", func(t *testing.T) {
		testListUserConversations(t, newStore(t))
	})
	t.Run("JoinConversation", func(t *testing.T) {
		testJoinConversation(t, newStore(t))
	})
	t.Run("LeaveConversation", func(t *testing.T) {
		testLeaveConversation(t, newStore(t))
	})
}

func mustUpdate(t *testing.T, s server.ConversationStore, userID, conv string, u server.ConversationUpdate) server.UserConversation {
	t.Helper()
	st, err := s.UpdateUserConversation(t.Context(), userID, conv, u)
	if err != nil {
		t.Fatalf("UpdateUserConversation(%s, %s): %v", userID, conv, err)
	}
	return st
}

func testGetMissing(t *testing.T, s server.ConversationStore) {
	conv, a, _ := singleChat()
	_, err := s.GetUserConversation(t.Context(), a, conv)
	if !errors.Is(err, server.ErrNotFound) {
		t.Errorf("GetUserConversation of a user without state: got %v, want %v", err, server.ErrNotFound)
	}
}

func testUpdateCreates(t *testing.T, s server.ConversationStore) {
	conv, a, _ := singleChat()
	readSeq := int64(3)
	start := time.Now()
	got := mustUpdate(t, s, a, conv, server.ConversationUpdate{ReadSeq: &readSeq})
	end := time.Now()

	want := server.UserConversation{UserID: a, ConversationID: conv, ReadSeq: 3}
	checkStateFields(t, "returned state", got, want)
	checkUpdatedAt(t, "returned state", got.UpdatedAt, start, end)

	stored := mustGetState(t, s, a, conv)
	checkStateFields(t, "stored state", stored, want)
	checkTime(t, "stored UpdatedAt", stored.UpdatedAt, got.UpdatedAt)
}

// checkStateFields compares every field except UpdatedAt.
func checkStateFields(t *testing.T, label string, got, want server.UserConversation) {
	t.Helper()
	got.UpdatedAt, want.UpdatedAt = time.Time{}, time.Time{}
	if got != want {
		t.Errorf("%s:\n got %+v\nwant %+v", label, got, want)
	}
}

func testSeqFieldsOnlyMoveForward(t *testing.T, s server.ConversationStore) {
	fields := []struct {
		name   string
		update func(v int64) server.ConversationUpdate
		get    func(st server.UserConversation) int64
	}{
		{
			name:   "ReadSeq",
			update: func(v int64) server.ConversationUpdate { return server.ConversationUpdate{ReadSeq: &v} },
			get:    func(st server.UserConversation) int64 { return st.ReadSeq },
		},
		{
			name:   "MinSeq",
			update: func(v int64) server.ConversationUpdate { return server.ConversationUpdate{MinSeq: &v} },
			get:    func(st server.UserConversation) int64 { return st.MinSeq },
		},
		{
			name:   "HideSeq",
			update: func(v int64) server.ConversationUpdate { return server.ConversationUpdate{HideSeq: &v} },
			get:    func(st server.UserConversation) int64 { return st.HideSeq },
		},
	}
	steps := []struct {
		set, want int64
	}{
		{set: 5, want: 5},
		{set: 3, want: 5},
		{set: 0, want: 5},
		{set: 5, want: 5},
		{set: 8, want: 8},
	}
	for _, f := range fields {
		t.Run(f.name, func(t *testing.T) {
			conv, a, _ := singleChat()
			for _, step := range steps {
				got := mustUpdate(t, s, a, conv, f.update(step.set))
				if f.get(got) != step.want {
					t.Errorf("%s after setting %d: returned %d, want %d", f.name, step.set, f.get(got), step.want)
				}
				if stored := f.get(mustGetState(t, s, a, conv)); stored != step.want {
					t.Errorf("%s after setting %d: stored %d, want %d", f.name, step.set, stored, step.want)
				}
			}
			st := mustGetState(t, s, a, conv)
			for _, other := range fields {
				if other.name != f.name && other.get(st) != 0 {
					t.Errorf("%s is %d after updates of %s only, want 0", other.name, other.get(st), f.name)
				}
			}
		})
	}
}

func testPinnedAndRecvOpt(t *testing.T, s server.ConversationStore) {
	conv, a, _ := singleChat()
	yes, no := true, false
	mute := imlitev1.RecvOpt_RECV_OPT_MUTE
	normal := imlitev1.RecvOpt_RECV_OPT_NORMAL
	readSeq := int64(1)

	steps := []struct {
		name       string
		update     server.ConversationUpdate
		wantPinned bool
		wantOpt    imlitev1.RecvOpt
	}{
		{name: "pin", update: server.ConversationUpdate{Pinned: &yes}, wantPinned: true, wantOpt: imlitev1.RecvOpt_RECV_OPT_UNSPECIFIED},
		{name: "mute", update: server.ConversationUpdate{RecvOpt: &mute}, wantPinned: true, wantOpt: mute},
		{name: "read seq only", update: server.ConversationUpdate{ReadSeq: &readSeq}, wantPinned: true, wantOpt: mute},
		{name: "unpin", update: server.ConversationUpdate{Pinned: &no}, wantPinned: false, wantOpt: mute},
		{name: "no fields", update: server.ConversationUpdate{}, wantPinned: false, wantOpt: mute},
		{name: "pin and unmute", update: server.ConversationUpdate{Pinned: &yes, RecvOpt: &normal}, wantPinned: true, wantOpt: normal},
	}
	for _, step := range steps {
		got := mustUpdate(t, s, a, conv, step.update)
		stored := mustGetState(t, s, a, conv)
		for _, st := range []struct {
			source string
			state  server.UserConversation
		}{{"returned", got}, {"stored", stored}} {
			if st.state.Pinned != step.wantPinned {
				t.Errorf("after %s: %s pinned is %v, want %v", step.name, st.source, st.state.Pinned, step.wantPinned)
			}
			if st.state.RecvOpt != step.wantOpt {
				t.Errorf("after %s: %s recv_opt is %v, want %v", step.name, st.source, st.state.RecvOpt, step.wantOpt)
			}
		}
	}
}

func testUpdatedAtMoves(t *testing.T, s server.ConversationStore) {
	conv, a, _ := singleChat()
	yes, no := true, false
	first := mustUpdate(t, s, a, conv, server.ConversationUpdate{Pinned: &yes})

	// Sleep past the millisecond precision of some backends.
	time.Sleep(5 * time.Millisecond)
	start := time.Now()
	second := mustUpdate(t, s, a, conv, server.ConversationUpdate{Pinned: &no})
	end := time.Now()
	if !second.UpdatedAt.After(first.UpdatedAt) {
		t.Errorf("UpdatedAt after a second change: got %s, want later than %s", fmtTime(second.UpdatedAt), fmtTime(first.UpdatedAt))
	}
	checkUpdatedAt(t, "second change", second.UpdatedAt, start, end)
	checkTime(t, "stored UpdatedAt", mustGetState(t, s, a, conv).UpdatedAt, second.UpdatedAt)
}

func testListUserConversations(t *testing.T, s server.ConversationStore) {
	user := uniqueID("user")
	// extended shares user's id as a prefix, so a prefix scan that does not
	// stop at the id's end returns its state too.
	extended := user + "0"
	convs := []string{
		server.SingleConversationID(user, uniqueID("user")),
		server.SingleConversationID(user, user),
		groupChat(),
	}
	readSeq := int64(2)
	for _, conv := range convs {
		mustUpdate(t, s, user, conv, server.ConversationUpdate{ReadSeq: &readSeq})
	}
	mustUpdate(t, s, extended, groupChat(), server.ConversationUpdate{ReadSeq: &readSeq})

	got, err := s.ListUserConversations(t.Context(), user)
	if err != nil {
		t.Fatalf("ListUserConversations(%s): %v", user, err)
	}
	if gotIDs, wantIDs := sortedCopy(conversationIDs(got)), sortedCopy(convs); !slices.Equal(gotIDs, wantIDs) {
		t.Errorf("conversations of %s: got %s, want %s", user, fmtIDs(gotIDs), fmtIDs(wantIDs))
	}
	for _, st := range got {
		if st.UserID != user || st.ReadSeq != 2 {
			t.Errorf("listed state of %s: got user %q with read seq %d, want %q with 2", st.ConversationID, st.UserID, st.ReadSeq, user)
		}
	}

	none, err := s.ListUserConversations(t.Context(), uniqueID("user"))
	if err != nil {
		t.Fatalf("ListUserConversations(unknown user): %v", err)
	}
	if len(none) != 0 {
		t.Errorf("conversations of a user without state: got %s, want none", fmtIDs(conversationIDs(none)))
	}
}

func testJoinConversation(t *testing.T, s server.ConversationStore) {
	conv := groupChat()
	existing, fresh1, fresh2 := uniqueID("user"), uniqueID("user"), uniqueID("user")
	readSeq := int64(9)
	yes := true
	before := mustUpdate(t, s, existing, conv, server.ConversationUpdate{ReadSeq: &readSeq, Pinned: &yes})

	start := time.Now()
	if err := s.JoinConversation(t.Context(), conv, []string{fresh1, existing, fresh2}, 20); err != nil {
		t.Fatalf("JoinConversation: %v", err)
	}
	end := time.Now()

	for _, u := range []string{fresh1, fresh2} {
		st := mustGetState(t, s, u, conv)
		checkStateFields(t, "state of a joined user", st, server.UserConversation{UserID: u, ConversationID: conv, MinSeq: 20, ReadSeq: 19})
		checkUpdatedAt(t, "state of a joined user", st.UpdatedAt, start, end)
	}
	after := mustGetState(t, s, existing, conv)
	checkStateFields(t, "state of a user who had state before the join", after, before)
	checkTime(t, "UpdatedAt of a user who had state before the join", after.UpdatedAt, before.UpdatedAt)

	t.Run("min seq 1", func(t *testing.T) {
		conv := groupChat()
		u := uniqueID("user")
		if err := s.JoinConversation(t.Context(), conv, []string{u}, 1); err != nil {
			t.Fatalf("JoinConversation: %v", err)
		}
		checkStateFields(t, "state after a join at min seq 1", mustGetState(t, s, u, conv),
			server.UserConversation{UserID: u, ConversationID: conv, MinSeq: 1, ReadSeq: 0})
	})
}

func testLeaveConversation(t *testing.T, s server.ConversationStore) {
	conv, elsewhere := groupChat(), groupChat()
	leaving1, leaving2, staying := uniqueID("user"), uniqueID("user"), uniqueID("user")
	if err := s.JoinConversation(t.Context(), conv, []string{leaving1, leaving2, staying}, 1); err != nil {
		t.Fatalf("JoinConversation: %v", err)
	}
	if err := s.JoinConversation(t.Context(), elsewhere, []string{leaving1}, 1); err != nil {
		t.Fatalf("JoinConversation: %v", err)
	}

	never := uniqueID("user")
	if err := s.LeaveConversation(t.Context(), conv, []string{leaving1, never, leaving2}); err != nil {
		t.Fatalf("LeaveConversation (one user without state): %v", err)
	}
	for _, u := range []string{leaving1, leaving2, never} {
		if _, ok := getState(t, s, u, conv); ok {
			t.Errorf("state of %s still exists after LeaveConversation", u)
		}
	}
	if _, ok := getState(t, s, staying, conv); !ok {
		t.Errorf("state of %s, who did not leave, was deleted", staying)
	}
	if _, ok := getState(t, s, leaving1, elsewhere); !ok {
		t.Errorf("state of %s in another conversation was deleted", leaving1)
	}

	if err := s.LeaveConversation(t.Context(), conv, []string{leaving1}); err != nil {
		t.Errorf("second LeaveConversation of the same user: %v, want nil", err)
	}
}
