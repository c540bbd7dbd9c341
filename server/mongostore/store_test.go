package mongostore

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/internal/testenv"
	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/storetest"
)

const testDatabase = "imlite_test"

// openStore opens a store on uri and closes it when the test ends.
func openStore(t *testing.T, uri string, timeout time.Duration) *Store {
	t.Helper()
	s, err := Open(t.Context(), Config{URI: uri, Database: testDatabase, Timeout: timeout, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Open(%s): %v", uri, err)
	}
	t.Cleanup(func() {
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// startStore starts FerretDB and opens a store on it with a 5s timeout.
func startStore(t *testing.T) (*Store, *testenv.FerretDB) {
	t.Helper()
	f := testenv.StartFerretDB(t)
	return openStore(t, f.URI(), 5*time.Second), f
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// The suites share one store per interface, as pods share one database.

func TestMessageStore(t *testing.T) {
	s, _ := startStore(t)
	storetest.TestMessageStore(t, func(*testing.T) (server.MessageStore, server.ConversationStore) { return s, s })
}

func TestConversationStore(t *testing.T) {
	s, _ := startStore(t)
	storetest.TestConversationStore(t, func(*testing.T) server.ConversationStore { return s })
}

func TestGroupStore(t *testing.T) {
	s, _ := startStore(t)
	storetest.TestGroupStore(t, func(*testing.T) server.GroupStore { return s })
}

func TestRevocationStore(t *testing.T) {
	s, _ := startStore(t)
	storetest.TestRevocationStore(t, func(*testing.T) server.RevocationStore { return s })
}

func TestRevocationsSince(t *testing.T) {
	s, _ := startStore(t)
	ctx := t.Context()
	base := time.Now().Truncate(time.Microsecond)
	for _, r := range []server.Revocation{
		{UserID: "old", Platform: "web", At: base.Add(-2 * time.Hour)},
		{UserID: "recent", Platform: "ios", At: base.Add(-time.Minute)},
		{UserID: "everywhere", At: base},
	} {
		var platforms []string
		if r.Platform != "" {
			platforms = []string{r.Platform}
		}
		if err := s.Revoke(ctx, r.UserID, platforms, r.At); err != nil {
			t.Fatalf("Revoke(%s): %v", r.UserID, err)
		}
	}
	got, err := s.RevocationsSince(ctx, base.Add(-time.Hour))
	if err != nil {
		t.Fatalf("RevocationsSince: %v", err)
	}
	want := map[string]server.Revocation{
		"recent":     {UserID: "recent", Platform: "ios", At: base.Add(-time.Minute).UTC()},
		"everywhere": {UserID: "everywhere", At: base.UTC()},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d revocations %v, want %d (the one older than since left out)", len(got), got, len(want))
	}
	for _, r := range got {
		if w, ok := want[r.UserID]; !ok || r.Platform != w.Platform || !r.At.Equal(w.At) {
			t.Errorf("revocation %+v, want %+v", r, w)
		}
	}
}

func TestOpenCreatesIndexes(t *testing.T) {
	f := testenv.StartFerretDB(t)
	first := openStore(t, f.URI(), 5*time.Second)
	// A second Open of the same database, as a second pod does, must keep
	// the indexes as they are.
	second := openStore(t, f.URI(), 5*time.Second)

	want := []struct {
		coll string
		name string
		keys bson.D
	}{
		{collMessages, indexConversationSeq, bson.D{{Key: "conversation_id", Value: int32(1)}, {Key: "seq", Value: int32(1)}}},
		{collMessages, indexSenderClientMsg, bson.D{{Key: "sender_id", Value: int32(1)}, {Key: "client_msg_id", Value: int32(1)}}},
		{collUserConversations, indexUserConversation, bson.D{{Key: "user_id", Value: int32(1)}, {Key: "conversation_id", Value: int32(1)}}},
		{collGroupMembers, indexGroupUser, bson.D{{Key: "group_id", Value: int32(1)}, {Key: "user_id", Value: int32(1)}}},
	}
	for _, s := range []*Store{first, second} {
		for _, w := range want {
			t.Run(w.coll+"/"+w.name, func(t *testing.T) {
				indexes := listIndexes(t, s, w.coll)
				got, ok := indexes[w.name]
				if !ok {
					t.Fatalf("index %s of %s: missing; indexes are %v", w.name, w.coll, indexes)
				}
				if unique, _ := got.Lookup("unique").BooleanOK(); !unique {
					t.Errorf("index %s of %s: not unique: %v", w.name, w.coll, got)
				}
				keys, err := bson.Marshal(w.keys)
				if err != nil {
					t.Fatalf("marshal keys: %v", err)
				}
				if gotKeys := got.Lookup("key").Document(); !bytesEqualDoc(gotKeys, keys) {
					t.Errorf("index %s of %s: keys %v, want %v", w.name, w.coll, gotKeys, bson.Raw(keys))
				}
			})
		}
	}
	for _, coll := range []string{collMessages, collUserConversations, collGroupMembers} {
		// _id plus the indexes above, each once after two Opens.
		wantCount := 1
		for _, w := range want {
			if w.coll == coll {
				wantCount++
			}
		}
		if got := len(listIndexes(t, second, coll)); got != wantCount {
			t.Errorf("indexes of %s after two Opens: got %d, want %d", coll, got, wantCount)
		}
	}
}

// listIndexes returns the index descriptions of a collection by name.
func listIndexes(t *testing.T, s *Store, coll string) map[string]bson.Raw {
	t.Helper()
	cur, err := s.db.Collection(coll).Indexes().List(t.Context())
	if err != nil {
		t.Fatalf("list indexes of %s: %v", coll, err)
	}
	var specs []bson.Raw
	if err := cur.All(t.Context(), &specs); err != nil {
		t.Fatalf("read indexes of %s: %v", coll, err)
	}
	out := make(map[string]bson.Raw, len(specs))
	for _, spec := range specs {
		out[spec.Lookup("name").StringValue()] = spec
	}
	return out
}

// bytesEqualDoc compares two documents field by field, ignoring how each
// number is typed, because servers store index key directions as int32,
// int64 or double.
func bytesEqualDoc(got bson.Raw, want []byte) bool {
	gotElems, err := got.Elements()
	if err != nil {
		return false
	}
	wantElems, err := bson.Raw(want).Elements()
	if err != nil || len(gotElems) != len(wantElems) {
		return false
	}
	for i := range gotElems {
		g, w := gotElems[i], wantElems[i]
		gv, gok := g.Value().AsInt64OK()
		wv, wok := w.Value().AsInt64OK()
		if g.Key() != w.Key() || !gok || !wok || gv != wv {
			return false
		}
	}
	return true
}

func TestOpenRejectsIndexConflict(t *testing.T) {
	f := testenv.StartFerretDB(t)
	s := openStore(t, f.URI(), 5*time.Second)
	// An index under the store's name but with other keys, as an operator
	// might leave behind, must stop Open instead of being ignored.
	const conflictDB = "imlite_conflict"
	conflicting := mongo.IndexModel{
		Keys:    bson.D{{Key: "seq", Value: 1}},
		Options: options.Index().SetName(indexConversationSeq).SetUnique(true),
	}
	_, err := s.client.Database(conflictDB).Collection(collMessages).Indexes().CreateOne(t.Context(), conflicting)
	if err != nil {
		t.Fatalf("create conflicting index: %v", err)
	}

	other, err := Open(t.Context(), Config{URI: f.URI(), Database: conflictDB, Timeout: 5 * time.Second, Logger: testLogger(t)})
	if err == nil {
		_ = other.Close(context.Background())
		t.Fatal("Open with a conflicting index named conversation_seq: got nil error, want an error")
	}
	if !strings.Contains(err.Error(), "create indexes of messages") {
		t.Errorf("Open error %q does not name the collection whose indexes failed", err)
	}
	if errors.Is(err, server.ErrUnavailable) {
		t.Errorf("Open error %v wraps ErrUnavailable, want a permanent failure", err)
	}
}

func TestOpenInvalidConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "empty URI", cfg: Config{Database: "db"}, want: "URI is empty"},
		{name: "empty database", cfg: Config{URI: "mongodb://127.0.0.1:1"}, want: "database name is empty"},
		{name: "dot in database", cfg: Config{URI: "mongodb://127.0.0.1:1", Database: "im.lite"}, want: `database name "im.lite"`},
		{name: "negative timeout", cfg: Config{URI: "mongodb://127.0.0.1:1", Database: "db", Timeout: -time.Second}, want: "timeout -1s is negative"},
		{name: "not a mongodb URI", cfg: Config{URI: "http://127.0.0.1:1", Database: "db"}, want: "scheme"},
		{name: "invalid escape in password", cfg: Config{URI: "mongodb://user:secret%zz@127.0.0.1:1/", Database: "db"}, want: "invalid password"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(t.Context(), tc.cfg)
			if err == nil {
				_ = s.Close(context.Background())
				t.Fatalf("Open: got nil error, want one containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open error %q does not contain %q", err, tc.want)
			}
			if errors.Is(err, server.ErrUnavailable) {
				t.Errorf("Open error %v wraps ErrUnavailable, want a configuration error", err)
			}
			if strings.Contains(err.Error(), "%zz") || strings.Contains(err.Error(), "secret") {
				t.Errorf("Open error %q shows part of the password", err)
			}
		})
	}
}

// freeLoopbackAddr returns a 127.0.0.1 address on which nothing listens.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatalf("close listener: %v", err)
	}
	return addr
}

