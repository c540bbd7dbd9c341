// Package logging builds imlite's log/slog logger from the Log section of
// the configuration: console, file or volume output, json or plain
// encoding, a level, a time format and size-based rotation.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"gopkg.in/natefinch/lumberjack.v2"

	"github.com/imlite/imlite/server/config"
)

// LevelSevere is go-zero's "severe" level, above error.
const LevelSevere = slog.LevelError + 4

// ParseLevel maps a Log.Level value to a slog level.
func ParseLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	case "severe":
		return LevelSevere, nil
	}
	return 0, fmt.Errorf("unknown log level %q", s)
}

// New returns a logger for cfg and a closer for its output. console writes
// to stderr; file writes Path/<name>.log; volume writes
// Path/<pod>/<name>.log, so pods sharing one volume keep separate files.
// File outputs rotate at MaxSize megabytes.
func New(cfg config.LogConfig, podName string, stderr io.Writer) (*slog.Logger, io.Closer, error) {
	level, err := ParseLevel(cfg.Level)
	if err != nil {
		return nil, nil, err
	}
	out, closer, err := output(cfg, podName, stderr)
	if err != nil {
		return nil, nil, err
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: replaceAttr(cfg.TimeFormat)}
	var h slog.Handler
	if cfg.Encoding == "plain" {
		h = slog.NewTextHandler(out, opts)
	} else {
		h = slog.NewJSONHandler(out, opts)
	}
	log := slog.New(newRateLimited(h))
	if cfg.ServiceName != "" {
		log = log.With("service", cfg.ServiceName)
	}
	if podName != "" {
		log = log.With("pod", podName)
	}
	return log, closer, nil
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

func output(cfg config.LogConfig, podName string, stderr io.Writer) (io.Writer, io.Closer, error) {
	name := cfg.ServiceName
	if name == "" {
		name = "imlite"
	}
	var dir string
	switch cfg.Mode {
	case "console", "":
		return stderr, nopCloser{}, nil
	case "file":
		dir = cfg.Path
	case "volume":
		sub := podName
		if sub == "" {
			host, err := os.Hostname()
			if err != nil {
				return nil, nil, fmt.Errorf("log volume mode needs POD_NAME or a hostname: %w", err)
			}
			sub = host
		}
		dir = filepath.Join(cfg.Path, sub)
	default:
		return nil, nil, fmt.Errorf("unknown log mode %q", cfg.Mode)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("create log directory: %w", err)
	}
	w := &lumberjack.Logger{
		Filename:   filepath.Join(dir, name+".log"),
		MaxSize:    cfg.MaxSize,
		MaxBackups: cfg.MaxBackups,
		MaxAge:     cfg.KeepDays,
		Compress:   cfg.Compress,
		LocalTime:  false,
	}
	return w, w, nil
}

// replaceAttr formats the time with layout when one is configured, writes
// durations as "1.5s", and names the severe level.
func replaceAttr(layout string) func([]string, slog.Attr) slog.Attr {
	if layout == "" {
		layout = "2006-01-02T15:04:05.000Z07:00"
	}
	return func(groups []string, a slog.Attr) slog.Attr {
		// JSON would print durations as integer nanoseconds.
		if a.Value.Kind() == slog.KindDuration {
			return slog.String(a.Key, a.Value.Duration().String())
		}
		if len(groups) > 0 {
			return a
		}
		switch a.Key {
		case slog.TimeKey:
			if t, ok := a.Value.Any().(time.Time); ok {
				return slog.String(slog.TimeKey, t.Format(layout))
			}
		case slog.LevelKey:
			if l, ok := a.Value.Any().(slog.Level); ok && l >= LevelSevere {
				return slog.String(slog.LevelKey, "SEVERE")
			}
		}
		return a
	}
}
