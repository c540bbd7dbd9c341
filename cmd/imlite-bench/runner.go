package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server/auth"
)

// runner holds what every scenario shares: the dialers, the token signer
// and the counters the progress line and the report read.
type runner struct {
	o       options
	signer  *auth.Signer
	dialers []*websocket.Dialer
	urls    []string
	fdLimit uint64
	stderr  io.Writer
	probe   processProbe

	nextConn atomic.Int64
	open     atomic.Int64
	peak     atomic.Int64
	opened   atomic.Int64

	sent      atomic.Int64
	accepted  atomic.Int64
	delivered atomic.Int64
	// expected is the pushes the accepted sends should cause.
	expected atomic.Int64
	pulls    atomic.Int64
	closes   atomic.Int64
	// lastAccept and lastDeliver are Unix nanoseconds of the latest send
	// reply and push, for rates over the time the work really took.
	lastAccept  atomic.Int64
	lastDeliver atomic.Int64
	// measureFrom is the Unix nanosecond from which a request's latency
	// counts, the end of -warmup.
	measureFrom atomic.Int64

	deliverLat *histogram
	ackLat     *histogram
	pullLat    *histogram
	connectLat *histogram
	pingLat    *histogram
	errs       *errorCounts
	acc        *acceptedSeqs

	notesMu sync.Mutex
	notes   []string
}

func newRunner(o options, signer *auth.Signer, fdLimit uint64, stderr io.Writer) (*runner, error) {
	r := &runner{
		o:          o,
		signer:     signer,
		dialers:    newDialers(o.sources, o.dialTimeout),
		fdLimit:    fdLimit,
		stderr:     &lockedWriter{w: stderr},
		deliverLat: newHistogram(),
		ackLat:     newHistogram(),
		pullLat:    newHistogram(),
		connectLat: newHistogram(),
		pingLat:    newHistogram(),
		errs:       newErrorCounts(),
		acc:        newAcceptedSeqs(),
	}
	// Nothing counts before the measured phase starts.
	r.measureFrom.Store(math.MaxInt64)
	for _, raw := range o.urls {
		u, err := withEncoding(raw, o.encoding.String())
		if err != nil {
			return nil, err
		}
		r.urls = append(r.urls, u)
	}
	switch {
	case o.serverPID > 0:
		r.probe = procProbe{pid: o.serverPID, root: "/proc"}
	case o.metricsURL != "":
		r.probe = metricsProbe{url: o.metricsURL, client: &http.Client{Timeout: 5 * time.Second}}
	}
	return r, nil
}

// withEncoding sets the encoding query parameter of a websocket URL.
func withEncoding(raw, encoding string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("-url %q: %w", raw, err)
	}
	q := u.Query()
	q.Set("encoding", encoding)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// note records a remark for the report and prints it.
func (r *runner) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.notesMu.Lock()
	r.notes = append(r.notes, msg)
	r.notesMu.Unlock()
	fmt.Fprintln(r.stderr, "imlite-bench:", msg)
}

// startMeasuring starts the measured phase now: latencies count for
// requests sent after -warmup.
func (r *runner) startMeasuring() time.Time {
	now := time.Now()
	r.measureFrom.Store(now.Add(r.o.warmup).UnixNano())
	return now
}

// recordLatency adds the latency of a request sent at sent, unless it was
// sent during the warm-up.
func (r *runner) recordLatency(h *histogram, sent, now time.Time) {
	if sent.UnixNano() >= r.measureFrom.Load() {
		h.Record(now.Sub(sent))
	}
}

// maxConns returns how many connections fit under the open-file limit.
func (r *runner) maxConns() int {
	return int(r.fdLimit) - fdReserve
}

// dial opens one connection for spec and starts its reader.
func (r *runner) dial(ctx context.Context, spec clientSpec) (*client, error) {
	i := r.nextConn.Add(1) - 1
	d := r.dialers[i%int64(len(r.dialers))]
	target := r.urls[i%int64(len(r.urls))]
	role := imlitev1.Role_ROLE_USER
	if spec.admin {
		role = imlitev1.Role_ROLE_ADMIN
	}
	tok, _, err := r.signer.Issue(spec.user, benchPlatform, role, r.o.tokenTTL)
	if err != nil {
		return nil, fmt.Errorf("sign token for %s: %w", spec.user, err)
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)

	start := time.Now()
	conn, resp, err := d.DialContext(ctx, target, h)
	if err != nil {
		r.errs.Add(dialErrorKind(err, resp))
		if resp != nil {
			// The server's reason, such as an expired token or a wrong
			// secret, is in the body of the refused handshake.
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if reason := strings.TrimSpace(string(body)); reason != "" {
				return nil, fmt.Errorf("dial %s as %s: HTTP %d: %s", target, spec.user, resp.StatusCode, reason)
			}
			return nil, fmt.Errorf("dial %s as %s: HTTP %d: %w", target, spec.user, resp.StatusCode, err)
		}
		return nil, fmt.Errorf("dial %s as %s: %w", target, spec.user, err)
	}
	r.connectLat.Record(time.Since(start))
	c := newClient(r, spec, conn)
	r.opened.Add(1)
	r.raisePeak(r.open.Add(1))
	go c.readLoop()
	return c, nil
}

func (r *runner) raisePeak(n int64) {
	for {
		p := r.peak.Load()
		if n <= p || r.peak.CompareAndSwap(p, n) {
			return
		}
	}
}

// dialResult is the outcome of opening many connections.
type dialResult struct {
	clients []*client
	// connected counts the non-nil entries of clients.
	connected int
	// stoppedAtLimit is true when dialing stopped because this process
	// reached its open-file limit.
	stoppedAtLimit bool
	firstErr       error
}

