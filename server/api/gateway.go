package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/apierr"
	"github.com/imlite/imlite/server/auth"
)

// JSONMarshalOptions is the JSON form of every REST body and websocket text
// frame: proto field names (client_msg_id, not clientMsgId) and every field
// present, so clients need no defaults table.
var JSONMarshalOptions = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// JSONUnmarshalOptions accepts both proto and camelCase field names and
// rejects unknown fields, so a misspelt field is an error, not a silent zero.
var JSONUnmarshalOptions = protojson.UnmarshalOptions{DiscardUnknown: false}

// NewGateway returns the REST handler: grpc-gateway routes under /v1/ that
// call the core in process.
func NewGateway(ctx context.Context, svc *server.Service, o Options) (http.Handler, error) {
	rep := o.reporter("rest")
	limit := o.maxRequestBytes()
	marshaler := restJSON{&runtime.JSONPb{MarshalOptions: JSONMarshalOptions, UnmarshalOptions: JSONUnmarshalOptions}, limit}
	mux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, marshaler),
		runtime.WithErrorHandler(func(ctx context.Context, _ *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
			writeRESTError(w, m, rep.clientError(ctx, r.Method+" "+r.URL.Path, err), 0)
		}),
		runtime.WithRoutingErrorHandler(func(_ context.Context, _ *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, status int) {
			e := apierr.NotFound("no route for %s %s; the routes are listed at %s", r.Method, r.URL.Path, OpenAPIPath)
			switch status {
			case http.StatusMethodNotAllowed:
				e = &apierr.Error{Code: codes.Unimplemented, Message: "method " + r.Method + " is not allowed for " + r.URL.Path}
			case http.StatusBadRequest:
				e = apierr.InvalidArgument("malformed request path %s", r.URL.Path)
			}
			writeRESTError(w, m, e, status)
		}),
		// Credentials are checked before the body is read, and the body is
		// bounded, so an anonymous or oversized request costs no memory.
		runtime.WithMiddlewares(func(next runtime.HandlerFunc) runtime.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
				p, err := authenticate(r.Context(), svc, r.Header.Get("Authorization"))
				if err != nil {
					writeRESTError(w, marshaler, rep.clientError(r.Context(), r.Method+" "+r.URL.Path, err), 0)
					return
				}
				r = r.WithContext(auth.WithPrincipal(r.Context(), p))
				r.Body = http.MaxBytesReader(w, r.Body, limit)
				next(w, r, params)
			}
		}),
	)
	err := errors.Join(
		imlitev1.RegisterMessageServiceHandlerServer(ctx, mux, svc),
		imlitev1.RegisterConversationServiceHandlerServer(ctx, mux, svc),
		imlitev1.RegisterGroupServiceHandlerServer(ctx, mux, svc),
		imlitev1.RegisterUserServiceHandlerServer(ctx, mux, svc),
	)
	if err != nil {
		return nil, fmt.Errorf("register REST routes: %w", err)
	}
	return mux, nil
}

// writeRESTError writes e as the JSON form of google.rpc.Status with the
// given HTTP status, or when 0 the one grpc-gateway maps the code to. A 401
// carries a standard RFC 6750 WWW-Authenticate header instead of the
// gateway's default, which repeats the message there.
func writeRESTError(w http.ResponseWriter, m runtime.Marshaler, e *apierr.Error, status int) {
	st := e.GRPCStatus()
	body, err := m.Marshal(st.Proto())
	if err != nil {
		body = []byte(`{"code":13,"message":"failed to encode the error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	if e.Code == codes.Unauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="imlite", error="invalid_token"`)
	}
	if status == 0 {
		status = runtime.HTTPStatusFromCode(e.Code)
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// authenticate verifies the bearer token of an Authorization header.
func authenticate(ctx context.Context, svc *server.Service, header string) (auth.Principal, error) {
	token, err := auth.ParseBearer(header)
	if err != nil {
		return auth.Principal{}, apierr.Unauthenticated("%v; send \"Authorization: Bearer <token>\"", err)
	}
	return svc.Authenticate(ctx, token)
}

// restJSON is the REST body codec: protojson with proto field names, whose
// decode errors say that the request body is at fault and name the size
// limit when a body exceeds it.
type restJSON struct {
	*runtime.JSONPb
	limit int64
}

func (m restJSON) NewDecoder(r io.Reader) runtime.Decoder {
	d := m.JSONPb.NewDecoder(r)
	return runtime.DecoderFunc(func(v any) error {
		err := d.Decode(v)
		var tooLarge *http.MaxBytesError
		switch {
		case err == nil, errors.Is(err, io.EOF):
			// An empty body decodes as an empty request.
			return err
		case errors.As(err, &tooLarge):
			return fmt.Errorf("request body is larger than the limit of %d bytes", m.limit)
		}
		return fmt.Errorf("invalid JSON request body: %v", err)
	})
}
