package testenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// redisStartTimeout bounds the wait for a started redis-server to reply to
// PING. It is far above the usual start time of a few milliseconds, to allow
// for loaded CI machines.
const redisStartTimeout = 15 * time.Second

// Redis is a redis-server process started by StartRedis. It listens on
// 127.0.0.1 without persistence, so a restart begins with an empty dataset
// and an empty script cache, like a replaced Redis in production.
//
// The methods fail the test on errors and must be called from the test's
// goroutine.
type Redis struct {
	// Addr is the host:port the server listens on. It stays the same across
	// Restart.
	Addr string

	t    testing.TB
	bin  string
	port int
	proc *redisProcess
}

// redisProcess is one run of redis-server.
type redisProcess struct {
	cmd    *exec.Cmd
	exited chan struct{}
	output *redisOutput
}

// StartRedis starts redis-server on a free port of 127.0.0.1, waits until it
// replies to PING and kills it when the test ends. It skips the test when
// redis-server is not installed, or fails it when IMLITE_REQUIRE_BACKENDS is
// "1".
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("IMLITE_REQUIRE_BACKENDS") == "1" {
			t.Fatalf("redis-server not found in PATH (%v) and IMLITE_REQUIRE_BACKENDS=1 requires it; install the Debian package redis-server", err)
		}
		t.Skipf("redis-server not found in PATH (%v); install the Debian package redis-server to run this test", err)
	}

	r := &Redis{t: t, bin: bin}
	t.Cleanup(r.Stop)

	// Another process may take the free port between the probe and the
	// start of redis-server, so a failed start is retried on a new port.
	const attempts = 3
	var errs []error
	for range attempts {
		port, err := freeRedisPort()
		if err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		r.port = port
		r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err := r.start(); err != nil {
			errs = append(errs, err)
			continue
		}
		return r
	}
	t.Fatalf("start redis-server: %d attempts failed: %v", attempts, errors.Join(errs...))
	return nil
}

// Stop kills the server (SIGKILL, by PID) and waits until it exited, as
// in a crash. Stopping a stopped server does nothing.
func (r *Redis) Stop() {
	r.t.Helper()
	if r.proc == nil {
		return
	}
	p := r.proc
	r.proc = nil
	p.kill()
}

// Restart stops the server if it runs and starts a new one on the same
// address. The new server has an empty dataset and script cache.
func (r *Redis) Restart() {
	r.t.Helper()
	r.Stop()
	if err := r.start(); err != nil {
		r.t.Fatalf("restart redis-server on %s: %v", r.Addr, err)
	}
}

// Pause suspends the server with SIGSTOP. The kernel still accepts TCP
// connections on its port, but no command gets a reply, so clients run into
// their timeouts. Resume or Stop ends the pause.
func (r *Redis) Pause() {
	r.t.Helper()
	r.signal(syscall.SIGSTOP)
}

// Resume continues a server suspended by Pause.
func (r *Redis) Resume() {
	r.t.Helper()
	r.signal(syscall.SIGCONT)
}

// FlushAll deletes every key of every database, as the FLUSHALL command
// does. Loaded Lua scripts stay cached.
func (r *Redis) FlushAll() {
	r.t.Helper()
	if err := redisCommand(r.Addr, "FLUSHALL", "+OK", 5*time.Second); err != nil {
		r.t.Fatalf("FLUSHALL on %s: %v", r.Addr, err)
	}
}

func (r *Redis) signal(sig syscall.Signal) {
	r.t.Helper()
	if r.proc == nil {
		r.t.Fatalf("send %v to redis-server on %s: the server is stopped", sig, r.Addr)
	}
	if err := r.proc.cmd.Process.Signal(sig); err != nil {
		r.t.Fatalf("send %v to redis-server on %s: %v", sig, r.Addr, err)
	}
}

// start runs redis-server on r.port and waits until it replies to PING.
func (r *Redis) start() error {
	output := &redisOutput{}
	cmd := exec.Command(r.bin,
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(r.port),
		"--save", "",
		"--appendonly", "no",
	)
	cmd.Stdout = output
	cmd.Stderr = output
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", r.bin, err)
	}
	p := &redisProcess{cmd: cmd, exited: make(chan struct{}), output: output}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()

	if err := waitForRedis(r.Addr, p.exited); err != nil {
		p.kill()
		return fmt.Errorf("%w; server output:\n%s", err, output.String())
	}
	r.proc = p
	return nil
}

func (p *redisProcess) kill() {
	// An error means that the process has exited already, which the wait
	// below also covers.
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// waitForRedis polls addr with PING until the server replies, exits or the
// start timeout passes.
func waitForRedis(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(redisStartTimeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("redis-server exited before it replied to PING; see its output")
		default:
		}
		lastErr = redisCommand(addr, "PING", "+PONG", time.Second)
		if lastErr == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("redis-server on %s did not reply to PING within %v: %w", addr, redisStartTimeout, lastErr)
}

// redisCommand sends one inline command and fails unless the reply line is
// want. Inline commands need no client library, which keeps this package
// free of the Redis client under test.
func redisCommand(addr, command, want string, timeout time.Duration) error {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := conn.Write([]byte(command + "\r\n")); err != nil {
		return fmt.Errorf("send %s: %w", command, err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read reply to %s: %w", command, err)
	}
	if got := strings.TrimRight(line, "\r\n"); got != want {
		return fmt.Errorf("reply to %s: got %q, want %q", command, got, want)
	}
	return nil
}

// freeRedisPort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freeRedisPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port on 127.0.0.1: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("release probe port %d: %w", port, err)
	}
	return port, nil
}

// redisOutput collects the server's output, which exec writes from its own
// goroutine.
type redisOutput struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *redisOutput) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *redisOutput) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