// dialMany opens a connection per spec, at most -dial-concurrency at once
// and -ramp per second. clients[i] is nil where specs[i] failed. It stops
// early when ctx ends or the open-file limit is reached.
func (r *runner) dialMany(ctx context.Context, specs []clientSpec) dialResult {
	res := dialResult{clients: make([]*client, len(specs))}
	sem := make(chan struct{}, r.o.dialConcurrency)
	p := newPacer(r.o.ramp)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var exhausted atomic.Bool
	for i, spec := range specs {
		if r.open.Load() >= int64(r.maxConns()) {
			exhausted.Store(true)
		}
		if exhausted.Load() || p.wait(ctx) != nil || !acquire(ctx, sem) {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := r.dial(ctx, spec)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if isFDExhausted(err) {
					exhausted.Store(true)
				}
				if res.firstErr == nil {
					res.firstErr = err
				}
				return
			}
			res.clients[i] = c
			res.connected++
		}()
	}
	wg.Wait()
	res.stoppedAtLimit = exhausted.Load()
	return res
}

// dialAll opens every connection of specs or fails, closing those that
// opened. Scenarios that measure messages need every member online.
func (r *runner) dialAll(ctx context.Context, specs []clientSpec) ([]*client, error) {
	res := r.dialMany(ctx, specs)
	if res.connected == len(specs) {
		return res.clients, nil
	}
	closeAll(res.clients)
	if res.firstErr == nil {
		res.firstErr = ctx.Err()
	}
	return nil, fmt.Errorf("opened %d of %d connections (errors: %s); first error: %v",
		res.connected, len(specs), r.errs.Summary(5), res.firstErr)
}

func acquire(ctx context.Context, sem chan struct{}) bool {
	select {
	case sem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// closeAll closes the connections, 256 at a time so that closing tens of
// thousands takes seconds, not minutes.
func closeAll(clients []*client) {
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	for _, c := range clients {
		if c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c.close()
		}()
	}
	wg.Wait()
}

// waitFor polls cond every 10ms until it holds or d passes, and reports
// whether it held.
func waitFor(ctx context.Context, d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return cond()
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// drainSends waits up to -drain for every send to get its reply and then
// for every expected push, and notes what was still missing.
func (r *runner) drainSends(ctx context.Context, clients []*client) {
	outstanding := func() int {
		n := 0
		for _, c := range clients {
			n += c.outstanding()
		}
		return n
	}
	start := time.Now()
	if !waitFor(ctx, r.o.drain, func() bool { return outstanding() == 0 }) {
		r.note("%d sends still had no reply %v after sending stopped", outstanding(), r.o.drain)
	}
	rest := r.o.drain - time.Since(start)
	if !waitFor(ctx, max(rest, 0), func() bool { return r.delivered.Load() >= r.expected.Load() }) {
		r.note("%d of %d expected pushes arrived within -drain %v", r.delivered.Load(), r.expected.Load(), r.o.drain)
	}
}

// startProgress prints a progress line every -progress until the returned
// function is called; that function returns once printing stopped. extra
// adds scenario-specific fields.
func (r *runner) startProgress(ctx context.Context, extra func() string) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.progress(ctx, extra)
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
}

func (r *runner) progress(ctx context.Context, extra func() string) {
	t := time.NewTicker(r.o.progress)
	defer t.Stop()
	start := time.Now()
	last := r.counters()
	lastLat := r.deliverLat.Snapshot()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cur := r.counters()
			lat := r.deliverLat.Snapshot()
			line := r.progressLine(now.Sub(start), cur, last, lat.Sub(lastLat), r.o.progress.Seconds())
			if extra != nil {
				line += extra()
			}
			fmt.Fprintln(r.stderr, line)
			last, lastLat = cur, lat
		}
	}
}

// counterSet is one reading of the counters.
type counterSet struct {
	open, sent, accepted, delivered, pulls, opened, errs int64
}

func (r *runner) counters() counterSet {
	return counterSet{
		open: r.open.Load(), sent: r.sent.Load(), accepted: r.accepted.Load(),
		delivered: r.delivered.Load(), pulls: r.pulls.Load(), opened: r.opened.Load(),
		errs: r.errs.Total(),
	}
}

func (r *runner) progressLine(elapsed time.Duration, cur, last counterSet, lat histSnapshot, secs float64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s t=%.0fs conns=%d", r.o.scenario, elapsed.Seconds(), cur.open)
	rate := func(name string, now, before int64) {
		if now > 0 {
			fmt.Fprintf(&b, " %s=%d (%.0f/s)", name, now, float64(now-before)/secs)
		}
	}
	if r.o.scenario == scenarioChurn {
		rate("opened", cur.opened, last.opened)
	}
	rate("sent", cur.sent, last.sent)
	rate("accepted", cur.accepted, last.accepted)
	rate("delivered", cur.delivered, last.delivered)
	rate("pulls", cur.pulls, last.pulls)
	if lat.total > 0 {
		fmt.Fprintf(&b, " deliver_p99=%.2fms", millis(lat.Quantile(0.99)))
	}
	fmt.Fprintf(&b, " errors=%d", cur.errs)
	if cur.errs > last.errs {
		fmt.Fprintf(&b, " [%s]", r.errs.Summary(3))
	}
	return b.String()
}

// sampleServer reads the server's process, or returns false without a
// probe or on failure (counted as an error).
func (r *runner) sampleServer(ctx context.Context) (processSample, bool) {
	if r.probe == nil {
		return processSample{}, false
	}
	s, err := r.probe.Sample(ctx)
	if err != nil {
		r.errs.Add("server probe failed")
		r.note("server probe %s: %v", r.probe.Source(), err)
		return processSample{}, false
	}
	return s, true
}

// lockedWriter serializes writes, because the progress goroutine and the
// scenario both print to stderr.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
