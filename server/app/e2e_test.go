package app_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/gen/imlite/v1/imlitev1connect"
	"github.com/imlite/imlite/server/app"
	"github.com/imlite/imlite/server/auth"
	"github.com/imlite/imlite/server/config"
)

const e2eSecret = "e2e-secret-0123456789abcdef0123456789"

// startApp runs an embedded imlite on free 127.0.0.1 ports.
func startApp(t *testing.T) *app.App {
	t.Helper()
	yaml := `
ListenOn: 127.0.0.1:0
Http:
  Host: 127.0.0.1
  Port: 0
Websocket:
  Host: 127.0.0.1
  Port: 0
Auth:
  AccessSecret: ` + e2eSecret + `
Embedded:
  Dir: ` + t.TempDir() + `
Log:
  Level: error
`
	cfg, err := config.Parse([]byte(yaml), func(string) string { return "" })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatalf("app.New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return a
}

func mintToken(t *testing.T, user string, admin bool) string {
	t.Helper()
	signer, err := auth.NewSigner([]byte(e2eSecret), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	role := imlitev1.Role_ROLE_USER
	if admin {
		role = imlitev1.Role_ROLE_ADMIN
	}
	tok, _, err := signer.Issue(user, "web", role, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// transport is one way to call the API; each returns the result as the
// generated response and the error as a gRPC code and message.
type transport interface {
	send(t *testing.T, token string, req *imlitev1.SendMsgRequest) (*imlitev1.SendMsgResponse, codes.Code, string)
	pull(t *testing.T, token string, req *imlitev1.PullMsgRequest) (*imlitev1.PullMsgResponse, codes.Code, string)
	kick(t *testing.T, token string, req *imlitev1.KickUserRequest) codes.Code
}

type grpcTransport struct{ conn *grpc.ClientConn }

func (g grpcTransport) ctx(token string) context.Context {
	ctx := context.Background()
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	return ctx
}

func (g grpcTransport) send(t *testing.T, token string, req *imlitev1.SendMsgRequest) (*imlitev1.SendMsgResponse, codes.Code, string) {
	resp, err := imlitev1.NewMessageServiceClient(g.conn).SendMsg(g.ctx(token), req)
	st := status.Convert(err)
	return resp, st.Code(), st.Message()
}

func (g grpcTransport) pull(t *testing.T, token string, req *imlitev1.PullMsgRequest) (*imlitev1.PullMsgResponse, codes.Code, string) {
	resp, err := imlitev1.NewMessageServiceClient(g.conn).PullMsg(g.ctx(token), req)
	st := status.Convert(err)
	return resp, st.Code(), st.Message()
}

func (g grpcTransport) kick(t *testing.T, token string, req *imlitev1.KickUserRequest) codes.Code {
	_, err := imlitev1.NewUserServiceClient(g.conn).KickUser(g.ctx(token), req)
	return status.Code(err)
}

type connectTransport struct{ base string }

func (c connectTransport) opts(token string) []connect.ClientOption {
	return []connect.ClientOption{connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if token != "" {
				req.Header().Set("Authorization", "Bearer "+token)
			}
			return next(ctx, req)
		}
	}))}
}

func connectCode(err error) (codes.Code, string) {
	if err == nil {
		return codes.OK, ""
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return codes.Code(ce.Code()), ce.Message()
	}
	return codes.Unknown, err.Error()
}

func (c connectTransport) send(t *testing.T, token string, req *imlitev1.SendMsgRequest) (*imlitev1.SendMsgResponse, codes.Code, string) {
	resp, err := imlitev1connect.NewMessageServiceClient(http.DefaultClient, c.base, c.opts(token)...).SendMsg(context.Background(), req)
	code, msg := connectCode(err)
	return resp, code, msg
}

func (c connectTransport) pull(t *testing.T, token string, req *imlitev1.PullMsgRequest) (*imlitev1.PullMsgResponse, codes.Code, string) {
	resp, err := imlitev1connect.NewMessageServiceClient(http.DefaultClient, c.base, c.opts(token)...).PullMsg(context.Background(), req)
	code, msg := connectCode(err)
	return resp, code, msg
}

func (c connectTransport) kick(t *testing.T, token string, req *imlitev1.KickUserRequest) codes.Code {
	_, err := imlitev1connect.NewUserServiceClient(http.DefaultClient, c.base, c.opts(token)...).KickUser(context.Background(), req)
	code, _ := connectCode(err)
	return code
}

// restTransport calls the REST routes with net/http and JSON, as curl does.
type restTransport struct{ base string }

