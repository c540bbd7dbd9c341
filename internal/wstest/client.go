// Package wstest is a websocket client for tests: it dials an imlite
// websocket endpoint, reads frames on a goroutine, and waits for replies,
// pushes and the close.
package wstest

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/ws"
)

// Client is one test connection. Its methods fail the test on unexpected
// errors; they are safe for concurrent use.
type Client struct {
	t    testing.TB
	Conn *websocket.Conn
	enc  ws.Encoding
	next atomic.Int64

	// writeMu serializes writes, which gorilla requires.
	writeMu sync.Mutex
	// Pings counts websocket pings from the server; IgnorePings stops
	// answering them.
	Pings       atomic.Int64
	IgnorePings atomic.Bool

	mu     sync.Mutex
	frames []*imlitev1.Frame
	// closeErr is set when the read loop ends.
	closeErr error
	notify   chan struct{}
	done     chan struct{}
}

// Dial connects to url (ws://host:port/ws) with token and the encoding of
// pushes. It returns the HTTP response of a refused upgrade with the error.
func Dial(t testing.TB, url, token string, enc ws.Encoding) (*Client, *http.Response, error) {
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	conn, resp, err := websocket.DefaultDialer.Dial(url+"?encoding="+enc.String(), h)
	if err != nil {
		return nil, resp, err
	}
	c := &Client{t: t, Conn: conn, enc: enc, notify: make(chan struct{}, 1), done: make(chan struct{})}
	conn.SetPingHandler(func(data string) error {
		c.Pings.Add(1)
		if c.IgnorePings.Load() {
			return nil
		}
		c.writeMu.Lock()
		defer c.writeMu.Unlock()
		return conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	go c.readLoop()
	t.Cleanup(func() { conn.Close() })
	return c, resp, nil
}

// MustDial is Dial that fails the test on error.
func MustDial(t testing.TB, url, token string, enc ws.Encoding) *Client {
	t.Helper()
	c, resp, err := Dial(t, url, token, enc)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", url, err, status)
	}
	return c
}

func (c *Client) readLoop() {
	defer close(c.done)
	for {
		mt, data, err := c.Conn.ReadMessage()
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

func (c *Client) poke() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// Send writes a frame with a fresh req_id and returns the id.
func (c *Client) Send(f *imlitev1.Frame) string {
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
	err = c.Conn.WriteMessage(mt, data)
	c.writeMu.Unlock()
	if err != nil {
		c.t.Fatalf("write frame: %v", err)
	}
	return f.ReqId
}

// WriteRaw writes a websocket message as is, for malformed input.
func (c *Client) WriteRaw(msgType int, data []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return c.Conn.WriteMessage(msgType, data)
}

// Wait returns the first frame matching pred, waiting up to d.
func (c *Client) Wait(d time.Duration, what string, pred func(*imlitev1.Frame) bool) *imlitev1.Frame {
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

// Reply waits for the reply to reqID.
func (c *Client) Reply(reqID string) *imlitev1.Frame {
	c.t.Helper()
	return c.Wait(10*time.Second, "reply to "+reqID, func(f *imlitev1.Frame) bool { return f.GetReqId() == reqID })
}

// Call sends a request and returns its reply, failing on an error frame.
func (c *Client) Call(f *imlitev1.Frame) *imlitev1.Frame {
	c.t.Helper()
	r := c.Reply(c.Send(f))
	if e := r.GetError(); e != nil {
		c.t.Fatalf("request %v failed: code %d: %s", f.GetBody(), e.GetCode(), e.GetMessage())
	}
	return r
}

// SendText sends a text message to a user or a group and returns the reply.
func (c *Client) SendText(to, group, clientMsgID, content string) *imlitev1.SendMsgResponse {
	c.t.Helper()
	req := &imlitev1.SendMsgRequest{ClientMsgId: clientMsgID, RecvId: to, GroupId: group, Content: content}
	return c.Call(&imlitev1.Frame{Body: &imlitev1.Frame_SendMsg{SendMsg: req}}).GetSendMsgResp()
}

// Pushes returns the pushed messages received so far.
func (c *Client) Pushes() []*imlitev1.Message {
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

// WaitPushes waits until at least n pushes arrived and returns them.
func (c *Client) WaitPushes(n int, d time.Duration) []*imlitev1.Message {
	c.t.Helper()
	deadline := time.After(d)
	for {
		if got := c.Pushes(); len(got) >= n {
			return got
		}
		select {
		case <-c.notify:
		case <-deadline:
			c.t.Fatalf("timed out after %v waiting for %d pushes, got %d", d, n, len(c.Pushes()))
		case <-c.done:
			if got := c.Pushes(); len(got) >= n {
				return got
			}
			c.t.Fatalf("connection closed after %d of %d pushes", len(c.Pushes()), n)
		}
	}
}

// WaitPush returns the first push matching pred.
func (c *Client) WaitPush(what string, pred func(*imlitev1.Message) bool) *imlitev1.Message {
	c.t.Helper()
	return c.Wait(10*time.Second, what, func(f *imlitev1.Frame) bool {
		m := f.GetPush().GetMsg()
		return m != nil && pred(m)
	}).GetPush().GetMsg()
}

// WaitClosed waits for the server to close the connection and returns the
// close code and reason; -1 when it ended without a close frame.
func (c *Client) WaitClosed(d time.Duration) (int, string) {
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
