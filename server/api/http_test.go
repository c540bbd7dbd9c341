package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type readyBody struct {
	Ready    bool              `json:"ready"`
	Backends map[string]string `json:"backends"`
}

func getReady(t *testing.T, checks []ReadinessCheck) (int, readyBody) {
	t.Helper()
	rec := httptest.NewRecorder()
	readyHandler(checks)(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	var body readyBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("decode /readyz body %q: %v", rec.Body.String(), err)
	}
	return rec.Code, body
}

// answersWhileLive fails like a real backend client does when its ctx has
// already ended, and succeeds otherwise.
func answersWhileLive(ctx context.Context) error { return ctx.Err() }

func TestReadyzAllHealthy(t *testing.T) {
	t.Parallel()
	code, body := getReady(t, []ReadinessCheck{{"store", answersWhileLive}, {"redis", answersWhileLive}})
	if code != http.StatusOK || !body.Ready || body.Backends["store"] != "ok" || body.Backends["redis"] != "ok" {
		t.Errorf("/readyz = %d %+v, want 200 with every backend ok", code, body)
	}
}

// TestReadyzHangingBackendBlamesOnlyItself puts a backend that hangs until
// its deadline before a healthy one: the healthy one must still be probed
// with time left, and be reported ok.
func TestReadyzHangingBackendBlamesOnlyItself(t *testing.T) {
	t.Parallel()
	hanging := func(ctx context.Context) error {
		<-ctx.Done()
		return errors.New("kafka: no broker answered")
	}
	code, body := getReady(t, []ReadinessCheck{{"kafka", hanging}, {"redis", answersWhileLive}})
	if code != http.StatusServiceUnavailable || body.Ready {
		t.Errorf("/readyz = %d ready=%v, want 503 not ready", code, body.Ready)
	}
	if got := body.Backends["kafka"]; got != "kafka: no broker answered" {
		t.Errorf("kafka = %q, want its own error", got)
	}
	if got := body.Backends["redis"]; got != "ok" {
		t.Errorf("redis = %q, want ok: a healthy backend was blamed for another one's hang", got)
	}
}

// TestReadyzProbeIgnoringCtx checks that /readyz responds even when a probe
// never returns.
func TestReadyzProbeIgnoringCtx(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	stuck := func(context.Context) error {
		<-release
		return nil
	}
	code, body := getReady(t, []ReadinessCheck{{"mongo", stuck}, {"store", answersWhileLive}})
	if code != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d, want 503", code)
	}
	if got := body.Backends["mongo"]; !strings.Contains(got, "no response within") {
		t.Errorf("mongo = %q, want it reported as not answering", got)
	}
	if got := body.Backends["store"]; got != "ok" {
		t.Errorf("store = %q, want ok", got)
	}
}
