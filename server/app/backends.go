package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/api"
	"github.com/imlite/imlite/server/boltstore"
	"github.com/imlite/imlite/server/config"
	"github.com/imlite/imlite/server/mempresence"
	"github.com/imlite/imlite/server/memqueue"
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
	closers []func() error
}

func (b *backends) drain(ctx context.Context) error {
	if b.drainFn == nil {
		return nil
	}
	return b.drainFn(ctx)
}

// close closes in reverse order of opening.
func (b *backends) close() error {
	var errs []error
	for i := len(b.closers) - 1; i >= 0; i-- {
		errs = append(errs, b.closers[i]())
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
	bus := memqueue.New(memqueue.Options{Partitions: cfg.Consumers.Msg.Consumers})
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
	b.closers = append(b.closers, store.Close)
	return b, nil
}
