package server_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/apierr"
	"github.com/imlite/imlite/server/auth"
	"github.com/imlite/imlite/server/boltstore"
	"github.com/imlite/imlite/server/mempresence"
	"github.com/imlite/imlite/server/memqueue"
)

const testSecret = "0123456789abcdef0123456789abcdef-test"

// harness runs a Service over the embedded backends in a temporary
// directory, with a recording deliverer.
type harness struct {
	t      *testing.T
	dir    string
	store  *boltstore.Store
	svc    *server.Service
	signer *auth.Signer
	deliv  *recorder
	stop   func()
}

type harnessOptions struct {
	dir    string
	limits server.Limits
	// wrapSeqs replaces the seq allocator, for fault injection.
	wrapSeqs func(server.SeqAllocator) server.SeqAllocator
	// wrapMessages replaces the message store, for fault injection.
	wrapMessages func(server.MessageStore) server.MessageStore
	timeout      time.Duration
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessWith(t, harnessOptions{})
}

func newHarnessWith(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	store, err := boltstore.Open(filepath.Join(o.dir, "imlite.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	signer, err := auth.NewSigner([]byte(testSecret), time.Hour)
	if err != nil {
		t.Fatalf("new signer: %v", err)
	}
	var seqs server.SeqAllocator = store
	if o.wrapSeqs != nil {
		seqs = o.wrapSeqs(store)
	}
	var messages server.MessageStore = store
	if o.wrapMessages != nil {
		messages = o.wrapMessages(store)
	}
	bus := memqueue.New(memqueue.Options{})
	svc, err := server.New(server.Backends{
		Messages: messages, Seqs: seqs, Conversations: store, Groups: store, Revocations: store,
		Presence: mempresence.New(), MsgProducer: bus, MsgConsumer: bus, PushProducer: bus, PushConsumer: bus,
	}, signer, server.Options{PodName: "test-pod", Limits: o.limits, SendTimeout: o.timeout})
	if err != nil {
		t.Fatalf("new service: %v", err)
	}
	rec := newRecorder()
	svc.SetDeliverer(rec)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = svc.Run(ctx)
	}()
	h := &harness{t: t, dir: o.dir, store: store, svc: svc, signer: signer, deliv: rec}
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			<-done
			store.Close()
		})
	}
	t.Cleanup(h.stop)
	return h
}

// as returns a context carrying a fresh user token.
func (h *harness) as(userID string) context.Context {
	return h.asRole(userID, "web", imlitev1.Role_ROLE_USER)
}

func (h *harness) asAdmin(userID string) context.Context {
	return h.asRole(userID, "web", imlitev1.Role_ROLE_ADMIN)
}

func (h *harness) asRole(userID, platform string, role imlitev1.Role) context.Context {
	h.t.Helper()
	tok, _, err := h.signer.Issue(userID, platform, role, 0)
	if err != nil {
		h.t.Fatalf("issue token: %v", err)
	}
	return auth.WithAuthorization(context.Background(), "Bearer "+tok)
}

// send sends a text message and fails the test on error.
func (h *harness) send(ctx context.Context, req *imlitev1.SendMsgRequest) *imlitev1.SendMsgResponse {
	h.t.Helper()
	resp, err := h.svc.SendMsg(ctx, req)
	if err != nil {
		h.t.Fatalf("SendMsg(%v): %v", req, err)
	}
	return resp
}

func (h *harness) createGroup(id, owner string, members ...string) {
	h.t.Helper()
	_, err := h.svc.CreateGroup(h.asAdmin("admin"), &imlitev1.CreateGroupRequest{GroupId: id, OwnerId: owner, MemberIds: members})
	if err != nil {
		h.t.Fatalf("CreateGroup(%s): %v", id, err)
	}
}

// wantCode fails unless err carries code and its message contains every part.
func wantCode(t *testing.T, err error, code codes.Code, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("error = nil, want %v", code)
	}
	var ae *apierr.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T) is not an *apierr.Error", err, err)
	}
	if ae.Code != code {
		t.Fatalf("code = %v (%q), want %v", ae.Code, ae.Message, code)
	}
	for _, p := range parts {
		if !containsFold(ae.Message, p) {
			t.Errorf("message %q does not mention %q", ae.Message, p)
		}
	}
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// recorder is a Deliverer that records what the push stage hands it.
type recorder struct {
	mu          sync.Mutex
	deliveries  []delivery
	disconnects []server.Disconnect
	notify      chan struct{}
}

type delivery struct {
	msg        *imlitev1.Message
	users      []string
	exceptConn string
}

func newRecorder() *recorder { return &recorder{notify: make(chan struct{}, 1)} }

func (r *recorder) Deliver(_ context.Context, msg *imlitev1.Message, userIDs []string, exceptConn string, _ time.Time) {
	r.mu.Lock()
	r.deliveries = append(r.deliveries, delivery{msg: msg, users: append([]string(nil), userIDs...), exceptConn: exceptConn})
	r.mu.Unlock()
	r.poke()
}

func (r *recorder) Disconnect(d server.Disconnect) {
	r.mu.Lock()
	r.disconnects = append(r.disconnects, d)
	r.mu.Unlock()
	r.poke()
}

func (r *recorder) poke() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// waitFor polls cond under the lock until it holds or 5s pass.
func (r *recorder) waitFor(t *testing.T, what string, cond func(r *recorder) bool) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		r.mu.Lock()
		ok := cond(r)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.notify:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