func TestOpenUnreachable(t *testing.T) {
	uri := "mongodb://" + freeLoopbackAddr(t) + "/"
	err := callWithin(t, 15*time.Second, func(ctx context.Context) error {
		s, err := Open(ctx, Config{URI: uri, Database: testDatabase, Timeout: time.Second, Logger: testLogger(t)})
		if err == nil {
			_ = s.Close(context.Background())
		}
		return err
	})
	if !errors.Is(err, server.ErrUnavailable) {
		t.Errorf("Open with no server at %s: got %v, want an error wrapping ErrUnavailable", uri, err)
	}
}

// callWithin runs call and returns its error, failing the test when call
// has not returned after d, which means it hangs.
func callWithin(t *testing.T, d time.Duration, call func(ctx context.Context) error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- call(t.Context()) }()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		t.Fatalf("call did not return within %v", d)
		return nil
	}
}

// testMessage returns a message of conv from sender with ids derived from
// tag.
func testMessage(conv, sender string, seq int64, tag string) *imlitev1.Message {
	ref, err := server.ParseConversationID(conv)
	if err != nil {
		panic("invalid conversation id " + conv + ": " + err.Error())
	}
	m := &imlitev1.Message{
		ServerMsgId:      "srv-" + tag,
		ClientMsgId:      "cli-" + tag,
		SenderId:         sender,
		SenderPlatform:   "web",
		ConversationId:   conv,
		ConversationType: ref.Type,
		GroupId:          ref.GroupID,
		Seq:              seq,
		ContentType:      1,
		Content:          "content " + tag,
		ClientTime:       1_700_000_000_000 + seq,
		ServerTime:       1_700_000_000_100 + seq,
	}
	if ref.Type == imlitev1.ConversationType_CONVERSATION_TYPE_SINGLE {
		m.RecvId = ref.Peer(sender)
	}
	return m
}

