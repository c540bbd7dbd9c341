package ws

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server/auth"
)

// outFrame is one queued write: a prepared push shared by many connections,
// an encoded reply, or a control frame.
type outFrame struct {
	prepared *websocket.PreparedMessage
	data     []byte
	msgType  int
	// last ends the connection after this frame (a close frame).
	last bool
	// storedAt is the storage time of a pushed stored message, for the
	// store-to-deliver latency once written.
	storedAt time.Time
}

// conn is one client connection. The poller drives its reads and hands it to
// one worker at a time. Writes go through a bounded queue that the writer
// pool drains. Requests run in order on a goroutine that exists only while
// requests are queued.
type conn struct {
	h        *Hub
	id       string
	p        auth.Principal
	enc      Encoding
	opened   time.Time
	ws       *websocket.Conn
	netConn  *batchConn
	raw      syscall.RawConn
	fd       int
	readMu   sync.Mutex // held while a worker reads; guards parser
	parser   wireParser
	lastRead atomic.Int64 // unix nanoseconds of the last bytes read
	lastPing atomic.Int64

	mu sync.Mutex
	// out is the send queue; nil while empty so idle connections hold none.
	out     []outFrame
	writing bool
	// reqs are decoded requests waiting for the request goroutine.
	reqs     []request
	handling bool
	closing  bool
	// badFrames counts undecodable frames in the current minute.
	badFrames     int
	badFramesFrom time.Time

	closeOnce sync.Once
	closed    chan struct{}
	// closeCode and closeReason record why the connection ended.
	closeCode   int
	closeReason string
}

// enqueue adds a frame to the send queue. A full queue disconnects the
// client as a slow consumer; it reports false then, or when closing.
func (c *conn) enqueue(f outFrame) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	if len(c.out) >= c.h.opts.SendQueue {
		c.mu.Unlock()
		c.h.metrics.slowConsumer()
		c.closeWith(CloseSlowConsumer, "send queue full: the client does not read fast enough", true)
		return false
	}
	c.out = append(c.out, f)
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		c.h.writers.submit(c)
	}
	return true
}

// flush writes everything queued, coalescing frames into as few syscalls as
// the batch buffer allows. It runs on a writer goroutine, the only one that
// writes to the connection.
func (c *conn) flush() {
	for {
		c.mu.Lock()
		batch := c.out
		c.out = nil
		if len(batch) == 0 {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()

		last, err := c.writeBatch(batch)
		if err != nil || last {
			c.mu.Lock()
			c.writing = false
			c.out = nil
			c.mu.Unlock()
			c.terminate()
			return
		}
	}
}

// writeBatch writes frames and reports whether one of them ended the
// connection.
func (c *conn) writeBatch(batch []outFrame) (last bool, err error) {
	deadline := time.Now().Add(c.h.opts.WriteTimeout)
	c.netConn.begin()
	for _, f := range batch {
		switch {
		case f.prepared != nil:
			if err = c.ws.SetWriteDeadline(deadline); err == nil {
				err = c.ws.WritePreparedMessage(f.prepared)
			}
		case f.msgType == websocket.PingMessage || f.msgType == websocket.PongMessage || f.msgType == websocket.CloseMessage:
			err = c.ws.WriteControl(f.msgType, f.data, deadline)
		default:
			if err = c.ws.SetWriteDeadline(deadline); err == nil {
				err = c.ws.WriteMessage(f.msgType, f.data)
			}
		}
		if err != nil {
			break
		}
		c.h.metrics.frameOut()
		if f.prepared != nil {
			c.h.metrics.Delivered(f.storedAt)
		}
		if f.last {
			last = true
			break
		}
	}
	if ferr := c.netConn.end(deadline); err == nil {
		err = ferr
	}
	return last, err
}

// sendFrame encodes f in the given encoding and queues it.
func (c *conn) sendFrame(f *imlitev1.Frame, enc Encoding) {
	if e := f.GetError(); e != nil {
		c.h.metrics.Error(e.GetCode())
	}
	data, err := EncodeFrame(enc, f)
	if err != nil {
		c.h.log.Error("encode frame", "conn_id", c.id, "err", err)
		return
	}
	msgType := websocket.BinaryMessage
	if enc == Text {
		msgType = websocket.TextMessage
	}
	c.enqueue(outFrame{data: data, msgType: msgType})
}

// closeWith ends the connection: reads stop at once, a close frame with the
// code and reason is queued after what is queued already (dropped first
// when dropQueued), and the writer closes the socket after writing it. A
// writer that cannot finish within closeWriteTimeout is cut off. Code
// closeNone closes the socket without a close frame.
func (c *conn) closeWith(code int, reason string, dropQueued bool) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing = true
	c.closeCode, c.closeReason = code, reason
	if dropQueued {
		c.out = nil
	}
	start := false
	if code != closeNone {
		c.out = append(c.out, outFrame{msgType: websocket.CloseMessage, data: websocket.FormatCloseMessage(code, truncateReason(reason)), last: true})
		start = !c.writing
		c.writing = true
	}
	c.mu.Unlock()

	// The fd must leave epoll before it is closed, because the kernel
	// reuses fd numbers.
	c.h.poller.remove(c)
	if code == closeNone {
		c.terminate()
		return
	}
	if start {
		c.h.writers.submit(c)
	}
	time.AfterFunc(closeWriteTimeout, c.terminate)
}

