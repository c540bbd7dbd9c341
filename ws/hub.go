// Package ws is imlite's websocket adapter. It accepts client connections,
// decodes imlite.v1.Frame messages, calls the service core the same way the
// gRPC layer does, and delivers pushes. It holds no business rules: which
// messages a user may send or see, and where a message goes, are decided by
// the core.
//
// Each connection costs little while idle: on Linux an epoll loop watches
// every socket, so no goroutine waits on an idle connection, and read and
// write buffers are taken from pools only while bytes move.
//
// Close codes, beyond RFC 6455's: CloseKicked (4001), CloseReplaced (4002),
// CloseSlowConsumer (4003), CloseHeartbeatTimeout (4004) and
// CloseTokenExpired (4005).
package ws

import (
	"context"
	"hash/maphash"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/auth"
)

// Close codes sent in the close frame.
const (
	CloseNormal          = websocket.CloseNormalClosure // 1000
	CloseGoingAway       = websocket.CloseGoingAway     // 1001: server shutting down
	closeProtocolError   = websocket.CloseProtocolError // 1002
	closeInvalidPayload  = websocket.CloseInvalidFramePayloadData
	ClosePolicyViolation = websocket.ClosePolicyViolation // 1008: too many malformed frames
	closeMessageTooBig   = websocket.CloseMessageTooBig   // 1009
	// CloseKicked: an admin called KickUser.
	CloseKicked = 4001
	// CloseReplaced: the same user connected again on the same platform.
	CloseReplaced = 4002
	// CloseSlowConsumer: the client did not read and its send queue filled.
	CloseSlowConsumer = 4003
	// CloseHeartbeatTimeout: nothing arrived within Options.PongTimeout.
	CloseHeartbeatTimeout = 4004
	// CloseTokenExpired: the connection's token expired.
	CloseTokenExpired = 4005
)

// CloseMessageTooBig is the code for a frame over Options.MaxFrameBytes.
const CloseMessageTooBig = closeMessageTooBig

// Options configure the hub. Zero fields take the defaults of the
// Websocket section of the configuration.
type Options struct {
	MaxConnNum    int
	MaxFrameBytes int
	PingInterval  time.Duration
	PongTimeout   time.Duration
	WriteTimeout  time.Duration
	SendQueue     int
	// MaxBadFrames per minute before a connection is closed.
	MaxBadFrames int
	// MaxQueuedRequests bounds the requests of one connection waiting to be
	// handled; beyond it requests get ResourceExhausted. Default 64.
	MaxQueuedRequests int
	Compression       bool
	// AllowedOrigins, when set, limits browser origins; others get 403.
	AllowedOrigins []string
	// Observer receives connection and frame events; nil means none.
	Observer Observer
	// TracerProvider creates the imlite.deliver spans; nil means the
	// global provider.
	TracerProvider trace.TracerProvider
}

func (o Options) withDefaults() Options {
	setInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	setDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	setInt(&o.MaxConnNum, 10000)
	setInt(&o.MaxFrameBytes, 96<<10)
	setDur(&o.PingInterval, 30*time.Second)
	setDur(&o.PongTimeout, 75*time.Second)
	setDur(&o.WriteTimeout, 10*time.Second)
	setInt(&o.SendQueue, 256)
	setInt(&o.MaxBadFrames, 10)
	setInt(&o.MaxQueuedRequests, 64)
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	if o.TracerProvider == nil {
		o.TracerProvider = otel.GetTracerProvider()
	}
	return o
}

// Observer receives websocket events, for metrics. Implementations must be
// fast and safe for concurrent use.
type Observer interface {
	ConnOpened(platform string)
	ConnClosed(platform string, code int)
	FrameIn()
	// FramesOut counts n frames written to a client.
	FramesOut(n int)
	SlowConsumer()
	// Delivered counts n pushes written to a connection in one write, and
	// the store-to-deliver latency of one of them; storedAt is zero for a
	// transient message.
	Delivered(n int, storedAt time.Time)
	// Error counts an error frame sent for a failed request or bad frame.
	Error(code int32)
}

