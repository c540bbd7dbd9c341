package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
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
func NewGateway(ctx context.Context, svc *server.Service, log *slog.Logger) (http.Handler, error) {
	mux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
			MarshalOptions:   JSONMarshalOptions,
			UnmarshalOptions: JSONUnmarshalOptions,
		}),
		runtime.WithErrorHandler(func(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
			runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, clientError(ctx, log, r.Method+" "+r.URL.Path, err))
		}),
		runtime.WithMiddlewares(func(next runtime.HandlerFunc) runtime.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
				r = r.WithContext(auth.WithAuthorization(r.Context(), r.Header.Get("Authorization")))
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
