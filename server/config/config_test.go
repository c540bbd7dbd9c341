package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// originalFile uses every key of IM-Lite-Server's configuration table and
// its shipped etc/websocket.yaml, in that file's layout.
const originalFile = `
Name: websocket-rpc
ListenOn: :30000
Mode: dev

Websocket:
  Port: 31000
  MaxConnNum: 10000

Log:
  ServiceName: websocket-rpc
  Mode: console
  Encoding: plain
  TimeFormat: "2006-01-02 15:04:05"
  Path: logs
  Level: info
  Compress: false

Telemetry:
  Name: websocket-rpc
  Endpoint: http://127.0.0.1:14268/api/traces
  Sampler: 1.0
  Batcher: jaeger

Redis:
  Host: localhost:6379
  Pass: "123456"
  DB: 4

Mongo:
  Uri: mongodb://localhost/admin
  DBTimeout: 10
  Database: im_lite

Pushers:
  Msg:
    Addrs:
      - 127.0.0.1:9092
    Topic: im_lite_sendmsg_v1
    User: ""
    Passwd: ""
    Partition: 3
  Push:
    Addrs:
      - 127.0.0.1:9092
    Topic: im_lite_push_v1
    User: ""
    Passwd: ""
    Partition: 1

Consumers:
  Msg:
    Addrs:
      - 127.0.0.1:9092
    Topic: im_lite_sendmsg_v1
    Group: "websocket-rpc"
    Consumers: 10
    User: ""
    Passwd: ""
  Push:
    Addrs:
      - 127.0.0.1:9092
    Topic: im_lite_push_v1
    Group: ""
    Consumers: 10
    User: ""
    Passwd: ""

Auth:
  AccessSecret: 0123456789abcdef0123456789abcdef
`

