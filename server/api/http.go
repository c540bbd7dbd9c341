package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.opentelemetry.io/otel/propagation"

	"github.com/imlite/imlite/gen/openapi"
	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/apierr"
)

// OpenAPIPath is where the OpenAPI v2 document is served.
const OpenAPIPath = "/openapi.json"

// ReadinessCheck is one backend probed by /readyz.
type ReadinessCheck struct {
	Name  string
	Check func(ctx context.Context) error
}

// NewHTTPHandler returns the handler of the admin HTTP port: REST under
// /v1/, Connect under /imlite.v1.*/, the OpenAPI document, /healthz,
// /readyz and, when configured, /metrics.
func NewHTTPHandler(ctx context.Context, svc *server.Service, opts Options) (http.Handler, error) {
	gw, err := NewGateway(ctx, svc, opts)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", gw)
	RegisterConnect(mux, svc, opts)
	mux.HandleFunc("GET "+OpenAPIPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openapi.JSON)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", readyHandler(opts.Readiness))
	getOnly := map[string]bool{OpenAPIPath: true, "/healthz": true, "/readyz": true}
	if opts.Metrics != nil {
		mux.Handle("GET /metrics", opts.Metrics)
		getOnly["/metrics"] = true
	}
	if opts.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	notFound := restJSON{JSONPb: &runtime.JSONPb{MarshalOptions: JSONMarshalOptions}}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// The catch-all also gets the other methods of the GET routes
		// above, which deserve a 405 and not a 404.
		if getOnly[r.URL.Path] {
			w.Header().Set("Allow", "GET, HEAD")
			writeRESTError(w, notFound, methodNotAllowed(r, "use GET"), http.StatusMethodNotAllowed)
			return
		}
		e := apierr.NotFound("no route for %s %s; the API is under /v1/, described at %s", r.Method, r.URL.Path, OpenAPIPath)
		writeRESTError(w, notFound, e, http.StatusNotFound)
	})
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// REST and Connect calls continue the caller's W3C trace context.
		if r.Header.Get("traceparent") != "" {
			r = r.WithContext(tracePropagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header)))
		}
		mux.ServeHTTP(w, r)
	})
	if opts.Wrap != nil {
		h = opts.Wrap(h)
	}
	return h, nil
}

// readinessTimeout bounds each backend probe of /readyz, below the
// usual 3s+ timeouts of kubelet probes.
const readinessTimeout = 2 * time.Second

// readyHandler probes every backend at the same time, each with its own
// timeout, and returns 503 naming the failing ones. A shared deadline
// would let one hanging backend use up the time of the next and blame a
// healthy one. A probe that ignores its ctx is reported as failed once
// its time is up, so /readyz always responds.
func readyHandler(checks []ReadinessCheck) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		type result struct {
			i   int
			err error
		}
		done := make(chan result, len(checks))
		for i, c := range checks {
			go func() {
				ctx, cancel := context.WithTimeout(r.Context(), readinessTimeout)
				defer cancel()
				done <- result{i, c.Check(ctx)}
			}()
		}
		errs := make([]error, len(checks))
		for i := range errs {
			errs[i] = fmt.Errorf("no response within %v", readinessTimeout)
		}
		// The margin lets a probe that honours its ctx report its own
		// error.
		giveUp := time.NewTimer(readinessTimeout + 250*time.Millisecond)
		defer giveUp.Stop()
	wait:
		for range checks {
			select {
			case res := <-done:
				errs[res.i] = res.err
			case <-giveUp.C:
				break wait
			}
		}
		results := make(map[string]string, len(checks))
		ready := true
		for i, c := range checks {
			if errs[i] != nil {
				results[c.Name] = errs[i].Error()
				ready = false
			} else {
				results[c.Name] = "ok"
			}
		}
		status := http.StatusOK
		if !ready {
			status = http.StatusServiceUnavailable
		}
		writeJSON(w, status, map[string]any{"ready": ready, "backends": results})
	}
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
