// Package app assembles a running imlite process from its configuration:
// backends (embedded or distributed), the service core, and the gRPC, HTTP
// and websocket listeners. cmd/imlite and the end-to-end tests use it.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/api"
	"github.com/imlite/imlite/server/auth"
	"github.com/imlite/imlite/server/config"
	"github.com/imlite/imlite/server/metrics"
	"github.com/imlite/imlite/server/telemetry"
	"github.com/imlite/imlite/ws"
)

// App is one imlite process. Create it with New, which opens the backends
// and binds every listener, then call Run.
type App struct {
	cfg *config.Config
	log *slog.Logger

	svc      *server.Service
	backends *backends
	health   *health.Server
	metrics  *metrics.Metrics
	// stopTracing flushes and stops the span exporter; nil without one.
	stopTracing func(context.Context) error

	grpcSrv *grpc.Server
	httpSrv *http.Server
	hub     *ws.Hub
	wsSrv   *ws.Server

	grpcLn, httpLn, wsLn net.Listener
}

// Option changes how New assembles the process.
type Option func(*options)

type options struct {
	tracerProvider trace.TracerProvider
}

// WithTracerProvider makes the process trace with tp instead of the
// exporter that the Telemetry section configures, for tests.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tracerProvider = tp }
}

// New opens the backends and binds the listeners. Ports of 0 pick free
// ports, which the Addr methods report.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger, opts ...Option) (_ *App, err error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	a := &App{cfg: cfg, log: log, health: health.NewServer()}
	defer func() {
		if err != nil {
			a.closeAll()
		}
	}()

	// 1. Listeners, bound first so that a taken port fails the start
	// before the data directory, the secret or the store file is created.
	if a.grpcLn, err = net.Listen("tcp", cfg.ListenOn); err != nil {
		return nil, fmt.Errorf("ListenOn %s: %w", cfg.ListenOn, err)
	}
	httpAddr := net.JoinHostPort(cfg.Http.Host, strconv.Itoa(cfg.Http.Port))
	if a.httpLn, err = net.Listen("tcp", httpAddr); err != nil {
		return nil, fmt.Errorf("Http.Port %s: %w", httpAddr, err)
	}
	wsAddr := net.JoinHostPort(cfg.Websocket.Host, strconv.Itoa(cfg.Websocket.Port))
	if a.wsLn, err = net.Listen("tcp", wsAddr); err != nil {
		return nil, fmt.Errorf("Websocket.Port %s: %w", wsAddr, err)
	}

	// 2. Credentials and backends.
	secret, err := LoadSecret(cfg)
	if err != nil {
		return nil, err
	}
	signer, err := auth.NewSigner(secret, time.Duration(cfg.Auth.AccessExpire)*time.Second)
	if err != nil {
		return nil, fmt.Errorf("token signer: %w", err)
	}
	pod := podName(cfg)
	if cfg.Distributed() {
		a.backends, err = openDistributed(ctx, cfg, pod, log)
	} else {
		a.backends, err = openEmbedded(cfg)
	}
	if err != nil {
		return nil, err
	}

	// 3. Telemetry and the service core.
	tp := o.tracerProvider
	if tp == nil {
		if tp, a.stopTracing, err = telemetry.Setup(ctx, cfg.Telemetry, pod, log); err != nil {
			return nil, err
		}
	}
	a.metrics = metrics.New()
	a.svc, err = server.New(a.backends.Backends, signer, server.Options{
		PodName:        pod,
		Limits:         limits(cfg.Limits),
		SendTimeout:    cfg.Limits.SendTimeout.Std(),
		Logger:         log,
		Observer:       a.metrics,
		TracerProvider: tp,
	})
	if err != nil {
		return nil, err
	}

	// 4. Transports.
	apiOpts := api.Options{
		Log:       log,
		OnError:   a.metrics.ClientError,
		Readiness: a.backends.readiness,
		Metrics:   a.metrics.Handler(),
		// JSON may spell each content byte as a 6-byte \u escape.
		MaxRequestBytes: int64(6*a.svc.Limits().MaxContentBytes + 64<<10),
		Pprof:           cfg.Http.Pprof,
	}
	a.grpcSrv = api.NewGRPCServer(a.svc, a.health, apiOpts)
	handler, err := api.NewHTTPHandler(ctx, a.svc, apiOpts)
	if err != nil {
		return nil, err
	}
	a.httpSrv = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// h2c lets gRPC clients reach the Connect handler on the HTTP port.
	a.httpSrv.Protocols = new(http.Protocols)
	a.httpSrv.Protocols.SetHTTP1(true)
	a.httpSrv.Protocols.SetUnencryptedHTTP2(true)
	wsOpts := wsOptions(cfg.Websocket)
	wsOpts.Observer = a.metrics
	wsOpts.TracerProvider = tp
	if a.hub, err = ws.NewHub(a.svc, wsOpts, log); err != nil {
		return nil, fmt.Errorf("websocket hub: %w", err)
	}
	a.wsSrv = ws.NewServer(a.hub)

	return a, nil
}

func wsOptions(c config.WebsocketConfig) ws.Options {
	return ws.Options{
		MaxConnNum:     c.MaxConnNum,
		MaxFrameBytes:  c.MaxFrameBytes,
		PingInterval:   c.PingInterval.Std(),
		PongTimeout:    c.PongTimeout.Std(),
		WriteTimeout:   c.WriteTimeout.Std(),
		SendQueue:      c.SendQueue,
		MaxBadFrames:   c.MaxBadFrames,
		Compression:    c.Compression,
		AllowedOrigins: c.AllowedOrigins,
	}
}