func appendOne(ctx context.Context, s *Store, conv string, msgs ...*imlitev1.Message) error {
	results, err := s.AppendMessages(ctx, []server.Append{{ConversationID: conv, Messages: msgs}})
	if err != nil {
		return err
	}
	return results[0]
}

// storeCall is one repository call, used in tables of failure cases.
type storeCall struct {
	name string
	call func(ctx context.Context, s *Store) error
}

// storeCalls returns a call of each kind of operation: reads and writes of
// each collection.
func storeCalls(conv, groupID string) []storeCall {
	return []storeCall{
		{"Ping", func(ctx context.Context, s *Store) error { return s.Ping(ctx) }},
		{"AppendMessages", func(ctx context.Context, s *Store) error {
			return appendOne(ctx, s, conv, testMessage(conv, "alice", 3, "third"))
		}},
		{"FindByClientMsgIDs", func(ctx context.Context, s *Store) error {
			_, err := s.FindByClientMsgIDs(ctx, []server.ClientMsgKey{{SenderID: "alice", ClientMsgID: "cli-first"}})
			return err
		}},
		{"MaxSeqs", func(ctx context.Context, s *Store) error {
			_, err := s.MaxSeqs(ctx, []string{conv})
			return err
		}},
		{"RangeMessages", func(ctx context.Context, s *Store) error {
			_, err := s.RangeMessages(ctx, conv, 1, 10, 10)
			return err
		}},
		{"UpdateUserConversation", func(ctx context.Context, s *Store) error {
			readSeq := int64(1)
			_, err := s.UpdateUserConversation(ctx, "alice", conv, server.ConversationUpdate{ReadSeq: &readSeq})
			return err
		}},
		{"ListUserConversations", func(ctx context.Context, s *Store) error {
			_, err := s.ListUserConversations(ctx, "alice")
			return err
		}},
		{"GetGroup", func(ctx context.Context, s *Store) error {
			_, err := s.GetGroup(ctx, groupID)
			return err
		}},
		{"AddGroupMembers", func(ctx context.Context, s *Store) error {
			_, _, err := s.AddGroupMembers(ctx, groupID, []server.GroupMember{{UserID: "carol", JoinedAt: time.UnixMilli(1_700_000_000_000)}}, 100)
			return err
		}},
	}
}

