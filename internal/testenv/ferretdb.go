package testenv

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// requireFerretDBEnv names the environment variable that turns a FerretDB
// start failure from a skip into a test failure.
const requireFerretDBEnv = "IMLITE_REQUIRE_BACKENDS"

// ferretDBStopTimeout bounds the wait for a stopped FerretDB to close its
// connections. FerretDB gives open connections 3 seconds to finish after
// its listener closes (v1.24.2, internal/util/ctxutil.WithDelay).
const ferretDBStopTimeout = 15 * time.Second

// ferretDBNewMu serializes ferretdb.New, which writes package-level version
// state without a lock.
var ferretDBNewMu sync.Mutex

// FerretDB is an embedded FerretDB v1.24.2 server with the SQLite handler.
// It speaks the MongoDB wire protocol on a loopback TCP port and keeps its
// SQLite files in a test's temporary directory. It supports no transactions,
// change streams or TTL indexes.
//
// Stop and Restart let a test take the server away and bring it back on the
// same address with the same data. They must be called from the test's
// goroutine, because they fail the test on error.
type FerretDB struct {
	t   testing.TB
	dir string
	// addr is "127.0.0.1:port", fixed by the first start so that restarts
	// keep the URI.
	addr string

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// FerretDBURI starts FerretDB as StartFerretDB does and returns its
// mongodb:// URI.
func FerretDBURI(t testing.TB) string {
	t.Helper()
	return StartFerretDB(t).URI()
}

// StartFerretDB starts FerretDB on 127.0.0.1 with a free port and SQLite
// files in t.TempDir(), and stops it when the test and its subtests end.
// When FerretDB cannot start, the test is skipped with the reason, or fails
// if IMLITE_REQUIRE_BACKENDS is "1".
func StartFerretDB(t testing.TB) *FerretDB {
	t.Helper()
	return StartFerretDBOn(t, "127.0.0.1:0")
}

// StartFerretDBOn is StartFerretDB on addr, host:port; port 0 picks a free
// one.
func StartFerretDBOn(t testing.TB, addr string) *FerretDB {
	t.Helper()
	f := &FerretDB{t: t, dir: t.TempDir(), addr: addr}
	if err := f.start(); err != nil {
		if os.Getenv(requireFerretDBEnv) == "1" {
			t.Fatalf("start FerretDB: %v (%s=1 requires the backend)", err, requireFerretDBEnv)
		}
		t.Skipf("start FerretDB: %v; set %s=1 to fail instead of skipping", err, requireFerretDBEnv)
	}
	t.Cleanup(func() {
		if err := f.stop(); err != nil {
			t.Errorf("stop FerretDB at cleanup: %v", err)
		}
	})
	return f
}

// URI returns the mongodb:// URI of the server. It stays valid across
// Restart.
func (f *FerretDB) URI() string {
	u := url.URL{Scheme: "mongodb", Host: f.addr, Path: "/"}
	return u.String()
}

// Addr returns the server's host:port.
func (f *FerretDB) Addr() string { return f.addr }

// Stop stops the server and returns once its listener and every client
// connection are closed. Stopping a stopped server does nothing.
func (f *FerretDB) Stop() {
	f.t.Helper()
	if err := f.stop(); err != nil {
		f.t.Fatalf("stop FerretDB: %v", err)
	}
}

// Restart starts a stopped server again on the same address with the same
// SQLite files. Restarting a running server does nothing.
func (f *FerretDB) Restart() {
	f.t.Helper()
	if err := f.start(); err != nil {
		f.t.Fatalf("restart FerretDB on %s: %v", f.addr, err)
	}
}

func (f *FerretDB) start() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cancel != nil {
		return nil
	}

	db, err := newFerretDB(f.addr, f.dir)
	if err != nil {
		return err
	}
	if _, port, _ := net.SplitHostPort(f.addr); port == "0" {
		u, err := url.Parse(db.MongoDBURI())
		if err != nil {
			return fmt.Errorf("parse FerretDB URI: %w", err)
		}
		f.addr = u.Host
	}

	// New has bound the listener already, so clients may connect at once;
	// Run accepts them.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Run returns nil after ctx ends. It logs its own failures to the
		// discarded logger.
		_ = db.Run(ctx)
	}()
	f.cancel, f.done = cancel, done
	return nil
}

func newFerretDB(addr, dir string) (*ferretdb.FerretDB, error) {
	dataDir := filepath.Join(dir, "sqlite") + "/"
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create SQLite directory: %w", err)
	}
	sqliteURL := url.URL{Scheme: "file", Path: dataDir}

	ferretDBNewMu.Lock()
	defer ferretDBNewMu.Unlock()
	db, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: addr},
		Logger:    slog.New(slog.DiscardHandler),
		Handler:   "sqlite",
		SQLiteURL: sqliteURL.String(),
	})
	if err != nil {
		return nil, fmt.Errorf("create FerretDB on %s: %w", addr, err)
	}
	return db, nil
}

func (f *FerretDB) stop() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cancel == nil {
		return nil
	}
	f.cancel()
	select {
	case <-f.done:
	case <-time.After(ferretDBStopTimeout):
		return fmt.Errorf("FerretDB on %s still has open connections %v after the stop", f.addr, ferretDBStopTimeout)
	}
	f.cancel, f.done = nil, nil
	return nil
}
