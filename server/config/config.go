// Package config loads imlite's YAML configuration. Its keys keep the names
// of IM-Lite-Server's etc/websocket.yaml, so a file written for that server
// starts imlite unchanged; keys that only the original's go-zero framework
// used are accepted and ignored (Ignored lists them).
//
// A key that is unknown, has the wrong type or an invalid value stops the
// start with an error naming the key, its line and the reason.
package config

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is the whole file. The zero value of every field means its default,
// which Load fills in.
type Config struct {
	// Name is the service name. It is the default consumer group of the msg
	// consumers and of the push consumers when POD_NAME is unset. Default "imlite".
	Name string `yaml:"Name"`
	// ListenOn is the gRPC listen address. Default "0.0.0.0:30000".
	ListenOn string `yaml:"ListenOn"`
	// Mode is the deployment stage: dev, test, rt, pre or pro. Default "pro".
	Mode      string          `yaml:"Mode"`
	Websocket WebsocketConfig `yaml:"Websocket"`
	Http      HTTPConfig      `yaml:"Http"`
	Log       LogConfig       `yaml:"Log"`
	Telemetry TelemetryConfig `yaml:"Telemetry"`
	Redis     RedisConfig     `yaml:"Redis"`
	Mongo     MongoConfig     `yaml:"Mongo"`
	Pushers   PushersConfig   `yaml:"Pushers"`
	Consumers ConsumersConfig `yaml:"Consumers"`
	Auth      AuthConfig      `yaml:"Auth"`
	Embedded  EmbeddedConfig  `yaml:"Embedded"`
	Limits    LimitsConfig    `yaml:"Limits"`
	Shutdown  ShutdownConfig  `yaml:"Shutdown"`

	// PodName and PodIP come from the environment variables POD_NAME and
	// POD_IP, not from the file. PodName identifies the pod in push records,
	// connection ids and logs. Without POD_NAME it is Name in embedded mode;
	// distributed pods need distinct names, so there it is the host name
	// with a random suffix.
	PodName string `yaml:"-"`
	PodIP   string `yaml:"-"`

	// Ignored lists the keys of the file that imlite accepts for
	// compatibility but does not use, for a startup log line.
	Ignored []string `yaml:"-"`

	// set holds the keys present in the file, so an explicit 0 port is
	// distinguished from a missing one.
	set map[string]bool
}

// WebsocketConfig configures the websocket endpoint.
type WebsocketConfig struct {
	// Port of the websocket listener. Default 31000; 0 picks a free port.
	Port int `yaml:"Port"`
	// Host is the listen address. Default "0.0.0.0".
	Host string `yaml:"Host"`
	// MaxConnNum bounds concurrent connections; new ones get 503. Default 10000.
	MaxConnNum int `yaml:"MaxConnNum"`
	// MaxFrameBytes bounds one frame, after decompression. Default 96 KiB,
	// enough for a message at Limits.MaxContentBytes plus its envelope.
	MaxFrameBytes int `yaml:"MaxFrameBytes"`
	// PingInterval is how often the server pings. Default 30s.
	PingInterval Duration `yaml:"PingInterval"`
	// PongTimeout closes a connection that sent nothing (pong or frame) for
	// this long. Default 75s.
	PongTimeout Duration `yaml:"PongTimeout"`
	// WriteTimeout bounds one write to a client. Default 10s.
	WriteTimeout Duration `yaml:"WriteTimeout"`
	// SendQueue is the number of frames queued per connection; a client that
	// lets it fill is disconnected as a slow consumer. Default 256.
	SendQueue int `yaml:"SendQueue"`
	// MaxBadFrames is how many undecodable frames a connection may send per
	// minute before it is closed. Default 10.
	MaxBadFrames int `yaml:"MaxBadFrames"`
	// Compression accepts permessage-deflate when the client offers it, for
	// the frames clients send; the server's frames stay uncompressed, which
	// RFC 7692 allows. Default false.
	Compression bool `yaml:"Compression"`
	// AllowedOrigins limits the Origin header of browser clients; others get
	// 403. Empty allows every origin, which is safe because clients
	// authenticate with tokens, not cookies.
	AllowedOrigins []string `yaml:"AllowedOrigins"`
}

