package mongostore

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"google.golang.org/protobuf/proto"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
)

// rawMessage returns the stored document of one message.
func rawMessage(t *testing.T, s *Store, conv string, seq int64) bson.Raw {
	t.Helper()
	raw, err := s.messages.FindOne(t.Context(), bson.D{{Key: "conversation_id", Value: conv}, {Key: "seq", Value: seq}}).Raw()
	if err != nil {
		t.Fatalf("find stored document of %s seq %d: %v", conv, seq, err)
	}
	return raw
}

func mustAppend(t *testing.T, s *Store, conv string, msgs ...*imlitev1.Message) {
	t.Helper()
	if err := appendOne(t.Context(), s, conv, msgs...); err != nil {
		t.Fatalf("AppendMessages(%s, seqs %v): %v", conv, seqsOf(msgs), err)
	}
}

func TestMessageDocumentFields(t *testing.T) {
	s, _ := startStore(t)
	conv := server.GroupConversationID("team")
	cases := []struct {
		name   string
		modify func(m *imlitev1.Message)
		// fields maps a dotted path to its wanted value, or to nil when the
		// field must be absent.
		fields map[string]any
	}{
		{
			name:   "plain",
			modify: func(*imlitev1.Message) {},
			fields: map[string]any{
				"conversation_id": conv, "seq": int64(1), "sender_id": "alice", "content_type": int32(1),
				"conversation_type": int32(imlitev1.ConversationType_CONVERSATION_TYPE_GROUP), "group_id": "team",
				"server_time": int64(1_700_000_000_101), "options": nil, "offline_push": nil, "ex": nil, "recv_id": nil,
			},
		},
		{
			name:   "empty options",
			modify: func(m *imlitev1.Message) { m.Options = &imlitev1.MsgOptions{} },
			fields: map[string]any{"options": bson.D{}, "options.storage": nil},
		},
		{
			name:   "storage false",
			modify: func(m *imlitev1.Message) { m.Options = &imlitev1.MsgOptions{Storage: proto.Bool(false)} },
			fields: map[string]any{"options.storage": false},
		},
		{
			name:   "empty offline push",
			modify: func(m *imlitev1.Message) { m.OfflinePush = &imlitev1.OfflinePush{} },
			fields: map[string]any{"offline_push": bson.D{}},
		},
		{
			name: "offline push and ex",
			modify: func(m *imlitev1.Message) {
				m.OfflinePush = &imlitev1.OfflinePush{Title: "t", Desc: "d", Ex: "e"}
				m.Ex = `{"k":1}`
			},
			fields: map[string]any{"offline_push.title": "t", "offline_push.desc": "d", "offline_push.ex": "e", "ex": `{"k":1}`},
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			seq := int64(i + 1)
			m := testMessage(conv, "alice", seq, fmt.Sprintf("doc-%d", seq))
			m.ServerTime = 1_700_000_000_100 + 1
			tc.modify(m)
			mustAppend(t, s, conv, m)

			raw := rawMessage(t, s, conv, seq)
			for path, want := range tc.fields {
				checkField(t, raw, path, want)
			}
			got, err := s.MessagesBySeqs(t.Context(), conv, []int64{seq})
			if err != nil {
				t.Fatalf("MessagesBySeqs: %v", err)
			}
			if len(got) != 1 || !proto.Equal(got[0], m) {
				t.Errorf("read back:\n got %v\nwant %v", got, m)
			}
		})
	}
}

// checkField checks one field of raw at a dotted path; want nil means
// absent, and bson.D{} an empty document.
func checkField(t *testing.T, raw bson.Raw, p string, want any) {
	t.Helper()
	v, err := raw.LookupErr(strings.Split(p, ".")...)
	if want == nil {
		if err == nil {
			t.Errorf("field %s: got %v, want it absent", p, v)
		}
		return
	}
	if err != nil {
		t.Errorf("field %s: missing, want %v", p, want)
		return
	}
	var got any
	switch want.(type) {
	case bson.D:
		doc, ok := v.DocumentOK()
		if !ok {
			t.Errorf("field %s: got %v, want an empty document", p, v)
			return
		}
		if elems, _ := doc.Elements(); len(elems) != 0 {
			t.Errorf("field %s: got %v, want an empty document", p, v)
		}
		return
	case string:
		got, _ = v.StringValueOK()
	case int64:
		got, _ = v.Int64OK()
	case int32:
		got, _ = v.Int32OK()
	case bool:
		got, _ = v.BooleanOK()
	}
	if got != want {
		t.Errorf("field %s: got %v (BSON type %v), want %v of Go type %T", p, v, v.Type, want, want)
	}
}