// seedStore stores two messages of conv and a group, for storeCalls.
func seedStore(t *testing.T, s *Store, conv, groupID string) {
	t.Helper()
	if err := appendOne(t.Context(), s, conv, testMessage(conv, "alice", 1, "first"), testMessage(conv, "bob", 2, "second")); err != nil {
		t.Fatalf("append seed messages: %v", err)
	}
	g := server.Group{ID: groupID, Name: "team", OwnerID: "alice", CreatedAt: time.UnixMilli(1_700_000_000_000)}
	if err := s.CreateGroup(t.Context(), g, []server.GroupMember{{UserID: "alice", JoinedAt: g.CreatedAt}}); err != nil {
		t.Fatalf("create seed group: %v", err)
	}
}

func TestBackendStoppedAndRestarted(t *testing.T) {
	f := testenv.StartFerretDB(t)
	s := openStore(t, f.URI(), time.Second)
	conv := server.SingleConversationID("alice", "bob")
	seedStore(t, s, conv, "team")

	f.Stop()
	// The group returns once its parallel subtests are done.
	t.Run("stopped", func(t *testing.T) {
		for _, c := range storeCalls(conv, "team") {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				err := callWithin(t, 15*time.Second, func(ctx context.Context) error { return c.call(ctx, s) })
				if !errors.Is(err, server.ErrUnavailable) {
					t.Errorf("%s with FerretDB stopped: got %v, want an error wrapping ErrUnavailable", c.name, err)
				}
			})
		}
	})

	f.Restart()
	waitForPing(t, s, 30*time.Second)
	for _, c := range storeCalls(conv, "team") {
		t.Run("restarted/"+c.name, func(t *testing.T) {
			if err := c.call(t.Context(), s); err != nil {
				t.Errorf("%s after FerretDB restarted: %v", c.name, err)
			}
		})
	}
	got, err := s.RangeMessages(t.Context(), conv, 1, 10, 10)
	if err != nil {
		t.Fatalf("RangeMessages after restart: %v", err)
	}
	if seqs := seqsOf(got); !slices.Equal(seqs, []int64{1, 2, 3}) {
		t.Errorf("seqs after restart: got %v, want [1 2 3]: the two seeded before the stop and one appended after", seqs)
	}
}

// waitForPing waits until Ping succeeds, failing the test after d.
func waitForPing(t *testing.T, s *Store, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := s.Ping(t.Context())
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ping still fails %v after the restart: %v", d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func seqsOf(msgs []*imlitev1.Message) []int64 {
	out := make([]int64, len(msgs))
	for i, m := range msgs {
		out[i] = m.GetSeq()
	}
	return out
}

