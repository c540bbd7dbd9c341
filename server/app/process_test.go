package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imlite/imlite/server/app"
	"github.com/imlite/imlite/server/config"
)

// childConfigEnv names the configuration file of a pod that runs as a child
// process of the test binary, so a test can kill it or send it SIGTERM.
const childConfigEnv = "IMLITE_TEST_CHILD_CONFIG"

func TestMain(m *testing.M) {
	if path := os.Getenv(childConfigEnv); path != "" {
		os.Exit(runChild(path))
	}
	os.Exit(m.Run())
}

// childAddrs is the first line a child pod prints.
type childAddrs struct {
	GRPC, HTTP, Websocket string
}

// runChild runs one pod until SIGTERM or SIGINT, as cmd/imlite does.
func runChild(path string) int {
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	a, err := app.New(ctx, cfg, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	line, _ := json.Marshal(childAddrs{GRPC: a.GRPCAddr(), HTTP: a.HTTPAddr(), Websocket: a.WebsocketAddr()})
	fmt.Println(string(line))
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		return 1
	}
	return 0
}

// process is a pod running as a child process.
type process struct {
	name  string
	cmd   *exec.Cmd
	addrs childAddrs
	// exited is closed when the process ended, with its error in exitErr.
	exited  chan struct{}
	exitErr error
	// stderr collects the child's log for failure messages.
	stderr *logBuffer
}

// startProcess runs a pod of the cluster as a child process.
func (c *cluster) startProcess(name string) *process {
	c.t.Helper()
	return startProcess(c.t, name, c.yaml())
}

// startProcess runs a pod with the configuration yaml as a child process.
func startProcess(t *testing.T, name, yaml string) *process {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childConfigEnv+"="+path, "POD_NAME="+name)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &process{name: name, cmd: cmd, exited: make(chan struct{}), stderr: &logBuffer{}}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.exitErr = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
	})

	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || json.Unmarshal(lines.Bytes(), &p.addrs) != nil {
		t.Fatalf("%s printed no addresses; its log:\n%s", name, p.stderr.String())
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	waitHTTP(t, "http://"+p.addrs.HTTP+"/healthz")
	return p
}

// kill ends the process with SIGKILL, as a crash would.
func (p *process) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill %s: %v", p.name, err)
	}
	<-p.exited
}

// terminate sends SIGTERM and returns the exit error and how long the
// process took to exit, failing after limit.
func (p *process) terminate(t *testing.T, limit time.Duration) (error, time.Duration) {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal %s: %v", p.name, err)
	}
	select {
	case <-p.exited:
		return p.exitErr, time.Since(start)
	case <-time.After(limit):
		t.Fatalf("%s still running %v after SIGTERM; its log:\n%s", p.name, limit, p.stderr.String())
		return nil, 0
	}
}

// logBuffer collects a child's log; the exec package writes to it from a
// goroutine of its own.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
