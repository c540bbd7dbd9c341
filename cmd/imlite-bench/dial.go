package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// raiseOpenFileLimit lifts the soft RLIMIT_NOFILE to the hard limit and
// returns the limit in force. An unprivileged process cannot go above the
// hard limit.
func raiseOpenFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("read open-file limit: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, fmt.Errorf("raise open-file limit to %d: %w", lim.Max, err)
		}
	}
	return lim.Cur, nil
}

// fdReserve is the descriptors kept free of connections for the runtime,
// /proc reads, the metrics scrape and the report file.
const fdReserve = 32

// writeBuffers lends gorilla write buffers only while a frame is written,
// so an idle connection of the tool holds none.
var writeBuffers websocket.BufferPool = &sync.Pool{}

// newDialers returns one dialer per source address, 127.0.0.2 upwards, or a
// single dialer with the kernel's choice when sources is 0. Each pair of
// source and destination address and port has its own ~28k ephemeral ports.
func newDialers(sources int, timeout time.Duration) []*websocket.Dialer {
	mk := func(local net.Addr) *websocket.Dialer {
		nd := &net.Dialer{Timeout: timeout, LocalAddr: local}
		if local != nil {
			nd.Control = bindNoPort
		}
		return &websocket.Dialer{
			NetDialContext:   nd.DialContext,
			HandshakeTimeout: timeout,
			// Pushes in these scenarios are a few hundred bytes; gorilla
			// grows its buffer for larger frames.
			ReadBufferSize:  1024,
			WriteBufferPool: writeBuffers,
		}
	}
	if sources == 0 {
		return []*websocket.Dialer{mk(nil)}
	}
	out := make([]*websocket.Dialer, sources)
	for i := range out {
		out[i] = mk(&net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i))})
	}
	return out
}

// dialErrorKind names a failed dial for the error counts.
func dialErrorKind(err error, resp *http.Response) string {
	var errno syscall.Errno
	var netErr net.Error
	switch {
	case resp != nil:
		return fmt.Sprintf("dial: HTTP %d", resp.StatusCode)
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "dial: too many open files"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return "dial: no free local port"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "dial: connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "dial: connection reset"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "dial: timed out"
	case errors.Is(err, context.Canceled):
		return "dial: canceled"
	case errors.Is(err, websocket.ErrBadHandshake):
		return "dial: bad handshake"
	case errors.As(err, &errno):
		return "dial: " + errno.Error()
	}
	return "dial: other"
}

// isFDExhausted reports whether err means this process ran out of file
// descriptors, after which more dials are pointless.
func isFDExhausted(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}
