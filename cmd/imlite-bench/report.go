package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"time"
)

// report is the final JSON document of a run.
type report struct {
	Scenario  string         `json:"scenario"`
	StartedAt time.Time      `json:"started_at"`
	Params    map[string]any `json:"params"`
	// PhaseSeconds is the length of the measured phase: holding (idle),
	// sending (single, group), pulling (pull) or connecting (churn).
	PhaseSeconds float64           `json:"phase_seconds"`
	Connections  connectionsReport `json:"connections"`
	Messages     *messagesReport   `json:"messages,omitempty"`
	Pulls        *ratedCount       `json:"pulls,omitempty"`
	Churn        *churnReport      `json:"churn,omitempty"`
	// Latency holds send-to-deliver ("deliver"), send-to-reply ("send_reply"),
	// pull round trips ("pull") and TCP connect plus websocket handshake
	// ("connect") and ping round trips ("ping"), in milliseconds.
	Latency  map[string]latencyReport `json:"latency_ms"`
	Delivery *deliveryAccount         `json:"delivery_check,omitempty"`
	Errors   map[string]int64         `json:"errors"`
	Server   *serverReport            `json:"server,omitempty"`
	Tool     toolReport               `json:"tool"`
	// LoadAverage is /proc/loadavg before and after, to tell whether other
	// work shared the machine.
	LoadAverage [2]string `json:"load_average"`
	Notes       []string  `json:"notes,omitempty"`
}

type connectionsReport struct {
	Target int   `json:"target"`
	Opened int64 `json:"opened"`
	// Held is the connections open at the end of the measured phase.
	Held int64 `json:"held"`
	Peak int64 `json:"peak"`
	// StoppedAtOpenFileLimit is true when the tool ran out of file
	// descriptors before reaching Target.
	StoppedAtOpenFileLimit bool `json:"stopped_at_open_file_limit"`
}

type messagesReport struct {
	Sent               int64 `json:"sent"`
	Accepted           int64 `json:"accepted"`
	Delivered          int64 `json:"delivered"`
	ExpectedDeliveries int64 `json:"expected_deliveries"`
	// AcceptedPerSecond divides Accepted by the time from the first send
	// to the last send reply; DeliveredPerSecond likewise to the last push.
	AcceptedPerSecond  float64 `json:"accepted_per_second"`
	DeliveredPerSecond float64 `json:"delivered_per_second"`
}

type ratedCount struct {
	Count     int64   `json:"count"`
	PerSecond float64 `json:"per_second"`
}

type churnReport struct {
	Opened          int64   `json:"opened"`
	Closed          int64   `json:"closed"`
	OpenedPerSecond float64 `json:"opened_per_second"`
}

// serverReport is the server process as the probe saw it.
type serverReport struct {
	Source string `json:"source"`
	// RSSBeforeBytes is read before the tool opens any connection.
	RSSBeforeBytes int64 `json:"rss_before_bytes"`
	RSSEndBytes    int64 `json:"rss_end_bytes"`
	RSSPeakBytes   int64 `json:"rss_peak_bytes"`
	// RSSPerConnBytes is (RSSEndBytes - RSSBeforeBytes) / held
	// connections, for idle.
	RSSPerConnBytes float64 `json:"rss_per_conn_bytes,omitempty"`
	// CPUSeconds is the server's CPU time during the measured phase, and
	// CPUCores that divided by the phase's length.
	CPUSeconds float64 `json:"cpu_seconds"`
	CPUCores   float64 `json:"cpu_cores"`
}

// serverTracker follows the server through a run. The progress goroutine
// and the scenario both take readings, so mu guards the readings.
type serverTracker struct {
	r          *runner
	mu         sync.Mutex
	before     processSample
	phaseStart processSample
	last       processSample
	peak       int64
	ok         bool
}

// startTracking takes the reading before any connection opens.
func (r *runner) startTracking(ctx context.Context) *serverTracker {
	t := &serverTracker{r: r}
	if s, ok := r.sampleServer(ctx); ok {
		t.before, t.phaseStart, t.last, t.peak, t.ok = s, s, s, s.RSSBytes, true
	}
	return t
}

