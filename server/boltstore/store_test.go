package boltstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/storetest"
)

// openTemp opens a store in a new temporary directory and closes it when
// the test ends.
func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "imlite.db")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, path
}

// The suites share one store per interface, as they would share a database
// on the distributed backends.

func TestMessageStore(t *testing.T) {
	s, _ := openTemp(t)
	storetest.TestMessageStore(t, func(*testing.T) (server.MessageStore, server.ConversationStore) { return s, s })
}

func TestSeqAllocator(t *testing.T) {
	s, _ := openTemp(t)
	storetest.TestSeqAllocator(t, func(*testing.T) (server.SeqAllocator, server.MessageStore) { return s, s })
}

func TestConversationStore(t *testing.T) {
	s, _ := openTemp(t)
	storetest.TestConversationStore(t, func(*testing.T) server.ConversationStore { return s })
}

func TestGroupStore(t *testing.T) {
	s, _ := openTemp(t)
	storetest.TestGroupStore(t, func(*testing.T) server.GroupStore { return s })
}

func TestRevocationStore(t *testing.T) {
	s, _ := openTemp(t)
	storetest.TestRevocationStore(t, func(*testing.T) server.RevocationStore { return s })
}

func message(conv, sender string, seq int64, content string) *imlitev1.Message {
	return &imlitev1.Message{
		ServerMsgId:    "srv-" + sender + "-" + content,
		ClientMsgId:    "cli-" + content,
		SenderId:       sender,
		ConversationId: conv,
		Seq:            seq,
		Content:        content,
	}
}

func appendOK(t *testing.T, s *Store, conv string, msgs ...*imlitev1.Message) {
	t.Helper()
	results, err := s.AppendMessages(t.Context(), []server.Append{{ConversationID: conv, Messages: msgs}})
	if err != nil {
		t.Fatalf("AppendMessages(%s): %v", conv, err)
	}
	if results[0] != nil {
		t.Fatalf("AppendMessages(%s) rejected the append: %v", conv, results[0])
	}
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "imlite.db")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	ctx := t.Context()
	conv := server.SingleConversationID("alice", "bob")
	lost := server.GroupConversationID("lost")
	msgs := []*imlitev1.Message{
		message(conv, "alice", 1, "hello \U0001F44B"),
		message(conv, "bob", 2, "\u05E9\u05DC\u05D5\u05DD"),
		message(conv, "alice", 3, "bye"),
	}
	appendOK(t, s, conv, msgs...)
	if _, err := s.Allocate(ctx, map[string]int64{conv: 3}); err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	// The counter of lost runs ahead of the store, as after a crash between
	// allocation and append.
	if _, err := s.Allocate(ctx, map[string]int64{lost: 5}); err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	appendOK(t, s, lost, message(lost, "carol", 1, "only one stored"))
	g := server.Group{ID: "team", Name: "Team", OwnerID: "alice", CreatedAt: time.UnixMilli(1_700_000_000_000)}
	joined := time.UnixMilli(1_700_000_001_000)
	members := []server.GroupMember{{UserID: "alice", JoinedAt: joined}, {UserID: "bob", JoinedAt: joined}}
	if err := s.CreateGroup(ctx, g, members); err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	kicked := time.UnixMilli(1_700_000_002_000)
	if err := s.Revoke(ctx, "bob", []string{"ios"}, kicked); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	pinned := true
	if _, err := s.UpdateUserConversation(ctx, "bob", conv, server.ConversationUpdate{Pinned: &pinned}); err != nil {
		t.Fatalf("UpdateUserConversation: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s, err = Open(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })

	got, err := s.RangeMessages(ctx, conv, 1, 10, 10)
	if err != nil {
		t.Fatalf("RangeMessages: %v", err)
	}
	if len(got) != len(msgs) {
		t.Fatalf("messages after reopen: got %d, want %d", len(got), len(msgs))
	}
	for i := range msgs {
		if !proto.Equal(got[i], msgs[i]) {
			t.Errorf("seq %d after reopen: got %v, want %v", i+1, got[i], msgs[i])
		}
	}
	maxSeqs, err := s.MaxSeqs(ctx, []string{conv, lost})
	if err != nil {
		t.Fatalf("MaxSeqs: %v", err)
	}
	if maxSeqs[conv] != 3 || maxSeqs[lost] != 1 {
		t.Errorf("max seqs after reopen: got %d and %d, want 3 and 1", maxSeqs[conv], maxSeqs[lost])
	}

	firsts, err := s.Allocate(ctx, map[string]int64{conv: 1, lost: 1})
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	if firsts[conv] != 4 {
		t.Errorf("first seq after reopen: got %d, want 4, the stored max seq 3 plus 1", firsts[conv])
	}
	if firsts[lost] != 2 {
		t.Errorf("first seq after reopen with 4 allocated seqs never stored: got %d, want 2, the stored max seq 1 plus 1", firsts[lost])
	}

	gotGroup, err := s.GetGroup(ctx, "team")
	if err != nil {
		t.Fatalf("GetGroup: %v", err)
	}
	if gotGroup.Name != "Team" || gotGroup.MemberCount != 2 || !gotGroup.CreatedAt.Equal(g.CreatedAt) {
		t.Errorf("group after reopen: got %+v, want name Team, 2 members, created %v", gotGroup, g.CreatedAt)
	}
	rows, err := s.ListGroupMembers(ctx, "team", "", 10)
	if err != nil {
		t.Fatalf("ListGroupMembers: %v", err)
	}
	if len(rows) != 2 || rows[0].UserID != "alice" || rows[1].UserID != "bob" || !rows[1].JoinedAt.Equal(joined) {
		t.Errorf("members after reopen: got %+v, want alice and bob joined at %v", rows, joined)
	}

	revoked, err := s.RevokedBefore(ctx, "bob", "ios")
	if err != nil {
		t.Fatalf("RevokedBefore: %v", err)
	}
	if !revoked.Equal(kicked) {
		t.Errorf("revocation after reopen: got %v, want %v", revoked, kicked)
	}

	st, err := s.GetUserConversation(ctx, "bob", conv)
	if err != nil {
		t.Fatalf("GetUserConversation: %v", err)
	}
	if !st.Pinned || st.ReadSeq != 2 {
		t.Errorf("state of bob after reopen: got pinned %v and read seq %d, want true and 2", st.Pinned, st.ReadSeq)
	}
	found, err := s.FindByClientMsgIDs(ctx, []server.ClientMsgKey{{SenderID: "alice", ClientMsgID: "cli-bye"}})
	if err != nil {
		t.Fatalf("FindByClientMsgIDs: %v", err)
	}
	if len(found) != 1 {
		t.Errorf("client_msg_id index after reopen: got %d entries, want 1", len(found))
	}
}

func TestOpenLockedFile(t *testing.T) {
	_, path := openTemp(t)

	start := time.Now()
	second, err := Open(path, WithLockTimeout(100*time.Millisecond))
	if err == nil {
		_ = second.Close()
		t.Fatal("second Open of a file held by an open Store succeeded, want an error")
	}
	if !errors.Is(err, ErrLocked) {
		t.Errorf("second Open: got %v, want an error wrapping ErrLocked", err)
	}
	for _, part := range []string{"locked by another process", path} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("second Open error %q does not contain %q", err, part)
		}
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("second Open returned after %v, want about the 100ms lock timeout", waited)
	}
}

func TestOpenReleasesLockOnClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "imlite.db")
	first, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	second, err := Open(path, WithLockTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	if err := second.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestOpenCreatesDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "nested")
	path := filepath.Join(dir, "imlite.db")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	defer s.Close()

	info, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat data file: %v", err)
	}
	if perm := info.Mode().Perm(); perm&^0o600 != 0 {
		t.Errorf("data file mode: got %v, want at most 0600 so other users cannot read messages", perm)
	}
	info, err = os.Stat(dir)
	if err != nil {
		t.Fatalf("stat data directory: %v", err)
	}
	if !info.IsDir() {
		t.Errorf("%s is not a directory", dir)
	}
}

func TestClosedStore(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "imlite.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Errorf("Ping of an open store: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	if err := s.Ping(t.Context()); err == nil {
		t.Error("Ping of a closed store: got nil, want an error")
	}
	conv := server.GroupConversationID("team")
	_, err = s.AppendMessages(t.Context(), []server.Append{{ConversationID: conv, Messages: []*imlitev1.Message{message(conv, "alice", 1, "x")}}})
	if err == nil || errors.Is(err, server.ErrUnavailable) {
		t.Errorf("AppendMessages on a closed store: got %v, want a failure that is not ErrUnavailable", err)
	}
}

func TestCanceledContext(t *testing.T) {
	s, _ := openTemp(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	conv := server.GroupConversationID("team")
	_, err := s.AppendMessages(ctx, []server.Append{{ConversationID: conv, Messages: []*imlitev1.Message{message(conv, "alice", 1, "x")}}})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("AppendMessages with a canceled context: got %v, want context.Canceled", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Ping with a canceled context: got %v, want context.Canceled", err)
	}
	maxSeqs, err := s.MaxSeqs(t.Context(), []string{conv})
	if err != nil {
		t.Fatalf("MaxSeqs: %v", err)
	}
	if maxSeqs[conv] != 0 {
		t.Errorf("max seq after a canceled append: got %d, want 0", maxSeqs[conv])
	}
}

func TestAppendMalformed(t *testing.T) {
	conv := server.GroupConversationID("team")
	cases := []struct {
		name string
		msgs []*imlitev1.Message
		want string
	}{
		{
			name: "seqs not contiguous",
			msgs: []*imlitev1.Message{message(conv, "alice", 1, "a"), message(conv, "alice", 3, "b")},
			want: "expected contiguous seqs",
		},
		{
			name: "seq zero",
			msgs: []*imlitev1.Message{message(conv, "alice", 0, "a")},
			want: "expected at least 1",
		},
		{
			name: "other conversation id",
			msgs: []*imlitev1.Message{message(server.GroupConversationID("other"), "alice", 1, "a")},
			want: "has conversation_id",
		},
		{
			name: "nil message",
			msgs: []*imlitev1.Message{nil},
			want: "is nil",
		},
		{
			name: "missing sender",
			msgs: []*imlitev1.Message{message(conv, "", 1, "a")},
			want: "sender id is empty",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := openTemp(t)
			good := server.GroupConversationID("good")
			results, err := s.AppendMessages(t.Context(), []server.Append{
				{ConversationID: good, Messages: []*imlitev1.Message{message(good, "bob", 1, "fine")}},
				{ConversationID: conv, Messages: tc.msgs},
			})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("AppendMessages: got results %v and error %v, want an error containing %q", results, err, tc.want)
			}
			maxSeqs, err := s.MaxSeqs(t.Context(), []string{good})
			if err != nil {
				t.Fatalf("MaxSeqs: %v", err)
			}
			if maxSeqs[good] != 0 {
				t.Errorf("max seq of the well-formed append in the failed call: got %d, want 0 because nothing is written", maxSeqs[good])
			}
		})
	}
}

