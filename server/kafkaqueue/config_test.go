package kafkaqueue

import (
	"strings"
	"testing"
	"time"
)

func TestProducerConfigInvalid(t *testing.T) {
	valid := ProducerConfig{Addrs: []string{"127.0.0.1:9092"}, Topic: "msg"}
	cases := []struct {
		name   string
		change func(c *ProducerConfig)
		want   string
	}{
		{name: "no addresses", change: func(c *ProducerConfig) { c.Addrs = nil }, want: "Addrs is empty"},
		{name: "empty address", change: func(c *ProducerConfig) { c.Addrs = []string{"127.0.0.1:9092", ""} }, want: "Addrs[1] is empty"},
		{name: "no topic", change: func(c *ProducerConfig) { c.Topic = "" }, want: "Topic is empty"},
		{name: "user without password", change: func(c *ProducerConfig) { c.User = "imlite" }, want: "User and Passwd must be set together"},
		{name: "password without user", change: func(c *ProducerConfig) { c.Passwd = "s3cret" }, want: "User and Passwd must be set together"},
		{name: "negative partitions", change: func(c *ProducerConfig) { c.Partition = -1 }, want: "Partition -1 is negative"},
		{name: "negative publish timeout", change: func(c *ProducerConfig) { c.PublishTimeout = -time.Second }, want: "PublishTimeout -1s is negative"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid
			tc.change(&cfg)
			p, err := NewMsgProducer(t.Context(), cfg)
			if err == nil {
				p.Close()
				t.Fatalf("NewMsgProducer: got nil error, want one containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewMsgProducer: got %q, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestConsumerConfigInvalid(t *testing.T) {
	valid := ConsumerConfig{Addrs: []string{"127.0.0.1:9092"}, Topic: "msg", Group: "imlite"}
	cases := []struct {
		name   string
		change func(c *ConsumerConfig)
		want   string
	}{
		{name: "no addresses", change: func(c *ConsumerConfig) { c.Addrs = nil }, want: "Addrs is empty"},
		{name: "no topic", change: func(c *ConsumerConfig) { c.Topic = "" }, want: "Topic is empty"},
		{name: "user without password", change: func(c *ConsumerConfig) { c.User = "imlite" }, want: "User and Passwd must be set together"},
		{name: "negative consumers", change: func(c *ConsumerConfig) { c.Consumers = -2 }, want: "Consumers is negative"},
		{name: "negative batch size", change: func(c *ConsumerConfig) { c.MaxBatch = -1 }, want: "MaxBatch is negative"},
		{name: "negative commit timeout", change: func(c *ConsumerConfig) { c.CommitTimeout = -time.Second }, want: "CommitTimeout is negative"},
		{name: "negative partition check interval", change: func(c *ConsumerConfig) { c.PartitionCheckInterval = -time.Second }, want: "PartitionCheckInterval is negative"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid
			tc.change(&cfg)
			if _, err := NewMsgConsumer(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewMsgConsumer: got %v, want an error containing %q", err, tc.want)
			}
			if _, err := NewPushConsumer(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewPushConsumer: got %v, want an error containing %q", err, tc.want)
			}
		})
	}

	t.Run("msg consumer without group", func(t *testing.T) {
		cfg := valid
		cfg.Group = ""
		if _, err := NewMsgConsumer(cfg); err == nil || !strings.Contains(err.Error(), "Group is empty") {
			t.Errorf("NewMsgConsumer: got %v, want an error containing %q", err, "Group is empty")
		}
		if _, err := NewPushConsumer(cfg); err != nil {
			t.Errorf("NewPushConsumer without group: got %v, want nil because the push consumer uses no group", err)
		}
	})
}

func TestConfigDefaults(t *testing.T) {
	p, err := ProducerConfig{Addrs: []string{"a:1"}, Topic: "t"}.withDefaults()
	if err != nil {
		t.Fatalf("producer defaults: %v", err)
	}
	if p.Partition != DefaultPartition || p.PublishTimeout != DefaultPublishTimeout || p.ClientID != DefaultClientID || p.Logger == nil {
		t.Errorf("producer defaults: got Partition %d, PublishTimeout %v, ClientID %q, Logger %v; want %d, %v, %q and slog.Default()",
			p.Partition, p.PublishTimeout, p.ClientID, p.Logger, DefaultPartition, DefaultPublishTimeout, DefaultClientID)
	}
	c, err := ConsumerConfig{Addrs: []string{"a:1"}, Topic: "t"}.withDefaults(false)
	if err != nil {
		t.Fatalf("consumer defaults: %v", err)
	}
	if c.Consumers != DefaultConsumers || c.MaxBatch != DefaultMaxBatch || c.CommitTimeout != DefaultCommitTimeout || c.PartitionCheckInterval != DefaultPartitionCheckInterval {
		t.Errorf("consumer defaults: got Consumers %d, MaxBatch %d, CommitTimeout %v, PartitionCheckInterval %v; want %d, %d, %v, %v",
			c.Consumers, c.MaxBatch, c.CommitTimeout, c.PartitionCheckInterval,
			DefaultConsumers, DefaultMaxBatch, DefaultCommitTimeout, DefaultPartitionCheckInterval)
	}
}
