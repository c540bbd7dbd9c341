package ws

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/imlite/imlite/server/apierr"
	"github.com/imlite/imlite/server/auth"
)

// Paths are the endpoint's paths: /ws, and / for clients of IM-Lite-Server.
var Paths = []string{"/ws", "/"}

// ServeHTTP authenticates and upgrades a websocket connection. Every refusal
// gets an HTTP error before the upgrade, with a JSON body {"code", "message"}:
// 401 for missing, invalid, expired or revoked tokens, 403 for a refused
// origin, 400 for a bad request, 503 at Websocket.MaxConnNum.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !slices.Contains(Paths, r.URL.Path) {
		writeError(w, http.StatusNotFound, 5, "no websocket endpoint at "+r.URL.Path+"; connect to /ws")
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		writeError(w, http.StatusUpgradeRequired, 3, "this endpoint speaks websocket; send an upgrade request")
		return
	}
	if h.stopping.Load() {
		writeError(w, http.StatusServiceUnavailable, 14, "server is shutting down; connect to another pod")
		return
	}
	if !h.originAllowed(r) {
		writeError(w, http.StatusForbidden, 7, "origin "+r.Header.Get("Origin")+" is not in Websocket.AllowedOrigins")
		return
	}

	// 1. Credentials: the Authorization header, or ?token= for browsers,
	// which cannot set headers on an upgrade.
	header := r.Header.Get("Authorization")
	if header == "" && r.URL.Query().Get("token") != "" {
		header = "Bearer " + r.URL.Query().Get("token")
	}
	token, err := auth.ParseBearer(header)
	if err != nil {
		writeError(w, http.StatusUnauthorized, 16, err.Error()+"; send \"Authorization: Bearer <token>\" or ?token=<token>")
		return
	}
	p, err := h.svc.Authenticate(r.Context(), token)
	if err != nil {
		e := apierr.From(err)
		status := http.StatusUnauthorized
		if e.Code != 16 {
			status = http.StatusServiceUnavailable
		}
		writeError(w, status, int(e.Code), e.Message)
		return
	}
	enc, err := ParseEncoding(r.URL.Query().Get("encoding"))
	if err != nil {
		writeError(w, http.StatusBadRequest, 3, err.Error())
		return
	}

	// 2. A slot under MaxConnNum, reserved before the upgrade so a burst of
	// connects cannot overshoot.
	if !h.reserveSlot() {
		writeError(w, http.StatusServiceUnavailable, 8, "server is at Websocket.MaxConnNum connections; retry later or connect to another pod")
		return
	}

	// 3. Upgrade and register.
	c, err := h.upgrade(w, r)
	if err != nil {
		h.active.Add(-1)
		h.log.Debug("websocket upgrade failed", "user_id", p.UserID, "err", err)
		return
	}
	c.p, c.enc = p, enc
	if err := h.start(c); err != nil {
		h.log.Error("start connection", "user_id", p.UserID, "err", err)
	}
}

func (h *Hub) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if len(h.opts.AllowedOrigins) == 0 || origin == "" {
		return true
	}
	for _, o := range h.opts.AllowedOrigins {
		if strings.EqualFold(o, origin) || o == "*" {
			return true
		}
	}
	return false
}

func (h *Hub) reserveSlot() bool {
	for {
		n := h.active.Load()
		if n >= int64(h.opts.MaxConnNum) {
			return false
		}
		if h.active.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// upgrade completes the handshake and keeps only the socket: the server
// parses client frames and writes its own frames itself, so gorilla's
// connection and its buffers are released at once.
func (h *Hub) upgrade(w http.ResponseWriter, r *http.Request) (*conn, error) {
	u := websocket.Upgrader{
		ReadBufferSize:    128,
		WriteBufferSize:   128,
		HandshakeTimeout:  10 * time.Second,
		EnableCompression: h.opts.Compression,
		CheckOrigin:       func(*http.Request) bool { return true },
	}
	wsConn, err := u.Upgrade(w, r, nil)
	if err != nil {
		return nil, err
	}
	nc := wsConn.NetConn()
	c := &conn{h: h, id: h.newConnID(), netConn: nc, closed: make(chan struct{})}
	c.parser = wireParser{maxMessage: h.opts.MaxFrameBytes, compression: h.opts.Compression && offersDeflate(r)}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		nc.Close()
		return nil, errors.New("connection does not expose its socket")
	}
	if c.raw, err = sc.SyscallConn(); err != nil {
		nc.Close()
		return nil, err
	}
	if err := c.raw.Control(func(fd uintptr) { c.fd = int(fd) }); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// offersDeflate reports whether the client offered permessage-deflate,
// which gorilla accepts when compression is enabled.
func offersDeflate(r *http.Request) bool {
	for _, v := range r.Header.Values("Sec-WebSocket-Extensions") {
		for _, ext := range strings.Split(v, ",") {
			name, _, _ := strings.Cut(ext, ";")
			if strings.EqualFold(strings.TrimSpace(name), "permessage-deflate") {
				return true
			}
		}
	}
	return false
}

// start registers an upgraded connection, records it in presence (which
// also replaces an older connection of the same user and platform) and
// starts reading.
func (h *Hub) start(c *conn) error {
	now := time.Now()
	c.opened = now
	c.lastRead.Store(now.UnixNano())
	c.lastPing.Store(now.UnixNano())
	c.pingJitter = rand.Int64N(int64(h.opts.PingInterval/2) + 1)
	h.register(c)
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	if err := h.svc.ConnectionOpened(ctx, c.p, c.id, now); err != nil {
		e := apierr.From(err)
		c.sendFrame(errorFrame("", int32(e.Code), e.Message, nil), c.enc)
		c.closeWith(websocket.CloseInternalServerErr, "cannot register the connection: "+e.Message, false)
		return err
	}
	if err := h.poller.add(c); err != nil {
		c.closeWith(websocket.CloseInternalServerErr, "cannot watch the connection", false)
		return err
	}
	h.log.Debug("connection opened", "conn_id", c.id, "user_id", c.p.UserID, "platform", c.p.Platform, "encoding", c.enc.String())
	return nil
}

func writeError(w http.ResponseWriter, status, code int, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": code, "message": message})
}

// Server serves the hub on the websocket port.
type Server struct {
	hub  *Hub
	http *http.Server
}

// NewServer returns a server for the hub.
func NewServer(hub *Hub) *Server {
	return &Server{hub: hub, http: &http.Server{
		Handler:           hub,
		ReadHeaderTimeout: 10 * time.Second,
		// Hijacked connections leave the server's tracking, so its idle
		// timeout applies only to requests that were refused.
		IdleTimeout: 30 * time.Second,
	}}
}

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.http.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, closes every connection with 1001 (going away)
// and waits for them, bounded by ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	return errors.Join(err, s.hub.Close(ctx))
}
