package redisstore

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"
)

// LogClientTo sends the go-redis client's own messages, such as failed
// dials of its connection pool, to log as warnings. It replaces the
// process-wide logger of go-redis, so only a program's main calls it.
// All such messages share one message text, "redis client", with the
// formatted text in the detail attribute, so that a logger that limits
// repeated messages treats a flood of them as one.
func LogClientTo(log *slog.Logger) {
	redis.SetLogger(clientLogger{log: log})
}

type clientLogger struct{ log *slog.Logger }

func (l clientLogger) Printf(ctx context.Context, format string, v ...any) {
	detail := strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: ")
	l.log.WarnContext(ctx, "redis client", "detail", detail)
}