// HTTPConfig configures the admin HTTP port: REST, Connect, OpenAPI, health
// and metrics.
type HTTPConfig struct {
	// Port of the HTTP listener. Default 8888; 0 picks a free port.
	Port int `yaml:"Port"`
	// Host is the listen address. Default "0.0.0.0".
	Host string `yaml:"Host"`
	// Pprof serves Go's profiles under /debug/pprof/ on this port. Default
	// false: profiles reveal internals, so enable it only where the port is
	// private.
	Pprof bool `yaml:"Pprof"`
}

// LogConfig configures logging.
type LogConfig struct {
	// ServiceName is added to every record as "service" when set.
	ServiceName string `yaml:"ServiceName"`
	// Mode is console, file or volume. Default console.
	Mode string `yaml:"Mode"`
	// Encoding is json or plain. Default json.
	Encoding string `yaml:"Encoding"`
	// TimeFormat is a Go time layout for the time field. Default RFC 3339
	// with milliseconds.
	TimeFormat string `yaml:"TimeFormat"`
	// Path is the log folder for file and volume modes. Default "logs".
	Path string `yaml:"Path"`
	// Level is debug, info, warn, error or severe. Default info.
	Level string `yaml:"Level"`
	// Compress gzips rotated log files.
	Compress bool `yaml:"Compress"`
	// MaxSize is the size in megabytes at which a log file rotates. Default 100.
	MaxSize int `yaml:"MaxSize"`
	// MaxBackups is how many rotated files to keep; 0 keeps all.
	MaxBackups int `yaml:"MaxBackups"`
	// KeepDays is how many days rotated files are kept; 0 keeps them forever.
	KeepDays int `yaml:"KeepDays"`
}

// TelemetryConfig configures OpenTelemetry tracing. Tracing is off while
// Endpoint is empty.
type TelemetryConfig struct {
	// Name is the service name in traces. Default Name.
	Name string `yaml:"Name"`
	// Endpoint is where spans go: host:port for otlpgrpc, a URL otherwise.
	Endpoint string `yaml:"Endpoint"`
	// Sampler is the fraction of traces kept, 0 to 1. Default 1.
	Sampler *float64 `yaml:"Sampler"`
	// Batcher is otlpgrpc, otlphttp, jaeger (sent as OTLP over HTTP) or
	// zipkin. Default otlpgrpc.
	Batcher string `yaml:"Batcher"`
	// OtlpHeaders are extra headers for OTLP exporters.
	OtlpHeaders map[string]string `yaml:"OtlpHeaders"`
	// OtlpHttpPath overrides the URL path of the otlphttp exporter.
	OtlpHttpPath string `yaml:"OtlpHttpPath"`
	// Disabled turns tracing off even with an Endpoint.
	Disabled bool `yaml:"Disabled"`
}

// RedisConfig configures Redis, which holds seq counters, presence and
// token revocations in distributed mode.
type RedisConfig struct {
	// Host is host:port. Setting it selects distributed mode.
	Host string `yaml:"Host"`
	Pass string `yaml:"Pass"`
	DB   int    `yaml:"DB"`
	// Type is "node"; cluster mode is not supported.
	Type string `yaml:"Type"`
	// PresenceTTL is how long a pod's presence entries count without a
	// refresh, so a pod that died stops counting its users as online
	// within this time. Default 30s.
	PresenceTTL Duration `yaml:"PresenceTTL"`
}

// MongoConfig configures MongoDB, which stores messages, groups and
// conversation state in distributed mode.
type MongoConfig struct {
	// Uri is a mongodb:// connection string. Setting it selects distributed mode.
	Uri string `yaml:"Uri"`
	// Database name. Default "im_lite".
	Database string `yaml:"Database"`
	// DBTimeout bounds every MongoDB call, in seconds. Default 10.
	DBTimeout int `yaml:"DBTimeout"`
}

// KafkaProducerConfig is one Pushers entry.
type KafkaProducerConfig struct {
	Addrs []string `yaml:"Addrs"`
	Topic string   `yaml:"Topic"`
	// User and Passwd enable SASL PLAIN when both are set.
	User   string `yaml:"User"`
	Passwd string `yaml:"Passwd"`
	// Partition is the partition count used when imlite creates the topic.
	// Default 1. An existing topic keeps its partitions.
	Partition int `yaml:"Partition"`
}