func TestAppendInvalidConversationID(t *testing.T) {
	s, _ := openTemp(t)
	_, err := s.AppendMessages(t.Context(), []server.Append{{ConversationID: "x:1", Messages: []*imlitev1.Message{message("x:1", "alice", 1, "a")}}})
	if err == nil {
		t.Fatal("AppendMessages to conversation id x:1: got nil error, want an error")
	}
	if !strings.Contains(err.Error(), `"x:1"`) {
		t.Errorf("error %q does not name the conversation id", err)
	}
}

func TestAppendRepeatedClientMsgID(t *testing.T) {
	s, _ := openTemp(t)
	conv := server.GroupConversationID("team")
	first, second := message(conv, "alice", 1, "a"), message(conv, "alice", 2, "b")
	second.ClientMsgId = first.ClientMsgId
	results, err := s.AppendMessages(t.Context(), []server.Append{{ConversationID: conv, Messages: []*imlitev1.Message{first, second}}})
	if err != nil {
		t.Fatalf("AppendMessages: %v", err)
	}
	if !errors.Is(results[0], server.ErrDuplicateMsg) {
		t.Errorf("append repeating a client_msg_id: got %v, want %v", results[0], server.ErrDuplicateMsg)
	}
}

func TestGroupSenderWithoutState(t *testing.T) {
	s, _ := openTemp(t)
	conv := server.GroupConversationID("team")
	appendOK(t, s, conv, message(conv, "alice", 1, "a"))
	_, err := s.GetUserConversation(t.Context(), "alice", conv)
	if !errors.Is(err, server.ErrNotFound) {
		t.Errorf("state of a group sender who had none: got %v, want %v", err, server.ErrNotFound)
	}
}

func TestAllocateSeedsFromStore(t *testing.T) {
	s, _ := openTemp(t)
	conv := server.GroupConversationID("team")
	appendOK(t, s, conv, message(conv, "alice", 1, "a"), message(conv, "alice", 2, "b"))
	firsts, err := s.Allocate(t.Context(), map[string]int64{conv: 2})
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	if firsts[conv] != 3 {
		t.Errorf("first seq of a conversation with max seq 2 never allocated before: got %d, want 3", firsts[conv])
	}
	if _, err := s.Allocate(t.Context(), map[string]int64{conv: -1}); err == nil {
		t.Error("Allocate with a negative count: got nil error, want an error")
	}
	if err := s.Reset(t.Context(), conv, -1); err == nil {
		t.Error("Reset to -1: got nil error, want an error")
	}
}
