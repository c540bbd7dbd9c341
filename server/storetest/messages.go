package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
)

// TestMessageStore runs the conformance suite of server.MessageStore.
// newStores is called once per subtest. It returns a message store and a
// conversation store that reads the per-user state written on append, and
// both may be the same value.
func TestMessageStore(t *testing.T, newStores func(t *testing.T) (server.MessageStore, server.ConversationStore)) {
	t.Run("AppendContiguous", func(t *testing.T) {
		s, _ := newStores(t)
		testAppendContiguous(t, s)
	})
	t.Run("AppendRejected", func(t *testing.T) {
		testAppendRejected(t, newStores)
	})
	t.Run("AppendCreatesSingleChatState", func(t *testing.T) {
		testAppendCreatesSingleChatState(t, newStores)
	})
	t.Run("AppendKeepsPeerState", func(t *testing.T) {
		testAppendKeepsPeerState(t, newStores)
	})
	t.Run("AppendAdvancesSenderReadSeq", func(t *testing.T) {
		testAppendAdvancesSenderReadSeq(t, newStores)
	})
	t.Run("AppendGroupSenderReadSeq", func(t *testing.T) {
		testAppendGroupSenderReadSeq(t, newStores)
	})
	t.Run("MaxSeqs", func(t *testing.T) {
		s, _ := newStores(t)
		testMaxSeqs(t, s)
	})
	t.Run("RangeMessages", func(t *testing.T) {
		s, _ := newStores(t)
		testRangeMessages(t, s)
	})
	t.Run("RangeSeparatesConversations", func(t *testing.T) {
		s, _ := newStores(t)
		testRangeSeparatesConversations(t, s)
	})
	t.Run("MessagesBySeqs", func(t *testing.T) {
		s, _ := newStores(t)
		testMessagesBySeqs(t, s)
	})
	t.Run("UnicodeRoundTrip", func(t *testing.T) {
		s, _ := newStores(t)
		testUnicodeRoundTrip(t, s)
	})
	t.Run("FindByClientMsgIDs", func(t *testing.T) {
		s, _ := newStores(t)
		testFindByClientMsgIDs(t, s)
	})
}

func testAppendContiguous(t *testing.T, s server.MessageStore) {
	conv, a, b := singleChat()
	first := newMessages(conv, a, 1, 3)
	first[1].SenderId, first[1].RecvId = b, a
	first[2].Options = &imlitev1.MsgOptions{Storage: proto.Bool(true)}
	first[2].OfflinePush = &imlitev1.OfflinePush{Title: "title", Desc: "desc", Ex: "push ex"}
	first[2].Ex = `{"kind":"extension"}`
	mustAppend(t, s, conv, first)
	checkMaxSeq(t, s, conv, 3)

	second := newMessages(conv, b, 4, 3)
	mustAppend(t, s, conv, second)
	checkMaxSeq(t, s, conv, 6)
	checkMessages(t, "messages after two appends", rangeAll(t, s, conv), append(slices.Clone(first), second...))
}

// rejectCase is an append that the store must reject. attempt returns the
// messages of the rejected append, given the messages already stored in
// conv.
type rejectCase struct {
	name    string
	stored  int
	attempt func(t *testing.T, s server.MessageStore, conv, sender string, stored []*imlitev1.Message) []*imlitev1.Message
	want    error
}