type nopObserver struct{}

func (nopObserver) ConnOpened(string)        {}
func (nopObserver) ConnClosed(string, int)   {}
func (nopObserver) FrameIn()                 {}
func (nopObserver) FramesOut(int)            {}
func (nopObserver) SlowConsumer()            {}
func (nopObserver) Delivered(int, time.Time) {}
func (nopObserver) Error(int32)              {}

// metricsAdapter gives conn code short names for observer calls.
type metricsAdapter struct{ Observer }

func (m metricsAdapter) slowConsumer() { m.SlowConsumer() }

const shardCount = 64

// spanDeliver is the span of handing a push to local connections.
const spanDeliver = "imlite.deliver"

// Hub holds the connections of this pod and implements server.Deliverer.
type Hub struct {
	svc     *server.Service
	opts    Options
	log     *slog.Logger
	metrics metricsAdapter
	tracer  trace.Tracer
	poller  poller
	writers *writerPool
	seed    maphash.Seed

	shards [shardCount]shard
	// active counts open connections plus upgrades in progress, for
	// MaxConnNum.
	active atomic.Int64
	nextID atomic.Uint64
	prefix string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// open counts registered connections; drained is closed when it drops
	// to zero after Close started.
	open     sync.WaitGroup
	stopping atomic.Bool

	lingerMu  sync.Mutex
	lingering []*conn
	// lingerWake wakes the linger goroutine when the first connection
	// starts to linger.
	lingerWake chan struct{}
}

// shard maps users to their connections. Slices are replaced on change,
// never modified, so a reader may use one after unlocking.
type shard struct {
	mu    sync.RWMutex
	users map[string][]*conn
}

var _ server.Deliverer = (*Hub)(nil)

// NewHub starts the poller, writer pool and heartbeat sweeper, and attaches
// the hub to the core as its deliverer.
func NewHub(svc *server.Service, opts Options, log *slog.Logger) (*Hub, error) {
	opts = opts.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		svc:        svc,
		opts:       opts,
		log:        log,
		metrics:    metricsAdapter{opts.Observer},
		tracer:     opts.TracerProvider.Tracer(server.TracerName),
		seed:       maphash.MakeSeed(),
		prefix:     svc.PodName() + "-",
		lingerWake: make(chan struct{}, 1),
		ctx:        ctx,
		cancel:     cancel,
	}
	for i := range h.shards {
		h.shards[i].users = make(map[string][]*conn)
	}
	workers := max(4, 2*runtime.GOMAXPROCS(0))
	p, err := newPoller(h, workers)
	if err != nil {
		cancel()
		return nil, err
	}
	h.poller = p
	h.writers = newWriterPool(4 * runtime.GOMAXPROCS(0))
	h.wg.Add(2)
	go func() {
		defer h.wg.Done()
		h.sweep()
	}()
	go func() {
		defer h.wg.Done()
		h.linger()
	}()
	svc.SetDeliverer(h)
	return h, nil
}

func (h *Hub) shard(userID string) *shard {
	return &h.shards[maphash.String(h.seed, userID)%shardCount]
}

// Count returns the number of open connections.
func (h *Hub) Count() int {
	n := 0
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for _, conns := range sh.users {
			n += len(conns)
		}
		sh.mu.RUnlock()
	}
	return n
}

func (h *Hub) newConnID() string {
	return h.prefix + strconv.FormatUint(h.nextID.Add(1), 36)
}

func (h *Hub) register(c *conn) {
	h.open.Add(1)
	sh := h.shard(c.p.UserID)
	sh.mu.Lock()
	old := sh.users[c.p.UserID]
	sh.users[c.p.UserID] = append(old[:len(old):len(old)], c)
	sh.mu.Unlock()
	h.metrics.ConnOpened(c.p.Platform)
}

