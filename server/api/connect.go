package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/imlite/imlite/gen/imlite/v1/imlitev1connect"
	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/apierr"
	"github.com/imlite/imlite/server/auth"
)

// RegisterConnect mounts the Connect handlers (Connect, gRPC and gRPC-Web
// protocols) of the four services on mux, under /imlite.v1.<Service>/.
func RegisterConnect(mux *http.ServeMux, svc *server.Service, o Options) {
	opts := append([]connect.HandlerOption{
		connect.WithInterceptors(connectInterceptor(o.reporter("connect"))),
		connect.WithReadMaxBytes(int(o.maxRequestBytes())),
		connect.WithCodec(connectJSON{name: "json"}),
		connect.WithCodec(connectJSON{name: "json; charset=utf-8"}),
	}, o.Connect...)
	mux.Handle(imlitev1connect.NewMessageServiceHandler(svc, opts...))
	mux.Handle(imlitev1connect.NewConversationServiceHandler(svc, opts...))
	mux.Handle(imlitev1connect.NewGroupServiceHandler(svc, opts...))
	mux.Handle(imlitev1connect.NewUserServiceHandler(svc, opts...))
}

// connectInterceptor attaches the Authorization header for the core and
// converts errors to *connect.Error with the same code and message as gRPC.
func connectInterceptor(rep reporter) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			ctx = auth.WithAuthorization(ctx, req.Header().Get("Authorization"))
			resp, err := next(ctx, req)
			if err != nil {
				return nil, toConnectError(rep.clientError(ctx, req.Spec().Procedure, err))
			}
			return resp, nil
		}
	}
}

func toConnectError(e *apierr.Error) *connect.Error {
	out := connect.NewError(connect.Code(e.Code), errors.New(e.Message))
	if info := e.ErrorInfo(); info != nil {
		if d, err := connect.NewErrorDetail(info); err == nil {
			out.AddDetail(d)
		}
	}
	return out
}

// connectJSON is the JSON codec of the Connect handlers. It writes the
// JSON of REST and the websocket: proto field names and every field, also
// false and zero ones. It rejects unknown fields as REST does, where
// connect-go's default would drop them unseen.
type connectJSON struct{ name string }

var (
	connectMarshal   = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
	connectUnmarshal = protojson.UnmarshalOptions{}
)

func (c connectJSON) Name() string { return c.name }

func (connectJSON) Marshal(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("marshal %T: not a protobuf message", v)
	}
	return connectMarshal.Marshal(m)
}

func (connectJSON) Unmarshal(data []byte, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("unmarshal into %T: not a protobuf message", v)
	}
	if len(data) == 0 {
		return errors.New("request body is empty; send a JSON object, {} at least")
	}
	if err := connectUnmarshal.Unmarshal(data, m); err != nil {
		return fmt.Errorf("invalid JSON request body: %s", apierr.DecodeErrorText(err))
	}
	return nil
}