// KafkaConsumerConfig is one Consumers entry.
type KafkaConsumerConfig struct {
	Addrs []string `yaml:"Addrs"`
	Topic string   `yaml:"Topic"`
	// Group is the consumer group of the msg consumers, shared by all pods;
	// default Name. The push consumers read every partition without a group
	// (a group per pod would leave a stale group behind for every restarted
	// pod), so Consumers.Push.Group is accepted but not used.
	Group string `yaml:"Group"`
	// Consumers is the number of partitions this pod handles at once.
	// Default 8.
	Consumers int    `yaml:"Consumers"`
	User      string `yaml:"User"`
	Passwd    string `yaml:"Passwd"`
	// SessionTimeout is how long the msg consumer group waits for a pod that
	// stopped responding before its partitions move to other pods; sends of
	// those conversations wait meanwhile. Default 10s.
	SessionTimeout Duration `yaml:"SessionTimeout"`
}

// PushersConfig holds the producers of the two topics.
type PushersConfig struct {
	Msg  KafkaProducerConfig `yaml:"Msg"`
	Push KafkaProducerConfig `yaml:"Push"`
}

// ConsumersConfig holds the consumers of the two topics.
type ConsumersConfig struct {
	Msg  KafkaConsumerConfig `yaml:"Msg"`
	Push KafkaConsumerConfig `yaml:"Push"`
}

// AuthConfig configures access tokens.
type AuthConfig struct {
	// AccessSecret signs tokens (HS256), at least 32 bytes. Required in
	// distributed mode, where every pod needs the same one; in embedded mode
	// an empty value means a secret generated at first start and kept in
	// Embedded.Dir.
	AccessSecret string `yaml:"AccessSecret"`
	// AccessExpire is the default token lifetime in seconds. Default 604800 (7 days).
	AccessExpire int64 `yaml:"AccessExpire"`
}

// EmbeddedConfig configures embedded mode.
type EmbeddedConfig struct {
	// Dir holds the data file and the generated token secret. Default "./data".
	Dir string `yaml:"Dir"`
}

// LimitsConfig bounds client input. Zero means the default.
type LimitsConfig struct {
	// MaxContentBytes bounds a message's content. Default 65536.
	MaxContentBytes int `yaml:"MaxContentBytes"`
	// MaxExBytes bounds ex and each offline_push field. Default 4096.
	MaxExBytes int `yaml:"MaxExBytes"`
	// MaxClientMsgIDLen bounds client_msg_id in bytes. Default 64.
	MaxClientMsgIDLen int `yaml:"MaxClientMsgIDLen"`
	// DefaultPullLimit is PullMsg's page size without a limit. Default 100.
	DefaultPullLimit int `yaml:"DefaultPullLimit"`
	// MaxPullLimit bounds PullMsg's limit and PullMsgBySeqs' seqs. Default 500.
	MaxPullLimit int `yaml:"MaxPullLimit"`
	// MaxGroupMembers bounds a group's size. Default 10000.
	MaxGroupMembers int `yaml:"MaxGroupMembers"`
	// MaxBatchUserIDs bounds the user ids of one GetOnlineStatus. Default 500.
	MaxBatchUserIDs int `yaml:"MaxBatchUserIDs"`
	// SendTimeout bounds how long SendMsg waits for storage. Default 5s.
	SendTimeout Duration `yaml:"SendTimeout"`
}

// ShutdownConfig bounds a graceful shutdown.
type ShutdownConfig struct {
	// Timeout bounds the whole drain after SIGTERM or SIGINT. Default 20s.
	Timeout Duration `yaml:"Timeout"`
}

// Duration is a time.Duration written as a Go duration string ("5s",
// "1m30s") or as a number of seconds.
type Duration time.Duration

// Std returns the value as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

func parseDuration(s string) (Duration, error) {
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("%s is negative", s)
		}
		return Duration(n * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is neither a duration such as \"5s\" nor a number of seconds", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%s is negative", s)
	}
	return Duration(d), nil
}

