package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
)

// runChurn opens -rate connections per second for -duration. Each one
// makes a ping round trip, stays open for -lifetime and closes normally.
func (r *runner) runChurn(ctx context.Context) (*report, error) {
	started, load := time.Now(), loadAverage()
	srv := r.startTracking(ctx)
	stopProgress := r.startProgress(ctx, srv.progressRSS(ctx))
	defer stopProgress()

	// 1. Start connections at the rate, each on its own goroutine, with no
	// more open at once than the open-file limit allows.
	srv.markPhase(ctx)
	phaseStart := time.Now()
	churnCtx, stopChurn := context.WithTimeout(ctx, r.o.duration)
	defer stopChurn()
	slots := make(chan struct{}, r.maxConns())
	p := newPacer(r.o.rate)
	var wg sync.WaitGroup
	launched := 0
	for p.wait(churnCtx) == nil {
		select {
		case slots <- struct{}{}:
		default:
			r.errs.Add("churn: skipped at the open-file limit")
			continue
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-slots }()
			r.churnOne(ctx, i)
		}(launched)
		launched++
	}
	phase := time.Since(phaseStart)

	// 2. Let the last connections live out their lifetime.
	wg.Wait()
	srv.sample(ctx)
	stopProgress()

	rep := r.newReport(started, load, launched)
	rep.PhaseSeconds = round3(phase.Seconds())
	rep.Churn = &churnReport{
		Opened:          r.opened.Load(),
		Closed:          r.closes.Load(),
		OpenedPerSecond: round3(float64(r.opened.Load()) / phase.Seconds()),
	}
	rep.Server = srv.report(0)
	r.finish(rep)
	if r.opened.Load() == 0 && ctx.Err() == nil {
		return rep, fmt.Errorf("no connection opened (errors: %s)", r.errs.Summary(5))
	}
	return rep, nil
}

// churnOne runs the life of one connection.
func (r *runner) churnOne(ctx context.Context, i int) {
	c, err := r.dial(ctx, clientSpec{user: fmt.Sprintf("%s-c%d", r.o.prefix, i)})
	if err != nil {
		return
	}
	defer func() {
		c.close()
		r.closes.Add(1)
	}()

	// A ping round trip shows that the server registered the connection
	// and serves its requests.
	start := time.Now()
	ping := &imlitev1.Frame{Body: &imlitev1.Frame_Ping{Ping: &imlitev1.Ping{ClientTime: start.UnixMilli()}}}
	if _, err := c.call(ctx, ping); err != nil {
		if ctx.Err() == nil && c.alive() {
			r.errs.Add("churn: ping failed")
		}
		return
	}
	r.pingLat.Record(time.Since(start))

	t := time.NewTimer(r.o.lifetime)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-c.done:
	}
}
