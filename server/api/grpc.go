// Package api exposes the service core over native gRPC, REST (grpc-gateway)
// and Connect. The three share the core's methods; this package only moves
// credentials into the context and turns errors into each protocol's form
// through apierr, so a call behaves the same on every transport.
package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/propagation"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/apierr"
	"github.com/imlite/imlite/server/auth"
)

// ServiceNames are the gRPC services imlite serves, for health reporting.
var ServiceNames = []string{
	imlitev1.MessageService_ServiceDesc.ServiceName,
	imlitev1.ConversationService_ServiceDesc.ServiceName,
	imlitev1.GroupService_ServiceDesc.ServiceName,
	imlitev1.UserService_ServiceDesc.ServiceName,
}

// Options configure the transports. Zero fields mean none.
type Options struct {
	Log *slog.Logger
	// OnError counts each error returned to a client, by transport ("grpc",
	// "rest", "connect") and code.
	OnError func(transport string, code codes.Code)
	// GRPC adds server options, such as a stats handler for tracing.
	GRPC []grpc.ServerOption
	// Connect adds handler options, such as tracing interceptors.
	Connect []connect.HandlerOption
	// Readiness lists the backends /readyz probes.
	Readiness []ReadinessCheck
	// Metrics serves /metrics when set.
	Metrics http.Handler
	// Wrap wraps the whole HTTP handler, for tracing or request metrics.
	Wrap func(http.Handler) http.Handler
	// MaxRequestBytes bounds a request body or message on every transport.
	// Zero means 1 MiB.
	MaxRequestBytes int64
	// Pprof serves net/http/pprof under /debug/pprof/.
	Pprof bool
}

func (o Options) maxRequestBytes() int64 {
	if o.MaxRequestBytes <= 0 {
		return 1 << 20
	}
	return o.MaxRequestBytes
}

func (o Options) reporter(transport string) reporter {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	return reporter{log: log, transport: transport, onError: o.OnError}
}

// reporter converts errors for clients, logs internal ones and counts all.
type reporter struct {
	log       *slog.Logger
	transport string
	onError   func(transport string, code codes.Code)
}

// clientError converts err for a client, logs it when internal and counts it.
func (r reporter) clientError(ctx context.Context, method string, err error) *apierr.Error {
	e := apierr.From(err)
	if e.Code == codes.Internal || e.Code == codes.Unknown {
		r.log.ErrorContext(ctx, "request failed", "transport", r.transport, "method", method, "err", err)
	}
	if r.onError != nil {
		r.onError(r.transport, e.Code)
	}
	return e
}

// NewGRPCServer returns a gRPC server with the four imlite services, the
// standard health service (reported by hs) and server reflection.
func NewGRPCServer(svc *server.Service, hs *health.Server, o Options) *grpc.Server {
	rep := o.reporter("grpc")
	opts := append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(recoverUnary(rep.log), contextUnary, errorUnary(rep)),
		grpc.ChainStreamInterceptor(recoverStream(rep.log)),
		grpc.MaxRecvMsgSize(int(o.maxRequestBytes())),
	}, o.GRPC...)
	s := grpc.NewServer(opts...)
	imlitev1.RegisterMessageServiceServer(s, svc)
	imlitev1.RegisterConversationServiceServer(s, svc)
	imlitev1.RegisterGroupServiceServer(s, svc)
	imlitev1.RegisterUserServiceServer(s, svc)
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return s
}

// contextUnary attaches the Authorization metadata for the core to verify,
// and the caller's W3C trace context, so a send's trace continues the
// caller's.
func contextUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			ctx = auth.WithAuthorization(ctx, v[0])
		}
		ctx = tracePropagator.Extract(ctx, metadataCarrier(md))
	}
	return handler(ctx, req)
}

// tracePropagator reads W3C trace context from incoming calls.
var tracePropagator = propagation.TraceContext{}

// metadataCarrier adapts gRPC metadata to a propagation.TextMapCarrier.
type metadataCarrier metadata.MD

func (m metadataCarrier) Get(key string) string {
	if v := metadata.MD(m).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (m metadataCarrier) Set(key, value string) { metadata.MD(m).Set(key, value) }

func (m metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// errorUnary converts every error to an *apierr.Error, so no internal error
// text reaches a client, and logs internal failures.
func errorUnary(rep reporter) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if err != nil {
			return nil, rep.clientError(ctx, info.FullMethod, err)
		}
		return resp, nil
	}
}

func recoverUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				log.ErrorContext(ctx, "panic in handler", "method", info.FullMethod, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				err = apierr.Internal(info.FullMethod, fmt.Errorf("panic: %v", r))
			}
		}()
		return handler(ctx, req)
	}
}

func recoverStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				log.Error("panic in stream handler", "method", info.FullMethod, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				err = apierr.Internal(info.FullMethod, fmt.Errorf("panic: %v", r))
			}
		}()
		return handler(srv, ss)
	}
}
