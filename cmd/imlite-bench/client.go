package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/ws"
)

// minContentBytes is the smallest -size: the send time in nanoseconds (19
// digits) and its separator must fit in the content.
const minContentBytes = 24

// benchPlatform is the platform of every token the tool signs. Users are
// unique per connection, so no connection replaces another.
const benchPlatform = "web"

// Request id prefixes. The req_id echoed in a reply identifies the kind of
// request and, for sends and pulls, the time the request was written.
const (
	reqSend = 's'
	reqPull = 'p'
	reqCall = 'c'
)

// writeTimeout bounds one frame write by the tool.
const writeTimeout = 10 * time.Second

// clientSpec describes a connection before it is dialed.
type clientSpec struct {
	user  string
	admin bool
	// convs are the conversations the user belongs to, for the delivery
	// check.
	convs []string
	// fanout is the number of pushes one accepted send of this user should
	// cause at the other clients.
	fanout int64
	// window bounds the sends waiting for a reply; 0 for a client that
	// does not send messages.
	window int
}

// reply is a frame that a waiting caller receives, with the time the
// reader got it.
type reply struct {
	frame *imlitev1.Frame
	at    time.Time
}

// client is one websocket connection of the tool. One goroutine reads; the
// scenario goroutine that owns the client is the only one that writes data
// frames (gorilla allows WriteControl beside it).
type client struct {
	r    *runner
	spec clientSpec
	ws   *websocket.Conn

	// window holds a token per send waiting for its reply.
	window chan struct{}
	// replies receives replies to calls and pulls, and pongs.
	replies chan reply
	// tracks is written by the reader only, and read by others after done.
	tracks map[string]*convTrack

	closing  atomic.Bool
	done     chan struct{}
	closeErr error

	nextMsg  int64
	nextCall int64
	content  []byte
}

func newClient(r *runner, spec clientSpec, conn *websocket.Conn) *client {
	c := &client{
		r:       r,
		spec:    spec,
		ws:      conn,
		replies: make(chan reply, 4),
		tracks:  make(map[string]*convTrack),
		done:    make(chan struct{}),
	}
	if spec.window > 0 {
		c.window = make(chan struct{}, spec.window)
	}
	return c
}

// readLoop reads frames until the connection ends.
func (c *client) readLoop() {
	defer close(c.done)
	defer c.r.open.Add(-1)
	for {
		mt, data, err := c.ws.ReadMessage()
		if err != nil {
			c.closeErr = err
			if !c.closing.Load() {
				c.r.errs.Add(closeErrorKind(err))
			}
			return
		}
		now := time.Now()
		enc := ws.Binary
		if mt == websocket.TextMessage {
			enc = ws.Text
		}
		f, err := ws.DecodeFrame(enc, data)
		if f == nil {
			c.r.errs.Add("read: undecodable server frame")
			continue
		}
		c.handle(f, now)
	}
}

// closeErrorKind names how a connection ended that the tool did not close.
func closeErrorKind(err error) string {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return fmt.Sprintf("closed by server: code %d", ce.Code)
	}
	return "connection lost"
}

func (c *client) handle(f *imlitev1.Frame, now time.Time) {
	switch b := f.GetBody().(type) {
	case *imlitev1.Frame_Push:
		c.onPush(b.Push.GetMsg(), now)
	case *imlitev1.Frame_SendMsgResp:
		c.onSendReply(f.GetReqId(), b.SendMsgResp, now)
	case *imlitev1.Frame_Error:
		c.onError(f, now)
	case *imlitev1.Frame_Kick:
		c.r.errs.Add("kicked by server")
	default:
		c.deliverReply(f, now)
	}
}

func (c *client) onPush(m *imlitev1.Message, now time.Time) {
	c.r.delivered.Add(1)
	c.r.lastDeliver.Store(now.UnixNano())
	if sent, ok := parseContentTime(m.GetContent()); ok {
		c.r.recordLatency(c.r.deliverLat, sent, now)
	} else {
		c.r.errs.Add("push: content without a send time")
	}
	c.track(m.GetConversationId()).push(m.GetSeq())
}

