package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/api"
	"github.com/imlite/imlite/server/boltstore"
	"github.com/imlite/imlite/server/config"
	"github.com/imlite/imlite/server/kafkaqueue"
	"github.com/imlite/imlite/server/mempresence"
	"github.com/imlite/imlite/server/memqueue"
	"github.com/imlite/imlite/server/mongostore"
	"github.com/imlite/imlite/server/redisstore"
)

// DataFile is the name of the embedded store in Embedded.Dir.
const DataFile = "imlite.db"

// backends are the opened repositories with what shutdown needs of them.
type backends struct {
	server.Backends
	readiness []api.ReadinessCheck
	// drain waits for queued records to be handled; nil when the queues are
	// external and keep records across restarts.
	drainFn func(context.Context) error
	// closers release the backends; ctx bounds the ones that can block.
	closers []func(ctx context.Context) error
}

func (b *backends) drain(ctx context.Context) error {
	if b.drainFn == nil {
		return nil
	}
	return b.drainFn(ctx)
}

// close closes in reverse order of opening, within ctx where a backend
// allows it.
func (b *backends) close(ctx context.Context) error {
	var errs []error
	for i := len(b.closers) - 1; i >= 0; i-- {
		errs = append(errs, b.closers[i](ctx))
	}
	b.closers = nil
	return errors.Join(errs...)
}

// openEmbedded opens the bbolt store in Embedded.Dir and the in-process
// queues and presence.
func openEmbedded(cfg *config.Config) (*backends, error) {
	if err := os.MkdirAll(cfg.Embedded.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory Embedded.Dir %s: %w", cfg.Embedded.Dir, err)
	}
	store, err := boltstore.Open(filepath.Join(cfg.Embedded.Dir, DataFile))
	if err != nil {
		return nil, err
	}
	// The store stage's workers (Consumers.Msg.Consumers, default 8) each
	// take the conversations of one partition, so a transaction touches
	// fewer pages; the store commits their batches together.
	bus := memqueue.New(memqueue.Options{MsgPartitions: cfg.Consumers.Msg.Consumers, Partitions: cfg.Consumers.Push.Consumers})
	b := &backends{
		Backends: server.Backends{
			Messages:      store,
			Seqs:          store,
			Conversations: store,
			Groups:        store,
			Revocations:   store,
			Presence:      mempresence.New(),
			MsgProducer:   bus,
			MsgConsumer:   bus,
			PushProducer:  bus,
			PushConsumer:  bus,
		},
		readiness: []api.ReadinessCheck{{Name: "store", Check: store.Ping}},
		drainFn: func(ctx context.Context) error {
			bus.Close()
			return bus.Drain(ctx)
		},
	}
	b.closers = append(b.closers, closeFunc(store.Close))
	return b, nil
}

// openDistributed connects to MongoDB, Redis and Kafka. Every pod of a
// deployment shares them; the pod keeps nothing another pod needs.
func openDistributed(ctx context.Context, cfg *config.Config, pod string, log *slog.Logger) (_ *backends, err error) {
	b := &backends{}
	defer func() {
		if err != nil {
			if cerr := b.close(context.Background()); cerr != nil {
				log.Error("close backends after a failed start", "err", cerr)
			}
		}
	}()

	// 1. MongoDB: messages, groups, conversation state.
	mongo, err := mongostore.Open(ctx, mongostore.Config{
		URI:      cfg.Mongo.Uri,
		Database: cfg.Mongo.Database,
		Timeout:  time.Duration(cfg.Mongo.DBTimeout) * time.Second,
		Logger:   log,
	})
	if err != nil {
		return nil, fmt.Errorf("Mongo: %w", err)
	}
	b.closers = append(b.closers, func(ctx context.Context) error {
		// Even a shutdown that spent its time gets a second to disconnect.
		if deadline, ok := ctx.Deadline(); !ok || time.Until(deadline) < time.Second {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
		}
		return mongo.Close(ctx)
	})

	// 2. Redis: seq counters (seeded from MongoDB), presence, revocations.
	rds, err := redisstore.New(redisstore.Config{
		Addr:        cfg.Redis.Host,
		Password:    cfg.Redis.Pass,
		DB:          cfg.Redis.DB,
		Logger:      log,
		PodName:     pod,
		PresenceTTL: cfg.Redis.PresenceTTL.Std(),
		MaxSeqs:     mongo.MaxSeqs,
	})
	if err != nil {
		return nil, fmt.Errorf("Redis: %w", err)
	}
	b.closers = append(b.closers, closeFunc(rds.Close))

	// 3. Kafka: the msg topic (one consumer group for all pods) and the push
	// topic (read by every pod).
	producer := func(p config.KafkaProducerConfig) kafkaqueue.ProducerConfig {
		return kafkaqueue.ProducerConfig{Addrs: p.Addrs, Topic: p.Topic, User: p.User, Passwd: p.Passwd, Partition: p.Partition, ClientID: pod, Logger: log}
	}
	consumer := func(c config.KafkaConsumerConfig) kafkaqueue.ConsumerConfig {
		return kafkaqueue.ConsumerConfig{
			Addrs: c.Addrs, Topic: c.Topic, Group: c.Group, Consumers: c.Consumers, User: c.User, Passwd: c.Passwd,
			SessionTimeout: c.SessionTimeout.Std(), ClientID: pod, Logger: log,
		}
	}
	msgProducer, err := kafkaqueue.NewMsgProducer(ctx, producer(cfg.Pushers.Msg))
	if err != nil {
		return nil, fmt.Errorf("Pushers.Msg: %w", err)
	}
	b.closers = append(b.closers, closeFunc(errorless(msgProducer.Close)))
	pushProducer, err := kafkaqueue.NewPushProducer(ctx, producer(cfg.Pushers.Push))
	if err != nil {
		return nil, fmt.Errorf("Pushers.Push: %w", err)
	}
	b.closers = append(b.closers, closeFunc(errorless(pushProducer.Close)))
	msgConsumer, err := kafkaqueue.NewMsgConsumer(consumer(cfg.Consumers.Msg))
	if err != nil {
		return nil, fmt.Errorf("Consumers.Msg: %w", err)
	}
	pushConsumer, err := kafkaqueue.NewPushConsumer(consumer(cfg.Consumers.Push))
	if err != nil {
		return nil, fmt.Errorf("Consumers.Push: %w", err)
	}

	b.Backends = server.Backends{
		Messages:      mongo,
		Seqs:          rds,
		Conversations: mongo,
		Groups:        mongo,
		Revocations:   &durableRevocations{durable: mongo, cache: rds},
		Presence:      rds,
		MsgProducer:   msgProducer,
		MsgConsumer:   msgConsumer,
		PushProducer:  pushProducer,
		PushConsumer:  pushConsumer,
	}
	b.readiness = []api.ReadinessCheck{
		{Name: "mongo", Check: mongo.Ping},
		{Name: "redis", Check: rds.Ping},
		// Both pings also create a topic that was deleted under the pod.
		{Name: "kafka", Check: func(ctx context.Context) error {
			return errors.Join(msgProducer.Ping(ctx), pushProducer.Ping(ctx))
		}},
	}
	return b, nil
}

// closeFunc adapts a Close method that takes no context.
func closeFunc(f func() error) func(context.Context) error {
	return func(context.Context) error { return f() }
}

func errorless(f func()) func() error {
	return func() error {
		f()
		return nil
	}
}
