package kafkaqueue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	busv1 "github.com/imlite/imlite/gen/imlite/bus/v1"
	"github.com/imlite/imlite/server"
)

// MsgProducer is the producer of the msg topic. It implements server.MsgProducer and
// server.Pinger, and is safe for concurrent use.
type MsgProducer struct{ p *producer }

// PushProducer is the producer of the push topic. It implements server.PushProducer
// and server.Pinger, and is safe for concurrent use.
type PushProducer struct{ p *producer }

var (
	_ server.MsgProducer  = (*MsgProducer)(nil)
	_ server.PushProducer = (*PushProducer)(nil)
	_ server.Pinger       = (*MsgProducer)(nil)
	_ server.Pinger       = (*PushProducer)(nil)
)

// NewMsgProducer connects to the cluster and creates the topic if it is
// missing. ctx bounds the topic lookup and creation. An unreachable cluster
// yields an error wrapping server.ErrUnavailable.
func NewMsgProducer(ctx context.Context, cfg ProducerConfig) (*MsgProducer, error) {
	p, err := newProducer(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &MsgProducer{p: p}, nil
}

// NewPushProducer connects to the cluster and creates the topic if it is
// missing, as NewMsgProducer does.
func NewPushProducer(ctx context.Context, cfg ProducerConfig) (*PushProducer, error) {
	p, err := newProducer(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &PushProducer{p: p}, nil
}

// PublishMsg writes rec keyed by its conversation id and returns once all
// in-sync replicas stored it, or with an error wrapping
// server.ErrUnavailable after PublishTimeout.
func (m *MsgProducer) PublishMsg(ctx context.Context, rec *busv1.MsgRecord) error {
	op := fmt.Sprintf("publish msg record to topic %q", m.p.topic)
	if rec == nil {
		return fmt.Errorf("%s: record is nil", op)
	}
	r, err := newRecord(rec.GetMsg().GetConversationId(), rec)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return m.p.produce(ctx, op, []*kgo.Record{r})
}

// PublishPush writes the records, each keyed by its Key, and returns once
// all of them are stored, or with an error wrapping server.ErrUnavailable
// after PublishTimeout. After an error some records may be stored, and a
// retry writes them again.
func (pp *PushProducer) PublishPush(ctx context.Context, recs []server.KeyedPush) error {
	op := fmt.Sprintf("publish %d push records to topic %q", len(recs), pp.p.topic)
	if len(recs) == 0 {
		return nil
	}
	out := make([]*kgo.Record, len(recs))
	for i, kr := range recs {
		if kr.Record == nil {
			return fmt.Errorf("%s: record %d (key %q) is nil", op, i, kr.Key)
		}
		r, err := newRecord(kr.Key, kr.Record)
		if err != nil {
			return fmt.Errorf("%s: record %d: %w", op, i, err)
		}
		out[i] = r
	}
	return pp.p.produce(ctx, op, out)
}

// Ping looks up the topic and creates it again if it went missing, as after
// a cluster was wiped. An unreachable cluster yields an error wrapping
// server.ErrUnavailable.
func (m *MsgProducer) Ping(ctx context.Context) error { return m.p.ping(ctx) }

// Ping checks the topic, as MsgProducer.Ping does.
func (pp *PushProducer) Ping(ctx context.Context) error { return pp.p.ping(ctx) }

// Close fails records still buffered by timed-out publishes and closes the
// connections. Publishing after Close fails.
func (m *MsgProducer) Close() { m.p.close() }

// Close closes the producer, as MsgProducer.Close does.
func (pp *PushProducer) Close() { pp.p.close() }

// producer is the part the two producer types share.
type producer struct {
	cl           *kgo.Client
	adm          *kadm.Client
	topic        string
	cfg          ProducerConfig
	timeoutCause error
	// healing is set while a background topic check runs, and lastHeal
	// is when the last one started, so failing publishes start at most
	// one check per healInterval.
	healing  atomic.Bool
	lastHeal atomic.Int64
	// lastPurge is when the topic was last purged from the client.
	lastPurge atomic.Int64

	mu sync.Mutex
	// topicID is the topic's ID at the last ping, zero before the first.
	topicID kadm.TopicID
}

// healInterval is the least time between two topic checks that failed
// publishes start.
const healInterval = 5 * time.Second

func newProducer(ctx context.Context, cfg ProducerConfig) (*producer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	opts := append(clientOpts(cfg.Addrs, cfg.User, cfg.Passwd, cfg.ClientID, cfg.Logger),
		kgo.DefaultProduceTopic(cfg.Topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// kgo writes idempotently by default. This option lets it fail a
		// record that was sent but not acknowledged when the deadline
		// passes. The broker may still store such a record, and a retry
		// then stores it twice, which the consumers tolerate. Waiting for
		// the outcome instead could block for as long as the cluster is
		// unreachable.
		kgo.AllowIdempotentProduceCancellation(),
		// The default partitioner, named for clarity: a keyed record goes
		// to the murmur2 hash of its key, as in the Java client.
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		// The publish call's ctx enforces PublishTimeout. This timeout
		// drops the records that a timed-out call left behind, and kgo
		// rejects values below 1s.
		kgo.RecordDeliveryTimeout(max(cfg.PublishTimeout, time.Second)),
		kgo.DialTimeout(cfg.PublishTimeout),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("create kafka producer for topic %q: %w", cfg.Topic, err)
	}
	// Topic checks run on a client of their own. kgo serves metadata
	// requests from a cache shared by the whole client, so a check that
	// found the topic missing would make the producer treat it as missing
	// for seconds after the check created it.
	admCl, err := kgo.NewClient(clientOpts(cfg.Addrs, cfg.User, cfg.Passwd, cfg.ClientID, cfg.Logger)...)
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("create kafka admin client for topic %q: %w", cfg.Topic, err)
	}
	adm := kadm.NewClient(admCl)
	if _, err := ensureTopic(ctx, adm, cfg.Topic, cfg.Partition, cfg.Logger); err != nil {
		admCl.Close()
		cl.Close()
		return nil, err
	}
	p := &producer{
		cl:           cl,
		adm:          adm,
		topic:        cfg.Topic,
		cfg:          cfg,
		timeoutCause: fmt.Errorf("not acknowledged within PublishTimeout %v", cfg.PublishTimeout),
	}
	// The ID lets ping notice a topic that was deleted and created again
	// while this pod was idle. A failed lookup leaves it to the first ping.
	if id, err := lookupTopicID(ctx, adm, cfg.Topic); err == nil {
		p.topicID = id
	}
	return p, nil
}

func (p *producer) close() {
	p.cl.Close()
	p.adm.Close()
}

// newRecord encodes m as a record value, with its trace context moved into
// the record headers, where Kafka tooling expects it. The publisher owns m
// during the call, so the trace field is detached and restored in place.
func newRecord(key string, m proto.Message) (*kgo.Record, error) {
	trace, restore := detachTrace(m)
	value, err := proto.Marshal(m)
	restore()
	if err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	r := &kgo.Record{Key: []byte(key), Value: value}
	for _, k := range slices.Sorted(maps.Keys(trace)) {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(trace[k])})
	}
	return r, nil
}

