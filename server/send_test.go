package server_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/apierr"
	"github.com/imlite/imlite/server/auth"
)

func TestSeqContiguousUnderConcurrentSenders(t *testing.T) {
	h := newHarness(t)
	const senders, perSender = 50, 200
	h.createGroup("busy", "admin")
	members := make([]string, senders)
	for i := range members {
		members[i] = fmt.Sprintf("u%02d", i)
	}
	if _, err := h.svc.AddGroupMembers(h.asAdmin("admin"), &imlitev1.AddGroupMembersRequest{GroupId: "busy", MemberIds: members}); err != nil {
		t.Fatalf("AddGroupMembers: %v", err)
	}

	var wg sync.WaitGroup
	seqsBySender := make([][]int64, senders)
	errs := make(chan error, senders)
	for i := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := h.as(members[i])
			for j := range perSender {
				resp, err := h.svc.SendMsg(ctx, &imlitev1.SendMsgRequest{
					ClientMsgId: fmt.Sprintf("m-%d", j), GroupId: "busy", Content: fmt.Sprintf("%s #%d", members[i], j),
				})
				if err != nil {
					errs <- fmt.Errorf("sender %s message %d: %w", members[i], j, err)
					return
				}
				seqsBySender[i] = append(seqsBySender[i], resp.GetSeq())
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// Every seq 1..N handed out exactly once, and each sender's own
	// messages got increasing seqs (one sender's sends are sequential).
	const total = senders * perSender
	seen := make([]bool, total+1)
	for i, seqs := range seqsBySender {
		for j, seq := range seqs {
			if seq < 1 || seq > total {
				t.Fatalf("sender %d got seq %d outside 1..%d", i, seq, total)
			}
			if seen[seq] {
				t.Fatalf("seq %d handed out twice", seq)
			}
			seen[seq] = true
			if j > 0 && seq <= seqs[j-1] {
				t.Errorf("sender %d: seq %d after %d, want increasing", i, seq, seqs[j-1])
			}
		}
	}

	// Pulling returns the same contiguous run in seq order.
	ctx := h.as("u00")
	var next int64 = 1
	for next <= total {
		resp, err := h.svc.PullMsg(ctx, &imlitev1.PullMsgRequest{ConversationId: "g:busy", BeginSeq: next, Limit: 500})
		if err != nil {
			t.Fatalf("PullMsg from %d: %v", next, err)
		}
		if resp.GetMaxSeq() != total {
			t.Fatalf("max_seq = %d, want %d", resp.GetMaxSeq(), total)
		}
		if len(resp.GetMessages()) == 0 {
			t.Fatalf("PullMsg from %d returned nothing before max seq %d", next, total)
		}
		for _, m := range resp.GetMessages() {
			if m.GetSeq() != next {
				t.Fatalf("pulled seq %d, want %d", m.GetSeq(), next)
			}
			next++
		}
	}
}

func TestSendRetryReturnsFirstResult(t *testing.T) {
	h := newHarness(t)
	ctx := h.as("alice")
	req := &imlitev1.SendMsgRequest{ClientMsgId: "retry-1", RecvId: "bob", Content: "once"}
	first := h.send(ctx, req)
	h.send(ctx, &imlitev1.SendMsgRequest{ClientMsgId: "other", RecvId: "bob", Content: "later"})
	again := h.send(ctx, req)

	if !proto.Equal(first, again) {
		t.Errorf("retry response = %v, want the first %v", again, first)
	}
	pulled, err := h.svc.PullMsg(ctx, &imlitev1.PullMsgRequest{ConversationId: "s:alice:bob"})
	if err != nil {
		t.Fatalf("PullMsg: %v", err)
	}
	if n := len(pulled.GetMessages()); n != 2 {
		t.Fatalf("stored %d messages, want 2 (the retry must not store a copy)", n)
	}
}

func TestSendConcurrentRetriesStoreOnce(t *testing.T) {
	h := newHarness(t)
	ctx := h.as("alice")
	req := &imlitev1.SendMsgRequest{ClientMsgId: "burst", RecvId: "bob", Content: "same"}
	const n = 20
	resps := make([]*imlitev1.SendMsgResponse, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := h.svc.SendMsg(ctx, req)
			if err != nil {
				t.Errorf("SendMsg #%d: %v", i, err)
				return
			}
			resps[i] = resp
		}()
	}
	wg.Wait()
	for i, r := range resps {
		if r != nil && !proto.Equal(r, resps[0]) {
			t.Errorf("response #%d = %v, want %v like #0", i, r, resps[0])
		}
	}
	pulled, err := h.svc.PullMsg(ctx, &imlitev1.PullMsgRequest{ConversationId: "s:alice:bob"})
	if err != nil {
		t.Fatalf("PullMsg: %v", err)
	}
	if got := len(pulled.GetMessages()); got != 1 {
		t.Fatalf("stored %d messages for one client_msg_id, want 1", got)
	}
}

