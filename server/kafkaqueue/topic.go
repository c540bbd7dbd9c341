package kafkaqueue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// ensureTopic creates topic with the given partition count and the broker's
// default replication factor, unless it exists, and reports whether this
// call created it. Pods that start together may race to create it, so
// TopicAlreadyExists counts as success.
func ensureTopic(ctx context.Context, adm *kadm.Client, topic string, partitions int, log *slog.Logger) (created bool, err error) {
	details, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return false, wrapErr(fmt.Sprintf("look up topic %q", topic), err)
	}
	d, listed := details[topic]
	switch {
	case listed && d.Err == nil:
		if len(d.Partitions) != partitions {
			log.Info("kafka topic exists with another partition count; keeping it",
				"topic", topic, "partitions", len(d.Partitions), "configured_partitions", partitions)
		}
		return false, nil
	case listed && !errors.Is(d.Err, kerr.UnknownTopicOrPartition):
		return false, wrapErr(fmt.Sprintf("look up topic %q", topic), d.Err)
	}

	// -1 selects the broker's default replication factor (Kafka 2.4+).
	_, err = adm.CreateTopic(ctx, int32(partitions), -1, nil, topic)
	switch {
	case err == nil:
		log.Info("created kafka topic", "topic", topic, "partitions", partitions)
		return true, nil
	case errors.Is(err, kerr.TopicAlreadyExists):
		// Another pod created it after the lookup.
		return false, nil
	default:
		return false, wrapErr(fmt.Sprintf("create topic %q with %d partitions", topic, partitions), err)
	}
}