func (c *client) onSendReply(reqID string, resp *imlitev1.SendMsgResponse, now time.Time) {
	if sent, ok := parseReqTime(reqID, reqSend); ok {
		c.r.recordLatency(c.r.ackLat, sent, now)
	}
	if resp.GetSeq() > 0 && c.r.acc.Add(resp.GetConversationId(), resp.GetSeq()) {
		c.track(resp.GetConversationId()).own.Add(resp.GetSeq())
		c.r.accepted.Add(1)
		c.r.expected.Add(c.spec.fanout)
		c.r.lastAccept.Store(now.UnixNano())
	} else {
		c.r.errs.Add("send: reply without a new seq")
	}
	c.release()
}

func (c *client) onError(f *imlitev1.Frame, now time.Time) {
	e := f.GetError()
	switch reqID := f.GetReqId(); {
	case reqID == "":
		c.r.errs.Add(fmt.Sprintf("server error frame: code %d", e.GetCode()))
	case reqID[0] == reqSend:
		c.r.errs.Add(fmt.Sprintf("send: code %d", e.GetCode()))
		c.release()
	case reqID[0] == reqPull:
		c.r.errs.Add(fmt.Sprintf("pull: code %d", e.GetCode()))
		c.deliverReply(f, now)
	default:
		c.deliverReply(f, now)
	}
}

// deliverReply hands a reply to the goroutine waiting for it.
func (c *client) deliverReply(f *imlitev1.Frame, now time.Time) {
	select {
	case c.replies <- reply{frame: f, at: now}:
	default:
		c.r.errs.Add("read: reply nobody waits for")
	}
}

func (c *client) release() {
	select {
	case <-c.window:
	default:
	}
}

func (c *client) track(conv string) *convTrack {
	t := c.tracks[conv]
	if t == nil {
		t = &convTrack{}
		c.tracks[conv] = t
	}
	return t
}

// outstanding returns the sends waiting for a reply.
func (c *client) outstanding() int { return len(c.window) }