func TestDecodeMalformedDocument(t *testing.T) {
	s, _ := startStore(t)
	cases := []struct {
		name string
		doc  bson.D
	}{
		{name: "content not a string", doc: bson.D{{Key: "content", Value: int32(7)}}},
		{name: "options not a document", doc: bson.D{{Key: "options", Value: "yes"}}},
		{name: "seq a string", doc: bson.D{{Key: "seq", Value: "one"}}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conv := server.GroupConversationID(fmt.Sprintf("edited-%d", i))
			doc := bson.D{
				{Key: "conversation_id", Value: conv}, {Key: "seq", Value: int64(1)},
				{Key: "sender_id", Value: "alice"}, {Key: "client_msg_id", Value: conv},
			}
			// The case's field replaces the well-formed one.
			for _, e := range tc.doc {
				doc = slices.DeleteFunc(doc, func(f bson.E) bool { return f.Key == e.Key })
				doc = append(doc, e)
			}
			if _, err := s.messages.InsertOne(t.Context(), doc); err != nil {
				t.Fatalf("insert hand-edited document: %v", err)
			}

			_, err := s.FindByClientMsgIDs(t.Context(), []server.ClientMsgKey{{SenderID: "alice", ClientMsgID: conv}})
			if err == nil {
				t.Fatal("FindByClientMsgIDs of a malformed document: got nil error, want a decode error")
			}
			for _, part := range []string{"decode message", conv} {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("error %q does not contain %q", err, part)
				}
			}
			if errors.Is(err, server.ErrUnavailable) {
				t.Errorf("error %v wraps ErrUnavailable, want a permanent failure", err)
			}
		})
	}
}

