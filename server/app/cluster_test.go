package app_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/internal/testenv"
	"github.com/imlite/imlite/internal/wstest"
	"github.com/imlite/imlite/server/app"
	"github.com/imlite/imlite/server/auth"
	"github.com/imlite/imlite/server/config"
	"github.com/imlite/imlite/ws"
)

// cluster is several imlite pods on 127.0.0.1 sharing one Kafka (kfake),
// one MongoDB (FerretDB) and one redis-server.
type cluster struct {
	t      *testing.T
	kafka  *testenv.Kafka
	mongo  *testenv.FerretDB
	redis  *testenv.Redis
	signer *auth.Signer
	// extra is appended to every pod's configuration.
	extra string
}

const clusterSecret = "cluster-secret-0123456789abcdef0123456789"

func newCluster(t *testing.T, extra string) *cluster {
	t.Helper()
	signer, err := auth.NewSigner([]byte(clusterSecret), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{
		t:      t,
		kafka:  testenv.StartKafka(t),
		mongo:  testenv.StartFerretDB(t),
		redis:  testenv.StartRedis(t),
		signer: signer,
		extra:  extra,
	}
}

// config returns a pod's configuration.
func (c *cluster) config(pod string) *config.Config {
	c.t.Helper()
	cfg, err := config.Parse([]byte(c.yaml()), func(k string) string {
		if k == "POD_NAME" {
			return pod
		}
		return ""
	})
	if err != nil {
		c.t.Fatalf("config of %s: %v", pod, err)
	}
	return cfg
}

// yaml writes the configuration with every key of IM-Lite-Server's
// websocket.yaml, as an existing deployment's file would have them.
func (c *cluster) yaml() string {
	brokers := "[" + strings.Join(c.kafka.Addrs(), ", ") + "]"
	return fmt.Sprintf(`
Name: websocket-rpc
ListenOn: 127.0.0.1:0
Mode: test
Websocket:
  Host: 127.0.0.1
  Port: 0
  MaxConnNum: 1000
Http:
  Host: 127.0.0.1
  Port: 0
Log:
  ServiceName: websocket-rpc
  Mode: console
  Encoding: plain
  TimeFormat: "2006-01-02 15:04:05"
  Path: logs
  Level: error
  Compress: false
Telemetry:
  Name: websocket-rpc
  Endpoint: ""
  Sampler: 1.0
  Batcher: jaeger
Redis:
  Host: %[1]s
  Pass: ""
  DB: 0
  PresenceTTL: 2s
Mongo:
  Uri: %[2]s
  DBTimeout: 2
  Database: im_lite
Pushers:
  Msg: {Addrs: %[3]s, Topic: im_lite_sendmsg_v1, User: "", Passwd: "", Partition: 3}
  Push: {Addrs: %[3]s, Topic: im_lite_push_v1, User: "", Passwd: "", Partition: 2}
Consumers:
  Msg: {Addrs: %[3]s, Topic: im_lite_sendmsg_v1, Group: websocket-rpc, Consumers: 4, User: "", Passwd: "", SessionTimeout: 6s}
  Push: {Addrs: %[3]s, Topic: im_lite_push_v1, Group: "", Consumers: 4, User: "", Passwd: ""}
Auth:
  AccessSecret: %[4]s
%[5]s
`, c.redis.Addr, c.mongo.URI(), brokers, clusterSecret, c.extra)
}

// pod is one running imlite process.
type pod struct {
	name   string
	app    *app.App
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func (c *cluster) start(name string) *pod {
	c.t.Helper()
	return c.startWith(name)
}

// startWith starts a pod with app options.
func (c *cluster) startWith(name string, opts ...app.Option) *pod {
	c.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, c.config(name), slog.New(slog.NewTextHandler(io.Discard, nil)), opts...)
	if err != nil {
		cancel()
		c.t.Fatalf("start %s: %v", name, err)
	}
	p := &pod{name: name, app: a, cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- a.Run(ctx) }()
	c.t.Cleanup(p.stop)
	// The pod serves once its consumers are ready.
	waitHTTP(c.t, "http://"+a.HTTPAddr()+"/healthz")
	return p
}

func (c *cluster) startPods(names ...string) []*pod {
	pods := make([]*pod, len(names))
	for i, n := range names {
		pods[i] = c.start(n)
	}
	return pods
}

// stop shuts the pod down gracefully and waits.
func (p *pod) stop() {
	p.once.Do(func() {
		p.cancel()
		<-p.done
	})
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 10s: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *cluster) token(user, platform string, admin bool) string {
	c.t.Helper()
	role := imlitev1.Role_ROLE_USER
	if admin {
		role = imlitev1.Role_ROLE_ADMIN
	}
	tok, _, err := c.signer.Issue(user, platform, role, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	return tok
}

func (c *cluster) dial(p *pod, user, platform string) *wstest.Client {
	c.t.Helper()
	return wstest.MustDial(c.t, "ws://"+p.app.WebsocketAddr()+"/ws", c.token(user, platform, false), ws.Binary)
}

// grpcCall returns a MessageService client of the pod and a context
// acting as user.
func (c *cluster) grpcCall(p *pod, user string, admin bool) (imlitev1.MessageServiceClient, context.Context) {
	c.t.Helper()
	return c.grpcCallWithToken(p, c.token(user, "web", admin))
}

// grpcCallWithToken is grpcCall with a given token.
func (c *cluster) grpcCallWithToken(p *pod, token string) (imlitev1.MessageServiceClient, context.Context) {
	c.t.Helper()
	return c.grpcCallAddr(p.app.GRPCAddr(), token)
}

// grpcCallAddr is grpcCall for a gRPC address and token.
func (c *cluster) grpcCallAddr(addr, token string) (imlitev1.MessageServiceClient, context.Context) {
	c.t.Helper()
	return grpcClientAt(c.t, addr, token)
}

// grpcClientAt returns a MessageService client of addr and a context that
// sends token.
func grpcClientAt(t *testing.T, addr, token string) (imlitev1.MessageServiceClient, context.Context) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
	return imlitev1.NewMessageServiceClient(conn), ctx
}

// createGroup creates a group through a pod's websocket as an admin.
func (c *cluster) createGroup(p *pod, id string, members ...string) {
	c.t.Helper()
	admin := wstest.MustDial(c.t, "ws://"+p.app.WebsocketAddr()+"/ws", c.token("admin", "web", true), ws.Binary)
	admin.Call(&imlitev1.Frame{Body: &imlitev1.Frame_CreateGroup{CreateGroup: &imlitev1.CreateGroupRequest{GroupId: id, OwnerId: members[0], MemberIds: members}}})
	admin.Conn.Close()
}
