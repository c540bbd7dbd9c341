package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
)

// runPull stores -fill messages in a group of the -n pulling users, then
// each user pulls pages of -page messages at random offsets, one request
// at a time, for -duration.
func (r *runner) runPull(ctx context.Context) (*report, error) {
	started, load := time.Now(), loadAverage()
	srv := r.startTracking(ctx)

	// 1. A group of the pullers, each connected.
	groupID := r.o.prefix + "-pull"
	conv := server.GroupConversationID(groupID)
	users := make([]string, r.o.conns)
	specs := make([]clientSpec, r.o.conns)
	for i := range users {
		users[i] = fmt.Sprintf("%s-r%d", r.o.prefix, i)
		specs[i] = clientSpec{user: users[i], convs: []string{conv}, fanout: int64(r.o.conns - 1)}
	}
	specs[0].window = maxWindow
	if err := r.createGroup(ctx, groupID, users); err != nil {
		return nil, err
	}
	clients, err := r.dialAll(ctx, specs)
	if err != nil {
		return nil, fmt.Errorf("connect pullers: %w", err)
	}
	defer closeAll(clients)

	// 2. Fill the conversation and let its pushes settle, so they do not
	// share the machine with the pulls.
	if err := r.fill(ctx, clients, groupID); err != nil {
		return nil, err
	}

	// 3. Pull for -duration.
	stopProgress := r.startProgress(ctx, srv.progressRSS(ctx))
	defer stopProgress()
	srv.markPhase(ctx)
	phaseStart := r.startMeasuring()
	pullCtx, stopPulling := context.WithTimeout(ctx, r.o.duration)
	perPuller := r.o.rate / float64(len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.pullLoop(pullCtx, c, conv, perPuller, staggerDelay(i, r.o.rate))
		}()
	}
	wg.Wait()
	stopPulling()
	phase := time.Since(phaseStart)
	srv.sample(ctx)
	stopProgress()

	// 4. Report.
	rep := r.newReport(started, load, len(clients))
	rep.PhaseSeconds = round3(phase.Seconds())
	rep.Connections.Held = countAlive(clients)
	rep.Pulls = &ratedCount{Count: r.pulls.Load(), PerSecond: round3(float64(r.pulls.Load()) / phase.Seconds())}
	rep.Server = srv.report(0)
	r.finish(rep)
	if rep.Pulls.Count == 0 && ctx.Err() == nil {
		return rep, fmt.Errorf("no pull succeeded (errors: %s)", r.errs.Summary(5))
	}
	return rep, nil
}

// fill sends -fill messages from the first client as fast as the window
// allows and waits for their pushes.
func (r *runner) fill(ctx context.Context, clients []*client, group string) error {
	filler := clients[0]
	for range r.o.fill {
		select {
		case filler.window <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		case <-filler.done:
			return fmt.Errorf("fill: connection closed: %v", filler.closeErr)
		}
		if err := filler.sendMsg("", group); err != nil {
			return fmt.Errorf("fill: %w", err)
		}
		r.sent.Add(1)
	}
	r.drainSends(ctx, clients)
	if got := r.accepted.Load(); got < int64(r.o.fill) {
		return fmt.Errorf("fill: %d of %d messages stored (errors: %s)", got, r.o.fill, r.errs.Summary(5))
	}
	return nil
}

// pullLoop pulls random full pages until ctx ends, the first after delay.
func (r *runner) pullLoop(ctx context.Context, c *client, conv string, rate float64, delay time.Duration) {
	p := newPacer(rate)
	p.delay(delay)
	maxBegin := int64(r.o.fill - r.o.page + 1)
	for p.wait(ctx) == nil {
		begin := 1 + rand.Int64N(maxBegin)
		if !r.pullOnce(ctx, c, conv, begin) {
			return
		}
	}
}

// pullOnce sends one PullMsg and checks the page. It returns false when
// the connection is unusable.
func (r *runner) pullOnce(ctx context.Context, c *client, conv string, begin int64) bool {
	now := time.Now()
	f := &imlitev1.Frame{ReqId: reqIDAt(reqPull, now), Body: &imlitev1.Frame_PullMsg{PullMsg: &imlitev1.PullMsgRequest{
		ConversationId: conv, BeginSeq: begin, EndSeq: begin + int64(r.o.page) - 1, Limit: int32(r.o.page),
	}}}
	if err := c.write(f); err != nil {
		return false
	}
	resp, err := c.await(ctx, f.ReqId)
	var errFrame *errorReply
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return false
	case errors.As(err, &errFrame):
		// The reader counted the error frame with its code.
		return true
	case !c.alive():
		return false
	default:
		r.errs.Add("pull: no reply")
		return true
	}
	r.recordLatency(r.pullLat, now, resp.at)
	msgs := resp.frame.GetPullMsgResp().GetMessages()
	if len(msgs) != r.o.page || msgs[0].GetSeq() != begin {
		r.errs.Add("pull: page not as requested")
		return true
	}
	r.pulls.Add(1)
	return true
}
