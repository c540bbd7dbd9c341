package server

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
)

// A message's trace has four spans: imlite.send (SendMsg on the accepting
// pod), imlite.store (the store stage), imlite.push (the push stage on each
// pod) and imlite.deliver (the websocket hub). The trace context travels
// between them in the trace field of the bus records, which the Kafka
// queues carry in record headers.
const (
	spanSend  = "imlite.send"
	spanStore = "imlite.store"
	spanPush  = "imlite.push"
)

// TracerName names imlite's tracer.
const TracerName = "github.com/imlite/imlite"

// tracePropagator is the W3C trace context format used in bus records.
var tracePropagator = propagation.TraceContext{}

// injectTrace returns the trace context of ctx as a bus record field, or nil
// when ctx has no valid span.
func injectTrace(ctx context.Context) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	carrier := propagation.MapCarrier{}
	tracePropagator.Inject(ctx, carrier)
	return carrier
}

// extractTrace returns ctx with the remote span context of a bus record.
func extractTrace(ctx context.Context, fields map[string]string) context.Context {
	if len(fields) == 0 {
		return ctx
	}
	return tracePropagator.Extract(ctx, propagation.MapCarrier(fields))
}

// setMessageAttributes adds a message's attributes to a recording span;
// content is never one.
func setMessageAttributes(span trace.Span, m *imlitev1.Message) {
	if span.IsRecording() {
		span.SetAttributes(messageAttributes(m)...)
	}
}

// messageAttributes are the span attributes of a message.
func messageAttributes(m *imlitev1.Message) []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.String("imlite.conversation_id", m.GetConversationId()),
		attribute.String("imlite.server_msg_id", m.GetServerMsgId()),
		attribute.Int64("imlite.seq", m.GetSeq()),
	}
}

// endSpan records err on span, if any, and ends it.
func endSpan(span trace.Span, err error) {
	failSpan(span, err)
	span.End()
}

// failSpan records err on span, if any.
func failSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
}