func TestSendReusedClientMsgIDForAnotherConversation(t *testing.T) {
	h := newHarness(t)
	ctx := h.as("alice")
	first := h.send(ctx, &imlitev1.SendMsgRequest{ClientMsgId: "reused", RecvId: "bob", Content: "to bob"})

	_, err := h.svc.SendMsg(ctx, &imlitev1.SendMsgRequest{ClientMsgId: "reused", RecvId: "carol", Content: "to carol"})
	if code := apierr.Code(err); code != codes.AlreadyExists || !strings.Contains(err.Error(), "s:alice:bob") {
		t.Fatalf("send to carol with bob's client_msg_id: code %v, err %v; want AlreadyExists naming s:alice:bob", code, err)
	}
	if got := pulledCount(t, h, ctx, "s:alice:carol"); got != 0 {
		t.Errorf("carol's conversation holds %d messages, want 0", got)
	}
	// The retry to the first target still gets the first result.
	again := h.send(ctx, &imlitev1.SendMsgRequest{ClientMsgId: "reused", RecvId: "bob", Content: "to bob"})
	if !proto.Equal(first, again) {
		t.Errorf("retry to bob = %v, want the first %v", again, first)
	}
}

// TestSendConcurrentReuseAcrossConversations races sends that share one
// client_msg_id but name two targets, so that both can pass the check
// before either is stored. One message is stored, and every send either
// returns it or fails with AlreadyExists; none reports the other target.
func TestSendConcurrentReuseAcrossConversations(t *testing.T) {
	h := newHarness(t)
	ctx := h.as("alice")
	const n = 20
	type outcome struct {
		target string
		resp   *imlitev1.SendMsgResponse
		err    error
	}
	outcomes := make([]outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		target := []string{"bob", "carol"}[i%2]
		wg.Go(func() {
			resp, err := h.svc.SendMsg(ctx, &imlitev1.SendMsgRequest{ClientMsgId: "raced", RecvId: target, Content: "hi " + target})
			outcomes[i] = outcome{target, resp, err}
		})
	}
	wg.Wait()
	stored := pulledCount(t, h, ctx, "s:alice:bob") + pulledCount(t, h, ctx, "s:alice:carol")
	if stored != 1 {
		t.Fatalf("stored %d messages for one client_msg_id, want 1", stored)
	}
	for i, o := range outcomes {
		switch {
		case o.err != nil && apierr.Code(o.err) != codes.AlreadyExists:
			t.Errorf("send #%d to %s: %v, want success or AlreadyExists", i, o.target, o.err)
		case o.err == nil && o.resp.GetConversationId() != "s:alice:"+o.target:
			t.Errorf("send #%d to %s returned conversation %s", i, o.target, o.resp.GetConversationId())
		}
	}
}

func pulledCount(t *testing.T, h *harness, ctx context.Context, conv string) int {
	t.Helper()
	pulled, err := h.svc.PullMsg(ctx, &imlitev1.PullMsgRequest{ConversationId: conv})
	if err != nil {
		t.Fatalf("PullMsg(%s): %v", conv, err)
	}
	return len(pulled.GetMessages())
}