// unregister removes a terminated connection and frees its slot.
func (h *Hub) unregister(c *conn) {
	sh := h.shard(c.p.UserID)
	sh.mu.Lock()
	conns := sh.users[c.p.UserID]
	if i := slices.Index(conns, c); i >= 0 {
		rest := slices.Delete(slices.Clone(conns), i, i+1)
		if len(rest) == 0 {
			delete(sh.users, c.p.UserID)
		} else {
			sh.users[c.p.UserID] = rest
		}
	}
	sh.mu.Unlock()
	h.active.Add(-1)
	h.metrics.ConnClosed(c.p.Platform, c.closeCode)
	h.log.Debug("connection closed", "conn_id", c.id, "user_id", c.p.UserID, "platform", c.p.Platform, "code", c.closeCode, "reason", c.closeReason)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	h.svc.ConnectionClosed(ctx, c.p, c.id)
	cancel()
	h.open.Done()
}

func (h *Hub) userConns(userID string) []*conn {
	sh := h.shard(userID)
	sh.mu.RLock()
	conns := sh.users[userID]
	sh.mu.RUnlock()
	return conns
}

// Deliver queues a push of msg to every connection of the users except
// exceptConn. The frame is encoded once per encoding and shared.
func (h *Hub) Deliver(ctx context.Context, msg *imlitev1.Message, userIDs []string, exceptConn string, storedAt time.Time) {
	_, span := h.tracer.Start(ctx, spanDeliver, trace.WithAttributes(
		attribute.String("imlite.conversation_id", msg.GetConversationId()),
		attribute.Int64("imlite.seq", msg.GetSeq()),
		attribute.Int("imlite.recipients", len(userIDs)),
	))
	defer span.End()
	var frames [3][]byte
	for _, u := range userIDs {
		for _, c := range h.userConns(u) {
			if c.id == exceptConn {
				continue
			}
			frame := frames[c.enc]
			if frame == nil {
				var err error
				frame, err = encodeWireFrame(c.enc, &imlitev1.Frame{Body: &imlitev1.Frame_Push{Push: &imlitev1.PushMsg{Msg: msg}}})
				if err != nil {
					h.log.Error("encode push", "conversation_id", msg.GetConversationId(), "seq", msg.GetSeq(), "err", err)
					return
				}
				frames[c.enc] = frame
			}
			c.enqueue(outFrame{frame: frame, push: true, storedAt: storedAt})
		}
	}
}

// Disconnect closes the local connections d selects, each after a kick
// notice naming the reason.
func (h *Hub) Disconnect(d server.Disconnect) {
	for _, c := range h.userConns(d.UserID) {
		if len(d.Platforms) > 0 && !slices.Contains(d.Platforms, c.p.Platform) {
			continue
		}
		code := CloseKicked
		switch d.Kind {
		case server.Kicked:
			// Only tokens issued up to the kick are revoked.
			if c.p.IssuedAt.After(d.At) {
				continue
			}
		case server.Replaced:
			if c.id == d.KeepConn || !c.opened.Before(d.At) {
				continue
			}
			code = CloseReplaced
		}
		notice := &imlitev1.Frame{Body: &imlitev1.Frame_Kick{Kick: &imlitev1.KickNotice{Reason: d.Reason, KickedAt: time.Now().UnixMilli()}}}
		c.sendFrame(notice, c.enc)
		c.closeWith(code, d.Reason, false)
	}
}

// forEach calls fn for every connection, outside the shard locks. It
// collects each shard into buf and returns buf for reuse, so the once-a-
// second sweep over every connection makes no garbage.
func (h *Hub) forEach(buf []*conn, fn func(*conn)) []*conn {
	for i := range h.shards {
		sh := &h.shards[i]
		buf = buf[:0]
		sh.mu.RLock()
		for _, conns := range sh.users {
			buf = append(buf, conns...)
		}
		sh.mu.RUnlock()
		for _, c := range buf {
			fn(c)
		}
		// Drop the references so closed connections can be collected.
		clear(buf)
	}
	return buf[:0]
}

// sweep pings quiet connections and closes dead or expired ones.
func (h *Hub) sweep() {
	interval := min(time.Second, h.opts.PingInterval/2)
	t := time.NewTicker(interval)
	defer t.Stop()
	var buf []*conn
	for {
		select {
		case <-h.ctx.Done():
			return
		case now := <-t.C:
			buf = h.sweepOnce(buf, now)
		}
	}
}