func TestParseOriginalFile(t *testing.T) {
	c, err := Parse([]byte(originalFile), env(map[string]string{"POD_NAME": "pod-a", "POD_IP": "10.0.0.7"}))
	if err != nil {
		t.Fatalf("Parse(original websocket.yaml) error: %v", err)
	}
	if !c.Distributed() {
		t.Error("Distributed() = false, want true for a file with Redis, Mongo and Kafka")
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"ListenOn", c.ListenOn, ":30000"},
		{"Websocket.Port", c.Websocket.Port, 31000},
		{"Websocket.MaxConnNum", c.Websocket.MaxConnNum, 10000},
		{"Log.Encoding", c.Log.Encoding, "plain"},
		{"Telemetry.Batcher", c.Telemetry.Batcher, "jaeger"},
		{"Redis.DB", c.Redis.DB, 4},
		{"Mongo.DBTimeout", c.Mongo.DBTimeout, 10},
		{"Pushers.Msg.Partition", c.Pushers.Msg.Partition, 3},
		{"Consumers.Msg.Group", c.Consumers.Msg.Group, "websocket-rpc"},
		{"PodName from POD_NAME", c.PodName, "pod-a"},
		{"PodIP", c.PodIP, "10.0.0.7"},
		{"Http.Port default", c.Http.Port, 8888},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestParseGoZeroKeysIgnored(t *testing.T) {
	file := `
Name: websocket-rpc
Timeout: 2000
Etcd:
  Hosts: [127.0.0.1:2379]
  Key: websocket.rpc
Auth: false
Log:
  ServiceName: websocket-rpc
  Stat: false
`
	c, err := Parse([]byte(file), env(nil))
	if err != nil {
		t.Fatalf("Parse error: %v", err)
	}
	want := []string{"Timeout", "Etcd", "Auth", "Log.Stat"}
	if !slices.Equal(c.Ignored, want) {
		t.Errorf("Ignored = %v, want %v", c.Ignored, want)
	}
}

func TestDefaultsEmbedded(t *testing.T) {
	c, err := Parse(nil, env(nil))
	if err != nil {
		t.Fatalf("Parse(empty) error: %v", err)
	}
	if c.Distributed() {
		t.Error("Distributed() = true for an empty file, want embedded mode")
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"ListenOn", c.ListenOn, "0.0.0.0:30000"},
		{"Websocket.Port", c.Websocket.Port, 31000},
		{"Http.Port", c.Http.Port, 8888},
		{"Embedded.Dir", c.Embedded.Dir, "./data"},
		{"Auth.AccessExpire", c.Auth.AccessExpire, int64(604800)},
		{"Limits.SendTimeout", c.Limits.SendTimeout.Std(), 5 * time.Second},
		{"Consumers.Msg.Group", c.Consumers.Msg.Group, "imlite"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name string
		file string
		// wantParts must all appear in the error.
		wantParts []string
	}{
		{"unknown key with suggestion", "Websocket:\n  port: 1\n", []string{"line 2", "Websocket.port", "unknown key", "did you mean Websocket.Port?"}},
		{"unknown top-level key", "Listen: :1\n", []string{"line 1", "Listen", "unknown key"}},
		{"typo with suggestion", "Websocket:\n  Prot: 1\n", []string{"Websocket.Prot", "did you mean Websocket.Port?"}},
		{"wrong type", "Websocket:\n  Port: abc\n", []string{"line 2", "Websocket.Port", "want a whole number", `"abc"`}},
		{"section given a scalar", "Mongo: yes\n", []string{"Mongo", "want a section"}},
		{"list given a scalar", "Pushers:\n  Msg:\n    Addrs: 127.0.0.1:9092\n", []string{"Pushers.Msg.Addrs", "want a list of strings"}},
		{"duplicate key", "Mode: dev\nMode: pro\n", []string{"line 2", "Mode", "appears twice"}},
		{"bad port", "Http:\n  Port: 70000\n", []string{"Http.Port", "70000", "not a port"}},
		{"bad mode", "Mode: production\n", []string{"Mode", `"production"`, "dev, test, rt, pre, pro"}},
		{"bad log level", "Log:\n  Level: loud\n", []string{"Log.Level", `"loud"`}},
		{"bad ListenOn", "ListenOn: nowhere\n", []string{"ListenOn", `"nowhere"`, "host:port"}},
		{"short secret", "Auth:\n  AccessSecret: short\n", []string{"Auth.AccessSecret", "at least 32"}},
		{"bad duration", "Limits:\n  SendTimeout: soon\n", []string{"Limits.SendTimeout", `"soon"`}},
		{"negative limit", "Limits:\n  MaxPullLimit: -1\n", []string{"Limits.MaxPullLimit", "negative"}},
		{"sampler out of range", "Telemetry:\n  Sampler: 2\n", []string{"Telemetry.Sampler", "outside 0 to 1"}},
		{"pong before ping", "Websocket:\n  PingInterval: 60s\n  PongTimeout: 30s\n", []string{"Websocket.PongTimeout", "longer than"}},
		{"partial distributed", "Redis:\n  Host: 127.0.0.1:6379\n", []string{"Mongo.Uri", "Pushers.Msg.Addrs", "Consumers.Push.Addrs", "Auth.AccessSecret"}},
		{"not a mapping", "- a\n- b\n", []string{"line 1", "mapping"}},
		{"invalid yaml", "Mode: [\n", []string{"invalid YAML"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.file), env(nil))
			if err == nil {
				t.Fatalf("Parse(%q) succeeded, want an error", tt.file)
			}
			for _, part := range tt.wantParts {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("error %q does not contain %q", err, part)
				}
			}
		})
	}
}

func TestDurationForms(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"5s", 5 * time.Second},
		{"1m30s", 90 * time.Second},
		{"2", 2 * time.Second},
		{"0.5", 500 * time.Millisecond},
	}
	for _, tt := range tests {
		c, err := Parse([]byte("Limits:\n  SendTimeout: "+tt.in+"\n"), env(nil))
		if err != nil {
			t.Fatalf("SendTimeout %q: %v", tt.in, err)
		}
		if got := c.Limits.SendTimeout.Std(); got != tt.want {
			t.Errorf("SendTimeout %q = %v, want %v", tt.in, got, tt.want)
		}
	}
}
