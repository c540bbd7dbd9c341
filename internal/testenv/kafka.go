// Package testenv starts throwaway backends on loopback addresses for tests
// and stops them when the test ends.
package testenv

import (
	"errors"
	"net"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka is an in-process Kafka cluster (kfake, which speaks the Kafka wire
// protocol) listening on 127.0.0.1. Its listeners can be stopped and
// restarted to simulate an outage: the cluster keeps its topics, records,
// groups and committed offsets meanwhile, as a real cluster does across a
// network partition.
type Kafka struct {
	cluster *kfake.Cluster

	mu        sync.Mutex
	listeners []*gatedListener
}

// StartKafka starts a cluster with kfake's defaults (three brokers, no
// automatic topic creation) changed by opts, and closes it when t ends. A
// kfake.ListenFn among opts is replaced, because the listeners must be
// gated for Stop and Restart.
func StartKafka(t testing.TB, opts ...kfake.Opt) *Kafka {
	t.Helper()
	k := &Kafka{}
	opts = append(opts, kfake.ListenFn(k.listen))
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatalf("start kfake cluster: %v", err)
	}
	k.cluster = c
	t.Cleanup(c.Close)
	return k
}

// Addrs returns the seed addresses of the brokers, host:port each.
func (k *Kafka) Addrs() []string { return k.cluster.ListenAddrs() }

// Cluster returns the kfake cluster, for the control functions kfake offers.
func (k *Kafka) Cluster() *kfake.Cluster { return k.cluster }

// Stop closes every broker listener and every open client connection, so
// clients get "connection refused" until Restart. Stop on a stopped cluster
// does nothing.
func (k *Kafka) Stop() {
	for _, l := range k.gated() {
		l.stop()
	}
}

// Restart listens again on the addresses of the stopped listeners. It fails
// t when a port was taken meanwhile.
func (k *Kafka) Restart(t testing.TB) {
	t.Helper()
	for _, l := range k.gated() {
		if err := l.restart(); err != nil {
			t.Fatalf("restart kfake listener: %v", err)
		}
	}
}

func (k *Kafka) gated() []*gatedListener {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]*gatedListener(nil), k.listeners...)
}

// listen is the kfake.ListenFn of the cluster.
func (k *Kafka) listen(network, address string) (net.Listener, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	l := &gatedListener{network: network, addr: ln.Addr().String(), ln: ln, conns: make(map[*trackedConn]struct{})}
	k.mu.Lock()
	k.listeners = append(k.listeners, l)
	k.mu.Unlock()
	return l, nil
}

// gatedListener is a net.Listener whose socket can be closed and opened
// again on the same address. kfake's accept loop ends at the first Accept
// error, so while the gate is stopped Accept waits instead of failing.
type gatedListener struct {
	network, addr string

	mu sync.Mutex
	// ln is nil while stopped.
	ln net.Listener
	// reopened is closed by restart or Close to wake an Accept that waits
	// while stopped.
	reopened chan struct{}
	closed   bool
	conns    map[*trackedConn]struct{}
}

func (l *gatedListener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		ln, reopened, closed := l.ln, l.reopened, l.closed
		l.mu.Unlock()
		if closed {
			return nil, net.ErrClosed
		}
		if ln == nil {
			<-reopened
			continue
		}

		c, err := ln.Accept()
		if err != nil {
			if l.replaced(ln) {
				continue
			}
			return nil, err
		}
		if tc, ok := l.track(ln, c); ok {
			return tc, nil
		}
	}
}

// replaced reports whether ln was closed by stop or Close rather than by
// a failure.
func (l *gatedListener) replaced(ln net.Listener) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ln != ln
}

// track registers a connection accepted on ln, or closes it when ln was
// stopped while Accept returned.
func (l *gatedListener) track(ln net.Listener, c net.Conn) (*trackedConn, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != ln {
		_ = c.Close()
		return nil, false
	}
	tc := &trackedConn{Conn: c, owner: l}
	l.conns[tc] = struct{}{}
	return tc, true
}

func (l *gatedListener) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln == nil || l.closed {
		return
	}
	_ = l.ln.Close()
	l.ln = nil
	l.reopened = make(chan struct{})
	for c := range l.conns {
		_ = c.Conn.Close()
		delete(l.conns, c)
	}
}

func (l *gatedListener) restart() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil || l.closed {
		return nil
	}
	ln, err := net.Listen(l.network, l.addr)
	if err != nil {
		return err
	}
	l.ln = ln
	close(l.reopened)
	return nil
}

func (l *gatedListener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	var err error
	if l.ln != nil {
		err = l.ln.Close()
		l.ln = nil
	} else {
		close(l.reopened)
	}
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (l *gatedListener) Addr() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return l.ln.Addr()
	}
	addr, err := net.ResolveTCPAddr(l.network, l.addr)
	if err != nil {
		return &net.TCPAddr{}
	}
	return addr
}

// trackedConn is an accepted connection that leaves its listener's set
// when closed.
type trackedConn struct {
	net.Conn
	owner *gatedListener
}

func (c *trackedConn) Close() error {
	c.owner.mu.Lock()
	delete(c.owner.conns, c)
	c.owner.mu.Unlock()
	return c.Conn.Close()
}