func TestAppendMalformed(t *testing.T) {
	conv := server.GroupConversationID("team")
	cases := []struct {
		name string
		conv string
		msgs []*imlitev1.Message
		want string
	}{
		{
			name: "seqs not contiguous",
			msgs: []*imlitev1.Message{testMessage(conv, "alice", 1, "a"), testMessage(conv, "alice", 3, "b")},
			want: "expected contiguous seqs",
		},
		{name: "seq zero", msgs: []*imlitev1.Message{testMessage(conv, "alice", 0, "a")}, want: "expected at least 1"},
		{
			name: "other conversation id",
			msgs: []*imlitev1.Message{testMessage(server.GroupConversationID("other"), "alice", 1, "a")},
			want: "has conversation_id",
		},
		{name: "nil message", msgs: []*imlitev1.Message{nil}, want: "is nil"},
		{name: "missing sender", msgs: []*imlitev1.Message{testMessage(conv, "", 1, "a")}, want: "sender id is empty"},
		{name: "invalid conversation id", conv: "x:1", msgs: nil, want: `"x:1"`},
	}
	s, _ := startStore(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			good := server.GroupConversationID(fmt.Sprintf("good-%d", i))
			target := cmpOr(tc.conv, conv)
			results, err := s.AppendMessages(t.Context(), []server.Append{
				{ConversationID: good, Messages: []*imlitev1.Message{testMessage(good, "bob", 1, good)}},
				{ConversationID: target, Messages: tc.msgs},
			})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("AppendMessages: got results %v and error %v, want an error containing %q", results, err, tc.want)
			}
			if errors.Is(err, server.ErrUnavailable) {
				t.Errorf("error %v wraps ErrUnavailable, want a permanent failure", err)
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

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// conversationMaxSeq returns max_seq of the conversations collection, 0
// when the conversation has no record.
func conversationMaxSeq(t *testing.T, s *Store, conv string) int64 {
	t.Helper()
	var doc struct {
		MaxSeq int64 `bson:"max_seq"`
	}
	err := s.conversations.FindOne(t.Context(), bson.D{{Key: "_id", Value: conv}}).Decode(&doc)
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		t.Fatalf("find conversation record of %s: %v", conv, err)
	}
	return doc.MaxSeq
}

func TestAppendConflictFoundByInsert(t *testing.T) {
	s, _ := startStore(t)
	conv := server.SingleConversationID("alice", "bob")
	mustAppend(t, s, conv, testMessage(conv, "bob", 1, "one"), testMessage(conv, "bob", 2, "two"))
	// Another writer stores seq 4 as if after the check of this call, which
	// finds seq 2 stored and no stored client_msg_id.
	if _, err := s.messages.InsertOne(t.Context(), newMessageDoc(testMessage(conv, "bob", 4, "racer"))); err != nil {
		t.Fatalf("insert the concurrent writer's message: %v", err)
	}

	before, after := server.GroupConversationID("before"), server.GroupConversationID("after")
	attempt := []*imlitev1.Message{testMessage(conv, "alice", 3, "three"), testMessage(conv, "alice", 4, "four"), testMessage(conv, "alice", 5, "five")}
	results, err := s.AppendMessages(t.Context(), []server.Append{
		{ConversationID: before, Messages: []*imlitev1.Message{testMessage(before, "carol", 1, "before")}},
		{ConversationID: conv, Messages: attempt},
		{ConversationID: after, Messages: []*imlitev1.Message{testMessage(after, "carol", 1, "after")}},
	})
	if err != nil {
		t.Fatalf("AppendMessages: %v", err)
	}
	if !errors.Is(results[1], server.ErrSeqTaken) {
		t.Errorf("result of the append hitting stored seq 4: got %v, want %v", results[1], server.ErrSeqTaken)
	}
	for _, i := range []int{0, 2} {
		if results[i] != nil {
			t.Errorf("result of append %d of another conversation: got %v, want nil", i, results[i])
		}
	}

	checks := []struct {
		name      string
		got, want int64
	}{
		{"max seq of the conversation, with seq 3 stored before the conflict", maxSeqOf(t, s, conv), 4},
		{"max_seq record after the stored seq 3", conversationMaxSeq(t, s, conv), 3},
		{"read seq of alice, whose seq 3 is stored", stateOf(t, s, "alice", conv).ReadSeq, 3},
		{"max seq of the append after the conflict", maxSeqOf(t, s, after), 1},
		{"max seq of the append before the conflict", maxSeqOf(t, s, before), 1},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %d, want %d", c.name, c.got, c.want)
		}
	}
	found, err := s.FindByClientMsgIDs(t.Context(), keysOf(attempt))
	if err != nil {
		t.Fatalf("FindByClientMsgIDs: %v", err)
	}
	if len(found) != 1 || found[keysOf(attempt)[0]].GetSeq() != 3 {
		t.Errorf("stored messages of the rejected append: got %v, want only seq 3, the prefix before the conflict", found)
	}
}

func maxSeqOf(t *testing.T, s *Store, conv string) int64 {
	t.Helper()
	got, err := s.MaxSeqs(t.Context(), []string{conv})
	if err != nil {
		t.Fatalf("MaxSeqs(%s): %v", conv, err)
	}
	return got[conv]
}

func stateOf(t *testing.T, s *Store, userID, conv string) server.UserConversation {
	t.Helper()
	st, err := s.GetUserConversation(t.Context(), userID, conv)
	if err != nil {
		t.Fatalf("GetUserConversation(%s, %s): %v", userID, conv, err)
	}
	return st
}

func keysOf(msgs []*imlitev1.Message) []server.ClientMsgKey {
	out := make([]server.ClientMsgKey, len(msgs))
	for i, m := range msgs {
		out[i] = server.ClientMsgKey{SenderID: m.GetSenderId(), ClientMsgID: m.GetClientMsgId()}
	}
	return out
}