// sample takes a reading and returns it; ok is false without a probe.
func (t *serverTracker) sample(ctx context.Context) (processSample, bool) {
	if !t.ok {
		return processSample{}, false
	}
	s, ok := t.r.sampleServer(ctx)
	if !ok {
		return processSample{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.last = s
	t.peak = max(t.peak, s.RSSBytes)
	return s, true
}

// markPhase records the reading at the start of the measured phase.
func (t *serverTracker) markPhase(ctx context.Context) {
	if s, ok := t.sample(ctx); ok {
		t.mu.Lock()
		t.phaseStart = s
		t.mu.Unlock()
	}
}

// report returns the server section from the last reading; held is the
// connections to divide the RSS growth by, or 0.
func (t *serverTracker) report(held int64) *serverReport {
	if !t.ok {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	rep := &serverReport{
		Source:         t.r.probe.Source(),
		RSSBeforeBytes: t.before.RSSBytes,
		RSSEndBytes:    t.last.RSSBytes,
		RSSPeakBytes:   t.peak,
		CPUSeconds:     round3((t.last.CPU - t.phaseStart.CPU).Seconds()),
	}
	if wall := t.last.At.Sub(t.phaseStart.At).Seconds(); wall > 0 {
		rep.CPUCores = round3(rep.CPUSeconds / wall)
	}
	if held > 0 {
		rep.RSSPerConnBytes = math.Round(float64(t.last.RSSBytes-t.before.RSSBytes) / float64(held))
	}
	return rep
}

// progressRSS returns a progress field with the server's RSS.
func (t *serverTracker) progressRSS(ctx context.Context) func() string {
	return func() string {
		s, ok := t.sample(ctx)
		if !ok {
			return ""
		}
		return fmt.Sprintf(" server_rss=%.1fMiB server_cpu=%.1fs", float64(s.RSSBytes)/(1<<20), s.CPU.Seconds())
	}
}

// newReport fills the parts every scenario shares.
func (r *runner) newReport(started time.Time, loadBefore string, target int) *report {
	rep := &report{
		Scenario:  r.o.scenario,
		StartedAt: started.UTC(),
		Params:    r.o.params(),
		Connections: connectionsReport{
			Target: target,
			Opened: r.opened.Load(),
			Held:   r.open.Load(),
			Peak:   r.peak.Load(),
		},
		Latency:     map[string]latencyReport{},
		Errors:      r.errs.Map(),
		LoadAverage: [2]string{loadBefore, ""},
	}
	for name, h := range map[string]*histogram{"deliver": r.deliverLat, "send_reply": r.ackLat, "pull": r.pullLat, "connect": r.connectLat, "ping": r.pingLat} {
		if s := h.Snapshot(); s.total > 0 {
			rep.Latency[name] = s.report()
		}
	}
	return rep
}

// messages returns the message counts; phaseStart is when sending began.
func (r *runner) messages(phaseStart time.Time) *messagesReport {
	m := &messagesReport{
		Sent:               r.sent.Load(),
		Accepted:           r.accepted.Load(),
		Delivered:          r.delivered.Load(),
		ExpectedDeliveries: r.expected.Load(),
	}
	m.AcceptedPerSecond = perSecond(m.Accepted, phaseStart, r.lastAccept.Load())
	m.DeliveredPerSecond = perSecond(m.Delivered, phaseStart, r.lastDeliver.Load())
	return m
}

func perSecond(n int64, start time.Time, endNanos int64) float64 {
	secs := time.Unix(0, endNanos).Sub(start).Seconds()
	if n == 0 || secs <= 0 {
		return 0
	}
	return math.Round(float64(n)*10/secs) / 10
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// finish adds the error counts, the tool's own usage, the load average and
// the notes at the end of the run.
func (r *runner) finish(rep *report) {
	rep.Errors = r.errs.Map()
	rep.Tool = sampleTool(r.fdLimit)
	rep.LoadAverage[1] = loadAverage()
	r.notesMu.Lock()
	rep.Notes = append(rep.Notes, r.notes...)
	r.notesMu.Unlock()
}

// params returns the options that shape the scenario, for the record.
func (o *options) params() map[string]any {
	p := map[string]any{
		"urls": o.urls, "encoding": o.encoding.String(), "duration": o.duration.String(),
		"warmup": o.warmup.String(), "drain": o.drain.String(), "sources": o.sources, "ramp": o.ramp, "prefix": o.prefix,
	}
	switch o.scenario {
	case scenarioIdle:
		p["n"] = o.conns
	case scenarioSingle:
		p["pairs"], p["rate"], p["window"], p["size"] = o.pairs, o.rate, o.window, o.size
	case scenarioGroup:
		p["groups"], p["group_size"], p["senders"] = o.groups, o.groupSize, o.senders
		p["rate"], p["window"], p["size"] = o.rate, o.window, o.size
	case scenarioPull:
		p["n"], p["fill"], p["page"], p["rate"], p["size"] = o.conns, o.fill, o.page, o.rate, o.size
	case scenarioChurn:
		p["rate"], p["lifetime"] = o.rate, o.lifetime.String()
	}
	return p
}

// writeReport writes the JSON document to -json or w.
func writeReport(rep *report, path string, w io.Writer) error {
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	data = append(data, '\n')
	if path == "" {
		_, err = w.Write(data)
		return err
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