// Distributed reports whether the file selects distributed mode, which any
// of the Redis, Mongo, Pushers or Consumers sections does.
func (c *Config) Distributed() bool {
	return c.Redis.Host != "" || c.Mongo.Uri != "" ||
		len(c.Pushers.Msg.Addrs) > 0 || len(c.Pushers.Push.Addrs) > 0 ||
		len(c.Consumers.Msg.Addrs) > 0 || len(c.Consumers.Push.Addrs) > 0
}

// Default returns the configuration of embedded mode without a file.
func Default() *Config {
	c := &Config{}
	c.applyEnv(os.Getenv)
	c.applyDefaults()
	c.resolvePodName()
	return c
}

// Load reads, checks and completes the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(data, os.Getenv)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse checks and completes a configuration; getenv supplies POD_NAME and
// POD_IP.
func Parse(data []byte, getenv func(string) string) (*Config, error) {
	c := &Config{}
	ignored, set, err := decodeStrict(data, c)
	if err != nil {
		return nil, err
	}
	c.Ignored, c.set = ignored, set
	c.applyEnv(getenv)
	c.applyDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	c.resolvePodName()
	return c, nil
}

func (c *Config) resolvePodName() {
	switch {
	case c.PodName != "":
		return
	case !c.Distributed():
		c.PodName = c.Name
		return
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = c.Name
	}
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	c.PodName = host + "-" + hex.EncodeToString(suffix)
}

func (c *Config) applyEnv(getenv func(string) string) {
	c.PodName = getenv("POD_NAME")
	c.PodIP = getenv("POD_IP")
}

func (c *Config) applyDefaults() {
	str := func(v *string, def string) {
		if *v == "" {
			*v = def
		}
	}
	num := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	dur := func(v *Duration, def time.Duration) {
		if *v == 0 {
			*v = Duration(def)
		}
	}
	str(&c.Name, "imlite")
	str(&c.ListenOn, "0.0.0.0:30000")
	str(&c.Mode, "pro")

	if !c.set["Websocket.Port"] {
		c.Websocket.Port = 31000
	}
	str(&c.Websocket.Host, "0.0.0.0")
	num(&c.Websocket.MaxConnNum, 10000)
	num(&c.Websocket.MaxFrameBytes, 96<<10)
	dur(&c.Websocket.PingInterval, 30*time.Second)
	dur(&c.Websocket.PongTimeout, 75*time.Second)
	dur(&c.Websocket.WriteTimeout, 10*time.Second)
	num(&c.Websocket.SendQueue, 256)
	num(&c.Websocket.MaxBadFrames, 10)

	if !c.set["Http.Port"] {
		c.Http.Port = 8888
	}
	str(&c.Http.Host, "0.0.0.0")

	str(&c.Log.Mode, "console")
	str(&c.Log.Encoding, "json")
	str(&c.Log.Path, "logs")
	str(&c.Log.Level, "info")
	num(&c.Log.MaxSize, 100)

	str(&c.Telemetry.Name, c.Name)
	str(&c.Telemetry.Batcher, "otlpgrpc")
	if c.Telemetry.Sampler == nil {
		one := 1.0
		c.Telemetry.Sampler = &one
	}

	str(&c.Redis.Type, "node")
	dur(&c.Redis.PresenceTTL, 30*time.Second)
	str(&c.Mongo.Database, "im_lite")
	num(&c.Mongo.DBTimeout, 10)
	num(&c.Pushers.Msg.Partition, 1)
	num(&c.Pushers.Push.Partition, 1)
	num(&c.Consumers.Msg.Consumers, 8)
	num(&c.Consumers.Push.Consumers, 8)
	dur(&c.Consumers.Msg.SessionTimeout, 10*time.Second)
	str(&c.Consumers.Msg.Group, c.Name)

	if c.Auth.AccessExpire == 0 {
		c.Auth.AccessExpire = 7 * 24 * 3600
	}
	str(&c.Embedded.Dir, "./data")
	dur(&c.Limits.SendTimeout, 5*time.Second)
	dur(&c.Shutdown.Timeout, 20*time.Second)
}

