package main

import (
	"context"
	"fmt"
	"time"
)

// runIdle opens -n connections, holds them for -duration and reports the
// server's RSS per connection: (RSS at the end - RSS before the first
// connection) / connections still open.
func (r *runner) runIdle(ctx context.Context) (*report, error) {
	started, load := time.Now(), loadAverage()
	srv := r.startTracking(ctx)
	stopProgress := r.startProgress(ctx, srv.progressRSS(ctx))
	defer stopProgress()

	// 1. Open the connections, as many as the open-file limit allows.
	specs := make([]clientSpec, r.o.conns)
	for i := range specs {
		specs[i] = clientSpec{user: fmt.Sprintf("%s-i%d", r.o.prefix, i)}
	}
	res := r.dialMany(ctx, specs)
	if res.stoppedAtLimit {
		r.note("stopped at %d connections: this process reached its open-file limit of %d", res.connected, r.fdLimit)
	}

	// 2. Hold them. The server's garbage collector and scavenger need time
	// to return what the ramp allocated, so RSS is read at the end.
	srv.markPhase(ctx)
	phaseStart := time.Now()
	hold := time.NewTimer(r.o.duration)
	select {
	case <-hold.C:
	case <-ctx.Done():
		hold.Stop()
	}
	srv.sample(ctx)
	stopProgress()

	// 3. Report with the connections that stayed open, then close them.
	rep := r.newReport(started, load, r.o.conns)
	rep.PhaseSeconds = round3(time.Since(phaseStart).Seconds())
	rep.Connections.Held = countAlive(res.clients)
	rep.Connections.StoppedAtOpenFileLimit = res.stoppedAtLimit
	rep.Server = srv.report(rep.Connections.Held)
	r.finish(rep)
	closeAll(res.clients)
	if res.connected == 0 {
		return rep, fmt.Errorf("no connection opened (errors: %s); first error: %v", r.errs.Summary(5), res.firstErr)
	}
	return rep, nil
}

func countAlive(clients []*client) int64 {
	var n int64
	for _, c := range clients {
		if c != nil && c.alive() {
			n++
		}
	}
	return n
}
