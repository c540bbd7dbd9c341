// Package telemetry sets up OpenTelemetry tracing from the Telemetry section
// of the configuration.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/zipkin"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/imlite/imlite/server/config"
)

// Setup returns the tracer provider that cfg describes and a function that
// flushes and stops it. Without an Endpoint, or with Disabled, tracing is
// off and the provider creates no spans.
func Setup(ctx context.Context, cfg config.TelemetryConfig, pod string, log *slog.Logger) (trace.TracerProvider, func(context.Context) error, error) {
	if cfg.Endpoint == "" || cfg.Disabled {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	exporter, err := newExporter(ctx, cfg, log)
	if err != nil {
		return nil, nil, fmt.Errorf("Telemetry: %w", err)
	}
	res := resource.NewSchemaless(
		attribute.String("service.name", cfg.Name),
		attribute.String("service.instance.id", pod),
	)
	sampler := sdktrace.ParentBased(sdktrace.TraceIDRatioBased(*cfg.Sampler))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res), sdktrace.WithSampler(sampler))
	log.Info("tracing enabled", "batcher", cfg.Batcher, "endpoint", cfg.Endpoint, "sampler", *cfg.Sampler)
	return tp, tp.Shutdown, nil
}

func newExporter(ctx context.Context, cfg config.TelemetryConfig, log *slog.Logger) (sdktrace.SpanExporter, error) {
	switch cfg.Batcher {
	case "otlpgrpc":
		opts := []otlptracegrpc.Option{otlptracegrpc.WithHeaders(cfg.OtlpHeaders)}
		if strings.Contains(cfg.Endpoint, "://") {
			opts = append(opts, otlptracegrpc.WithEndpointURL(cfg.Endpoint))
		} else {
			// A bare host:port, as collectors are usually addressed,
			// without TLS.
			opts = append(opts, otlptracegrpc.WithEndpoint(cfg.Endpoint), otlptracegrpc.WithInsecure())
		}
		return otlptracegrpc.New(ctx, opts...)
	case "otlphttp", "jaeger":
		endpoint := cfg.Endpoint
		if cfg.Batcher == "jaeger" {
			endpoint = jaegerOTLPEndpoint(endpoint, log)
		}
		if !strings.Contains(endpoint, "://") {
			endpoint = "http://" + endpoint
		}
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(endpoint), otlptracehttp.WithHeaders(cfg.OtlpHeaders)}
		if cfg.OtlpHttpPath != "" {
			opts = append(opts, otlptracehttp.WithURLPath(cfg.OtlpHttpPath))
		}
		return otlptracehttp.New(ctx, opts...)
	case "zipkin":
		return zipkin.New(cfg.Endpoint)
	}
	return nil, errors.New("Batcher " + cfg.Batcher + " is not one of otlpgrpc, otlphttp, jaeger, zipkin")
}

// jaegerOTLPEndpoint maps the Jaeger collector's legacy Thrift endpoint
// (http://host:14268/api/traces, as IM-Lite-Server configured it) to the
// same host's OTLP/HTTP endpoint (port 4318, path /v1/traces), which
// Jaeger 1.35 and later accept. Other endpoints are used as given.
func jaegerOTLPEndpoint(endpoint string, log *slog.Logger) string {
	u, err := url.Parse(endpoint)
	if err != nil || u.Port() != "14268" {
		return endpoint
	}
	u.Host = u.Hostname() + ":4318"
	u.Path = "/v1/traces"
	log.Info("Telemetry.Endpoint is Jaeger's Thrift endpoint; sending OTLP to the same host instead", "endpoint", u.String())
	return u.String()
}
