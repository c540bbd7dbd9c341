package kafkaqueue

import (
	"testing"

	"github.com/imlite/imlite/internal/testenv"
	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/queuetest"
)

func TestQueues(t *testing.T) {
	k := testenv.StartKafka(t)
	caps := queuetest.Capabilities{Durable: true, RetriesFailedBatch: true}
	queuetest.TestQueues(t, caps, func(t *testing.T) queuetest.Topics {
		msgTopic, pushTopic, group := uniqueName("msg"), uniqueName("push"), uniqueName("group")
		// Four partitions for more conversations, so keys share partitions.
		return queuetest.Topics{
			MsgProducer:  newMsgProducer(t, producerConfig(k, msgTopic)),
			PushProducer: newPushProducer(t, producerConfig(k, pushTopic)),
			NewMsgConsumer: func(t *testing.T) server.MsgConsumer {
				return newMsgConsumer(t, consumerConfig(k, msgTopic, group))
			},
			NewPushConsumer: func(t *testing.T) server.PushConsumer {
				return newPushConsumer(t, consumerConfig(k, pushTopic, ""))
			},
		}
	})
}
