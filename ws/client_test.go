package ws_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/internal/wstest"
	"github.com/imlite/imlite/server/app"
	"github.com/imlite/imlite/server/auth"
	"github.com/imlite/imlite/server/config"
	"github.com/imlite/imlite/ws"
)

const testSecret = "ws-test-secret-0123456789abcdef012345"

// env is one running imlite process for a test.
type env struct {
	t      *testing.T
	app    *app.App
	signer *auth.Signer
}

// startEnv runs an embedded imlite on free ports; extra is appended to the
// Websocket section of the configuration.
func startEnv(t *testing.T, websocketExtra string) *env {
	t.Helper()
	yaml := fmt.Sprintf(`
ListenOn: 127.0.0.1:0
Http: {Host: 127.0.0.1, Port: 0}
Websocket:
  Host: 127.0.0.1
  Port: 0
%s
Auth: {AccessSecret: %s}
Embedded: {Dir: %s}
Log: {Level: error}
`, indent(websocketExtra), testSecret, t.TempDir())
	cfg, err := config.Parse([]byte(yaml), func(string) string { return "" })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		cancel()
		t.Fatalf("app.New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	signer, err := auth.NewSigner([]byte(testSecret), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, app: a, signer: signer}
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n")
}

func (e *env) token(user, platform string, admin bool) string {
	e.t.Helper()
	role := imlitev1.Role_ROLE_USER
	if admin {
		role = imlitev1.Role_ROLE_ADMIN
	}
	tok, _, err := e.signer.Issue(user, platform, role, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func (e *env) url() string {
	return "ws://" + e.app.WebsocketAddr() + "/ws"
}

// client is the shared test client.
type client = wstest.Client

func (e *env) dial(user, platform string) *client {
	e.t.Helper()
	return e.dialWith(e.token(user, platform, false), ws.Binary)
}

func (e *env) dialWith(token string, enc ws.Encoding) *client {
	e.t.Helper()
	return wstest.MustDial(e.t, e.url(), token, enc)
}

func (e *env) tryDial(token string, enc ws.Encoding) (*client, *http.Response, error) {
	return wstest.Dial(e.t, e.url(), token, enc)
}