func TestSendRejectsBadRequests(t *testing.T) {
	h := newHarnessWith(t, harnessOptions{limits: server.Limits{MaxContentBytes: 100}})
	h.createGroup("club", "admin", "alice")
	ctx := h.as("alice")
	tests := []struct {
		name  string
		req   *imlitev1.SendMsgRequest
		code  codes.Code
		parts []string
	}{
		{"missing client_msg_id", &imlitev1.SendMsgRequest{RecvId: "bob", Content: "x"}, codes.InvalidArgument, []string{"client_msg_id"}},
		{"client_msg_id too long", &imlitev1.SendMsgRequest{ClientMsgId: strings.Repeat("c", 65), RecvId: "bob", Content: "x"}, codes.InvalidArgument, []string{"client_msg_id", "65"}},
		{"client_msg_id with space", &imlitev1.SendMsgRequest{ClientMsgId: "a b", RecvId: "bob", Content: "x"}, codes.InvalidArgument, []string{"client_msg_id"}},
		{"neither recv_id nor group_id", &imlitev1.SendMsgRequest{ClientMsgId: "c", Content: "x"}, codes.InvalidArgument, []string{"recv_id", "group_id"}},
		{"both recv_id and group_id", &imlitev1.SendMsgRequest{ClientMsgId: "c", RecvId: "bob", GroupId: "club", Content: "x"}, codes.InvalidArgument, []string{"recv_id", "group_id"}},
		{"empty content", &imlitev1.SendMsgRequest{ClientMsgId: "c", RecvId: "bob"}, codes.InvalidArgument, []string{"content"}},
		{"oversized content", &imlitev1.SendMsgRequest{ClientMsgId: "c", RecvId: "bob", Content: strings.Repeat("x", 101)}, codes.InvalidArgument, []string{"content", "101", "100"}},
		{"invalid UTF-8 content", &imlitev1.SendMsgRequest{ClientMsgId: "c", RecvId: "bob", Content: "ok\xff\xfe"}, codes.InvalidArgument, []string{"content", "UTF-8", "offset 2"}},
		{"invalid UTF-8 ex", &imlitev1.SendMsgRequest{ClientMsgId: "c", RecvId: "bob", Content: "x", Ex: "\xc3"}, codes.InvalidArgument, []string{"ex", "UTF-8"}},
		{"bad recv_id", &imlitev1.SendMsgRequest{ClientMsgId: "c", RecvId: "bo:b", Content: "x"}, codes.InvalidArgument, []string{"recv_id", "bo:b"}},
		{"unknown group", &imlitev1.SendMsgRequest{ClientMsgId: "c", GroupId: "nope", Content: "x"}, codes.NotFound, []string{"nope"}},
		{"negative client_time", &imlitev1.SendMsgRequest{ClientMsgId: "c", RecvId: "bob", Content: "x", ClientTime: -1}, codes.InvalidArgument, []string{"client_time"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.svc.SendMsg(ctx, tt.req)
			wantCode(t, err, tt.code, tt.parts...)
		})
	}
}

func TestSendAuthorization(t *testing.T) {
	h := newHarness(t)
	h.createGroup("club", "admin", "alice")

	t.Run("non-member sends to group", func(t *testing.T) {
		_, err := h.svc.SendMsg(h.as("mallory"), &imlitev1.SendMsgRequest{ClientMsgId: "c", GroupId: "club", Content: "x"})
		wantCode(t, err, codes.PermissionDenied, "mallory", "club")
	})
	t.Run("user sends as another user", func(t *testing.T) {
		_, err := h.svc.SendMsg(h.as("mallory"), &imlitev1.SendMsgRequest{ClientMsgId: "c", RecvId: "bob", Content: "x", SenderId: "alice"})
		wantCode(t, err, codes.PermissionDenied, "sender_id", "alice")
	})
	t.Run("admin sends as a user", func(t *testing.T) {
		resp := h.send(h.asAdmin("ops"), &imlitev1.SendMsgRequest{ClientMsgId: "sys-1", RecvId: "bob", Content: "system notice", SenderId: "alice"})
		if resp.GetConversationId() != "s:alice:bob" {
			t.Errorf("conversation = %q, want s:alice:bob", resp.GetConversationId())
		}
	})
	t.Run("no token", func(t *testing.T) {
		_, err := h.svc.SendMsg(context.Background(), &imlitev1.SendMsgRequest{ClientMsgId: "c", RecvId: "bob", Content: "x"})
		wantCode(t, err, codes.Unauthenticated, "bearer")
	})
}