// validate checks values after defaults; every error names its key.
func (c *Config) validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	oneOf := func(key, v string, allowed ...string) {
		for _, a := range allowed {
			if v == a {
				return
			}
		}
		bad(key, "%q is not one of %s", v, strings.Join(allowed, ", "))
	}
	// Port 0 picks a free port, which tests use.
	port := func(key string, p int) {
		if p < 0 || p > 65535 {
			bad(key, "%d is not a port number (0-65535)", p)
		}
	}
	positive := func(key string, v int) {
		if v < 0 {
			bad(key, "%d is negative", v)
		}
	}

	if _, p, err := net.SplitHostPort(c.ListenOn); err != nil {
		bad("ListenOn", "%q is not host:port: %v", c.ListenOn, err)
	} else if n, err := strconv.Atoi(p); err != nil {
		bad("ListenOn", "port %q is not a number", p)
	} else {
		port("ListenOn", n)
	}
	oneOf("Mode", c.Mode, "dev", "test", "rt", "pre", "pro")

	port("Websocket.Port", c.Websocket.Port)
	if c.Websocket.MaxConnNum < 1 {
		bad("Websocket.MaxConnNum", "%d must be at least 1", c.Websocket.MaxConnNum)
	}
	if c.Websocket.MaxFrameBytes < 1024 {
		bad("Websocket.MaxFrameBytes", "%d is below the minimum 1024", c.Websocket.MaxFrameBytes)
	}
	if c.Websocket.PongTimeout.Std() <= c.Websocket.PingInterval.Std() {
		bad("Websocket.PongTimeout", "%v must be longer than Websocket.PingInterval %v", c.Websocket.PongTimeout.Std(), c.Websocket.PingInterval.Std())
	}
	if c.Websocket.SendQueue < 1 {
		bad("Websocket.SendQueue", "%d must be at least 1", c.Websocket.SendQueue)
	}
	positive("Websocket.MaxBadFrames", c.Websocket.MaxBadFrames)
	port("Http.Port", c.Http.Port)
	if c.Http.Port != 0 && c.Http.Port == c.Websocket.Port && c.Http.Host == c.Websocket.Host {
		bad("Http.Port", "%d is also Websocket.Port; use separate ports", c.Http.Port)
	}

	oneOf("Log.Mode", c.Log.Mode, "console", "file", "volume")
	oneOf("Log.Encoding", c.Log.Encoding, "json", "plain")
	oneOf("Log.Level", c.Log.Level, "debug", "info", "warn", "error", "severe")
	positive("Log.MaxSize", c.Log.MaxSize)
	positive("Log.MaxBackups", c.Log.MaxBackups)
	positive("Log.KeepDays", c.Log.KeepDays)

	oneOf("Telemetry.Batcher", c.Telemetry.Batcher, "otlpgrpc", "otlphttp", "jaeger", "zipkin")
	if s := *c.Telemetry.Sampler; s < 0 || s > 1 {
		bad("Telemetry.Sampler", "%v is outside 0 to 1", s)
	}

	if c.Auth.AccessSecret != "" && len(c.Auth.AccessSecret) < 32 {
		bad("Auth.AccessSecret", "is %d bytes; use at least 32 random bytes", len(c.Auth.AccessSecret))
	}
	const maxExpire = 365 * 24 * 3600
	if c.Auth.AccessExpire < 0 || c.Auth.AccessExpire > maxExpire {
		bad("Auth.AccessExpire", "%d is outside 1 to %d seconds (one year)", c.Auth.AccessExpire, maxExpire)
	}

	l := c.Limits
	for _, f := range []struct {
		key string
		v   int
	}{
		{"Limits.MaxContentBytes", l.MaxContentBytes}, {"Limits.MaxExBytes", l.MaxExBytes},
		{"Limits.MaxClientMsgIDLen", l.MaxClientMsgIDLen}, {"Limits.DefaultPullLimit", l.DefaultPullLimit},
		{"Limits.MaxPullLimit", l.MaxPullLimit}, {"Limits.MaxGroupMembers", l.MaxGroupMembers},
		{"Limits.MaxBatchUserIDs", l.MaxBatchUserIDs},
	} {
		positive(f.key, f.v)
	}
	if l.DefaultPullLimit > 0 && l.MaxPullLimit > 0 && l.DefaultPullLimit > l.MaxPullLimit {
		bad("Limits.DefaultPullLimit", "%d exceeds Limits.MaxPullLimit %d", l.DefaultPullLimit, l.MaxPullLimit)
	}
	if c.Limits.MaxContentBytes > 0 && c.Limits.MaxContentBytes+4096 > c.Websocket.MaxFrameBytes {
		bad("Websocket.MaxFrameBytes", "%d leaves no room for a message of Limits.MaxContentBytes %d plus 4096 bytes of envelope", c.Websocket.MaxFrameBytes, c.Limits.MaxContentBytes)
	}

	if c.Distributed() {
		errs = append(errs, c.validateDistributed()...)
	}
	return errors.Join(errs...)
}