// write encodes and writes one frame.
func (c *client) write(f *imlitev1.Frame) error {
	data, err := ws.EncodeFrame(c.r.o.encoding, f)
	if err != nil {
		return fmt.Errorf("encode frame: %w", err)
	}
	mt := websocket.BinaryMessage
	if c.r.o.encoding == ws.Text {
		mt = websocket.TextMessage
	}
	if err := c.ws.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	if err := c.ws.WriteMessage(mt, data); err != nil {
		c.r.errs.Add("write: failed")
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// sendMsg writes a send of a new message to recv or group, with the send
// time in the content and in the req_id.
func (c *client) sendMsg(recv, group string) error {
	now := time.Now()
	c.nextMsg++
	c.content = appendContent(c.content[:0], now, c.r.o.size)
	req := &imlitev1.SendMsgRequest{
		ClientMsgId: "m" + strconv.FormatInt(c.nextMsg, 10),
		RecvId:      recv,
		GroupId:     group,
		ContentType: 1,
		Content:     string(c.content),
		ClientTime:  now.UnixMilli(),
	}
	f := &imlitev1.Frame{ReqId: reqIDAt(reqSend, now), Body: &imlitev1.Frame_SendMsg{SendMsg: req}}
	return c.write(f)
}

// sendLoop sends to recv or group at rate messages per second (0: as fast
// as the window allows) until ctx ends or the connection does. The first
// send waits for delay, so that senders started together spread their
// sends over the interval instead of sending in bursts.
func (c *client) sendLoop(ctx context.Context, recv, group string, rate float64, delay time.Duration) {
	p := newPacer(rate)
	p.delay(delay)
	for {
		if err := p.wait(ctx); err != nil {
			return
		}
		select {
		case c.window <- struct{}{}:
		case <-ctx.Done():
			return
		case <-c.done:
			return
		}
		if err := c.sendMsg(recv, group); err != nil {
			c.release()
			return
		}
		c.r.sent.Add(1)
	}
}

// call writes a request and waits for its reply. An error frame is
// returned as an error naming the code and message.
func (c *client) call(ctx context.Context, f *imlitev1.Frame) (*imlitev1.Frame, error) {
	c.nextCall++
	f.ReqId = string(reqCall) + strconv.FormatInt(c.nextCall, 10)
	if err := c.write(f); err != nil {
		return nil, err
	}
	rep, err := c.await(ctx, f.ReqId)
	return rep.frame, err
}

// await waits for the reply to reqID, skipping stale replies of requests
// that timed out earlier.
func (c *client) await(ctx context.Context, reqID string) (reply, error) {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	for {
		select {
		case r := <-c.replies:
			if r.frame.GetReqId() != reqID {
				continue
			}
			if e := r.frame.GetError(); e != nil {
				return reply{}, &errorReply{reqID: reqID, code: e.GetCode(), message: e.GetMessage()}
			}
			return r, nil
		case <-c.done:
			return reply{}, fmt.Errorf("request %s: connection closed: %v", reqID, c.closeErr)
		case <-ctx.Done():
			return reply{}, fmt.Errorf("request %s: no reply: %w", reqID, ctx.Err())
		}
	}
}

// errorReply is an error frame sent in reply to a request.
type errorReply struct {
	reqID   string
	code    int32
	message string
}

func (e *errorReply) Error() string {
	return fmt.Sprintf("request %s: code %d: %s", e.reqID, e.code, e.message)
}

// close sends a normal close frame and waits briefly for the server's
// close frame, then closes the socket.
func (c *client) close() {
	c.closing.Store(true)
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	select {
	case <-c.done:
	case <-time.After(2 * time.Second):
	}
	_ = c.ws.Close()
	<-c.done
}

// alive reports whether the reader still runs.
func (c *client) alive() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// appendContent appends the send time in Unix nanoseconds, a '|' and
// padding up to size bytes.
func appendContent(b []byte, sent time.Time, size int) []byte {
	b = strconv.AppendInt(b, sent.UnixNano(), 10)
	b = append(b, '|')
	for len(b) < size {
		b = append(b, 'x')
	}
	return b
}

// parseContentTime reads the send time that appendContent wrote.
func parseContentTime(content string) (time.Time, bool) {
	digits, _, ok := strings.Cut(content, "|")
	if !ok {
		return time.Time{}, false
	}
	ns, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || ns <= 0 {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

// reqIDAt returns a req_id of the kind that carries the write time.
func reqIDAt(kind byte, t time.Time) string {
	return string(kind) + strconv.FormatInt(t.UnixNano(), 10)
}

// parseReqTime reads the time of a req_id made by reqIDAt.
func parseReqTime(reqID string, kind byte) (time.Time, bool) {
	if len(reqID) < 2 || reqID[0] != kind {
		return time.Time{}, false
	}
	ns, err := strconv.ParseInt(reqID[1:], 10, 64)
	if err != nil || ns <= 0 {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

// pacer spaces events at a fixed rate. A pacer that falls behind catches
// up at full speed, but by at most one second, so a stall does not turn
// into an unbounded burst.
type pacer struct {
	interval time.Duration
	next     time.Time
}

// newPacer returns a pacer for rate events per second; rate 0 never waits.
func newPacer(rate float64) *pacer {
	if rate <= 0 {
		return &pacer{}
	}
	return &pacer{interval: time.Duration(float64(time.Second) / rate)}
}

// delay moves the first event d into the future.
func (p *pacer) delay(d time.Duration) {
	if p.interval > 0 && d > 0 {
		p.next = time.Now().Add(d)
	}
}

// staggerDelay returns the start delay of pacer i among pacers that share
// a total rate. Pacer i starts i/rate seconds after the first, so their
// events interleave evenly.
func staggerDelay(i int, rate float64) time.Duration {
	if rate <= 0 {
		return 0
	}
	return time.Duration(float64(i) / rate * float64(time.Second))
}

// wait blocks until the next event is due, or returns ctx's error.
func (p *pacer) wait(ctx context.Context) error {
	if p.interval == 0 {
		return ctx.Err()
	}
	now := time.Now()
	if p.next.IsZero() || now.Sub(p.next) > time.Second {
		p.next = now
	}
	due := p.next
	p.next = p.next.Add(p.interval)
	if d := due.Sub(now); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return ctx.Err()
}
