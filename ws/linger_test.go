package ws

import (
	"testing"
	"time"
)

// TestScheduleFlushLingersOnlyPushes checks which flushes wait for the
// linger timer: a push to a connection that has just written does, a reply
// or a push to a quiet connection goes to the writers at once.
func TestScheduleFlushLingersOnlyPushes(t *testing.T) {
	h := &Hub{writers: &writerPool{work: make(chan *conn, 4)}, lingerWake: make(chan struct{}, 1)}
	recent, quiet := &conn{h: h}, &conn{h: h}
	recent.lastFlush.Store(time.Now().UnixNano())
	quiet.lastFlush.Store(time.Now().Add(-time.Second).UnixNano())

	submitted := func() *conn {
		select {
		case c := <-h.writers.work:
			return c
		default:
			return nil
		}
	}

	h.scheduleFlush(recent, outFrame{push: false})
	if got := submitted(); got != recent {
		t.Fatalf("reply to a connection that just wrote: submitted %p, want %p at once", got, recent)
	}
	h.scheduleFlush(quiet, outFrame{push: true})
	if got := submitted(); got != quiet {
		t.Fatalf("push to a quiet connection: submitted %p, want %p at once", got, quiet)
	}
	if len(h.lingering) != 0 || len(h.lingerWake) != 0 {
		t.Fatalf("nothing should linger yet: %d lingering, %d wake-ups", len(h.lingering), len(h.lingerWake))
	}

	h.scheduleFlush(recent, outFrame{push: true})
	if got := submitted(); got != nil {
		t.Fatalf("push to a connection that just wrote was submitted at once")
	}
	if len(h.lingering) != 1 || h.lingering[0] != recent {
		t.Fatalf("lingering = %v, want the connection that just wrote", h.lingering)
	}
	if len(h.lingerWake) != 1 {
		t.Fatal("the first lingering connection did not wake the linger goroutine")
	}
}