// detachTrace clears the trace field of a bus record and returns it with a
// function that puts it back.
func detachTrace(m proto.Message) (map[string]string, func()) {
	switch r := m.(type) {
	case *busv1.MsgRecord:
		t := r.Trace
		r.Trace = nil
		return t, func() { r.Trace = t }
	case *busv1.PushRecord:
		t := r.Trace
		r.Trace = nil
		return t, func() { r.Trace = t }
	}
	return nil, func() {}
}

// attachTrace sets the trace field of a decoded bus record from the record
// headers.
func attachTrace(m proto.Message, headers []kgo.RecordHeader) {
	if len(headers) == 0 {
		return
	}
	trace := make(map[string]string, len(headers))
	for _, h := range headers {
		trace[h.Key] = string(h.Value)
	}
	switch r := m.(type) {
	case *busv1.MsgRecord:
		r.Trace = trace
	case *busv1.PushRecord:
		r.Trace = trace
	}
}

// produce writes recs and waits for every acknowledgement. It returns at
// the deadline even when the client still holds records, because kgo checks
// a record's deadline only before a request and after a response, so a
// record in flight on a hanging connection outlives its deadline.
func (p *producer) produce(ctx context.Context, op string, recs []*kgo.Record) error {
	ctx, cancel := context.WithTimeoutCause(ctx, p.cfg.PublishTimeout, p.timeoutCause)
	defer cancel()
	failed, err := p.produceOnce(ctx, recs)
	if errors.Is(err, kerr.UnknownTopicID) {
		// The topic was deleted and created again. kgo failed these
		// records without writing them, because it held the old topic
		// ID, so they are written once more after the purge.
		p.heal(err)
		retry := make([]*kgo.Record, len(failed))
		for i, r := range failed {
			retry[i] = &kgo.Record{Key: r.Key, Value: r.Value, Headers: r.Headers}
		}
		_, err = p.produceOnce(ctx, retry)
	}
	if err != nil {
		p.heal(err)
		return wrapErr(op, err)
	}
	return nil
}