// terminate closes the socket and unregisters the connection, once.
func (c *conn) terminate() {
	c.closeOnce.Do(func() {
		c.h.poller.remove(c)
		_ = c.netConn.Conn.Close()
		close(c.closed)
		c.h.unregister(c)
	})
}

// closeWriteTimeout bounds the close frame write to a client that is gone.
const closeWriteTimeout = time.Second

// closeNone closes without a close frame (the peer is gone).
const closeNone = 0

func truncateReason(s string) string {
	// A close frame payload is 2 code bytes plus at most 123 reason bytes.
	const max = 123
	if len(s) <= max {
		return s
	}
	s = s[:max]
	for len(s) > 0 && s[len(s)-1]&0xC0 == 0x80 {
		s = s[:len(s)-1]
	}
	if len(s) > 0 && s[len(s)-1]&0x80 != 0 {
		s = s[:len(s)-1]
	}
	return s
}

// readAvailable reads what the socket holds without waiting. It returns
// errWouldBlock when nothing is there.
func (c *conn) readAvailable(buf []byte) (int, error) {
	var n int
	var opErr error
	err := c.raw.Read(func(fd uintptr) bool {
		n, opErr = syscall.Read(int(fd), buf)
		return true
	})
	switch {
	case err != nil:
		return 0, err
	case opErr == syscall.EAGAIN || opErr == syscall.EWOULDBLOCK:
		return 0, errWouldBlock
	case opErr == syscall.EINTR:
		return 0, errWouldBlock
	case opErr != nil:
		return 0, opErr
	case n == 0:
		return 0, errPeerClosed
	}
	return n, nil
}

var (
	errWouldBlock = errors.New("would block")
	errPeerClosed = errors.New("peer closed the connection")
)

// batchConn gathers the writes gorilla makes during one flush and sends
// them with one syscall.
type batchConn struct {
	net.Conn
	batching bool
	buf      *[]byte
	// handshakeCompressed records whether gorilla's handshake response,
	// the first write, accepted permessage-deflate; gorilla does not expose
	// it otherwise.
	handshakeCompressed bool
	handshakeSeen       bool
}

var batchBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func (b *batchConn) begin() {
	b.batching = true
	b.buf = batchBuffers.Get().(*[]byte)
}

func (b *batchConn) Write(p []byte) (int, error) {
	if !b.handshakeSeen {
		b.handshakeSeen = true
		b.handshakeCompressed = bytes.Contains(p, []byte("permessage-deflate"))
	}
	if !b.batching {
		return b.Conn.Write(p)
	}
	*b.buf = append(*b.buf, p...)
	return len(p), nil
}

func (b *batchConn) end(deadline time.Time) error {
	b.batching = false
	buf := b.buf
	b.buf = nil
	defer func() {
		if cap(*buf) <= 256<<10 {
			*buf = (*buf)[:0]
			batchBuffers.Put(buf)
		}
	}()
	if len(*buf) == 0 {
		return nil
	}
	if err := b.Conn.SetWriteDeadline(deadline); err != nil {
		return err
	}
	_, err := b.Conn.Write(*buf)
	return err
}

// requestContext returns the context a request of this connection runs in.
func (c *conn) requestContext() context.Context {
	return c.h.requestContext(c)
}
