package memqueue

import (
	"testing"

	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/queuetest"
)

func TestQueues(t *testing.T) {
	caps := queuetest.Capabilities{
		// Records live in process memory, and ConsumeMsgs may run once per
		// Bus, so no second consumer can pick up an unacknowledged batch.
		Durable: false,
		// A worker stops at the first handler error, because the core's
		// handler fails only when ctx ended.
		RetriesFailedBatch: false,
	}
	queuetest.TestQueues(t, caps, func(t *testing.T) queuetest.Topics {
		// Fewer partitions than conversations, so keys share partitions.
		bus := New(Options{Partitions: 4})
		return queuetest.Topics{
			MsgProducer:     bus,
			PushProducer:    bus,
			NewMsgConsumer:  func(*testing.T) server.MsgConsumer { return bus },
			NewPushConsumer: func(*testing.T) server.PushConsumer { return bus },
		}
	})
}