var rejectCases = []rejectCase{
	{
		name:   "gap after stored seqs",
		stored: 2,
		attempt: func(_ *testing.T, _ server.MessageStore, conv, sender string, _ []*imlitev1.Message) []*imlitev1.Message {
			return newMessages(conv, sender, 4, 2)
		},
		want: server.ErrSeqGap,
	},
	{
		name:   "gap in empty conversation",
		stored: 0,
		attempt: func(_ *testing.T, _ server.MessageStore, conv, sender string, _ []*imlitev1.Message) []*imlitev1.Message {
			return newMessages(conv, sender, 2, 2)
		},
		want: server.ErrSeqGap,
	},
	{
		name:   "last stored seq taken",
		stored: 3,
		attempt: func(_ *testing.T, _ server.MessageStore, conv, sender string, _ []*imlitev1.Message) []*imlitev1.Message {
			return newMessages(conv, sender, 3, 2)
		},
		want: server.ErrSeqTaken,
	},
	{
		name:   "all seqs taken from 1",
		stored: 3,
		attempt: func(_ *testing.T, _ server.MessageStore, conv, sender string, _ []*imlitev1.Message) []*imlitev1.Message {
			return newMessages(conv, sender, 1, 2)
		},
		want: server.ErrSeqTaken,
	},
	{
		name:   "duplicate client_msg_id in same conversation",
		stored: 2,
		attempt: func(_ *testing.T, _ server.MessageStore, conv, sender string, stored []*imlitev1.Message) []*imlitev1.Message {
			msgs := newMessages(conv, sender, 3, 2)
			msgs[1].ClientMsgId = stored[0].GetClientMsgId()
			return msgs
		},
		want: server.ErrDuplicateMsg,
	},
	{
		name:   "duplicate client_msg_id in other conversation",
		stored: 1,
		attempt: func(t *testing.T, s server.MessageStore, conv, sender string, _ []*imlitev1.Message) []*imlitev1.Message {
			other := server.SingleConversationID(sender, uniqueID("user"))
			elsewhere := newMessage(other, sender, 1)
			mustAppend(t, s, other, []*imlitev1.Message{elsewhere})
			msgs := newMessages(conv, sender, 2, 2)
			msgs[0].ClientMsgId = elsewhere.GetClientMsgId()
			return msgs
		},
		want: server.ErrDuplicateMsg,
	},
}

func testAppendRejected(t *testing.T, newStores func(t *testing.T) (server.MessageStore, server.ConversationStore)) {
	for _, tc := range rejectCases {
		t.Run(tc.name, func(t *testing.T) {
			s, cs := newStores(t)
			conv, sender, peer := singleChat()
			stored := newMessages(conv, sender, 1, tc.stored)
			if tc.stored > 0 {
				mustAppend(t, s, conv, stored)
			}
			attempt := tc.attempt(t, s, conv, sender, stored)
			senderBefore, senderFound := getState(t, cs, sender, conv)
			peerBefore, peerFound := getState(t, cs, peer, conv)
			keysBefore, err := s.FindByClientMsgIDs(t.Context(), keysOf(attempt))
			if err != nil {
				t.Fatalf("FindByClientMsgIDs before the append: %v", err)
			}

			// Appends of other conversations before and after the rejected
			// one must still be stored.
			convBefore, convAfter := groupChat(), groupChat()
			msgsBefore := newMessages(convBefore, uniqueID("user"), 1, 2)
			msgsAfter := newMessages(convAfter, uniqueID("user"), 1, 3)
			results, err := s.AppendMessages(t.Context(), []server.Append{
				{ConversationID: convBefore, Messages: msgsBefore},
				{ConversationID: conv, Messages: attempt},
				{ConversationID: convAfter, Messages: msgsAfter},
			})
			if err != nil {
				t.Fatalf("AppendMessages: %v, want a result per append", err)
			}
			if len(results) != 3 {
				t.Fatalf("AppendMessages returned %d results for 3 appends", len(results))
			}
			if !errors.Is(results[1], tc.want) {
				t.Errorf("result of append seqs %v after %d stored: got %v, want %v", seqsOf(attempt), tc.stored, results[1], tc.want)
			}
			if results[0] != nil || results[2] != nil {
				t.Errorf("results of the other conversations' appends: got %v and %v, want nil", results[0], results[2])
			}

			checkMaxSeq(t, s, conv, int64(tc.stored))
			checkMessages(t, "messages of the rejected conversation", rangeAll(t, s, conv), stored)
			keysAfter, err := s.FindByClientMsgIDs(t.Context(), keysOf(attempt))
			if err != nil {
				t.Fatalf("FindByClientMsgIDs after the append: %v", err)
			}
			for _, k := range keysOf(attempt) {
				if got, want := keysAfter[k].GetServerMsgId(), keysBefore[k].GetServerMsgId(); got != want {
					t.Errorf("client_msg_id %s: got server_msg_id %q after the rejected append, want %q as before", k.ClientMsgID, got, want)
				}
			}
			checkStateUnchanged(t, cs, sender, conv, senderBefore, senderFound)
			checkStateUnchanged(t, cs, peer, conv, peerBefore, peerFound)

			checkMaxSeq(t, s, convBefore, 2)
			checkMessages(t, "messages of the append before", rangeAll(t, s, convBefore), msgsBefore)
			checkMaxSeq(t, s, convAfter, 3)
			checkMessages(t, "messages of the append after", rangeAll(t, s, convAfter), msgsAfter)
		})
	}
}

