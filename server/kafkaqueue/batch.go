package kafkaqueue

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
)

// partitionRecords are the polled records of one partition, in offset
// order.
type partitionRecords struct {
	topic     string
	partition int32
	records   []*kgo.Record
}

// splitByPartition groups the records of a poll by partition, keeping
// offset order within each.
func splitByPartition(fetches kgo.Fetches) []partitionRecords {
	type tp struct {
		topic     string
		partition int32
	}
	index := make(map[tp]int)
	var out []partitionRecords
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		key := tp{p.Topic, p.Partition}
		i, ok := index[key]
		if !ok {
			i = len(out)
			index[key] = i
			out = append(out, partitionRecords{topic: p.Topic, partition: p.Partition})
		}
		out[i].records = append(out[i].records, p.Records...)
	})
	return out
}

// forEachPartition calls fn for every partition, at most workers calls at a
// time, and returns when all calls returned.
func forEachPartition(parts []partitionRecords, workers int, fn func(i int, p partitionRecords)) {
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for i, p := range parts {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(i, p)
		})
	}
	wg.Wait()
}

// decodeRecords decodes the values of recs into new messages of type T.
// A value that does not decode is logged by position and skipped: no
// redelivery could ever decode it, and keeping it would stop its partition.
func decodeRecords[T any, PT interface {
	*T
	proto.Message
}](recs []*kgo.Record, log *slog.Logger) []PT {
	out := make([]PT, 0, len(recs))
	for _, r := range recs {
		m := PT(new(T))
		if err := proto.Unmarshal(r.Value, m); err != nil {
			log.Error("kafka consumer: skipping record that does not decode",
				"topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
			continue
		}
		attachTrace(m, r.Headers)
		out = append(out, m)
	}
	return out
}

// pollErrors logs the errors of a poll, except those of an ended ctx, and
// returns the first one that means the cluster rejects the consumer.
func pollErrors(fetches kgo.Fetches, log *throttledLog) error {
	var fatal error
	fetches.EachError(func(topic string, partition int32, err error) {
		if isFatalConsumeError(err) {
			if fatal == nil {
				fatal = err
			}
			return
		}
		if isContextError(err) {
			return
		}
		log.warn("kafka consumer: fetch failed; retrying", "topic", topic, "partition", partition, "err", err)
	})
	return fatal
}

func isContextError(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
