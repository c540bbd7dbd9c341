package kafkaqueue

import (
	"strings"
	"testing"
	"time"
)

func TestThrottledLogDropsRepeats(t *testing.T) {
	log, buf := newLogger()
	l := newThrottledLog(log)
	l.every = time.Hour
	for range 3 {
		l.warn("fetch failed", "partition", 1)
	}
	l.warn("commit failed")

	if got := strings.Count(buf.String(), "fetch failed"); got != 1 {
		t.Errorf("records of a message repeated 3 times within the interval: got %d, want 1", got)
	}
	if got := strings.Count(buf.String(), "commit failed"); got != 1 {
		t.Errorf("records of another message: got %d, want 1, because each message is throttled on its own", got)
	}

	// Once the interval passed, the next record reports the dropped ones.
	l.byMsg["fetch failed"].next = time.Time{}
	l.warn("fetch failed", "partition", 1)
	if !strings.Contains(buf.String(), "suppressed_since_last=2") {
		t.Errorf("log %q: want the record after the interval to report 2 dropped records", buf.String())
	}
}