func keysOf(msgs []*imlitev1.Message) []server.ClientMsgKey {
	out := make([]server.ClientMsgKey, len(msgs))
	for i, m := range msgs {
		out[i] = keyOf(m)
	}
	return out
}

func checkStateUnchanged(t *testing.T, cs server.ConversationStore, userID, conv string, before server.UserConversation, found bool) {
	t.Helper()
	after, foundAfter := getState(t, cs, userID, conv)
	switch {
	case foundAfter != found:
		t.Errorf("state of %s: exists %v after the rejected append, want %v as before", userID, foundAfter, found)
	case after.ReadSeq != before.ReadSeq:
		t.Errorf("read seq of %s: got %d after the rejected append, want %d as before", userID, after.ReadSeq, before.ReadSeq)
	case !after.UpdatedAt.Equal(before.UpdatedAt):
		t.Errorf("UpdatedAt of %s: got %s after the rejected append, want %s as before", userID, fmtTime(after.UpdatedAt), fmtTime(before.UpdatedAt))
	}
}

func testAppendCreatesSingleChatState(t *testing.T, newStores func(t *testing.T) (server.MessageStore, server.ConversationStore)) {
	cases := []struct {
		name string
		self bool
	}{
		{name: "chat of two users"},
		{name: "self chat", self: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, cs := newStores(t)
			sender, peer := uniqueID("user"), uniqueID("user")
			if tc.self {
				peer = sender
			}
			conv := server.SingleConversationID(sender, peer)

			start := time.Now()
			mustAppend(t, s, conv, newMessages(conv, sender, 1, 2))
			end := time.Now()

			st := mustGetState(t, cs, sender, conv)
			if st.ReadSeq != 2 {
				t.Errorf("sender read seq: got %d, want 2, the seq of its latest message", st.ReadSeq)
			}
			if st.UserID != sender || st.ConversationID != conv {
				t.Errorf("sender state names user %q in %q, want %q in %q", st.UserID, st.ConversationID, sender, conv)
			}
			checkUpdatedAt(t, "sender state", st.UpdatedAt, start, end)

			list, err := cs.ListUserConversations(t.Context(), sender)
			if err != nil {
				t.Fatalf("ListUserConversations(%s): %v", sender, err)
			}
			if len(list) != 1 || list[0].ConversationID != conv {
				t.Errorf("conversations of the sender: got %v, want only %s", conversationIDs(list), conv)
			}
			if tc.self {
				return
			}

			pst := mustGetState(t, cs, peer, conv)
			if pst.ReadSeq != 0 {
				t.Errorf("peer read seq: got %d, want 0 because the peer read nothing", pst.ReadSeq)
			}
			if pst.MinSeq > 1 {
				t.Errorf("peer min seq: got %d, want 0 or 1 so the first message is visible", pst.MinSeq)
			}
			if pst.HideSeq != 0 {
				t.Errorf("peer hide seq: got %d, want 0 for a new state", pst.HideSeq)
			}
			if pst.UserID != peer || pst.ConversationID != conv {
				t.Errorf("peer state names user %q in %q, want %q in %q", pst.UserID, pst.ConversationID, peer, conv)
			}
		})
	}
}

func conversationIDs(states []server.UserConversation) []string {
	out := make([]string, len(states))
	for i, st := range states {
		out[i] = st.ConversationID
	}
	return out
}

