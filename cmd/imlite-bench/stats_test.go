package main

import (
	"math"
	"testing"
	"time"
)

func TestBucketBoundsContainValue(t *testing.T) {
	values := []uint64{0, 1, 127, 128, 129, 255, 256, 257, 1000, 1023, 1024, 99_999, 1 << 20, 1<<33 + 12345, histMaxMicros}
	for _, v := range values {
		i := bucketOf(v)
		high := bucketHigh(i)
		if high < v {
			t.Errorf("bucketHigh(bucketOf(%d)) = %d, below the value", v, high)
		}
		if i > 0 && bucketHigh(i-1) >= v {
			t.Errorf("value %d also fits bucket %d below its own bucket %d", v, i-1, i)
		}
		if rel := float64(high-v) / math.Max(float64(v), 1); v >= histSubCount && rel > 1.0/histSubCount {
			t.Errorf("value %d reported as %d: relative error %.4f above 1/%d", v, high, rel, histSubCount)
		}
	}
	if got := bucketOf(histMaxMicros); got != histBuckets-1 {
		t.Errorf("bucketOf(max) = %d, want the last bucket %d", got, histBuckets-1)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	cases := []struct {
		name    string
		samples []time.Duration
		q       float64
		want    time.Duration
	}{
		{"empty", nil, 0.99, 0},
		{"single sample", []time.Duration{3 * time.Millisecond}, 0.5, 3 * time.Millisecond},
		{"median of 1..1000ms", spread(1000, time.Millisecond), 0.5, 500 * time.Millisecond},
		{"p90 of 1..1000ms", spread(1000, time.Millisecond), 0.9, 900 * time.Millisecond},
		{"p99 of 1..1000ms", spread(1000, time.Millisecond), 0.99, 990 * time.Millisecond},
		{"p99.9 of 1..1000ms", spread(1000, time.Millisecond), 0.999, 999 * time.Millisecond},
		{"max never exceeded", spread(10, time.Microsecond), 1, 10 * time.Microsecond},
		{"negative counts as zero", []time.Duration{-time.Second}, 0.5, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHistogram()
			for _, s := range tc.samples {
				h.Record(s)
			}
			got := h.Snapshot().Quantile(tc.q)
			tolerance := time.Duration(float64(tc.want) / histSubCount)
			if got < tc.want || got > tc.want+tolerance {
				t.Errorf("Quantile(%g) = %v, want %v to %v", tc.q, got, tc.want, tc.want+tolerance)
			}
		})
	}
}

// spread returns n samples unit, 2*unit, ..., n*unit.
func spread(n int, unit time.Duration) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = time.Duration(i+1) * unit
	}
	return out
}

func TestSnapshotSubCoversInterval(t *testing.T) {
	h := newHistogram()
	for range 100 {
		h.Record(time.Millisecond)
	}
	before := h.Snapshot()
	for range 10 {
		h.Record(50 * time.Millisecond)
	}
	interval := h.Snapshot().Sub(before)
	if interval.total != 10 {
		t.Fatalf("interval holds %d samples, want the 10 recorded after the first snapshot", interval.total)
	}
	if got := interval.Quantile(0.5); got < 50*time.Millisecond {
		t.Errorf("interval median = %v, want about 50ms because older 1ms samples are excluded", got)
	}
}

func TestLatencyReportMillis(t *testing.T) {
	h := newHistogram()
	h.Record(1500 * time.Microsecond)
	got := h.Snapshot().report()
	if got.Count != 1 || got.P50 < 1.5 || got.P50 > 1.52 || got.Max != 1.5 {
		t.Errorf("report of one 1.5ms sample = %+v, want count 1, p50 about 1.5 and max 1.5", got)
	}
}

func TestErrorCountsSummary(t *testing.T) {
	e := newErrorCounts()
	for range 3 {
		e.Add("dial: HTTP 503")
	}
	e.Add("send: code 8")
	e.Add("connection lost")
	if got := e.Total(); got != 5 {
		t.Errorf("Total = %d, want 5", got)
	}
	got := e.Summary(2)
	want := "dial: HTTP 503 x3; connection lost x1; ..."
	if got != want {
		t.Errorf("Summary(2) = %q, want %q (most frequent first, ties by name, cut at the limit)", got, want)
	}
	if m := e.Map(); m["send: code 8"] != 1 || len(m) != 3 {
		t.Errorf("Map = %v, want 3 kinds with send: code 8 once", m)
	}
	if got := newErrorCounts().Summary(3); got != "" {
		t.Errorf("Summary of no errors = %q, want empty", got)
	}
}