// stallProxy forwards TCP connections to a target until stall is called.
// From then on it forwards nothing, like a server that hangs without
// closing its connections.
type stallProxy struct {
	ln      net.Listener
	target  string
	stalled chan struct{}
	done    chan struct{}
	once    sync.Once

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startStallProxy(t *testing.T, target string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	p := &stallProxy{ln: ln, target: target, stalled: make(chan struct{}), done: make(chan struct{})}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func (p *stallProxy) addr() string { return p.ln.Addr().String() }

func (p *stallProxy) stall() { p.once.Do(func() { close(p.stalled) }) }

func (p *stallProxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		backend, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, backend)
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(backend, client) })
		p.wg.Go(func() { p.pipe(client, backend) })
	}
}

// pipe copies src to dst until either fails or the proxy stalls.
func (p *stallProxy) pipe(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			select {
			case <-p.stalled:
				<-p.done
				return
			default:
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *stallProxy) close() {
	close(p.done)
	_ = p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func TestTimeoutBoundsCalls(t *testing.T) {
	f := testenv.StartFerretDB(t)
	direct := openStore(t, f.URI(), 5*time.Second)
	conv := server.SingleConversationID("alice", "bob")
	seedStore(t, direct, conv, "team")

	// The caller's context has no deadline, and the URI gives the driver's
	// connect timeout and server monitor 20s and more, so within the
	// callWithin limit only the store's timeout of 1s can end a call to the
	// stalled server.
	proxy := startStallProxy(t, f.Addr())
	uri := "mongodb://" + proxy.addr() + "/?directConnection=true&connectTimeoutMS=20000&heartbeatFrequencyMS=60000"
	s := openStore(t, uri, time.Second)
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping through the proxy before the stall: %v", err)
	}

	proxy.stall()
	for _, c := range storeCalls(conv, "team") {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			err := callWithin(t, 10*time.Second, func(context.Context) error { return c.call(context.Background(), s) })
			if !errors.Is(err, server.ErrUnavailable) {
				t.Errorf("%s on a stalled server: got %v, want an error wrapping ErrUnavailable", c.name, err)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s on a stalled server: got %v, want an error wrapping context.DeadlineExceeded from the store timeout", c.name, err)
			}
		})
	}
}

func TestCanceledContext(t *testing.T) {
	s, _ := startStore(t)
	conv := server.SingleConversationID("alice", "bob")
	seedStore(t, s, conv, "team")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for _, c := range storeCalls(conv, "team") {
		t.Run(c.name, func(t *testing.T) {
			err := c.call(ctx, s)
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s with a canceled context: got %v, want context.Canceled", c.name, err)
			}
			if errors.Is(err, server.ErrUnavailable) {
				t.Errorf("%s with a canceled context: %v wraps ErrUnavailable, but the caller gave up, not the backend", c.name, err)
			}
		})
	}
	maxSeqs, err := s.MaxSeqs(t.Context(), []string{conv})
	if err != nil {
		t.Fatalf("MaxSeqs: %v", err)
	}
	if maxSeqs[conv] != 2 {
		t.Errorf("max seq after a canceled append: got %d, want 2 as seeded", maxSeqs[conv])
	}
}

func TestClosedStore(t *testing.T) {
	f := testenv.StartFerretDB(t)
	s, err := Open(t.Context(), Config{URI: f.URI(), Database: testDatabase, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Errorf("Ping of an open store: %v", err)
	}
	if err := s.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(t.Context()); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	err = s.Ping(t.Context())
	if err == nil || errors.Is(err, server.ErrUnavailable) {
		t.Errorf("Ping of a closed store: got %v, want a failure that is not ErrUnavailable", err)
	}
}

// requireAtomicUpdates skips a test that needs atomic updates of one
// document, which MongoDB has and FerretDB v1.24.2 lacks. FerretDB's
// findAndModify and update read the document, apply the operators and
// write the result back, so concurrent updates can overwrite each other.
func requireAtomicUpdates(t *testing.T, s *Store) {
	t.Helper()
	var info bson.Raw
	if err := s.db.RunCommand(t.Context(), bson.D{{Key: "buildInfo", Value: 1}}).Decode(&info); err != nil {
		t.Fatalf("buildInfo: %v", err)
	}
	if v, err := info.LookupErr("ferretdbVersion"); err == nil {
		t.Skipf("FerretDB (version %v) does not apply concurrent updates of one document atomically; this test needs MongoDB", v)
	}
}