func testAppendKeepsPeerState(t *testing.T, newStores func(t *testing.T) (server.MessageStore, server.ConversationStore)) {
	s, cs := newStores(t)
	conv, a, b := singleChat()
	pinned := true
	mute := imlitev1.RecvOpt_RECV_OPT_MUTE
	hide := int64(1)
	before, err := cs.UpdateUserConversation(t.Context(), b, conv, server.ConversationUpdate{Pinned: &pinned, RecvOpt: &mute, HideSeq: &hide})
	if err != nil {
		t.Fatalf("UpdateUserConversation: %v", err)
	}

	mustAppend(t, s, conv, newMessages(conv, a, 1, 2))

	after := mustGetState(t, cs, b, conv)
	if !after.Pinned || after.RecvOpt != mute || after.HideSeq != 1 {
		t.Errorf("peer state after the peer's append: got pinned %v, recv_opt %v, hide seq %d; want true, %v, 1 as set before",
			after.Pinned, after.RecvOpt, after.HideSeq, mute)
	}
	if after.ReadSeq != before.ReadSeq {
		t.Errorf("peer read seq: got %d, want %d because the peer sent nothing", after.ReadSeq, before.ReadSeq)
	}
}

func testAppendAdvancesSenderReadSeq(t *testing.T, newStores func(t *testing.T) (server.MessageStore, server.ConversationStore)) {
	s, cs := newStores(t)
	conv, a, b := singleChat()
	msgs := []*imlitev1.Message{newMessage(conv, a, 1), newMessage(conv, b, 2), newMessage(conv, a, 3), newMessage(conv, a, 4), newMessage(conv, b, 5), newMessage(conv, a, 6)}
	mustAppend(t, s, conv, msgs[:3])
	if got := mustGetState(t, cs, a, conv).ReadSeq; got != 3 {
		t.Errorf("read seq of %s after sending seqs 1 and 3: got %d, want 3", a, got)
	}
	if got := mustGetState(t, cs, b, conv).ReadSeq; got != 2 {
		t.Errorf("read seq of %s after sending seq 2: got %d, want 2", b, got)
	}

	// A read seq ahead of the sender's own message stays where it is.
	ahead := int64(9)
	if _, err := cs.UpdateUserConversation(t.Context(), b, conv, server.ConversationUpdate{ReadSeq: &ahead}); err != nil {
		t.Fatalf("UpdateUserConversation: %v", err)
	}
	start := time.Now()
	mustAppend(t, s, conv, msgs[3:])
	end := time.Now()
	ast := mustGetState(t, cs, a, conv)
	if ast.ReadSeq != 6 {
		t.Errorf("read seq of %s after sending seqs 4 and 6: got %d, want 6", a, ast.ReadSeq)
	}
	checkUpdatedAt(t, "sender state", ast.UpdatedAt, start, end)
	if got := mustGetState(t, cs, b, conv).ReadSeq; got != 9 {
		t.Errorf("read seq of %s after sending seq 5 with read seq 9: got %d, want 9 (read seqs never move backwards)", b, got)
	}

	// One call with appends to two conversations moves the sender's read
	// seq in each.
	conv2 := server.SingleConversationID(a, uniqueID("user"))
	conv3 := server.SingleConversationID(a, uniqueID("user"))
	results, err := s.AppendMessages(t.Context(), []server.Append{
		{ConversationID: conv2, Messages: newMessages(conv2, a, 1, 2)},
		{ConversationID: conv3, Messages: newMessages(conv3, a, 1, 4)},
	})
	if err != nil {
		t.Fatalf("AppendMessages: %v", err)
	}
	for i, r := range results {
		if r != nil {
			t.Fatalf("AppendMessages result %d: %v", i, r)
		}
	}
	if got := mustGetState(t, cs, a, conv2).ReadSeq; got != 2 {
		t.Errorf("read seq of %s in the first conversation of the call: got %d, want 2", a, got)
	}
	if got := mustGetState(t, cs, a, conv3).ReadSeq; got != 4 {
		t.Errorf("read seq of %s in the second conversation of the call: got %d, want 4", a, got)
	}
}

