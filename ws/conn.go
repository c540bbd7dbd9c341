package ws

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server/auth"
)

// outFrame is one queued write: a complete websocket frame, shared by
// every connection a push goes to.
type outFrame struct {
	frame []byte
	// push marks a pushed message, counted as a delivery once written.
	push bool
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
	netConn  net.Conn
	raw      syscall.RawConn
	fd       int
	readMu   sync.Mutex // held while a worker reads; guards parser
	parser   wireParser
	lastRead atomic.Int64 // unix nanoseconds of the last bytes read
	lastPing atomic.Int64
	// lastFlush is when the writer last wrote, in unix nanoseconds.
	lastFlush atomic.Int64
	// pingJitter spreads the pings of connections that opened together
	// over the ping interval.
	pingJitter int64

	mu sync.Mutex
	// out is the send queue; nil while empty so idle connections hold none.
	out     *[]outFrame
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

// queues recycles send queues, so a busy connection does not allocate one
// per flush and an idle one holds none.
var queues = sync.Pool{New: func() any { q := make([]outFrame, 0, 16); return &q }}

// enqueue adds a frame to the send queue. A full queue disconnects the
// client as a slow consumer; it reports false then, or when closing.
func (c *conn) enqueue(f outFrame) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	if c.out == nil {
		c.out = queues.Get().(*[]outFrame)
	}
	if len(*c.out) >= c.h.opts.SendQueue {
		c.mu.Unlock()
		c.h.metrics.slowConsumer()
		c.closeWith(CloseSlowConsumer, "send queue full: the client does not read fast enough", true)
		return false
	}
	*c.out = append(*c.out, f)
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		c.h.scheduleFlush(c, f)
	}
	return true
}

// flush writes everything queued, each round with one writev call. It runs
// on a writer goroutine, the only one that writes to the connection.
func (c *conn) flush() {
	for {
		c.mu.Lock()
		batch := c.out
		c.out = nil
		if batch == nil || len(*batch) == 0 {
			c.writing = false
			c.mu.Unlock()
			recycleQueue(batch)
			return
		}
		c.mu.Unlock()

		last, err := c.writeBatch(*batch)
		recycleQueue(batch)
		if err != nil || last {
			c.mu.Lock()
			c.writing = false
			recycleQueue(c.out)
			c.out = nil
			c.mu.Unlock()
			c.terminate()
			return
		}
	}
}

func recycleQueue(q *[]outFrame) {
	if q == nil || cap(*q) > 1024 {
		return
	}
	clear(*q)
	*q = (*q)[:0]
	queues.Put(q)
}

// writeBatch writes frames and reports whether one of them ended the
// connection.
func (c *conn) writeBatch(batch []outFrame) (last bool, err error) {
	bufs := make(net.Buffers, 0, len(batch))
	for _, f := range batch {
		bufs = append(bufs, f.frame)
		if f.last {
			last = true
			batch = batch[:len(bufs)]
			break
		}
	}
	if err := c.netConn.SetWriteDeadline(time.Now().Add(c.h.opts.WriteTimeout)); err != nil {
		return last, err
	}
	// net.Buffers.WriteTo uses writev on TCP connections, so the shared
	// push frames are written without a copy.
	if _, err := bufs.WriteTo(c.netConn); err != nil {
		return last, err
	}
	c.h.metrics.FramesOut(len(batch))
	pushes, storedAt := 0, time.Time{}
	for _, f := range batch {
		if f.push {
			pushes++
			storedAt = f.storedAt
		}
	}
	if pushes > 0 {
		c.h.metrics.Delivered(pushes, storedAt)
	}
	c.lastFlush.Store(time.Now().UnixNano())
	return last, nil
}

// sendFrame encodes f in the given encoding and queues it.
func (c *conn) sendFrame(f *imlitev1.Frame, enc Encoding) {
	if e := f.GetError(); e != nil {
		c.h.metrics.Error(e.GetCode())
	}
	frame, err := encodeWireFrame(enc, f)
	if err != nil {
		c.h.log.Error("encode frame", "conn_id", c.id, "err", err)
		return
	}
	c.enqueue(outFrame{frame: frame})
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
	if dropQueued && c.out != nil {
		*c.out = (*c.out)[:0]
	}
	start := false
	if code != closeNone {
		if c.out == nil {
			c.out = queues.Get().(*[]outFrame)
		}
		*c.out = append(*c.out, outFrame{frame: serverFrame(opClose, closePayload(code, reason)), last: true})
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
		_ = c.netConn.Close()
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

// requestContext returns the context a request of this connection runs in.
func (c *conn) requestContext() context.Context {
	return c.h.requestContext(c)
}
