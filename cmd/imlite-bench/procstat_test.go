package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	cases := []struct {
		name    string
		stat    string
		want    time.Duration
		wantErr string
	}{
		{
			name: "plain command",
			stat: "1234 (imlite) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0 100 1000 200",
			want: 3 * time.Second,
		},
		{
			name: "command with spaces and parentheses",
			stat: "99 (a (b) c) R 1 1 1 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 1 1 1",
			want: 100 * time.Millisecond,
		},
		{name: "no command", stat: "99 R 1 2", wantErr: "no ')'"},
		{name: "truncated", stat: "99 (x) R 1 2 3", wantErr: "fields after the command name"},
		{name: "bad number", stat: "1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 5 0", wantErr: "CPU time field"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatCPU(tc.stat)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseStatCPU error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseStatCPU: %v", err)
			}
			if got != tc.want {
				t.Errorf("parseStatCPU = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseStatusRSS(t *testing.T) {
	cases := []struct {
		name    string
		status  string
		want    int64
		wantErr string
	}{
		{name: "present", status: "Name:\timlite\nVmPeak:\t 9000 kB\nVmRSS:\t   2048 kB\nThreads: 5\n", want: 2 << 20},
		{name: "missing", status: "Name:\tzombie\nState:\tZ\n", wantErr: "no VmRSS"},
		{name: "other unit", status: "VmRSS: 2 MB\n", wantErr: "not \"VmRSS: N kB\""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatusRSS(tc.status)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseStatusRSS error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("parseStatusRSS = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func TestProcProbeReadsFiles(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "42")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("status", "VmRSS:\t1024 kB\n")
	write("stat", "42 (srv) S 1 1 1 0 -1 0 0 0 0 0 100 100 0 0")
	got, err := procProbe{pid: 42, root: root}.Sample(context.Background())
	if err != nil {
		t.Fatalf("Sample: %v", err)
	}
	if got.RSSBytes != 1<<20 || got.CPU != 2*time.Second {
		t.Errorf("Sample = %d bytes, %v CPU; want 1 MiB and 2s", got.RSSBytes, got.CPU)
	}
	if _, err := (procProbe{pid: 43, root: root}).Sample(context.Background()); err == nil {
		t.Error("Sample of a missing process: got nil error, want an error")
	}
}

func TestParseProcessMetrics(t *testing.T) {
	text := `# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
process_resident_memory_bytes 1.048576e+08 1700000000000
go_goroutines 42
`
	got, err := parseProcessMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parseProcessMetrics: %v", err)
	}
	if got.RSSBytes != 104857600 || got.CPU != 12500*time.Millisecond {
		t.Errorf("parsed %d bytes and %v CPU, want 104857600 and 12.5s", got.RSSBytes, got.CPU)
	}
	if _, err := parseProcessMetrics(strings.NewReader("go_goroutines 1\n")); err == nil {
		t.Error("metrics without process metrics: got nil error, want an error")
	}
	if _, err := parseProcessMetrics(strings.NewReader("process_cpu_seconds_total abc\n")); err == nil {
		t.Error("metric with a non-number value: got nil error, want an error")
	}
}

func TestMetricsProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("process_cpu_seconds_total 1\nprocess_resident_memory_bytes 2048\n"))
	}))
	defer srv.Close()
	probe := metricsProbe{url: srv.URL + "/metrics", client: srv.Client()}
	got, err := probe.Sample(context.Background())
	if err != nil || got.RSSBytes != 2048 || got.CPU != time.Second {
		t.Errorf("Sample = %+v, %v; want 2048 bytes and 1s", got, err)
	}
	bad := metricsProbe{url: srv.URL + "/nothing", client: srv.Client()}
	if _, err := bad.Sample(context.Background()); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Errorf("Sample of a missing page: got %v, want an error naming HTTP 404", err)
	}
}