func testAppendGroupSenderReadSeq(t *testing.T, newStores func(t *testing.T) (server.MessageStore, server.ConversationStore)) {
	s, cs := newStores(t)
	conv := groupChat()
	a, b := uniqueID("user"), uniqueID("user")
	if err := cs.JoinConversation(t.Context(), conv, []string{a, b}, 1); err != nil {
		t.Fatalf("JoinConversation: %v", err)
	}
	msgs := []*imlitev1.Message{newMessage(conv, a, 1), newMessage(conv, a, 2), newMessage(conv, b, 3)}
	mustAppend(t, s, conv, msgs)
	if got := mustGetState(t, cs, a, conv).ReadSeq; got != 2 {
		t.Errorf("read seq of group member %s after sending seqs 1 and 2: got %d, want 2", a, got)
	}
	if got := mustGetState(t, cs, b, conv).ReadSeq; got != 3 {
		t.Errorf("read seq of group member %s after sending seq 3: got %d, want 3", b, got)
	}
}

func testMaxSeqs(t *testing.T, s server.MessageStore) {
	conv1, a, _ := singleChat()
	conv2 := groupChat()
	empty := groupChat()
	mustAppend(t, s, conv1, newMessages(conv1, a, 1, 4))
	mustAppend(t, s, conv2, newMessages(conv2, a, 1, 1))
	mustAppend(t, s, conv2, newMessages(conv2, a, 2, 6))

	got, err := s.MaxSeqs(t.Context(), []string{conv1, conv2, empty})
	if err != nil {
		t.Fatalf("MaxSeqs: %v", err)
	}
	want := map[string]int64{conv1: 4, conv2: 7, empty: 0}
	for conv, w := range want {
		if got[conv] != w {
			t.Errorf("max seq of %s: got %d, want %d", conv, got[conv], w)
		}
	}
}

func testRangeMessages(t *testing.T, s server.MessageStore) {
	conv := groupChat()
	stored := newMessages(conv, uniqueID("user"), 1, 10)
	mustAppend(t, s, conv, stored[:4])
	mustAppend(t, s, conv, stored[4:])

	cases := []struct {
		name       string
		begin, end int64
		limit      int
		want       []int64
	}{
		{name: "all", begin: 1, end: 10, limit: 100, want: seqRange(1, 10)},
		{name: "inner range", begin: 3, end: 7, limit: 100, want: seqRange(3, 7)},
		{name: "one seq", begin: 4, end: 4, limit: 100, want: []int64{4}},
		{name: "limit from the start", begin: 1, end: 10, limit: 4, want: seqRange(1, 4)},
		{name: "limit from the middle", begin: 5, end: 10, limit: 2, want: []int64{5, 6}},
		{name: "limit equal to the range", begin: 2, end: 4, limit: 3, want: seqRange(2, 4)},
		{name: "end past max seq", begin: 8, end: 20, limit: 100, want: seqRange(8, 10)},
		{name: "across both appends", begin: 3, end: 6, limit: 100, want: seqRange(3, 6)},
		{name: "begin past max seq", begin: 11, end: 20, limit: 100, want: nil},
		{name: "end before begin", begin: 6, end: 5, limit: 100, want: nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.RangeMessages(t.Context(), conv, tc.begin, tc.end, tc.limit)
			if err != nil {
				t.Fatalf("RangeMessages(%d, %d, limit %d): %v", tc.begin, tc.end, tc.limit, err)
			}
			var want []*imlitev1.Message
			for _, seq := range tc.want {
				want = append(want, stored[seq-1])
			}
			checkMessages(t, fmt.Sprintf("RangeMessages(%d, %d, limit %d)", tc.begin, tc.end, tc.limit), got, want)
		})
	}

	t.Run("unknown conversation", func(t *testing.T) {
		got, err := s.RangeMessages(t.Context(), groupChat(), 1, 10, 100)
		if err != nil {
			t.Fatalf("RangeMessages: %v", err)
		}
		if len(got) != 0 {
			t.Errorf("RangeMessages of a conversation without messages: got seqs %v, want none", seqsOf(got))
		}
	})
}