// produceOnce writes recs and waits for their acknowledgements. It returns
// the records that failed with the first error, or ctx's error once ctx
// ends.
func (p *producer) produceOnce(ctx context.Context, recs []*kgo.Record) ([]*kgo.Record, error) {
	type result struct {
		rec *kgo.Record
		err error
	}
	results := make(chan result, len(recs))
	for _, r := range recs {
		p.cl.Produce(ctx, r, func(r *kgo.Record, err error) { results <- result{r, err} })
	}
	var failed []*kgo.Record
	var first error
	for range recs {
		select {
		case res := <-results:
			if res.err != nil {
				failed = append(failed, res.rec)
				first = cmp.Or(first, res.err)
			}
		case <-ctx.Done():
			return nil, contextError(ctx)
		}
	}
	return failed, first
}

// contextError returns the error of an ended ctx together with its cause,
// when a cause other than the error itself was given.
func contextError(ctx context.Context) error {
	err, cause := ctx.Err(), context.Cause(ctx)
	if cause == nil || errors.Is(cause, err) {
		return err
	}
	return fmt.Errorf("%w: %w", cause, err)
}

// ping checks that a broker responds, then runs the topic check of the
// start. That check repairs a topic deleted under a running pod, because
// kgo does not recreate it by itself.
func (p *producer) ping(ctx context.Context) error {
	// kgo serves a topic lookup from its metadata cache for a few
	// seconds, so only a ping proves that a broker responds now.
	if err := p.cl.Ping(ctx); err != nil {
		return wrapErr("ping kafka", err)
	}
	created, err := ensureTopic(ctx, p.adm, p.topic, p.cfg.Partition, p.cfg.Logger)
	if err != nil {
		return err
	}
	id, err := lookupTopicID(ctx, p.adm, p.topic)
	if err != nil {
		return wrapErr(fmt.Sprintf("look up topic %q", p.topic), err)
	}
	p.mu.Lock()
	changed := p.topicID != (kadm.TopicID{}) && p.topicID != id
	p.topicID = id
	p.mu.Unlock()
	if created || changed {
		// The client may hold the ID of the deleted topic, under which
		// kgo would fail the next publish to the new one. Purging here
		// spares an idle pod that failure.
		p.purge()
	}
	return nil
}

// purge drops what the client knows of the topic, so the next publish
// looks up the new topic's ID.
func (p *producer) purge() {
	p.lastPurge.Store(time.Now().UnixNano())
	p.cfg.Logger.Warn("kafka producer: the topic was deleted and created again; publishing to the new topic", "topic", p.topic)
	p.cl.PurgeTopicsFromProducing(p.topic)
}

// heal repairs what a failed publish reveals. A deleted topic fails
// publishes with UnknownTopicOrPartition or a timeout, so heal starts a
// topic check that creates it again, unless one runs or one started within
// healInterval.
// Once the topic exists again, kgo finds a new topic ID and fails publishes
// with UnknownTopicID until the topic is purged from the client. The purge
// also fails records still buffered for the old topic, which were lost
// with it anyway. The failed publish does not wait: the caller retries, and
// the retry finds the topic.
func (p *producer) heal(err error) {
	if errors.Is(err, kerr.UnknownTopicID) {
		now := time.Now().UnixNano()
		if last := p.lastPurge.Load(); now-last < int64(time.Second) || !p.lastPurge.CompareAndSwap(last, now) {
			// Failures of one burst of publishes to the old topic
			// need one purge. Another would fail records already
			// buffered for the new topic.
			return
		}
		p.purge()
		return
	}
	// kgo retries a record for a missing topic for a while, so a publish
	// to a deleted topic may also fail by timing out.
	if !errors.Is(err, kerr.UnknownTopicOrPartition) && !errors.Is(err, context.DeadlineExceeded) {
		return
	}
	now := time.Now().UnixNano()
	if now-p.lastHeal.Load() < int64(healInterval) || !p.healing.CompareAndSwap(false, true) {
		return
	}
	p.lastHeal.Store(now)
	go func() {
		defer p.healing.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.PublishTimeout)
		defer cancel()
		if err := p.ping(ctx); err != nil {
			p.cfg.Logger.Warn("kafka producer: topic check failed; the next failed publish runs it again", "topic", p.topic, "err", err)
		}
	}()
}
