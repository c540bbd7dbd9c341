package ws_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/internal/wstest"
	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/auth"
	"github.com/imlite/imlite/server/boltstore"
	"github.com/imlite/imlite/server/mempresence"
	"github.com/imlite/imlite/server/memqueue"
	"github.com/imlite/imlite/ws"
)

// stallingMessages is a message store whose client_msg_id lookups hang
// until the caller gives up while stall is set, as a saturated database
// does.
type stallingMessages struct {
	server.MessageStore
	stall atomic.Bool
}

func (s *stallingMessages) FindByClientMsgIDs(ctx context.Context, keys []server.ClientMsgKey) (map[server.ClientMsgKey]*imlitev1.Message, error) {
	if s.stall.Load() {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return s.MessageStore.FindByClientMsgIDs(ctx, keys)
}

// TestStalledStoreQueuedSendsFailFast pipelines sends while the
// store hangs. Each send must get an error reply within the send timeout
// of its arrival, not one full timeout after the other, and a retry with
// the same client_msg_id must be stored once the store responds again.
func TestStalledStoreQueuedSendsFailFast(t *testing.T) {
	const sendTimeout = 300 * time.Millisecond
	store, err := boltstore.Open(filepath.Join(t.TempDir(), "imlite.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	msgs := &stallingMessages{MessageStore: store}
	signer, err := auth.NewSigner([]byte(testSecret), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	bus := memqueue.New(memqueue.Options{})
	svc, err := server.New(server.Backends{
		Messages: msgs, Seqs: store, Conversations: store, Groups: store, Revocations: store,
		Presence: mempresence.New(), MsgProducer: bus, MsgConsumer: bus, PushProducer: bus, PushConsumer: bus,
	}, signer, server.Options{PodName: "stall-pod", SendTimeout: sendTimeout, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		_ = svc.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-runDone
	})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	hub, err := ws.NewHub(svc, ws.Options{}, log)
	if err != nil {
		t.Fatal(err)
	}
	srv := ws.NewServer(hub)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
	})

	tok, _, err := signer.Issue("alice", "web", imlitev1.Role_ROLE_USER, 0)
	if err != nil {
		t.Fatal(err)
	}
	alice := wstest.MustDial(t, "ws://"+ln.Addr().String()+"/ws", tok, ws.Binary)

	msgs.stall.Store(true)
	const n = 10
	ids := make([]string, n)
	for i := range ids {
		ids[i] = alice.Send(&imlitev1.Frame{Body: &imlitev1.Frame_SendMsg{SendMsg: &imlitev1.SendMsgRequest{
			ClientMsgId: fmt.Sprintf("stalled-%d", i), RecvId: "bob", Content: "hello",
		}}})
	}
	// Without the arrival deadline, the tenth reply would come after ten
	// send timeouts. Reply waits 10 s, far more than the one or two send
	// timeouts that every reply needs here.
	queuedFailures := 0
	for i, id := range ids {
		e := alice.Reply(id).GetError()
		if e == nil {
			t.Fatalf("send %d succeeded while the store stalled", i)
		}
		if codes.Code(e.GetCode()) == codes.DeadlineExceeded && strings.Contains(e.GetMessage(), "behind earlier requests") {
			queuedFailures++
		}
	}
	if queuedFailures == 0 {
		t.Fatal("no queued send failed at once with a message about waiting behind earlier requests")
	}

	msgs.stall.Store(false)
	resp := alice.SendText("bob", "", "stalled-0", "hello")
	if resp.GetSeq() != 1 {
		t.Fatalf("retry after the stall: seq %d, want 1 (the stalled sends must not have been stored)", resp.GetSeq())
	}
	again := alice.SendText("bob", "", "stalled-0", "hello")
	if again.GetServerMsgId() != resp.GetServerMsgId() || again.GetSeq() != resp.GetSeq() {
		t.Fatalf("second retry: got %s seq %d, want the stored %s seq %d", again.GetServerMsgId(), again.GetSeq(), resp.GetServerMsgId(), resp.GetSeq())
	}
}
