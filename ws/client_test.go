package ws_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server/app"
	"github.com/imlite/imlite/server/auth"
	"github.com/imlite/imlite/server/config"
	"github.com/imlite/imlite/ws"
)

const testSecret = "ws-test-secret-0123456789abcdef012345"

// env is one running imlite process for a test.
type env struct {
	t      *testing.T
	app    *app.App
	signer *auth.Signer
}

// startEnv runs an embedded imlite on free ports; extra is appended to the
// Websocket section of the configuration.
func startEnv(t *testing.T, websocketExtra string) *env {
	t.Helper()
	yaml := fmt.Sprintf(`
ListenOn: 127.0.0.1:0
Http: {Host: 127.0.0.1, Port: 0}
Websocket:
  Host: 127.0.0.1
  Port: 0
%s
Auth: {AccessSecret: %s}
Embedded: {Dir: %s}
Log: {Level: error}
`, indent(websocketExtra), testSecret, t.TempDir())
	cfg, err := config.Parse([]byte(yaml), func(string) string { return "" })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		cancel()
		t.Fatalf("app.New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	signer, err := auth.NewSigner([]byte(testSecret), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, app: a, signer: signer}
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n")
}

func (e *env) token(user, platform string, admin bool) string {
	e.t.Helper()
	role := imlitev1.Role_ROLE_USER
	if admin {
		role = imlitev1.Role_ROLE_ADMIN
	}
	tok, _, err := e.signer.Issue(user, platform, role, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func (e *env) url(query string) string {
	return "ws://" + e.app.WebsocketAddr() + "/ws?" + query
}

// client is a test websocket client that reads frames on a goroutine.
type client struct {
	t    *testing.T
	conn *websocket.Conn
	enc  ws.Encoding
	next atomic.Int64

	// writeMu serializes writes, which gorilla requires.
	writeMu sync.Mutex
	// pings counts websocket pings; ignorePings stops answering them.
	pings       atomic.Int64
	ignorePings atomic.Bool

	mu     sync.Mutex
	frames []*imlitev1.Frame
	// closeErr is set when the read loop ends.
	closeErr error
	notify   chan struct{}
	done     chan struct{}
}

func (e *env) dial(user, platform string) *client {
	e.t.Helper()
	return e.dialWith(e.token(user, platform, false), ws.Binary)
}

func (e *env) dialWith(token string, enc ws.Encoding) *client {
	e.t.Helper()
	c, resp, err := e.tryDial(token, enc)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		e.t.Fatalf("dial: %v (HTTP %d)", err, status)
	}
	return c
}

func (e *env) tryDial(token string, enc ws.Encoding) (*client, *http.Response, error) {
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	conn, resp, err := websocket.DefaultDialer.Dial(e.url("encoding="+enc.String()), h)
	if err != nil {
		return nil, resp, err
	}
	c := &client{t: e.t, conn: conn, enc: enc, notify: make(chan struct{}, 1), done: make(chan struct{})}
	conn.SetPingHandler(func(data string) error {
		c.pings.Add(1)
		if c.ignorePings.Load() {
			return nil
		}
		c.writeMu.Lock()
		defer c.writeMu.Unlock()
		return conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	go c.readLoop()
	e.t.Cleanup(func() { conn.Close() })
	return c, resp, nil
}

func (c *client) readLoop() {
	defer close(c.done)
	for {
		mt, data, err := c.conn.ReadMessage()
		if err != nil {
			c.mu.Lock()
			c.closeErr = err
			c.mu.Unlock()
			c.poke()
			return
		}
		enc := ws.Binary
		if mt == websocket.TextMessage {
			enc = ws.Text
		}
		f, err := ws.DecodeFrame(enc, data)
		if err != nil && f == nil {
			c.t.Errorf("client cannot decode server frame %q: %v", data, err)
			continue
		}
		c.mu.Lock()
		c.frames = append(c.frames, f)
		c.mu.Unlock()
		c.poke()
	}
}

func (c *client) poke() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// send writes a frame with a fresh req_id and returns the id.
func (c *client) send(f *imlitev1.Frame) string {
	c.t.Helper()
	f.ReqId = fmt.Sprintf("r%d", c.next.Add(1))
	data, err := ws.EncodeFrame(c.enc, f)
	if err != nil {
		c.t.Fatal(err)
	}
	mt := websocket.BinaryMessage
	if c.enc == ws.Text {
		mt = websocket.TextMessage
	}
	c.writeMu.Lock()
	err = c.conn.WriteMessage(mt, data)
	c.writeMu.Unlock()
	if err != nil {
		c.t.Fatalf("write frame: %v", err)
	}
	return f.ReqId
}

// wait returns the first frame matching pred, waiting up to d.
func (c *client) wait(d time.Duration, what string, pred func(*imlitev1.Frame) bool) *imlitev1.Frame {
	c.t.Helper()
	deadline := time.After(d)
	for {
		c.mu.Lock()
		for _, f := range c.frames {
			if pred(f) {
				c.mu.Unlock()
				return f
			}
		}
		closeErr := c.closeErr
		c.mu.Unlock()
		if closeErr != nil {
			c.t.Fatalf("connection closed (%v) while waiting for %s", closeErr, what)
		}
		select {
		case <-c.notify:
		case <-deadline:
			c.t.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}

// reply waits for the reply to reqID.
func (c *client) reply(reqID string) *imlitev1.Frame {
	c.t.Helper()
	return c.wait(5*time.Second, "reply to "+reqID, func(f *imlitev1.Frame) bool { return f.GetReqId() == reqID })
}

// call sends a request and returns its reply, failing on an error frame.
func (c *client) call(f *imlitev1.Frame) *imlitev1.Frame {
	c.t.Helper()
	r := c.reply(c.send(f))
	if e := r.GetError(); e != nil {
		c.t.Fatalf("request %v failed: code %d: %s", f.GetBody(), e.GetCode(), e.GetMessage())
	}
	return r
}

func (c *client) sendText(to, group, clientMsgID, content string) *imlitev1.SendMsgResponse {
	c.t.Helper()
	req := &imlitev1.SendMsgRequest{ClientMsgId: clientMsgID, RecvId: to, GroupId: group, Content: content}
	return c.call(&imlitev1.Frame{Body: &imlitev1.Frame_SendMsg{SendMsg: req}}).GetSendMsgResp()
}

// pushes returns the pushed messages received so far.
func (c *client) pushes() []*imlitev1.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*imlitev1.Message
	for _, f := range c.frames {
		if m := f.GetPush().GetMsg(); m != nil {
			out = append(out, m)
		}
	}
	return out
}

// waitPushes waits until at least n pushes arrived.
func (c *client) waitPushes(n int, d time.Duration) []*imlitev1.Message {
	c.t.Helper()
	deadline := time.After(d)
	for {
		if got := c.pushes(); len(got) >= n {
			return got
		}
		select {
		case <-c.notify:
		case <-deadline:
			c.t.Fatalf("timed out after %v waiting for %d pushes, got %d", d, n, len(c.pushes()))
		case <-c.done:
			if got := c.pushes(); len(got) >= n {
				return got
			}
			c.t.Fatalf("connection closed after %d of %d pushes", len(c.pushes()), n)
		}
	}
}

func (c *client) waitPush(what string, pred func(*imlitev1.Message) bool) *imlitev1.Message {
	c.t.Helper()
	return c.wait(5*time.Second, what, func(f *imlitev1.Frame) bool {
		m := f.GetPush().GetMsg()
		return m != nil && pred(m)
	}).GetPush().GetMsg()
}

// waitClosed waits for the server to close the connection and returns the
// close code and reason.
func (c *client) waitClosed(d time.Duration) (int, string) {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(d):
		c.t.Fatalf("connection still open after %v", d)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ce, ok := c.closeErr.(*websocket.CloseError); ok {
		return ce.Code, ce.Text
	}
	return -1, fmt.Sprint(c.closeErr)
}
