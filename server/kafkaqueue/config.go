package kafkaqueue

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Defaults of the zero config fields.
const (
	DefaultPartition              = 1
	DefaultPublishTimeout         = 3 * time.Second
	DefaultConsumers              = 8
	DefaultMaxBatch               = 512
	DefaultCommitTimeout          = 5 * time.Second
	DefaultPartitionCheckInterval = 30 * time.Second
	DefaultSessionTimeout         = 10 * time.Second
	DefaultClientID               = "imlite"
)

// ProducerConfig configures a producer of one topic. It carries the keys of
// a Pushers.Msg or Pushers.Push section. Zero fields take the defaults.
type ProducerConfig struct {
	// Addrs are the seed brokers, host:port each. Required.
	Addrs []string
	// Topic is the topic to produce to. Required.
	Topic string
	// User and Passwd enable SASL PLAIN when both are set.
	User   string
	Passwd string
	// Partition is the partition count of the topic when the producer
	// creates it. An existing topic keeps its partitions. Default 1.
	Partition int
	// PublishTimeout bounds one publish call, including the wait for a
	// connection, so an unreachable cluster fails a publish instead of
	// blocking it. Default 3s.
	PublishTimeout time.Duration
	// ClientID names this client in broker logs and metrics. Default "imlite".
	ClientID string
	// Logger receives the client's warnings and errors. Default slog.Default().
	Logger *slog.Logger
}

// ConsumerConfig configures a consumer of one topic. It carries the keys of
// a Consumers.Msg or Consumers.Push section. Zero fields take the defaults.
type ConsumerConfig struct {
	// Addrs are the seed brokers, host:port each. Required.
	Addrs []string
	// Topic is the topic to consume. Required.
	Topic string
	// Group is the consumer group that all pods share. The msg consumer
	// requires it. The push consumer uses no group and ignores it.
	Group string
	// Consumers is the number of partitions this pod processes at the same
	// time. Default 8.
	Consumers int
	// User and Passwd enable SASL PLAIN when both are set.
	User   string
	Passwd string
	// MaxBatch bounds the records of one handler call. Default 512.
	MaxBatch int
	// CommitTimeout bounds an offset commit and, at stop, leaving the group.
	// Default 5s.
	CommitTimeout time.Duration
	// PartitionCheckInterval is how often the push consumer looks for
	// partitions added to its topic. Default 30s.
	PartitionCheckInterval time.Duration
	// SessionTimeout is how long the group waits for a silent member (a
	// crashed pod) before its partitions move to other pods. Kafka's own
	// default is 45s; 10s keeps sends of a crashed pod's conversations
	// stalled for less time. The broker bounds it with its
	// group.min.session.timeout.ms and group.max.session.timeout.ms.
	// Default 10s.
	SessionTimeout time.Duration
	// ClientID names this client in broker logs and metrics. Default "imlite".
	ClientID string
	// Logger receives consumer warnings and errors. Default slog.Default().
	Logger *slog.Logger
}

func (c ProducerConfig) withDefaults() (ProducerConfig, error) {
	if err := validateConn("producer", c.Addrs, c.Topic, c.User, c.Passwd); err != nil {
		return c, err
	}
	if c.Partition < 0 {
		return c, fmt.Errorf("invalid producer config: Partition %d is negative; use 0 for the default %d", c.Partition, DefaultPartition)
	}
	if c.PublishTimeout < 0 {
		return c, fmt.Errorf("invalid producer config: PublishTimeout %v is negative", c.PublishTimeout)
	}
	if c.Partition == 0 {
		c.Partition = DefaultPartition
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

func (c ConsumerConfig) withDefaults(needGroup bool) (ConsumerConfig, error) {
	if err := validateConn("consumer", c.Addrs, c.Topic, c.User, c.Passwd); err != nil {
		return c, err
	}
	if needGroup && c.Group == "" {
		return c, errors.New("invalid consumer config: Group is empty; the msg consumer needs the group that all pods share")
	}
	for _, f := range []struct {
		name  string
		value int64
	}{
		{"Consumers", int64(c.Consumers)},
		{"MaxBatch", int64(c.MaxBatch)},
		{"CommitTimeout", int64(c.CommitTimeout)},
		{"PartitionCheckInterval", int64(c.PartitionCheckInterval)},
		{"SessionTimeout", int64(c.SessionTimeout)},
	} {
		if f.value < 0 {
			return c, fmt.Errorf("invalid consumer config: %s is negative; use 0 for the default", f.name)
		}
	}
	setDefault(&c.Consumers, DefaultConsumers)
	setDefault(&c.MaxBatch, DefaultMaxBatch)
	setDefault(&c.CommitTimeout, DefaultCommitTimeout)
	setDefault(&c.PartitionCheckInterval, DefaultPartitionCheckInterval)
	setDefault(&c.SessionTimeout, DefaultSessionTimeout)
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

func validateConn(kind string, addrs []string, topic, user, passwd string) error {
	if len(addrs) == 0 {
		return fmt.Errorf("invalid %s config: Addrs is empty; list the seed brokers as host:port", kind)
	}
	for i, a := range addrs {
		if a == "" {
			return fmt.Errorf("invalid %s config: Addrs[%d] is empty", kind, i)
		}
	}
	if topic == "" {
		return fmt.Errorf("invalid %s config: Topic is empty", kind)
	}
	if (user == "") != (passwd == "") {
		return fmt.Errorf("invalid %s config: User and Passwd must be set together for SASL PLAIN", kind)
	}
	return nil
}
