package testenv

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

func TestFerretDBStopAndRestart(t *testing.T) {
	f := StartFerretDB(t)
	uri := f.URI()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatalf("parse URI %q: %v", uri, err)
	}
	if u.Scheme != "mongodb" || u.Hostname() != "127.0.0.1" || u.Port() == "0" || u.Port() == "" {
		t.Errorf("URI %q: want mongodb://127.0.0.1:<free port>/", uri)
	}

	client, err := mongo.Connect(options.Client().ApplyURI(uri).SetServerSelectionTimeout(time.Second))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer client.Disconnect(context.Background())
	coll := client.Database("testenv").Collection("docs")
	if _, err := coll.InsertOne(t.Context(), bson.D{{Key: "_id", Value: "kept"}}); err != nil {
		t.Fatalf("insert: %v", err)
	}

	f.Stop()
	f.Stop()
	if err := client.Ping(t.Context(), nil); err == nil {
		t.Error("Ping after Stop: got nil, want an error because nothing listens")
	}

	f.Restart()
	f.Restart()
	if f.URI() != uri {
		t.Errorf("URI after Restart: got %q, want %q as before", f.URI(), uri)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := coll.CountDocuments(t.Context(), bson.D{{Key: "_id", Value: "kept"}})
		if err == nil {
			if n != 1 {
				t.Errorf("documents after Restart: got %d, want 1 kept in the SQLite files", n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("count after Restart still fails: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startRecorder is a testing.TB whose TempDir cannot hold FerretDB's files
// and which records Skipf and Fatalf instead of ending the test.
type startRecorder struct {
	testing.TB
	dir             string
	skipped, failed string
}

func (r *startRecorder) Helper()         {}
func (r *startRecorder) TempDir() string { return r.dir }
func (r *startRecorder) Cleanup(func())  {}

func (r *startRecorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *startRecorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestFerretDBStartFailure(t *testing.T) {
	cases := []struct {
		name     string
		env      string
		wantSkip bool
	}{
		{name: "skips by default", env: "", wantSkip: true},
		{name: "fails when backends are required", env: "1", wantSkip: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(requireFerretDBEnv, tc.env)
			// A regular file where the SQLite directory should go makes the
			// start fail.
			file := filepath.Join(t.TempDir(), "not-a-directory")
			if err := os.WriteFile(file, nil, 0o600); err != nil {
				t.Fatalf("write file: %v", err)
			}
			r := &startRecorder{TB: t, dir: file}
			done := make(chan struct{})
			go func() {
				defer close(done)
				StartFerretDB(r)
			}()
			<-done

			got, other, want := r.failed, r.skipped, "failure"
			if tc.wantSkip {
				got, other, want = r.skipped, r.failed, "skip"
			}
			if got == "" || other != "" {
				t.Fatalf("%s=%q: got skip %q and failure %q, want only a %s", requireFerretDBEnv, tc.env, r.skipped, r.failed, want)
			}
			for _, part := range []string{"create SQLite directory", requireFerretDBEnv} {
				if !strings.Contains(got, part) {
					t.Errorf("message %q does not contain %q", got, part)
				}
			}
		})
	}
}
