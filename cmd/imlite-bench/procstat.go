package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// clockTicksPerSecond converts /proc/PID/stat CPU times to seconds. Linux
// reports them in USER_HZ, which is 100 on every architecture Go supports
// (sysconf(_SC_CLK_TCK) is not reachable without cgo).
const clockTicksPerSecond = 100

// processSample is one reading of a process's memory and CPU time.
type processSample struct {
	At       time.Time
	RSSBytes int64
	CPU      time.Duration
}

// processProbe reads a process's RSS and CPU time.
type processProbe interface {
	Sample(ctx context.Context) (processSample, error)
	// Source names where the numbers come from, for the report.
	Source() string
}

// procProbe reads /proc/PID of a process on this machine.
type procProbe struct {
	pid  int
	root string // "/proc", replaced in tests
}

func (p procProbe) Source() string { return fmt.Sprintf("/proc/%d", p.pid) }

// Sample reads VmRSS from status and utime plus stime from stat.
func (p procProbe) Sample(ctx context.Context) (processSample, error) {
	if err := ctx.Err(); err != nil {
		return processSample{}, err
	}
	dir := fmt.Sprintf("%s/%d", p.root, p.pid)
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return processSample{}, fmt.Errorf("read server status: %w", err)
	}
	rss, err := parseStatusRSS(string(status))
	if err != nil {
		return processSample{}, fmt.Errorf("%s/status: %w", dir, err)
	}
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return processSample{}, fmt.Errorf("read server stat: %w", err)
	}
	cpu, err := parseStatCPU(string(stat))
	if err != nil {
		return processSample{}, fmt.Errorf("%s/stat: %w", dir, err)
	}
	return processSample{At: time.Now(), RSSBytes: rss, CPU: cpu}, nil
}

// parseStatusRSS returns VmRSS of a /proc/PID/status text in bytes.
func parseStatusRSS(status string) (int64, error) {
	for _, line := range strings.Split(status, "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("VmRSS line %q is not \"VmRSS: N kB\"", line)
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS value %q: %w", fields[0], err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("no VmRSS line; the process may be a zombie")
}

// parseStatCPU returns utime plus stime of a /proc/PID/stat line. The
// command name in field 2 may contain spaces and parentheses, so fields
// are counted from the last ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	end := strings.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, errors.New("no ')' after the command name")
	}
	// After the name: field 3 (state) is index 0, so utime (field 14) is
	// index 11 and stime (field 15) index 12.
	fields := strings.Fields(stat[end+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(fields))
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("CPU time field %q: %w", f, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicksPerSecond, nil
}

// metricsProbe scrapes a Prometheus text endpoint, for a server on
// another machine or in a container.
type metricsProbe struct {
	url    string
	client *http.Client
}

func (p metricsProbe) Source() string { return p.url }

// Sample reads process_resident_memory_bytes and process_cpu_seconds_total.
func (p metricsProbe) Sample(ctx context.Context) (processSample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return processSample{}, fmt.Errorf("scrape metrics: %w", err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return processSample{}, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return processSample{}, fmt.Errorf("scrape metrics %s: HTTP %d", p.url, resp.StatusCode)
	}
	s, err := parseProcessMetrics(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return processSample{}, fmt.Errorf("scrape metrics %s: %w", p.url, err)
	}
	s.At = time.Now()
	return s, nil
}

// parseProcessMetrics reads the two process metrics that Prometheus
// clients export from a text exposition.
func parseProcessMetrics(r io.Reader) (processSample, error) {
	var s processSample
	var haveRSS, haveCPU bool
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		switch name {
		case "process_resident_memory_bytes", "process_cpu_seconds_total":
		default:
			continue
		}
		// A sample may end with a timestamp after the value.
		value, _, _ = strings.Cut(strings.TrimSpace(value), " ")
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return s, fmt.Errorf("metric %s value %q: %w", name, value, err)
		}
		if name == "process_resident_memory_bytes" {
			s.RSSBytes, haveRSS = int64(v), true
		} else {
			s.CPU, haveCPU = time.Duration(v*float64(time.Second)), true
		}
	}
	if err := sc.Err(); err != nil {
		return s, err
	}
	if !haveRSS || !haveCPU {
		return s, errors.New("process_resident_memory_bytes or process_cpu_seconds_total missing")
	}
	return s, nil
}

// toolReport is the load tool's own use of the machine, so readers can
// tell it from the server's.
type toolReport struct {
	RSSBytes       int64   `json:"rss_bytes"`
	HeapInuseBytes uint64  `json:"heap_inuse_bytes"`
	Goroutines     int     `json:"goroutines"`
	CPUSeconds     float64 `json:"cpu_seconds"`
	OpenFileLimit  uint64  `json:"open_file_limit"`
}

func sampleTool(fdLimit uint64) toolReport {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t := toolReport{HeapInuseBytes: ms.HeapInuse, Goroutines: runtime.NumGoroutine(), OpenFileLimit: fdLimit}
	if s, err := (procProbe{pid: os.Getpid(), root: "/proc"}).Sample(context.Background()); err == nil {
		t.RSSBytes = s.RSSBytes
		t.CPUSeconds = s.CPU.Seconds()
	}
	return t
}

// loadAverage returns the first three fields of /proc/loadavg, or "" when
// it cannot be read, so a report shows whether the machine was busy.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
