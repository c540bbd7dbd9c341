package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/imlite/imlite/server/app"
	"github.com/imlite/imlite/server/auth"
	"github.com/imlite/imlite/server/config"
)

// syncBuffer is a bytes.Buffer safe for the chat's printing goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls until out contains want.
func waitFor(t *testing.T, out *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startServer runs an embedded server with its config file in a temporary
// directory, as a user would with -f, and returns the file path.
func startServer(t *testing.T) (string, *app.App) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "imlite.yaml")
	yaml := "ListenOn: 127.0.0.1:0\nHttp: {Host: 127.0.0.1, Port: 0}\nWebsocket: {Host: 127.0.0.1, Port: 0}\nEmbedded: {Dir: " + filepath.Join(dir, "data") + "}\nLog: {Level: error}\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return file, a
}

func TestTwoPeopleChat(t *testing.T) {
	file, a := startServer(t)
	url := "ws://" + a.WebsocketAddr() + "/ws"

	type person struct {
		in   *io.PipeWriter
		out  *syncBuffer
		done chan error
	}
	start := func(user, to string) person {
		r, w := io.Pipe()
		p := person{in: w, out: &syncBuffer{}, done: make(chan error, 1)}
		go func() {
			p.done <- chat([]string{"-f", file, "--user", user, "--url", url, "--to", to}, r, p.out, p.out)
		}()
		waitFor(t, p.out, "now chatting with "+to)
		return p
	}
	say := func(p person, line string) {
		if _, err := io.WriteString(p.in, line+"\n"); err != nil {
			t.Fatal(err)
		}
	}

	alice, bob := start("alice", "bob"), start("bob", "alice")
	say(alice, "hello bob 👋")
	waitFor(t, bob.out, "alice: hello bob 👋")
	say(bob, "hi alice, 你好")
	waitFor(t, alice.out, "bob: hi alice, 你好")

	say(alice, "/list")
	waitFor(t, alice.out, "unread 1")
	say(alice, "/read")
	waitFor(t, alice.out, "read up to seq 2")
	say(alice, "/history 5")
	waitFor(t, alice.out, "seq 1] alice: hello bob 👋")
	say(alice, "/online bob carol")
	waitFor(t, alice.out, "bob online on desktop")
	waitFor(t, alice.out, "carol offline")
	say(alice, "/frobnicate")
	waitFor(t, alice.out, "unknown command /frobnicate")

	say(alice, "/quit")
	if err := <-alice.done; err != nil {
		t.Errorf("alice's chat ended with %v", err)
	}
	bob.in.Close()
	if err := <-bob.done; err != nil {
		t.Errorf("bob's chat ended with %v", err)
	}
}

// TestChatWithOwnToken passes a token instead of minting one: the session
// is the token's user and platform, and a --user naming someone else is
// rejected before connecting.
func TestChatWithOwnToken(t *testing.T) {
	file, a := startServer(t)
	url := "ws://" + a.WebsocketAddr() + "/ws"
	var tokOut, tokErr bytes.Buffer
	if code := run([]string{"token", "-f", file, "--user", "bob", "--platform", "ios"}, &tokOut, &tokErr); code != 0 {
		t.Fatalf("token exit %d: %s", code, tokErr.String())
	}
	bobToken := strings.TrimSpace(tokOut.String())

	out := &syncBuffer{}
	r, w := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- chat([]string{"--token", bobToken, "--url", url}, r, out, out) }()
	waitFor(t, out, "connected as bob (ios)")
	// A group that does not exist is rejected when chosen, not at the
	// first send.
	if _, err := io.WriteString(w, "/group nogroup\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, out, "cannot chat in group nogroup")
	if strings.Contains(out.String(), "now chatting in group") {
		t.Errorf("chat switched to a missing group: %q", out.String())
	}
	w.Close()
	if err := <-done; err != nil {
		t.Errorf("chat ended with %v", err)
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"--user of someone else", []string{"--user", "carol", "--token", bobToken, "--url", url}, "does not match the token, which is for bob"},
		{"garbage token", []string{"--token", "not-a-jwt", "--url", url}, "malformed token"},
		{"invalid --to", []string{"--token", bobToken, "--to", "x y", "--url", url}, `--to "x y" contains " "`},
	} {
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"chat"}, tc.args...), &stdout, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit 2 mentioning %q", tc.name, code, stderr.String(), tc.want)
		}
	}
}