func (h *Hub) sweepOnce(buf []*conn, now time.Time) []*conn {
	nowNano := now.UnixNano()
	ping := h.opts.PingInterval.Nanoseconds()
	dead := h.opts.PongTimeout.Nanoseconds()
	return h.forEach(buf, func(c *conn) {
		idle := nowNano - c.lastRead.Load()
		switch {
		case idle > dead:
			c.closeWith(CloseHeartbeatTimeout, "no frame or pong within "+h.opts.PongTimeout.String(), true)
		case !c.p.ExpiresAt.IsZero() && now.After(c.p.ExpiresAt):
			c.closeWith(CloseTokenExpired, "token expired; reconnect with a new token", false)
		case idle >= ping+c.pingJitter && nowNano-c.lastPing.Load() >= ping:
			c.lastPing.Store(nowNano)
			c.enqueue(outFrame{frame: pingFrame})
		}
	})
}

func (h *Hub) requestContext(c *conn) context.Context {
	return auth.WithPrincipal(server.WithConnID(h.ctx, c.id), c.p)
}

// Close closes every connection with 1001 (going away), so clients reconnect
// to another pod, and waits for them to end or ctx to expire.
func (h *Hub) Close(ctx context.Context) error {
	h.stopping.Store(true)
	h.forEach(nil, func(c *conn) { c.closeWith(CloseGoingAway, "server shutting down", false) })
	done := make(chan struct{})
	go func() {
		h.open.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		h.forEach(nil, func(c *conn) { c.terminate() })
	}
	h.cancel()
	h.poller.close()
	h.writers.close()
	h.wg.Wait()
	return err
}

// lingerWindow is how soon after a write a connection's next push waits
// for the linger timer. A connection that receives a push every few
// milliseconds, as every member of a busy group does, then sends several
// frames per write: fewer syscalls for at most a millisecond of delay,
// while a quiet connection writes at once. Replies never linger, so a
// client that waits for each reply before its next request is not slowed.
const lingerWindow = time.Millisecond

// scheduleFlush hands c to the writer pool now, or after lingerWindow when
// first is a push and c wrote within lingerWindow.
func (h *Hub) scheduleFlush(c *conn, first outFrame) {
	if !first.push || time.Now().UnixNano()-c.lastFlush.Load() >= int64(lingerWindow) {
		h.writers.submit(c)
		return
	}
	h.lingerMu.Lock()
	h.lingering = append(h.lingering, c)
	wake := len(h.lingering) == 1
	h.lingerMu.Unlock()
	if wake {
		select {
		case h.lingerWake <- struct{}{}:
		default:
		}
	}
}

// linger submits the lingering connections lingerWindow after the first
// of them arrived. It sleeps while none linger, so an idle hub has no
// timer firing.
func (h *Hub) linger() {
	t := time.NewTimer(lingerWindow)
	t.Stop()
	var batch []*conn
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-h.lingerWake:
		}
		t.Reset(lingerWindow)
		select {
		case <-h.ctx.Done():
			return
		case <-t.C:
		}
		h.lingerMu.Lock()
		batch, h.lingering = h.lingering, batch[:0]
		h.lingerMu.Unlock()
		for _, c := range batch {
			h.writers.submit(c)
		}
		clear(batch)
	}
}

// writerPool runs connection flushes on a fixed set of goroutines, plus a
// short-lived extra goroutine whenever all are busy, so a connection whose
// write blocks never delays the others.
type writerPool struct {
	work chan *conn
	wg   sync.WaitGroup
}

func newWriterPool(n int) *writerPool {
	// A deep queue keeps a ping round over every connection from spilling
	// into thousands of extra goroutines.
	p := &writerPool{work: make(chan *conn, 1<<16)}
	for range n {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for c := range p.work {
				c.flush()
			}
		}()
	}
	return p
}

func (p *writerPool) submit(c *conn) {
	select {
	case p.work <- c:
	default:
		go c.flush()
	}
}

func (p *writerPool) close() {
	close(p.work)
	p.wg.Wait()
}
