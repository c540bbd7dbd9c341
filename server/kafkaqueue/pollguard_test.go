package kafkaqueue

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/imlite/imlite/internal/testenv"
)

// fetchesWith returns one poll's result for partition 0 of topic.
func fetchesWith(topic string, err error, records ...*kgo.Record) kgo.Fetches {
	return kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: topic, Partitions: []kgo.FetchPartition{{Partition: 0, Err: err, Records: records}}}}}}
}

func TestPollGuardBacksOffOnErrorOnlyPolls(t *testing.T) {
	g := &pollGuard{topic: "t"}
	failed := fetchesWith("t", errors.New("connection reset"))
	for _, want := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond} {
		if err := g.after(t.Context(), failed); err != nil {
			t.Fatalf("after a failed poll: %v", err)
		}
		if g.delay != want {
			t.Errorf("delay after a failed poll = %v, want %v", g.delay, want)
		}
	}
	if err := g.after(t.Context(), fetchesWith("t", nil, &kgo.Record{Value: []byte("x")})); err != nil {
		t.Fatalf("after a poll with records: %v", err)
	}
	if g.delay != 0 {
		t.Errorf("delay after a poll with records = %v, want 0", g.delay)
	}
}

func TestPollGuardStopsWaitingWhenCtxEnds(t *testing.T) {
	g := &pollGuard{topic: "t", delay: time.Hour}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := g.after(ctx, fetchesWith("t", errors.New("connection reset"))); !errors.Is(err, context.Canceled) {
		t.Errorf("after with an ended ctx = %v, want context.Canceled", err)
	}
}

func TestPollGuardDetectsRecreatedTopic(t *testing.T) {
	k := testenv.StartKafka(t)
	adm := newAdmin(t, k)
	topic := uniqueName("topic")
	if _, err := adm.CreateTopic(t.Context(), 1, -1, nil, topic); err != nil {
		t.Fatalf("create topic: %v", err)
	}
	id, err := lookupTopicID(t.Context(), adm, topic)
	if err != nil || id == (kadm.TopicID{}) {
		t.Fatalf("lookupTopicID(%s) = %v, %v; want the topic's ID", topic, id, err)
	}
	unknownID := fetchesWith(topic, kerr.UnknownTopicID)

	// The ID the session started with is still the topic's: a passing
	// error, so the guard only waits.
	same := &pollGuard{adm: adm, topic: topic, id: id}
	if err := same.after(t.Context(), unknownID); err != nil {
		t.Errorf("after UnknownTopicID with an unchanged ID = %v, want nil", err)
	}

	other := &pollGuard{adm: adm, topic: topic, id: kadm.TopicID{1}}
	if err := other.after(t.Context(), unknownID); !errors.Is(err, errTopicRecreated) {
		t.Errorf("after UnknownTopicID with a changed ID = %v, want errTopicRecreated", err)
	}

	missing := &pollGuard{adm: adm, topic: uniqueName("missing"), id: id}
	if err := missing.after(t.Context(), fetchesWith(missing.topic, kerr.UnknownTopicID)); !errors.Is(err, errTopicRecreated) {
		t.Errorf("after UnknownTopicID for a deleted topic = %v, want errTopicRecreated", err)
	}
}
