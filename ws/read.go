package ws

import (
	"encoding/binary"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
)

// poller watches connections for readable data and calls Hub.readReady.
type poller interface {
	add(c *conn) error
	// rearm requests the next readable event of c.
	rearm(c *conn)
	remove(c *conn)
	close()
}

// readBufferSize is the size of the pooled buffer one read fills.
const readBufferSize = 4 << 10

// maxReadPerEvent bounds the bytes read from one connection per readable
// event, so one busy client cannot starve the others on a worker.
const maxReadPerEvent = 256 << 10

var readBuffers = sync.Pool{New: func() any { b := make([]byte, readBufferSize); return &b }}

// readReady reads what a connection's socket holds, parses it and queues
// the frames. It never blocks: requests run on the connection's request
// goroutine and replies go through the send queue.
func (h *Hub) readReady(c *conn) {
	// The poller already hands a connection to one worker at a time, but it
	// does so through the kernel, which the race detector cannot see. The
	// mutex makes that ordering visible and costs nothing uncontended.
	c.readMu.Lock()
	defer c.readMu.Unlock()
	bufp := readBuffers.Get().(*[]byte)
	defer readBuffers.Put(bufp)
	buf := *bufp

	for total := 0; total < maxReadPerEvent; {
		n, err := c.readAvailable(buf)
		switch {
		case err == errWouldBlock:
			h.poller.rearm(c)
			return
		case err != nil:
			c.closeWith(closeNone, "read: "+err.Error(), true)
			return
		}
		total += n
		c.lastRead.Store(time.Now().UnixNano())
		if err := c.parser.feed(buf[:n], c.onWireMessage); err != nil {
			if pe, ok := err.(*protocolError); ok {
				c.closeWith(pe.code, pe.reason, true)
			} else {
				c.closeWith(closeNone, err.Error(), true)
			}
			return
		}
		c.mu.Lock()
		closing := c.closing
		c.mu.Unlock()
		if closing {
			return
		}
	}
	// Budget spent with data left: re-arming reports it again at once.
	h.poller.rearm(c)
}

// onWireMessage handles one message or control frame from the client.
func (c *conn) onWireMessage(m wireMessage) error {
	switch m.op {
	case opPing:
		c.enqueue(outFrame{frame: serverFrame(opPong, m.payload)})
		return nil
	case opPong:
		return nil
	case opClose:
		code, reason := parseClosePayload(m.payload)
		if code == 0 {
			code = CloseNormal
		}
		c.closeWith(code, reason, false)
		return nil
	}

	c.h.metrics.FrameIn()
	enc := Binary
	if m.op == opText {
		enc = Text
	}
	f, err := DecodeFrame(enc, m.payload)
	if err != nil {
		c.badFrame(f, enc, err.Error())
		return nil
	}
	if !isRequestBody(f) {
		c.badFrame(f, enc, "body "+bodyName(f)+" is sent by the server only; send a request body such as send_msg")
		return nil
	}
	c.queueRequest(request{frame: f, enc: enc})
	return nil
}

// parseClosePayload splits a close frame payload into code and reason.
func parseClosePayload(p []byte) (int, string) {
	if len(p) < 2 {
		return 0, ""
	}
	code := int(binary.BigEndian.Uint16(p))
	reason := string(p[2:])
	if !utf8.ValidString(reason) {
		reason = ""
	}
	return code, reason
}

// badFrame replies to an undecodable frame with an error frame and closes
// the connection when the client keeps sending them.
func (c *conn) badFrame(f *imlitev1.Frame, enc Encoding, problem string) {
	now := time.Now()
	c.mu.Lock()
	if now.Sub(c.badFramesFrom) > time.Minute {
		c.badFramesFrom, c.badFrames = now, 0
	}
	c.badFrames++
	tooMany := c.badFrames > c.h.opts.MaxBadFrames
	c.mu.Unlock()

	c.sendFrame(errorFrame(reqIDOf(f), int32(codes.InvalidArgument), problem, nil), enc)
	if tooMany {
		c.closeWith(ClosePolicyViolation, "more than "+itoa(c.h.opts.MaxBadFrames)+" malformed frames in a minute", false)
	}
}
