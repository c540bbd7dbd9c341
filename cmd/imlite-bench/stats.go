package main

import (
	"math"
	"math/bits"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The latency histogram keeps 128 linear sub-buckets per power of two of
// microseconds, so a reported percentile is within 1/128 (0.8%) of the
// recorded value, and memory stays fixed however many samples arrive.
const (
	histSubBits  = 7
	histSubCount = 1 << histSubBits
	// histMaxMicros is the largest value with a bucket of its own (about
	// 25 days); larger values count in the last bucket.
	histMaxMicros = 1<<41 - 1
)

var histBuckets = bucketOf(histMaxMicros) + 1

// bucketOf returns the bucket of a value in microseconds.
func bucketOf(v uint64) int {
	if v < histSubCount {
		return int(v)
	}
	msb := bits.Len64(v) - 1
	shift := msb - histSubBits
	return (shift+1)*histSubCount + int(v>>shift) - histSubCount
}

// bucketHigh returns the largest value that falls in bucket i.
func bucketHigh(i int) uint64 {
	if i < histSubCount {
		return uint64(i)
	}
	shift := i/histSubCount - 1
	sub := uint64(i%histSubCount + histSubCount)
	return (sub+1)<<shift - 1
}

// histogram counts durations. Record is safe for concurrent use.
type histogram struct {
	counts []atomic.Uint64
	max    atomic.Uint64
}

func newHistogram() *histogram {
	return &histogram{counts: make([]atomic.Uint64, histBuckets)}
}

// Record adds one sample. Sender and receiver read the same clock, but a
// sample may straddle a clock step, so negative durations count as zero.
func (h *histogram) Record(d time.Duration) {
	us := uint64(max(d, 0) / time.Microsecond)
	us = min(us, histMaxMicros)
	h.counts[bucketOf(us)].Add(1)
	for {
		old := h.max.Load()
		if us <= old || h.max.CompareAndSwap(old, us) {
			return
		}
	}
}

// Snapshot copies the counts, for percentiles over everything recorded so
// far or, by difference, over an interval.
func (h *histogram) Snapshot() histSnapshot {
	s := histSnapshot{counts: make([]uint64, len(h.counts)), maxMicros: h.max.Load()}
	for i := range h.counts {
		c := h.counts[i].Load()
		s.counts[i] = c
		s.total += c
	}
	return s
}

// histSnapshot is a copy of a histogram's counts.
type histSnapshot struct {
	counts    []uint64
	total     uint64
	maxMicros uint64
}

// Sub returns the samples recorded after prev was taken. Its max is the
// max of all samples, because the histogram keeps no max per interval.
func (s histSnapshot) Sub(prev histSnapshot) histSnapshot {
	out := histSnapshot{counts: make([]uint64, len(s.counts)), maxMicros: s.maxMicros}
	for i := range s.counts {
		var p uint64
		if i < len(prev.counts) {
			p = prev.counts[i]
		}
		out.counts[i] = s.counts[i] - p
		out.total += out.counts[i]
	}
	return out
}

// Quantile returns the value below or at which a fraction q of the samples
// lie, as the upper edge of its bucket, never above the recorded max. It
// returns 0 for an empty snapshot.
func (s histSnapshot) Quantile(q float64) time.Duration {
	if s.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(s.total)))
	rank = min(max(rank, 1), s.total)
	var seen uint64
	for i, c := range s.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(bucketHigh(i), s.maxMicros)) * time.Microsecond
		}
	}
	return time.Duration(s.maxMicros) * time.Microsecond
}

// latencyReport is the summary of one histogram in the final report.
type latencyReport struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
}

func (s histSnapshot) report() latencyReport {
	return latencyReport{
		Count: s.total,
		P50:   millis(s.Quantile(0.50)),
		P90:   millis(s.Quantile(0.90)),
		P99:   millis(s.Quantile(0.99)),
		P999:  millis(s.Quantile(0.999)),
		Max:   millis(time.Duration(s.maxMicros) * time.Microsecond),
	}
}

// millis converts to milliseconds with microsecond precision.
func millis(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}

// errorCounts counts errors by kind. Kinds are short fixed phrases such as
// "dial: HTTP 503" so that a flood of one failure stays one line.
type errorCounts struct {
	mu     sync.Mutex
	counts map[string]int64
	total  atomic.Int64
}

func newErrorCounts() *errorCounts {
	return &errorCounts{counts: make(map[string]int64)}
}

// Add counts one error of the kind.
func (e *errorCounts) Add(kind string) {
	e.mu.Lock()
	e.counts[kind]++
	e.mu.Unlock()
	e.total.Add(1)
}

// Total returns the number of errors counted.
func (e *errorCounts) Total() int64 { return e.total.Load() }

// Map returns a copy of the counts.
func (e *errorCounts) Map() map[string]int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int64, len(e.counts))
	for k, v := range e.counts {
		out[k] = v
	}
	return out
}

// Summary returns the kinds with counts, most frequent first, for the
// progress line.
func (e *errorCounts) Summary(limit int) string {
	m := e.Map()
	kinds := make([]string, 0, len(m))
	for k := range m {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool {
		if m[kinds[i]] != m[kinds[j]] {
			return m[kinds[i]] > m[kinds[j]]
		}
		return kinds[i] < kinds[j]
	})
	var b strings.Builder
	for i, k := range kinds {
		if i == limit {
			b.WriteString("; ...")
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(k)
		b.WriteString(" x")
		b.WriteString(strconv.FormatInt(m[k], 10))
	}
	return b.String()
}