func TestTokenRejections(t *testing.T) {
	h := newHarness(t)
	req := &imlitev1.SendMsgRequest{ClientMsgId: "c", RecvId: "bob", Content: "x"}

	expiredSigner, err := auth.NewSigner([]byte(testSecret), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	expiredSigner.SetClock(func() time.Time { return time.Now().Add(-2 * time.Hour) })
	expired, _, err := expiredSigner.Issue("alice", "web", imlitev1.Role_ROLE_USER, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherSigner, err := auth.NewSigner([]byte("another-secret-of-more-than-32-bytes!!"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wrongKey, _, err := otherSigner.Issue("alice", "web", imlitev1.Role_ROLE_USER, 0)
	if err != nil {
		t.Fatal(err)
	}
	good, _, err := h.signer.Issue("alice", "web", imlitev1.Role_ROLE_USER, 0)
	if err != nil {
		t.Fatal(err)
	}
	tampered := good[:len(good)-3] + "AAA"

	tests := []struct {
		name   string
		header string
		parts  []string
	}{
		{"expired", "Bearer " + expired, []string{"expired"}},
		{"garbage", "Bearer not.a.jwt", []string{"malformed"}},
		{"wrong signature", "Bearer " + wrongKey, []string{"signature"}},
		{"tampered", "Bearer " + tampered, []string{"signature"}},
		{"wrong scheme", "Basic " + good, []string{"Bearer"}},
		{"empty bearer", "Bearer ", []string{"missing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.svc.SendMsg(auth.WithAuthorization(context.Background(), tt.header), req)
			wantCode(t, err, codes.Unauthenticated, tt.parts...)
		})
	}
}

func TestKickRevokesEarlierTokens(t *testing.T) {
	h := newHarness(t)
	req := &imlitev1.SendMsgRequest{ClientMsgId: "c", RecvId: "bob", Content: "x"}
	web := h.asRole("alice", "web", imlitev1.Role_ROLE_USER)
	ios := h.asRole("alice", "ios", imlitev1.Role_ROLE_USER)

	// A user cannot kick.
	_, err := h.svc.KickUser(h.as("bob"), &imlitev1.KickUserRequest{UserId: "alice"})
	wantCode(t, err, codes.PermissionDenied, "admin")

	if _, err := h.svc.KickUser(h.asAdmin("admin"), &imlitev1.KickUserRequest{UserId: "alice", Platforms: []string{"web"}, Reason: "abuse"}); err != nil {
		t.Fatalf("KickUser: %v", err)
	}
	_, err = h.svc.SendMsg(web, req)
	wantCode(t, err, codes.Unauthenticated, "revoked")

	// Other platforms keep working, and so does a token issued after the kick.
	h.send(ios, req)
	h.send(h.asRole("alice", "web", imlitev1.Role_ROLE_USER), &imlitev1.SendMsgRequest{ClientMsgId: "c2", RecvId: "bob", Content: "back"})

	h.deliv.waitFor(t, "kick event", func(r *recorder) bool {
		for _, d := range r.disconnects {
			if d.Kind == server.Kicked && d.UserID == "alice" && d.Reason == "abuse" && len(d.Platforms) == 1 && d.Platforms[0] == "web" {
				return true
			}
		}
		return false
	})
}

func TestTextRoundTripsByteForByte(t *testing.T) {
	h := newHarness(t)
	ctx := h.as("alice")
	texts := []struct{ name, text string }{
		{"emoji ZWJ family", "👨\u200d👩\u200d👧\u200d👦 family"},
		{"emoji skin tone and flag", "👍🏽 🇨🇳 🏳️\u200d🌈"},
		{"right-to-left Arabic", "مرحبا بالعالم"},
		{"right-to-left Hebrew with marks", "\u202bשָׁלוֹם\u202c"},
		{"combining marks", "e\u0301 a\u0308 Z\u0335\u0321\u0337"},
		{"Chinese", "你好，世界"},
		{"control-free NUL-free mix", "tab\tnewline\nend"},
	}
	for i, tt := range texts {
		t.Run(tt.name, func(t *testing.T) {
			resp := h.send(ctx, &imlitev1.SendMsgRequest{ClientMsgId: fmt.Sprintf("t%d", i), RecvId: "bob", Content: tt.text, Ex: tt.text})
			got, err := h.svc.PullMsgBySeqs(h.as("bob"), &imlitev1.PullMsgBySeqsRequest{ConversationId: resp.GetConversationId(), Seqs: []int64{resp.GetSeq()}})
			if err != nil {
				t.Fatalf("PullMsgBySeqs: %v", err)
			}
			if len(got.GetMessages()) != 1 {
				t.Fatalf("got %d messages, want 1", len(got.GetMessages()))
			}
			m := got.GetMessages()[0]
			if m.GetContent() != tt.text || m.GetEx() != tt.text {
				t.Errorf("content = %q, ex = %q, want %q byte for byte", m.GetContent(), m.GetEx(), tt.text)
			}
		})
	}
}

func TestTransientMessageIsNotStored(t *testing.T) {
	h := newHarness(t)
	ctx := h.as("alice")
	resp := h.send(ctx, &imlitev1.SendMsgRequest{ClientMsgId: "typing-1", RecvId: "bob", Content: "typing", Options: &imlitev1.MsgOptions{Storage: proto.Bool(false)}})
	if resp.GetSeq() != 0 {
		t.Errorf("transient seq = %d, want 0", resp.GetSeq())
	}
	h.deliv.waitFor(t, "transient delivery", func(r *recorder) bool {
		for _, d := range r.deliveries {
			if d.msg.GetServerMsgId() == resp.GetServerMsgId() {
				return d.msg.GetSeq() == 0 && len(d.users) == 2
			}
		}
		return false
	})
	pulled, err := h.svc.PullMsg(ctx, &imlitev1.PullMsgRequest{ConversationId: "s:alice:bob"})
	if err != nil {
		t.Fatalf("PullMsg: %v", err)
	}
	if pulled.GetMaxSeq() != 0 || len(pulled.GetMessages()) != 0 {
		t.Errorf("after a transient send: max_seq %d, %d messages; want nothing stored", pulled.GetMaxSeq(), len(pulled.GetMessages()))
	}
}

func TestPushReachesMembersExceptSendingConnection(t *testing.T) {
	h := newHarness(t)
	h.createGroup("trio", "admin", "alice", "bob", "carol")
	ctx := server.WithConnID(h.as("alice"), "conn-7")
	resp := h.send(ctx, &imlitev1.SendMsgRequest{ClientMsgId: "hello", GroupId: "trio", Content: "hi all"})

	h.deliv.waitFor(t, "group delivery", func(r *recorder) bool { return len(r.deliveries) > 0 })
	h.deliv.mu.Lock()
	d := h.deliv.deliveries[0]
	h.deliv.mu.Unlock()
	if d.msg.GetSeq() != resp.GetSeq() {
		t.Errorf("delivered seq %d, want %d", d.msg.GetSeq(), resp.GetSeq())
	}
	want := map[string]bool{"admin": true, "alice": true, "bob": true, "carol": true}
	if len(d.users) != len(want) {
		t.Errorf("recipients = %v, want %v", d.users, want)
	}
	for _, u := range d.users {
		if !want[u] {
			t.Errorf("unexpected recipient %q", u)
		}
	}
	if d.exceptConn != "conn-7" {
		t.Errorf("except conn = %q, want the sending connection conn-7", d.exceptConn)
	}
}

// skippingAllocator hands out seqs that skip ahead once, like a counter that
// allocated seqs which were never stored before a crash.
type skippingAllocator struct {
	server.SeqAllocator
	mu      sync.Mutex
	skipped bool
}

func (a *skippingAllocator) Allocate(ctx context.Context, counts map[string]int64) (map[string]int64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.skipped {
		a.skipped = true
		bump := map[string]int64{}
		for c := range counts {
			bump[c] = 5
		}
		if _, err := a.SeqAllocator.Allocate(ctx, bump); err != nil {
			return nil, err
		}
	}
	return a.SeqAllocator.Allocate(ctx, counts)
}

func TestStoreStageRepairsSeqGap(t *testing.T) {
	h := newHarnessWith(t, harnessOptions{wrapSeqs: func(s server.SeqAllocator) server.SeqAllocator {
		return &skippingAllocator{SeqAllocator: s}
	}})
	ctx := h.as("alice")
	for i := 1; i <= 3; i++ {
		resp := h.send(ctx, &imlitev1.SendMsgRequest{ClientMsgId: fmt.Sprintf("g%d", i), RecvId: "bob", Content: "x"})
		if resp.GetSeq() != int64(i) {
			t.Fatalf("message %d got seq %d, want %d (no gap after skipped allocation)", i, resp.GetSeq(), i)
		}
	}
}

// effectsFailingStore stores the first append and then reports a failure,
// as a store without transactions does when it fails after its insert. It
// records the appends handed to ReapplyAppendEffects.
type effectsFailingStore struct {
	server.MessageStore
	mu        sync.Mutex
	failed    bool
	reapplied []server.Append
}

func (s *effectsFailingStore) AppendMessages(ctx context.Context, appends []server.Append) ([]error, error) {
	results, err := s.MessageStore.AppendMessages(ctx, appends)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && !s.failed {
		s.failed = true
		return nil, errors.New("update conversations: connection reset")
	}
	return results, err
}

func (s *effectsFailingStore) ReapplyAppendEffects(_ context.Context, appends []server.Append) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reapplied = append(s.reapplied, appends...)
	return nil
}

func TestStoreStageReappliesEffectsAfterFailedAppend(t *testing.T) {
	store := &effectsFailingStore{}
	h := newHarnessWith(t, harnessOptions{wrapMessages: func(m server.MessageStore) server.MessageStore {
		store.MessageStore = m
		return store
	}})
	ctx := h.as("alice")
	resp := h.send(ctx, &imlitev1.SendMsgRequest{ClientMsgId: "after-failure", RecvId: "bob", Content: "x"})
	if resp.GetSeq() != 1 {
		t.Errorf("seq = %d, want 1: the retry must find the stored message, not store it again", resp.GetSeq())
	}
	if got := pulledCount(t, h, ctx, "s:alice:bob"); got != 1 {
		t.Errorf("stored %d messages, want 1", got)
	}
	store.mu.Lock()
	defer store.mu.Unlock()
	if len(store.reapplied) != 1 || len(store.reapplied[0].Messages) != 1 || store.reapplied[0].Messages[0].GetServerMsgId() != resp.GetServerMsgId() {
		t.Errorf("ReapplyAppendEffects got %v, want one append with message %s", store.reapplied, resp.GetServerMsgId())
	}
}

func TestSendTimeoutCarriesServerMsgID(t *testing.T) {
	h := newHarnessWith(t, harnessOptions{timeout: 50 * time.Millisecond, wrapSeqs: func(s server.SeqAllocator) server.SeqAllocator {
		return blockingAllocator{}
	}})
	_, err := h.svc.SendMsg(h.as("alice"), &imlitev1.SendMsgRequest{ClientMsgId: "slow", RecvId: "bob", Content: "x"})
	wantCode(t, err, codes.DeadlineExceeded, "client_msg_id")
	ae := apierr.From(err)
	if ae.Metadata["server_msg_id"] == "" {
		t.Errorf("metadata = %v, want server_msg_id", ae.Metadata)
	}
}

// blockingAllocator never allocates, as when the seq backend hangs.
type blockingAllocator struct{}

func (blockingAllocator) Allocate(ctx context.Context, _ map[string]int64) (map[string]int64, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (blockingAllocator) Reset(context.Context, string, int64) error { return nil }

func TestRestartKeepsMessagesSeqsAndGroups(t *testing.T) {
	dir := t.TempDir()
	h := newHarnessWith(t, harnessOptions{dir: dir})
	h.createGroup("keep", "admin", "alice", "bob")
	for i := 1; i <= 3; i++ {
		h.send(h.as("alice"), &imlitev1.SendMsgRequest{ClientMsgId: fmt.Sprintf("k%d", i), GroupId: "keep", Content: fmt.Sprintf("msg %d", i)})
	}
	h.stop()

	h2 := newHarnessWith(t, harnessOptions{dir: dir})
	resp := h2.send(h2.as("bob"), &imlitev1.SendMsgRequest{ClientMsgId: "after", GroupId: "keep", Content: "after restart"})
	if resp.GetSeq() != 4 {
		t.Errorf("first seq after restart = %d, want 4", resp.GetSeq())
	}
	pulled, err := h2.svc.PullMsg(h2.as("alice"), &imlitev1.PullMsgRequest{ConversationId: "g:keep"})
	if err != nil {
		t.Fatalf("PullMsg after restart: %v", err)
	}
	var got []string
	for _, m := range pulled.GetMessages() {
		got = append(got, m.GetContent())
	}
	want := []string{"msg 1", "msg 2", "msg 3", "after restart"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("pulled %q, want %q", got, want)
	}
	members, err := h2.svc.ListGroupMembers(h2.asAdmin("admin"), &imlitev1.ListGroupMembersRequest{GroupId: "keep"})
	if err != nil {
		t.Fatalf("ListGroupMembers after restart: %v", err)
	}
	if len(members.GetMembers()) != 3 {
		t.Errorf("members after restart = %v, want admin, alice, bob", members.GetMembers())
	}
	// A retry of a send from before the restart is still recognised.
	again := h2.send(h2.as("alice"), &imlitev1.SendMsgRequest{ClientMsgId: "k2", GroupId: "keep", Content: "msg 2"})
	if again.GetSeq() != 2 {
		t.Errorf("retry after restart got seq %d, want the original 2", again.GetSeq())
	}
}
