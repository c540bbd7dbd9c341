//go:build !linux

package ws

// goroutinePoller is the portable fallback: one goroutine per connection
// waits in the Go runtime's poller for the socket to become readable. It
// costs a goroutine stack per idle connection, which epoll avoids on Linux.
type goroutinePoller struct {
	h *Hub
}

func newPoller(h *Hub, _ int) (poller, error) {
	return &goroutinePoller{h: h}, nil
}

func (p *goroutinePoller) add(c *conn) error {
	go func() {
		for {
			if err := c.waitReadable(); err != nil {
				return
			}
			p.h.readReady(c)
			select {
			case <-c.closed:
				return
			default:
			}
		}
	}()
	return nil
}

// rearm is a no-op: the connection's goroutine waits again by itself.
func (p *goroutinePoller) rearm(*conn) {}

func (p *goroutinePoller) remove(*conn) {}

func (p *goroutinePoller) close() {}

// waitReadable blocks until the socket has data or is closed.
func (c *conn) waitReadable() error {
	waited := false
	return c.raw.Read(func(uintptr) bool {
		if waited {
			return true
		}
		waited = true
		return false
	})
}
