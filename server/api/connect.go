package api

import (
	"context"
	"errors"
	"net/http"

	"connectrpc.com/connect"

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