// testRangeSeparatesConversations stores messages in conversations whose
// ids extend each other, which catches prefix scans that run into the
// neighbouring conversation.
func testRangeSeparatesConversations(t *testing.T, s server.MessageStore) {
	groupID := uniqueID("grp")
	short := server.GroupConversationID(groupID)
	long := server.GroupConversationID(groupID + "0")
	longer := server.GroupConversationID(groupID + "-1")
	sender := uniqueID("user")
	shortMsgs := newMessages(short, sender, 1, 3)
	mustAppend(t, s, long, newMessages(long, sender, 1, 5))
	mustAppend(t, s, short, shortMsgs)
	mustAppend(t, s, longer, newMessages(longer, sender, 1, 4))

	checkMessages(t, "RangeMessages of the shortest id", rangeAll(t, s, short), shortMsgs)
	got, err := s.MessagesBySeqs(t.Context(), short, []int64{1, 4, 5})
	if err != nil {
		t.Fatalf("MessagesBySeqs: %v", err)
	}
	checkMessages(t, "MessagesBySeqs(1, 4, 5) of the shortest id", got, shortMsgs[:1])
	checkMaxSeq(t, s, short, 3)
}

func testMessagesBySeqs(t *testing.T, s server.MessageStore) {
	conv := groupChat()
	stored := newMessages(conv, uniqueID("user"), 1, 10)
	mustAppend(t, s, conv, stored)

	cases := []struct {
		name string
		seqs []int64
		want []int64
	}{
		{name: "ascending", seqs: []int64{2, 5, 9}, want: []int64{2, 5, 9}},
		{name: "unordered", seqs: []int64{7, 2, 10, 1}, want: []int64{1, 2, 7, 10}},
		{name: "missing seqs left out", seqs: []int64{42, 3, 11}, want: []int64{3}},
		{name: "none stored", seqs: []int64{50, 51}, want: nil},
		{name: "no seqs", seqs: nil, want: nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.MessagesBySeqs(t.Context(), conv, tc.seqs)
			if err != nil {
				t.Fatalf("MessagesBySeqs(%v): %v", tc.seqs, err)
			}
			var want []*imlitev1.Message
			for _, seq := range tc.want {
				want = append(want, stored[seq-1])
			}
			checkMessages(t, fmt.Sprintf("MessagesBySeqs(%v)", tc.seqs), got, want)
		})
	}
}

// unicodeTexts are contents that break stores which normalize, trim or
// re-encode text.
var unicodeTexts = []struct {
	name string
	text string
}{
	{name: "family emoji with ZWJ", text: "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466"},
	{name: "skin tone and ZWJ profession", text: "\U0001F469\U0001F3FD\u200D\U0001F4BB and \U0001F3F3\uFE0F\u200D\U0001F308"},
	{name: "flag pair", text: "\U0001F1EF\U0001F1F5\U0001F1E9\U0001F1EA"},
	{name: "Hebrew right to left", text: "\u05E9\u05DC\u05D5\u05DD \u05E2\u05D5\u05DC\u05DD"},
	{name: "Arabic with bidi marks", text: "\u200F\u0645\u0631\u062D\u0628\u0627 123 \u202Babc\u202C"},
	{name: "decomposed combining marks", text: "e\u0301 a\u0308 n\u0303 Z\u0364\u0351\u0300\u0316"},
	{name: "precomposed beside decomposed", text: "\u00E9 e\u0301 \u212B A\u030A"},
	{name: "zero width and spaces", text: " \u200B\u2060 leading and trailing \u00A0"},
	{name: "NUL and control bytes", text: "a\x00b\x01\r\n\t"},
}

