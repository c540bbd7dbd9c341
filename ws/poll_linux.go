//go:build linux

package ws

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// epollPoller watches every connection's socket with one epoll instance.
// Each socket is registered one-shot: after an event it is disarmed until
// the worker that read it re-arms it, so at most one worker reads a
// connection at a time. Level triggering makes a re-arm report data that
// arrived while the socket was disarmed.
type epollPoller struct {
	h    *Hub
	epfd int
	// wakeFd is an eventfd that interrupts epoll_wait on close.
	wakeFd int

	mu    sync.RWMutex
	conns map[int]*conn

	work     chan *conn
	workers  sync.WaitGroup
	loopDone chan struct{}
	closing  atomic.Bool
}

const pollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

func newPoller(h *Hub, workers int) (poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, fmt.Errorf("epoll_ctl add eventfd: %w", err)
	}
	p := &epollPoller{
		h: h, epfd: epfd, wakeFd: wake, conns: make(map[int]*conn),
		work: make(chan *conn, 4096), loopDone: make(chan struct{}),
	}
	for range workers {
		p.workers.Add(1)
		go func() {
			defer p.workers.Done()
			for c := range p.work {
				p.h.readReady(c)
			}
		}()
	}
	go func() {
		defer close(p.loopDone)
		p.loop()
	}()
	return p, nil
}

func (p *epollPoller) add(c *conn) error {
	p.mu.Lock()
	p.conns[c.fd] = c
	p.mu.Unlock()
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, c.fd, &unix.EpollEvent{Events: pollEvents, Fd: int32(c.fd)}); err != nil {
		p.mu.Lock()
		delete(p.conns, c.fd)
		p.mu.Unlock()
		return fmt.Errorf("epoll_ctl add: %w", err)
	}
	return nil
}

func (p *epollPoller) rearm(c *conn) {
	p.mu.RLock()
	current := p.conns[c.fd] == c
	p.mu.RUnlock()
	if !current {
		return
	}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, c.fd, &unix.EpollEvent{Events: pollEvents, Fd: int32(c.fd)}); err != nil && !errors.Is(err, unix.ENOENT) {
		p.h.log.Error("epoll re-arm failed", "conn_id", c.id, "err", err)
		c.closeWith(closeNone, "poller failure", true)
	}
}

// remove takes the socket out of epoll; it is safe to call more than once.
func (p *epollPoller) remove(c *conn) {
	p.mu.Lock()
	if p.conns[c.fd] != c {
		p.mu.Unlock()
		return
	}
	delete(p.conns, c.fd)
	p.mu.Unlock()
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
}

func (p *epollPoller) loop() {
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			p.h.log.Error("epoll_wait failed; websocket reads stop", "err", err)
			return
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == p.wakeFd {
				if p.closing.Load() {
					return
				}
				continue
			}
			p.mu.RLock()
			c := p.conns[fd]
			p.mu.RUnlock()
			if c != nil {
				p.work <- c
			}
		}
	}
}

func (p *epollPoller) close() {
	if !p.closing.CompareAndSwap(false, true) {
		return
	}
	var one [8]byte
	one[0] = 1
	_, _ = unix.Write(p.wakeFd, one[:])
	// The loop sends on work, so it stops before work is closed.
	<-p.loopDone
	close(p.work)
	p.workers.Wait()
	unix.Close(p.epfd)
	unix.Close(p.wakeFd)
}