func TestAppendsOfOneConversationInOneCall(t *testing.T) {
	cases := []struct {
		name string
		// racer is a seq that another writer stored before the call; 0 for
		// none.
		racer       int64
		sameKey     bool
		wantResults []error
		wantMaxSeq  int64
	}{
		{name: "second follows first", wantResults: []error{nil, nil}, wantMaxSeq: 4},
		{name: "first hits a stored seq", racer: 1, wantResults: []error{server.ErrSeqTaken, server.ErrSeqGap}, wantMaxSeq: 1},
		{name: "stored seq before the second", racer: 2, wantResults: []error{server.ErrSeqTaken, nil}, wantMaxSeq: 4},
		{name: "second repeats a key of the first", sameKey: true, wantResults: []error{nil, server.ErrDuplicateMsg}, wantMaxSeq: 2},
	}
	s, _ := startStore(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conv := server.GroupConversationID(fmt.Sprintf("twice-%d", i))
			if tc.racer > 0 {
				racer := newMessageDoc(testMessage(conv, "bob", tc.racer, conv+"-racer"))
				if _, err := s.messages.InsertOne(t.Context(), racer); err != nil {
					t.Fatalf("insert the concurrent writer's message: %v", err)
				}
			}
			first := []*imlitev1.Message{testMessage(conv, "alice", 1, conv+"-1"), testMessage(conv, "alice", 2, conv+"-2")}
			second := []*imlitev1.Message{testMessage(conv, "alice", 3, conv+"-3"), testMessage(conv, "alice", 4, conv+"-4")}
			if tc.sameKey {
				second[1].ClientMsgId = first[0].GetClientMsgId()
			}
			results, err := s.AppendMessages(t.Context(), []server.Append{
				{ConversationID: conv, Messages: first},
				{ConversationID: conv, Messages: second},
			})
			if err != nil {
				t.Fatalf("AppendMessages: %v", err)
			}
			for j, want := range tc.wantResults {
				if !errors.Is(results[j], want) || (want == nil && results[j] != nil) {
					t.Errorf("result of append %d: got %v, want %v", j, results[j], want)
				}
			}
			if got := maxSeqOf(t, s, conv); got != tc.wantMaxSeq {
				t.Errorf("max seq: got %d, want %d", got, tc.wantMaxSeq)
			}
		})
	}
}

func TestMaxSeqsManyConversations(t *testing.T) {
	s, _ := startStore(t)
	// More conversations than maxParallelCalls, each with its own max seq,
	// and every id asked twice.
	var ids []string
	want := make(map[string]int64)
	for i := range 3 * maxParallelCalls {
		conv := server.GroupConversationID(fmt.Sprintf("many-%d", i))
		n := i%5 + 1
		msgs := make([]*imlitev1.Message, n)
		for j := range msgs {
			msgs[j] = testMessage(conv, "alice", int64(j+1), fmt.Sprintf("%s-%d", conv, j))
		}
		mustAppend(t, s, conv, msgs...)
		ids = append(ids, conv, conv)
		want[conv] = int64(n)
	}
	empty := server.GroupConversationID("never-written")
	ids = append(ids, empty)
	want[empty] = 0

	got, err := s.MaxSeqs(t.Context(), ids)
	if err != nil {
		t.Fatalf("MaxSeqs: %v", err)
	}
	if len(got) != len(want) {
		t.Errorf("MaxSeqs returned %d entries, want %d, one per distinct id", len(got), len(want))
	}
	for conv, w := range want {
		if got[conv] != w {
			t.Errorf("max seq of %s: got %d, want %d", conv, got[conv], w)
		}
	}
}

func TestMaxSeqsReadsMessages(t *testing.T) {
	s, _ := startStore(t)
	conv := server.GroupConversationID("team")
	mustAppend(t, s, conv, testMessage(conv, "alice", 1, "one"), testMessage(conv, "alice", 2, "two"))
	// A message stored without its max_seq update, as after a crash between
	// the two writes.
	if _, err := s.messages.InsertOne(t.Context(), newMessageDoc(testMessage(conv, "alice", 3, "three"))); err != nil {
		t.Fatalf("insert message: %v", err)
	}
	if got := conversationMaxSeq(t, s, conv); got != 2 {
		t.Fatalf("max_seq record: got %d, want 2 as left by the append", got)
	}
	if got := maxSeqOf(t, s, conv); got != 3 {
		t.Errorf("MaxSeqs with a lagging max_seq record: got %d, want 3 from the messages collection", got)
	}
}