// Service returns the service core.
func (a *App) Service() *server.Service { return a.svc }

// GRPCAddr returns the bound gRPC address.
func (a *App) GRPCAddr() string { return a.grpcLn.Addr().String() }

// HTTPAddr returns the bound HTTP address.
func (a *App) HTTPAddr() string { return a.httpLn.Addr().String() }

// WebsocketAddr returns the bound websocket address.
func (a *App) WebsocketAddr() string { return a.wsLn.Addr().String() }

// Hub returns the websocket hub.
func (a *App) Hub() *ws.Hub { return a.hub }

// Run serves until ctx ends or a listener fails, then shuts down within
// Shutdown.Timeout: it stops accepting calls, lets in-flight sends finish,
// stops the pipeline and closes the backends.
func (a *App) Run(ctx context.Context) error {
	pipeCtx, stopPipeline := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPipeline()
	pipeDone := make(chan error, 1)
	go func() { pipeDone <- a.svc.Run(pipeCtx) }()

	// Calls are served only once the queue consumers are ready, so no push
	// of an early send is missed.
	if err := a.svc.WaitReady(ctx); err != nil {
		stopPipeline()
		<-pipeDone
		a.closeAll()
		return err
	}
	serveErr := make(chan error, 3)
	go func() { serveErr <- a.grpcSrv.Serve(a.grpcLn) }()
	go func() { serveErr <- a.httpSrv.Serve(a.httpLn) }()
	go func() { serveErr <- a.wsSrv.Serve(a.wsLn) }()
	for _, name := range append([]string{""}, api.ServiceNames...) {
		a.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	a.log.Info("imlite started", "mode", a.mode(), "stage", a.cfg.Mode, "grpc", a.GRPCAddr(), "http", a.HTTPAddr(),
		"websocket", a.WebsocketAddr(), "pod_ip", a.cfg.PodIP)
	if len(a.cfg.Ignored) > 0 {
		a.log.Info("config keys accepted for compatibility and not used", "keys", a.cfg.Ignored)
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-serveErr:
		a.log.Error("listener failed", "err", runErr)
	case runErr = <-pipeDone:
		a.log.Error("pipeline stopped", "err", runErr)
		pipeDone <- runErr
	}
	if err := a.shutdown(stopPipeline, pipeDone); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}

// shutdown drains in order: stop accepting, finish in-flight calls, empty
// the queues, stop the pipeline, close the backends.
func (a *App) shutdown(stopPipeline context.CancelFunc, pipeDone chan error) error {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Shutdown.Timeout.Std())
	defer cancel()
	start := time.Now()
	a.log.Info("shutting down", "timeout", a.cfg.Shutdown.Timeout.Std())
	a.health.Shutdown()

	// 1. Stop accepting calls, close websockets with 1001 (going away) so
	// clients reconnect to another pod, and wait for calls in flight.
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		if err := a.wsSrv.Shutdown(ctx); err != nil {
			a.log.Warn("websocket connections did not close in time", "err", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := a.httpSrv.Shutdown(ctx); err != nil {
			a.log.Warn("HTTP server did not drain in time", "err", err)
			a.httpSrv.Close()
		}
	}()
	go func() {
		defer wg.Done()
		stopGRPC(ctx, a.grpcSrv)
	}()
	wg.Wait()

	// 2. Let queued messages be stored and pushed.
	var errs []error
	if err := a.backends.drain(ctx); err != nil {
		errs = append(errs, err)
	}

	// 3. Stop the pipeline and close the backends.
	stopPipeline()
	select {
	case <-pipeDone:
	case <-ctx.Done():
		errs = append(errs, errors.New("pipeline did not stop within the shutdown timeout"))
	}
	errs = append(errs, a.backends.close(ctx))
	if a.stopTracing != nil {
		errs = append(errs, a.stopTracing(ctx))
	}
	err := errors.Join(errs...)
	a.log.Info("stopped", "took", time.Since(start).Round(time.Millisecond), "err", err)
	return err
}

// stopGRPC stops gracefully, or forcibly when ctx ends first.
func stopGRPC(ctx context.Context, s *grpc.Server) {
	done := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.Stop()
		<-done
	}
}

// closeAll releases what New opened when New fails.
func (a *App) closeAll() {
	if a.grpcLn != nil {
		a.grpcLn.Close()
	}
	if a.httpLn != nil {
		a.httpLn.Close()
	}
	if a.wsLn != nil {
		a.wsLn.Close()
	}
	if a.hub != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = a.hub.Close(ctx)
		cancel()
	}
	if a.backends != nil {
		if err := a.backends.close(context.Background()); err != nil {
			a.log.Error("close backends", "err", err)
		}
	}
}

func (a *App) mode() string {
	if a.cfg.Distributed() {
		return "distributed"
	}
	return "embedded"
}

// podName is the pod's identity, which config resolves from POD_NAME.
func podName(cfg *config.Config) string { return cfg.PodName }

func limits(l config.LimitsConfig) server.Limits {
	return server.Limits{
		MaxContentBytes:   l.MaxContentBytes,
		MaxExBytes:        l.MaxExBytes,
		MaxClientMsgIDLen: l.MaxClientMsgIDLen,
		DefaultPullLimit:  l.DefaultPullLimit,
		MaxPullLimit:      l.MaxPullLimit,
		MaxGroupMembers:   l.MaxGroupMembers,
		MaxBatchUserIDs:   l.MaxBatchUserIDs,
	}
}