func TestTokenCommand(t *testing.T) {
	file, _ := startServer(t)
	var out, errOut bytes.Buffer
	if code := run([]string{"token", "-f", file, "--user", "alice", "--platform", "ios", "--admin", "--ttl", "1h"}, &out, &errOut); code != 0 {
		t.Fatalf("token exit %d: %s", code, errOut.String())
	}
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := app.LoadSecret(cfg)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := auth.NewSigner(secret, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p, err := signer.Verify(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatalf("printed token does not verify with the server's secret: %v", err)
	}
	if p.UserID != "alice" || p.Platform != "ios" || !p.IsAdmin() || p.ExpiresAt.Sub(p.IssuedAt) != time.Hour {
		t.Errorf("token principal = %+v, want alice on ios, admin, 1h", p)
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing user", []string{"token", "-f", file}, "--user is required"},
		{"bad platform", []string{"token", "-f", file, "--user", "a", "--platform", "iOS"}, "--platform"},
		{"missing file", []string{"token", "-f", filepath.Join(t.TempDir(), "none.yaml"), "--user", "a"}, "no such file"},
		{"unknown command", []string{"frob"}, "unknown command"},
	} {
		var out, errOut bytes.Buffer
		code := run(tc.args, &out, &errOut)
		if code == 0 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want failure mentioning %q", tc.name, code, errOut.String(), tc.want)
		}
	}
}

// TestTokenWithoutServerSecret runs token and chat where no server ever ran:
// they must name the missing secret and create nothing, because a secret
// made there would sign tokens the real server rejects.
func TestTokenWithoutServerSecret(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, args := range [][]string{
		{"token", "--user", "alice"},
		{"chat", "--user", "alice", "--to", "bob"},
	} {
		var out, errOut bytes.Buffer
		code := run(args, &out, &errOut)
		msg := errOut.String()
		if code != 1 || !strings.Contains(msg, filepath.Join("data", "token.secret")) || !strings.Contains(msg, "-f") {
			t.Errorf("%s: exit %d, stderr %q; want exit 1 naming data/token.secret and suggesting -f", args[0], code, msg)
		}
		if out.Len() != 0 {
			t.Errorf("%s printed %q, want nothing on stdout", args[0], out.String())
		}
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("working directory holds %v (err %v), want it left empty", entries, err)
	}
}

func TestServeRejectsBadConfig(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(file, []byte("Websocket:\n  Prot: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"-f", file}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "Websocket.Prot") || !strings.Contains(errOut.String(), "did you mean Websocket.Port?") {
		t.Errorf("exit %d, stderr %q; want 1 naming Websocket.Prot and suggesting Websocket.Port", code, errOut.String())
	}
}

func TestChatSendOutcome(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     error
		unknown bool
	}{
		{"store deadline passed", &replyError{code: codes.DeadlineExceeded, msg: "message not stored within 5s"}, true},
		{"connection ended", fmt.Errorf("%w: %w", errNoReply, errors.New("connection closed")), true},
		{"no answer in time", fmt.Errorf("%w within 15s", errNoReply), true},
		{"rejected content", &replyError{code: codes.InvalidArgument, msg: "content is empty"}, false},
		{"queue publish timed out", &replyError{code: codes.Unavailable, msg: "msg queue unavailable"}, true},
		{"not a member", &replyError{code: codes.PermissionDenied, msg: "alice is not a member of group g1"}, false},
	} {
		if got := outcomeUnknown(tc.err); got != tc.unknown {
			t.Errorf("%s: outcomeUnknown(%v) = %v, want %v", tc.name, tc.err, got, tc.unknown)
		}
	}
}

func TestHelpListsCommands(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		var out, errOut bytes.Buffer
		code := run(args, &out, &errOut)
		text := out.String() + errOut.String()
		if code != 0 || !strings.Contains(text, "imlite token") || !strings.Contains(text, "imlite chat") {
			t.Errorf("imlite %s: exit %d, output %q; want exit 0 listing token and chat", args[0], code, text)
		}
	}
}
