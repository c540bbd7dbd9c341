// Package storetest is the conformance suite of the repository interfaces in
// package server. Each backend runs the same suites from its own tests:
//
//	func TestMessageStore(t *testing.T) {
//		storetest.TestMessageStore(t, func(t *testing.T) (server.MessageStore, server.ConversationStore) {
//			s := openStore(t)
//			return s, s
//		})
//	}
//
// The suites test only the contracts written in package server. They call
// the factory once per subtest and may share one database between all of
// them: every subtest works on ids of its own (unique within the process run
// and, through a random run id, across runs), so earlier data in the database
// does not disturb them.
//
// Times given to the stores are whole milliseconds, the precision of the
// public API, so that backends storing milliseconds return them unchanged.
package storetest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
)

// runID separates the ids of this process from those of earlier runs
// against the same database.
var runID = newRunID()

var idCounter atomic.Int64

func newRunID() string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		panic("storetest: read random run id: " + err.Error())
	}
	return hex.EncodeToString(b)
}

// uniqueID returns a user or group id that no other call returns. It passes
// server.ValidateID for prefixes of up to 40 bytes.
func uniqueID(prefix string) string {
	return fmt.Sprintf("%s-%s-%d", prefix, runID, idCounter.Add(1))
}

// singleChat returns the id of a new single chat and its two users, sorted.
func singleChat() (conv, a, b string) {
	a, b = uniqueID("user"), uniqueID("user")
	return server.SingleConversationID(a, b), min(a, b), max(a, b)
}

// groupChat returns the conversation id of a new group.
func groupChat() string {
	return server.GroupConversationID(uniqueID("grp"))
}

// msgTime is a fixed server time for built messages, in milliseconds.
var msgTime = time.Date(2024, 5, 17, 9, 30, 0, 0, time.UTC).UnixMilli()

// newMessage builds a message of conv from sender with a unique
// client_msg_id and server_msg_id.
func newMessage(conv, sender string, seq int64) *imlitev1.Message {
	m := &imlitev1.Message{
		ServerMsgId:    uniqueID("srv"),
		ClientMsgId:    uniqueID("cli"),
		SenderId:       sender,
		SenderPlatform: "web",
		ConversationId: conv,
		Seq:            seq,
		ContentType:    1,
		Content:        fmt.Sprintf("message %d from %s", seq, sender),
		ClientTime:     msgTime + seq,
		ServerTime:     msgTime + seq,
	}
	ref, err := server.ParseConversationID(conv)
	if err != nil {
		panic("storetest: invalid conversation id " + conv + ": " + err.Error())
	}
	m.ConversationType = ref.Type
	m.GroupId = ref.GroupID
	if ref.Type == imlitev1.ConversationType_CONVERSATION_TYPE_SINGLE {
		m.RecvId = ref.Peer(sender)
	}
	return m
}

// newMessages builds n messages of conv from sender with seqs first,
// first+1, and so on.
func newMessages(conv, sender string, first int64, n int) []*imlitev1.Message {
	out := make([]*imlitev1.Message, n)
	for i := range out {
		out[i] = newMessage(conv, sender, first+int64(i))
	}
	return out
}

func keyOf(m *imlitev1.Message) server.ClientMsgKey {
	return server.ClientMsgKey{SenderID: m.GetSenderId(), ClientMsgID: m.GetClientMsgId()}
}

// mustAppend stores msgs as one append and fails the test unless it is
// stored.
func mustAppend(t *testing.T, s server.MessageStore, conv string, msgs []*imlitev1.Message) {
	t.Helper()
	results, err := s.AppendMessages(t.Context(), []server.Append{{ConversationID: conv, Messages: msgs}})
	if err != nil {
		t.Fatalf("AppendMessages(%s, seqs %v): %v", conv, seqsOf(msgs), err)
	}
	if len(results) != 1 {
		t.Fatalf("AppendMessages(%s) returned %d results for 1 append", conv, len(results))
	}
	if results[0] != nil {
		t.Fatalf("AppendMessages(%s, seqs %v) rejected the append: %v", conv, seqsOf(msgs), results[0])
	}
}

func seqsOf(msgs []*imlitev1.Message) []int64 {
	out := make([]int64, len(msgs))
	for i, m := range msgs {
		out[i] = m.GetSeq()
	}
	return out
}

func seqRange(first, last int64) []int64 {
	var out []int64
	for s := first; s <= last; s++ {
		out = append(out, s)
	}
	return out
}

// checkMessages fails unless got holds exactly want, in order, field for
// field.
func checkMessages(t *testing.T, label string, got, want []*imlitev1.Message) {
	t.Helper()
	if !slices.Equal(seqsOf(got), seqsOf(want)) {
		t.Errorf("%s: got seqs %v, want %v", label, seqsOf(got), seqsOf(want))
		return
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("%s: seq %d differs from the stored message:\n got %v\nwant %v", label, want[i].GetSeq(), got[i], want[i])
		}
	}
}

func checkMaxSeq(t *testing.T, s server.MessageStore, conv string, want int64) {
	t.Helper()
	got, err := s.MaxSeqs(t.Context(), []string{conv})
	if err != nil {
		t.Fatalf("MaxSeqs(%s): %v", conv, err)
	}
	if got[conv] != want {
		t.Errorf("max seq of %s: got %d, want %d", conv, got[conv], want)
	}
}

func rangeAll(t *testing.T, s server.MessageStore, conv string) []*imlitev1.Message {
	t.Helper()
	got, err := s.RangeMessages(t.Context(), conv, 1, 1<<40, 100_000)
	if err != nil {
		t.Fatalf("RangeMessages(%s): %v", conv, err)
	}
	return got
}

// getState returns the user's state and whether it exists.
func getState(t *testing.T, s server.ConversationStore, userID, conv string) (server.UserConversation, bool) {
	t.Helper()
	st, err := s.GetUserConversation(t.Context(), userID, conv)
	if errors.Is(err, server.ErrNotFound) {
		return server.UserConversation{}, false
	}
	if err != nil {
		t.Fatalf("GetUserConversation(%s, %s): %v", userID, conv, err)
	}
	return st, true
}

func mustGetState(t *testing.T, s server.ConversationStore, userID, conv string) server.UserConversation {
	t.Helper()
	st, ok := getState(t, s, userID, conv)
	if !ok {
		t.Fatalf("GetUserConversation(%s, %s): state not found, want it to exist", userID, conv)
	}
	return st
}

// checkUpdatedAt fails unless UpdatedAt lies between the start and end of
// the call that set it. A millisecond of slack on each side admits stores
// that round to milliseconds.
func checkUpdatedAt(t *testing.T, label string, got, start, end time.Time) {
	t.Helper()
	if got.Before(start.Add(-time.Millisecond)) || got.After(end.Add(time.Millisecond)) {
		t.Errorf("%s: UpdatedAt %s is outside the call's interval [%s, %s]", label, fmtTime(got), fmtTime(start), fmtTime(end))
	}
}

func checkTime(t *testing.T, label string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) {
		t.Errorf("%s: got %s, want %s", label, fmtTime(got), fmtTime(want))
	}
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "zero time"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// baseTime is a whole-millisecond time in the past, far from the zero time
// and the Unix epoch.
var baseTime = time.Date(2025, 3, 14, 15, 9, 26, 535_000_000, time.UTC)

func sortedCopy(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

func fmtIDs(ids []string) string {
	return "[" + strings.Join(ids, " ") + "]"
}
