package redisstore

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

func TestClientLoggerWritesToSlog(t *testing.T) {
	var buf bytes.Buffer
	l := clientLogger{log: slog.New(slog.NewTextHandler(&buf, nil))}
	l.Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts: %v", 5, "connection refused")
	out := buf.String()
	for _, want := range []string{"level=WARN", `msg="redis client"`, `detail="connection pool: failed to dial after 5 attempts: connection refused"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log line %q lacks %s", out, want)
		}
	}
}