func testUnicodeRoundTrip(t *testing.T, s server.MessageStore) {
	conv, a, b := singleChat()
	stored := make([]*imlitev1.Message, len(unicodeTexts))
	for i, tc := range unicodeTexts {
		if !utf8.ValidString(tc.text) {
			t.Fatalf("case %q is not valid UTF-8", tc.name)
		}
		m := newMessage(conv, a, int64(i+1))
		m.Content = tc.text
		m.Ex = tc.text
		m.OfflinePush = &imlitev1.OfflinePush{Title: tc.text}
		stored[i] = m
	}
	stored[len(stored)-1].SenderId, stored[len(stored)-1].RecvId = b, a
	mustAppend(t, s, conv, stored)

	ranged := rangeAll(t, s, conv)
	bySeq, err := s.MessagesBySeqs(t.Context(), conv, seqsOf(stored))
	if err != nil {
		t.Fatalf("MessagesBySeqs: %v", err)
	}
	byKey, err := s.FindByClientMsgIDs(t.Context(), keysOf(stored))
	if err != nil {
		t.Fatalf("FindByClientMsgIDs: %v", err)
	}
	if len(ranged) != len(stored) || len(bySeq) != len(stored) {
		t.Fatalf("read back %d messages by range and %d by seq, want %d", len(ranged), len(bySeq), len(stored))
	}
	for i, tc := range unicodeTexts {
		t.Run(tc.name, func(t *testing.T) {
			reads := []struct {
				via string
				msg *imlitev1.Message
			}{
				{"RangeMessages", ranged[i]},
				{"MessagesBySeqs", bySeq[i]},
				{"FindByClientMsgIDs", byKey[keyOf(stored[i])]},
			}
			for _, r := range reads {
				fields := []struct{ field, got string }{
					{"content", r.msg.GetContent()},
					{"ex", r.msg.GetEx()},
					{"offline_push.title", r.msg.GetOfflinePush().GetTitle()},
				}
				for _, f := range fields {
					if !bytes.Equal([]byte(f.got), []byte(tc.text)) {
						t.Errorf("%s via %s: got bytes % x, want % x", f.field, r.via, f.got, tc.text)
					}
				}
			}
		})
	}
}

func testFindByClientMsgIDs(t *testing.T, s server.MessageStore) {
	conv, a, b := singleChat()
	msgs := []*imlitev1.Message{newMessage(conv, a, 1), newMessage(conv, b, 2), newMessage(conv, a, 3)}
	mustAppend(t, s, conv, msgs)
	other := groupChat()
	inGroup := newMessage(other, a, 1)
	mustAppend(t, s, other, []*imlitev1.Message{inGroup})

	cases := []struct {
		name string
		key  server.ClientMsgKey
		want *imlitev1.Message
	}{
		{name: "first message", key: keyOf(msgs[0]), want: msgs[0]},
		{name: "other sender", key: keyOf(msgs[1]), want: msgs[1]},
		{name: "last message", key: keyOf(msgs[2]), want: msgs[2]},
		{name: "other conversation", key: keyOf(inGroup), want: inGroup},
		{name: "client_msg_id of another sender", key: server.ClientMsgKey{SenderID: b, ClientMsgID: msgs[0].GetClientMsgId()}},
		{name: "unknown client_msg_id", key: server.ClientMsgKey{SenderID: a, ClientMsgID: uniqueID("cli")}},
		{name: "unknown sender", key: server.ClientMsgKey{SenderID: uniqueID("user"), ClientMsgID: msgs[0].GetClientMsgId()}},
	}
	keys := make([]server.ClientMsgKey, len(cases))
	for i, tc := range cases {
		keys[i] = tc.key
	}
	got, err := s.FindByClientMsgIDs(t.Context(), keys)
	if err != nil {
		t.Fatalf("FindByClientMsgIDs: %v", err)
	}
	wantLen := 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, ok := got[tc.key]
			switch {
			case tc.want == nil && ok:
				t.Errorf("key (%s, %s): got seq %d of %s, want no entry", tc.key.SenderID, tc.key.ClientMsgID, m.GetSeq(), m.GetConversationId())
			case tc.want != nil && !ok:
				t.Errorf("key (%s, %s): no entry, want seq %d of %s", tc.key.SenderID, tc.key.ClientMsgID, tc.want.GetSeq(), tc.want.GetConversationId())
			case tc.want != nil && !proto.Equal(m, tc.want):
				t.Errorf("key (%s, %s): got %v, want %v", tc.key.SenderID, tc.key.ClientMsgID, m, tc.want)
			}
		})
		if tc.want != nil {
			wantLen++
		}
	}
	if len(got) != wantLen {
		t.Errorf("FindByClientMsgIDs returned %d entries, want %d", len(got), wantLen)
	}

	none, err := s.FindByClientMsgIDs(t.Context(), nil)
	if err != nil {
		t.Fatalf("FindByClientMsgIDs(no keys): %v", err)
	}
	if len(none) != 0 {
		t.Errorf("FindByClientMsgIDs(no keys): got %d entries, want none", len(none))
	}
}
