package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

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
	// The parser is a process-wide setting of grpc-gateway, so it is set
	// once, before any gateway serves.
	setQueryParser.Do(func() { runtime.SetQueryParameterParser(&strictQueryParser{})(nil) })
	limit := o.maxRequestBytes()
	marshaler := restJSON{&runtime.JSONPb{MarshalOptions: JSONMarshalOptions, UnmarshalOptions: JSONUnmarshalOptions}, limit}
	mux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, marshaler),
		// Without these, a POST to a GET route runs the GET when its body is
		// form-encoded (curl -d sends that by default) or when it carries
		// X-HTTP-Method-Override, where a 405 is what the caller needs.
		runtime.WithDisablePathLengthFallback(),
		runtime.WithDisableHTTPMethodOverride(),
		runtime.WithErrorHandler(func(ctx context.Context, _ *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
			writeRESTError(w, m, rep.clientError(ctx, r.Method+" "+r.URL.Path, err), 0)
		}),
		runtime.WithRoutingErrorHandler(func(_ context.Context, _ *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, status int) {
			e := apierr.NotFound("no route for %s %s; the routes are listed at %s", r.Method, r.URL.Path, OpenAPIPath)
			switch status {
			case http.StatusMethodNotAllowed:
				e = methodNotAllowed(r, "")
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
				if r.Method != http.MethodGet && r.URL.RawQuery != "" {
					// Every route but GET takes all its fields from the
					// body, and grpc-gateway would ignore the query.
					e := apierr.InvalidArgument("%s %s takes its fields from the JSON body, not the query %q", r.Method, r.URL.Path, r.URL.RawQuery)
					writeRESTError(w, marshaler, e, 0)
					return
				}
				if r.ContentLength > limit {
					// A declared length over the limit is rejected unread. A
					// chunked body fails while decoding, with 400 and the
					// same message.
					e := apierr.ResourceExhausted("request body is larger than the limit of %d bytes", limit)
					writeRESTError(w, marshaler, e, http.StatusRequestEntityTooLarge)
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
		return fmt.Errorf("invalid JSON request body: %s", apierr.DecodeErrorText(err))
	})
}

var setQueryParser sync.Once

// strictQueryParser is grpc-gateway's query parser with one change: a
// parameter that names no field of the request fails the call. The default
// parser ignores it, so a misspelt begin_seq would silently return the
// whole range.
type strictQueryParser struct{ runtime.DefaultQueryParser }

func (p *strictQueryParser) Parse(msg proto.Message, values url.Values, filter *utilities.DoubleArray) error {
	for key := range values {
		if err := checkQueryField(msg.ProtoReflect().Descriptor(), key); err != nil {
			return err
		}
	}
	return p.DefaultQueryParser.Parse(msg, values, filter)
}

// checkQueryField reports an error unless key, a dotted path of proto or
// JSON field names, names a field of md. A map key in brackets ends the
// path.
func checkQueryField(md protoreflect.MessageDescriptor, key string) error {
	path, _, _ := strings.Cut(key, "[")
	parts := strings.Split(path, ".")
	for i, name := range parts {
		fields := md.Fields()
		fd := fields.ByName(protoreflect.Name(name))
		if fd == nil {
			fd = fields.ByJSONName(name)
		}
		if fd == nil {
			return fmt.Errorf("unknown query parameter %q: %s has no field %q", key, md.Name(), name)
		}
		if i < len(parts)-1 {
			if fd.Kind() != protoreflect.MessageKind || fd.IsList() || fd.IsMap() {
				return fmt.Errorf("unknown query parameter %q: field %q has no subfields", key, name)
			}
			md = fd.Message()
		}
	}
	return nil
}

// methodNotAllowed is the error of a request whose path exists for other
// methods only; hint, when set, names the method to use.
func methodNotAllowed(r *http.Request, hint string) *apierr.Error {
	msg := "method " + r.Method + " is not allowed for " + r.URL.Path
	if hint != "" {
		msg += "; " + hint
	}
	return &apierr.Error{Code: codes.Unimplemented, Message: msg}
}