func TestBatchLargerThanOneQuery(t *testing.T) {
	// FerretDB evaluates $or for every document of the collection, so the
	// test lowers the query size instead of storing thousands of messages.
	defer func(saved int) { maxOrBranches = saved }(maxOrBranches)
	maxOrBranches = 20

	s, _ := startStore(t)
	conv := server.GroupConversationID("big")
	// More client_msg_ids than one $or query takes, so the check and
	// FindByClientMsgIDs run several queries.
	n := 2*maxOrBranches + 5
	msgs := make([]*imlitev1.Message, n)
	for i := range msgs {
		msgs[i] = testMessage(conv, "alice", int64(i+1), fmt.Sprintf("big-%d", i))
	}
	mustAppend(t, s, conv, msgs...)

	found, err := s.FindByClientMsgIDs(t.Context(), keysOf(msgs))
	if err != nil {
		t.Fatalf("FindByClientMsgIDs: %v", err)
	}
	if len(found) != n {
		t.Errorf("FindByClientMsgIDs of %d keys: got %d entries, want %d", n, len(found), n)
	}
	last := keysOf(msgs[n-1:])[0]
	if got := found[last].GetSeq(); got != int64(n) {
		t.Errorf("seq of the last key, in the second query: got %d, want %d", got, n)
	}

	// An append of as many messages whose last one repeats a stored key:
	// the check must find the repeat in a later query and store
	// nothing, where the insert would have stored the messages before it.
	next := make([]*imlitev1.Message, n)
	for i := range next {
		next[i] = testMessage(conv, "alice", int64(n+i+1), fmt.Sprintf("next-%d", i))
	}
	next[n-1].ClientMsgId = msgs[0].GetClientMsgId()
	if err := appendOne(t.Context(), s, conv, next...); !errors.Is(err, server.ErrDuplicateMsg) {
		t.Errorf("append whose last message repeats a stored client_msg_id: got %v, want %v", err, server.ErrDuplicateMsg)
	}
	if got := maxSeqOf(t, s, conv); got != int64(n) {
		t.Errorf("max seq after the rejected append: got %d, want %d because the check rejects it before the insert", got, n)
	}
}

// TestReapplyAppendEffects stores messages as an AppendMessages call that
// failed after its insert leaves them: without max_seq, state or read seq.
// Reapplying the effects must add them, and reapplying twice must change
// nothing more.
func TestReapplyAppendEffects(t *testing.T) {
	s, _ := startStore(t)
	conv := server.SingleConversationID("alice", "bob")
	mustAppend(t, s, conv, testMessage(conv, "bob", 1, "one"))
	inserted := []*imlitev1.Message{testMessage(conv, "alice", 2, "two"), testMessage(conv, "bob", 3, "three"), testMessage(conv, "alice", 5, "five")}
	for _, m := range inserted {
		if _, err := s.messages.InsertOne(t.Context(), newMessageDoc(m)); err != nil {
			t.Fatalf("insert seq %d without effects: %v", m.GetSeq(), err)
		}
	}
	if got := conversationMaxSeq(t, s, conv); got != 1 {
		t.Fatalf("max_seq record before the reapply: got %d, want 1", got)
	}

	for round := 1; round <= 2; round++ {
		if err := s.ReapplyAppendEffects(t.Context(), []server.Append{{ConversationID: conv, Messages: inserted}}); err != nil {
			t.Fatalf("ReapplyAppendEffects, round %d: %v", round, err)
		}
		checks := []struct {
			name      string
			got, want int64
		}{
			{"max_seq record", conversationMaxSeq(t, s, conv), 5},
			{"read seq of alice, sender of seq 5", stateOf(t, s, "alice", conv).ReadSeq, 5},
			{"read seq of bob, sender of seq 3", stateOf(t, s, "bob", conv).ReadSeq, 3},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("round %d, %s: got %d, want %d", round, c.name, c.got, c.want)
			}
		}
	}
}

func TestReapplyAppendEffectsMalformed(t *testing.T) {
	s, _ := startStore(t)
	conv := server.SingleConversationID("alice", "bob")
	other := server.GroupConversationID("other")
	cases := []struct {
		name   string
		append server.Append
	}{
		{"invalid conversation id", server.Append{ConversationID: "x:1", Messages: []*imlitev1.Message{testMessage(conv, "alice", 1, "a")}}},
		{"nil message", server.Append{ConversationID: conv, Messages: []*imlitev1.Message{nil}}},
		{"message of another conversation", server.Append{ConversationID: conv, Messages: []*imlitev1.Message{testMessage(other, "alice", 1, "a")}}},
		{"seqs not ascending", server.Append{ConversationID: conv, Messages: []*imlitev1.Message{testMessage(conv, "alice", 2, "b"), testMessage(conv, "alice", 2, "c")}}},
	}
	for _, tc := range cases {
		if err := s.ReapplyAppendEffects(t.Context(), []server.Append{tc.append}); err == nil {
			t.Errorf("%s: got nil error, want a rejection", tc.name)
		}
	}
	if got := conversationMaxSeq(t, s, conv); got != 0 {
		t.Errorf("max_seq record after rejected calls: got %d, want 0", got)
	}
}
