// Package apierr defines the errors that imlite returns to clients and maps
// them, in this one place, to gRPC status codes. grpc-gateway derives the HTTP
// status from the gRPC code, Connect codes share the gRPC numbering, and
// websocket error frames carry the gRPC code number.
//
// Every message names the field or value at fault. Internal causes stay in
// the wrapped error for logs and never reach the client.
package apierr

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Domain is the ErrorInfo domain attached to errors that carry metadata.
const Domain = "imlite.dev"

// Error is an error meant for the client: a gRPC code, a message naming what
// is wrong, optional metadata (for example the server_msg_id of a send that
// timed out) and an optional internal cause that is logged but not sent.
type Error struct {
	Code     codes.Code
	Message  string
	Metadata map[string]string
	// Reason is a stable UPPER_SNAKE_CASE identifier for Metadata's ErrorInfo.
	Reason string
	Cause  error
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Cause)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Cause }

// GRPCStatus lets status.FromError, grpc-go and grpc-gateway see the code and
// message. Metadata travels as a google.rpc.ErrorInfo detail.
func (e *Error) GRPCStatus() *status.Status {
	st := status.New(e.Code, e.Message)
	info := e.ErrorInfo()
	if info == nil {
		return st
	}
	withDetails, err := st.WithDetails(info)
	if err != nil {
		return st
	}
	return withDetails
}

// ErrorInfo returns the metadata as a google.rpc.ErrorInfo, or nil without
// metadata.
func (e *Error) ErrorInfo() *errdetails.ErrorInfo {
	if len(e.Metadata) == 0 {
		return nil
	}
	reason := e.Reason
	if reason == "" {
		reason = e.Code.String()
	}
	return &errdetails.ErrorInfo{Reason: reason, Domain: Domain, Metadata: e.Metadata}
}

// With returns a copy of e with the metadata key set.
func (e *Error) With(key, value string) *Error {
	c := *e
	c.Metadata = make(map[string]string, len(e.Metadata)+1)
	for k, v := range e.Metadata {
		c.Metadata[k] = v
	}
	c.Metadata[key] = value
	return &c
}

func newf(code codes.Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// InvalidArgument reports a malformed request; the message names the field.
func InvalidArgument(format string, args ...any) *Error {
	return newf(codes.InvalidArgument, format, args...)
}

// NotFound reports a missing group, conversation or similar resource.
func NotFound(format string, args ...any) *Error { return newf(codes.NotFound, format, args...) }

// AlreadyExists reports a create of something that exists.
func AlreadyExists(format string, args ...any) *Error {
	return newf(codes.AlreadyExists, format, args...)
}

// PermissionDenied reports a caller that may not do what it asked.
func PermissionDenied(format string, args ...any) *Error {
	return newf(codes.PermissionDenied, format, args...)
}

// Unauthenticated reports missing, invalid, expired or revoked credentials.
func Unauthenticated(format string, args ...any) *Error {
	return newf(codes.Unauthenticated, format, args...)
}

// FailedPrecondition reports a request that conflicts with current state,
// such as a group that is full.
func FailedPrecondition(format string, args ...any) *Error {
	return newf(codes.FailedPrecondition, format, args...)
}

// ResourceExhausted reports a full queue or an exceeded rate.
func ResourceExhausted(format string, args ...any) *Error {
	return newf(codes.ResourceExhausted, format, args...)
}

// Unavailable reports a backend that cannot be reached; the call may be retried.
func Unavailable(cause error, format string, args ...any) *Error {
	e := newf(codes.Unavailable, format, args...)
	e.Cause = cause
	return e
}

// DeadlineExceeded reports a call that ran out of time.
func DeadlineExceeded(format string, args ...any) *Error {
	return newf(codes.DeadlineExceeded, format, args...)
}

// Internal hides cause from the client and reports a generic failure of op.
func Internal(op string, cause error) *Error {
	return &Error{Code: codes.Internal, Message: "internal error during " + op, Cause: cause}
}

// From converts any error into a client-facing *Error. An *Error passes
// through; context errors become Canceled or DeadlineExceeded; a gRPC status
// keeps its code; anything else becomes Internal without its text.
func From(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	switch {
	case errors.Is(err, context.Canceled):
		return &Error{Code: codes.Canceled, Message: "request canceled", Cause: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Code: codes.DeadlineExceeded, Message: "request deadline exceeded", Cause: err}
	}
	if st, ok := status.FromError(err); ok {
		return &Error{Code: st.Code(), Message: st.Message(), Cause: err}
	}
	return Internal("request", err)
}

// Code returns the gRPC code of err as From would report it.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	return From(err).Code
}

// DecodeErrorText returns the message of a protobuf or protojson decode
// error with plain spaces. In some builds the protobuf module writes a
// no-break space after its "proto:" prefix, on purpose, so that programs
// do not match its messages. Clients show the message verbatim.
func DecodeErrorText(err error) string {
	return strings.ReplaceAll(err.Error(), "\u00a0", " ")
}