type restError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (r restTransport) do(t *testing.T, method, path, token string, body any, out any) (codes.Code, string) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, r.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		var e restError
		if err := json.Unmarshal(data, &e); err != nil {
			t.Fatalf("%s %s: status %d with non-JSON body %q", method, path, resp.StatusCode, data)
		}
		if want := httpStatusFor(codes.Code(e.Code)); resp.StatusCode != want {
			t.Errorf("%s %s: HTTP %d for code %v, want %d", method, path, resp.StatusCode, codes.Code(e.Code), want)
		}
		return codes.Code(e.Code), e.Message
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, data, err)
		}
	}
	return codes.OK, ""
}

func httpStatusFor(c codes.Code) int {
	switch c {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.NotFound:
		return http.StatusNotFound
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// restSendResp mirrors SendMsgResponse in JSON: int64 travels as a string.
type restSendResp struct {
	ServerMsgID    string `json:"server_msg_id"`
	ConversationID string `json:"conversation_id"`
	Seq            string `json:"seq"`
}

func (r restTransport) send(t *testing.T, token string, req *imlitev1.SendMsgRequest) (*imlitev1.SendMsgResponse, codes.Code, string) {
	body := map[string]any{"client_msg_id": req.GetClientMsgId(), "content": req.GetContent()}
	if req.GetRecvId() != "" {
		body["recv_id"] = req.GetRecvId()
	}
	if req.GetGroupId() != "" {
		body["group_id"] = req.GetGroupId()
	}
	var out restSendResp
	code, msg := r.do(t, http.MethodPost, "/v1/messages:send", token, body, &out)
	if code != codes.OK {
		return nil, code, msg
	}
	return &imlitev1.SendMsgResponse{ServerMsgId: out.ServerMsgID, ConversationId: out.ConversationID, Seq: atoi(t, out.Seq)}, code, msg
}

func (r restTransport) pull(t *testing.T, token string, req *imlitev1.PullMsgRequest) (*imlitev1.PullMsgResponse, codes.Code, string) {
	var out struct {
		Messages []struct {
			Seq     string `json:"seq"`
			Content string `json:"content"`
		} `json:"messages"`
		MaxSeq string `json:"max_seq"`
	}
	path := "/v1/conversations/" + req.GetConversationId() + "/messages?limit=" + itoa(int64(req.GetLimit()))
	if req.GetBeginSeq() != 0 {
		path += "&begin_seq=" + itoa(req.GetBeginSeq())
	}
	if req.GetEndSeq() != 0 {
		path += "&end_seq=" + itoa(req.GetEndSeq())
	}
	code, msg := r.do(t, http.MethodGet, path, token, nil, &out)
	if code != codes.OK {
		return nil, code, msg
	}
	resp := &imlitev1.PullMsgResponse{MaxSeq: atoi(t, out.MaxSeq)}
	for _, m := range out.Messages {
		resp.Messages = append(resp.Messages, &imlitev1.Message{Seq: atoi(t, m.Seq), Content: m.Content})
	}
	return resp, code, msg
}

func (r restTransport) kick(t *testing.T, token string, req *imlitev1.KickUserRequest) codes.Code {
	code, _ := r.do(t, http.MethodPost, "/v1/users/"+req.GetUserId()+":kick", token, map[string]any{"reason": req.GetReason()}, nil)
	return code
}

func TestSameBehaviourOnEveryTransport(t *testing.T) {
	a := startApp(t)
	conn, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial gRPC: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	base := "http://" + a.HTTPAddr()
	transports := map[string]transport{
		"grpc":    grpcTransport{conn: conn},
		"rest":    restTransport{base: base},
		"connect": connectTransport{base: base},
	}

	for name, tr := range transports {
		t.Run(name, func(t *testing.T) {
			// Users are per transport, so each starts with an empty conversation.
			alice, bob, mallory := name+"-alice", name+"-bob", name+"-mallory"
			aliceTok, bobTok := mintToken(t, alice, false), mintToken(t, bob, false)
			admin := mintToken(t, "admin", true)

			// 1. Send, retry and pull.
			req := &imlitev1.SendMsgRequest{ClientMsgId: "c1", RecvId: bob, Content: "héllo 👋🏽 مرحبا"}
			first, code, msg := tr.send(t, aliceTok, req)
			if code != codes.OK {
				t.Fatalf("send: %v %s", code, msg)
			}
			if first.GetSeq() != 1 {
				t.Errorf("first seq = %d, want 1", first.GetSeq())
			}
			again, code, _ := tr.send(t, aliceTok, req)
			if code != codes.OK || again.GetSeq() != 1 || again.GetServerMsgId() != first.GetServerMsgId() {
				t.Errorf("retry = %v (%v), want the first result %v", again, code, first)
			}
			second, _, _ := tr.send(t, bobTok, &imlitev1.SendMsgRequest{ClientMsgId: "c1", RecvId: alice, Content: "hi"})
			if second.GetSeq() != 2 {
				t.Errorf("reply seq = %d, want 2", second.GetSeq())
			}
			pulled, code, msg := tr.pull(t, bobTok, &imlitev1.PullMsgRequest{ConversationId: first.GetConversationId()})
			if code != codes.OK {
				t.Fatalf("pull: %v %s", code, msg)
			}
			if len(pulled.GetMessages()) != 2 || pulled.GetMessages()[0].GetContent() != req.GetContent() || pulled.GetMaxSeq() != 2 {
				t.Errorf("pulled %v, want the two messages with content byte for byte", pulled)
			}

			// 2. Errors carry the same code and name the field.
			errCases := []struct {
				name   string
				token  string
				req    *imlitev1.SendMsgRequest
				code   codes.Code
				detail string
			}{
				{"no token", "", req, codes.Unauthenticated, "Bearer"},
				{"garbage token", "garbage", req, codes.Unauthenticated, "malformed"},
				{"missing client_msg_id", aliceTok, &imlitev1.SendMsgRequest{RecvId: bob, Content: "x"}, codes.InvalidArgument, "client_msg_id"},
				{"both targets", aliceTok, &imlitev1.SendMsgRequest{ClientMsgId: "z", RecvId: bob, GroupId: "g", Content: "x"}, codes.InvalidArgument, "group_id"},
				{"unknown group", aliceTok, &imlitev1.SendMsgRequest{ClientMsgId: "z", GroupId: "no-such", Content: "x"}, codes.NotFound, "no-such"},
				{"oversized content", aliceTok, &imlitev1.SendMsgRequest{ClientMsgId: "z", RecvId: bob, Content: strings.Repeat("a", 70000)}, codes.InvalidArgument, "content"},
			}
			for _, ec := range errCases {
				_, code, msg := tr.send(t, ec.token, ec.req)
				if code != ec.code || !strings.Contains(msg, ec.detail) {
					t.Errorf("%s: got %v %q, want %v mentioning %q", ec.name, code, msg, ec.code, ec.detail)
				}
			}
			_, code, msg = tr.pull(t, mintToken(t, mallory, false), &imlitev1.PullMsgRequest{ConversationId: first.GetConversationId()})
			if code != codes.PermissionDenied || !strings.Contains(msg, mallory) {
				t.Errorf("outsider pull: got %v %q, want PermissionDenied naming the user", code, msg)
			}
			_, code, msg = tr.pull(t, bobTok, &imlitev1.PullMsgRequest{ConversationId: first.GetConversationId(), BeginSeq: 9, EndSeq: 2})
			if code != codes.InvalidArgument || !strings.Contains(msg, "begin_seq") {
				t.Errorf("begin > end: got %v %q, want InvalidArgument naming begin_seq", code, msg)
			}

			// 3. Kick revokes the earlier token on every transport.
			if code := tr.kick(t, bobTok, &imlitev1.KickUserRequest{UserId: alice}); code != codes.PermissionDenied {
				t.Errorf("kick by a user: %v, want PermissionDenied", code)
			}
			if code := tr.kick(t, admin, &imlitev1.KickUserRequest{UserId: alice, Reason: "test"}); code != codes.OK {
				t.Fatalf("kick by admin: %v", code)
			}
			_, code, msg = tr.send(t, aliceTok, &imlitev1.SendMsgRequest{ClientMsgId: "c9", RecvId: bob, Content: "x"})
			if code != codes.Unauthenticated || !strings.Contains(msg, "revoked") {
				t.Errorf("send with kicked token: %v %q, want Unauthenticated mentioning revoked", code, msg)
			}
		})
	}
}

func TestHTTPEndpoints(t *testing.T) {
	a := startApp(t)
	base := "http://" + a.HTTPAddr()
	for _, tt := range []struct {
		path   string
		status int
		has    string
	}{
		{"/v1/messages:send", 405, "not allowed"},
		{"/healthz", 200, `"status":"ok"`},
		{"/readyz", 200, `"store":"ok"`},
		{"/openapi.json", 200, `"/v1/messages:send"`},
		{"/nope", 404, "/openapi.json"},
		{"/v1/nope", 404, "no route for GET /v1/nope"},
		{"/v1/conversations", 401, "Authorization"},
	} {
		resp, err := http.Get(base + tt.path)
		if err != nil {
			t.Fatalf("GET %s: %v", tt.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.has) {
			t.Errorf("GET %s = %d %q, want %d containing %q", tt.path, resp.StatusCode, body, tt.status, tt.has)
		}
		if tt.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer ") {
			t.Errorf("GET %s: WWW-Authenticate = %q, want a Bearer challenge", tt.path, resp.Header.Get("WWW-Authenticate"))
		}
	}

	huge := `{"client_msg_id":"a","recv_id":"b","content":"` + strings.Repeat("x", 1<<20) + `"}`
	alice := mintToken(t, "alice", false)
	jsonHeader := map[string]string{"Content-Type": "application/json"}
	const messages = "/v1/conversations/s:alice:bob/messages"
	const onlineStatus = "/imlite.v1.UserService/GetOnlineStatus"
	for _, tc := range []struct {
		name string
		// method defaults to POST and path to /v1/messages:send.
		method, path, body, token string
		header                    map[string]string
		status                    int
		want                      []string
	}{
		// Bad bodies are rejected naming the problem, and credentials
		// are checked before a body is read.
		{name: "malformed JSON", body: `{"client_msg_id":`, token: alice, status: 400, want: []string{"invalid JSON request body"}},
		{name: "unknown field", body: `{"client_msg_id":"a","recv_id":"b","content":"x","colour":"red"}`, token: alice, status: 400, want: []string{"colour"}},
		{name: "body over the limit", body: huge, token: alice, status: 413, want: []string{`"code":8`, "larger than the limit"}},
		{name: "query on a body route", path: "/v1/messages:send?zzz=1", body: `{"client_msg_id":"q","recv_id":"bob","content":"x"}`, token: alice,
			status: 400, want: []string{"not the query", "zzz=1"}},
		{name: "large body without a token", body: huge, status: 401, want: []string{"bearer"}},
		{name: "POST to /healthz", path: "/healthz", status: 405, want: []string{"use GET"}},
		{name: "form-encoded POST to a GET route", body: "{}", token: alice, path: "/v1/conversations",
			header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, status: 405, want: []string{"not allowed"}},
		{name: "POST with a method override to a GET route", body: "{}", token: alice, path: "/v1/conversations",
			header: map[string]string{"X-HTTP-Method-Override": "GET"}, status: 405, want: []string{"not allowed"}},

		// Query parameters must name fields of the request, by proto or
		// JSON name, so a misspelt one is an error and not the default.
		{name: "query by proto names", method: http.MethodGet, path: messages + "?begin_seq=1&limit=2", token: alice, status: 200, want: []string{`"max_seq"`}},
		{name: "query by JSON name", method: http.MethodGet, path: messages + "?beginSeq=1", token: alice, status: 200, want: []string{`"max_seq"`}},
		{name: "misspelt query parameter", method: http.MethodGet, path: messages + "?begin=5", token: alice, status: 400, want: []string{`unknown query parameter \"begin\"`}},
		{name: "query path into a scalar", method: http.MethodGet, path: messages + "?limit.x=1", token: alice, status: 400, want: []string{"has no subfields"}},

		// Connect's JSON has the field names and zero values of REST, and
		// rejects unknown fields as REST does.
		{name: "Connect JSON reply", path: onlineStatus, body: `{"user_ids":["nobody"]}`, token: alice, header: jsonHeader,
			status: 200, want: []string{`"user_id":"nobody"`, `"online":false`}},
		{name: "Connect JSON unknown field", path: onlineStatus, body: `{"user_ids":["nobody"],"colour":"red"}`, token: alice, header: jsonHeader,
			status: 400, want: []string{"invalid_argument", "colour"}},
		{name: "Connect JSON empty body", path: onlineStatus, token: alice, header: jsonHeader,
			status: 400, want: []string{"invalid_argument", "request body is empty"}},
	} {
		var body io.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		req, _ := http.NewRequest(cmp.Or(tc.method, http.MethodPost), base+cmp.Or(tc.path, "/v1/messages:send"), body)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		for k, v := range tc.header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: status %d %.200s, want %d", tc.name, resp.StatusCode, data, tc.status)
		}
		for _, want := range tc.want {
			if !strings.Contains(string(data), want) {
				t.Errorf("%s: body %.200s lacks %s", tc.name, data, want)
			}
		}
	}

	conn, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hr, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: "imlite.v1.MessageService"})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("gRPC health = %v, %v; want SERVING", hr, err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func atoi(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("parse int64 %q: %v", s, err)
	}
	return n
}