func (c *Config) validateDistributed() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	const why = "distributed mode needs Redis, Mongo, Pushers and Consumers together"
	if c.Redis.Host == "" {
		bad("Redis.Host", "is empty; %s", why)
	}
	if c.Redis.Type != "node" {
		bad("Redis.Type", "%q is not supported; use node", c.Redis.Type)
	}
	if c.Mongo.Uri == "" {
		bad("Mongo.Uri", "is empty; %s", why)
	} else if !strings.HasPrefix(c.Mongo.Uri, "mongodb://") && !strings.HasPrefix(c.Mongo.Uri, "mongodb+srv://") {
		bad("Mongo.Uri", "must start with mongodb:// or mongodb+srv://")
	}
	if c.Mongo.DBTimeout < 1 {
		bad("Mongo.DBTimeout", "%d must be at least 1 second", c.Mongo.DBTimeout)
	}
	for _, p := range []struct {
		key string
		cfg KafkaProducerConfig
	}{{"Pushers.Msg", c.Pushers.Msg}, {"Pushers.Push", c.Pushers.Push}} {
		if len(p.cfg.Addrs) == 0 {
			bad(p.key+".Addrs", "is empty; %s", why)
		}
		if p.cfg.Topic == "" {
			bad(p.key+".Topic", "is empty")
		}
		if p.cfg.Partition < 1 {
			bad(p.key+".Partition", "%d must be at least 1", p.cfg.Partition)
		}
		if (p.cfg.User == "") != (p.cfg.Passwd == "") {
			bad(p.key+".User", "User and Passwd must be set together for SASL PLAIN")
		}
	}
	for _, p := range []struct {
		key string
		cfg KafkaConsumerConfig
	}{{"Consumers.Msg", c.Consumers.Msg}, {"Consumers.Push", c.Consumers.Push}} {
		if len(p.cfg.Addrs) == 0 {
			bad(p.key+".Addrs", "is empty; %s", why)
		}
		if p.cfg.Topic == "" {
			bad(p.key+".Topic", "is empty")
		}
		if p.cfg.Consumers < 1 {
			bad(p.key+".Consumers", "%d must be at least 1", p.cfg.Consumers)
		}
		if (p.cfg.User == "") != (p.cfg.Passwd == "") {
			bad(p.key+".User", "User and Passwd must be set together for SASL PLAIN")
		}
	}
	if c.Pushers.Msg.Topic != "" && c.Consumers.Msg.Topic != "" && c.Pushers.Msg.Topic != c.Consumers.Msg.Topic {
		bad("Consumers.Msg.Topic", "%q differs from Pushers.Msg.Topic %q", c.Consumers.Msg.Topic, c.Pushers.Msg.Topic)
	}
	if c.Pushers.Push.Topic != "" && c.Consumers.Push.Topic != "" && c.Pushers.Push.Topic != c.Consumers.Push.Topic {
		bad("Consumers.Push.Topic", "%q differs from Pushers.Push.Topic %q", c.Consumers.Push.Topic, c.Pushers.Push.Topic)
	}
	if c.Pushers.Msg.Topic != "" && c.Pushers.Msg.Topic == c.Pushers.Push.Topic {
		bad("Pushers.Push.Topic", "%q is also the msg topic; the two topics must differ", c.Pushers.Push.Topic)
	}
	if c.Auth.AccessSecret == "" {
		bad("Auth.AccessSecret", "is empty; distributed mode needs the same secret on every pod")
	}
	return errs
}
