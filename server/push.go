package server

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	busv1 "github.com/imlite/imlite/gen/imlite/bus/v1"
	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
)

// handlePush is the push stage, run on every pod for every push record.
// It completes the SendMsg waiting on this pod, hands deliveries to local
// connections, applies kicks and replacements, and drops cached member
// lists of changed groups.
func (s *Service) handlePush(ctx context.Context, recs []*busv1.PushRecord) {
	d := s.currentDeliverer()
	for _, rec := range recs {
		switch ev := rec.GetEvent().(type) {
		case *busv1.PushRecord_Delivery:
			s.pushDelivery(extractTrace(ctx, rec.GetTrace()), d, ev.Delivery)
		case *busv1.PushRecord_Duplicate:
			if ev.Duplicate.GetOriginPod() == s.pod {
				s.waiters.completeDuplicate(ev.Duplicate.GetRequestMsgId(), ev.Duplicate.GetStored())
			}
		case *busv1.PushRecord_Failure:
			if ev.Failure.GetOriginPod() == s.pod {
				s.waiters.complete(ev.Failure.GetServerMsgId(), failureResult(ev.Failure.GetCode(), ev.Failure.GetMessage()))
			}
		case *busv1.PushRecord_Kick:
			if d != nil {
				d.Disconnect(Disconnect{
					Kind: Kicked, UserID: ev.Kick.GetUserId(), Platforms: ev.Kick.GetPlatforms(),
					Reason: ev.Kick.GetReason(), At: time.UnixMicro(ev.Kick.GetKickedAtMicros()),
				})
			}
		case *busv1.PushRecord_ConnReplaced:
			if d != nil {
				r := ev.ConnReplaced
				keep := ""
				if r.GetKeepPod() == s.pod {
					keep = r.GetKeepConn()
				}
				d.Disconnect(Disconnect{
					Kind: Replaced, UserID: r.GetUserId(), Platforms: []string{r.GetPlatform()},
					Reason: "replaced by a new connection on platform " + r.GetPlatform(),
					At:     time.UnixMicro(r.GetConnectedAtMicros()), KeepConn: keep,
				})
			}
		case *busv1.PushRecord_GroupChanged:
			s.groups.invalidate(ev.GroupChanged.GetGroupId())
		default:
			s.log.Warn("push stage: skipping record with unknown event")
		}
	}
}

func (s *Service) pushDelivery(ctx context.Context, d Deliverer, ev *busv1.Delivery) {
	msg := ev.GetMsg()
	ctx, span := s.tracer.Start(ctx, spanPush, trace.WithSpanKind(trace.SpanKindConsumer))
	setMessageAttributes(span, msg)
	defer span.End()
	local := ev.GetOriginPod() == s.pod
	if local && msg.GetSeq() > 0 {
		s.waiters.complete(msg.GetServerMsgId(), sendResult{resp: sendResponse(msg)})
	}
	if d == nil {
		return
	}
	recipients, err := s.recipients(ctx, msg)
	if err != nil {
		// The message is stored; members that miss this push catch up
		// with PullMsg.
		s.log.Error("push stage: cannot resolve recipients", "conversation_id", msg.GetConversationId(), "seq", msg.GetSeq(), "err", err)
		failSpan(span, err)
		return
	}
	except := ""
	if local {
		except = ev.GetOriginConn()
	}
	var storedAt time.Time
	if ev.GetStoredAtMicros() > 0 {
		storedAt = time.UnixMicro(ev.GetStoredAtMicros())
	}
	d.Deliver(ctx, msg, recipients, except, storedAt)
	s.obs.Pushed(msg, len(recipients), storedAt)
}

// recipients returns the users a message goes to: both users of a single
// chat, or every member of the group.
func (s *Service) recipients(ctx context.Context, msg *imlitev1.Message) ([]string, error) {
	if msg.GetConversationType() == imlitev1.ConversationType_CONVERSATION_TYPE_GROUP {
		return s.groups.members(ctx, msg.GetGroupId())
	}
	ref, err := ParseConversationID(msg.GetConversationId())
	if err != nil {
		return nil, err
	}
	return ref.Users, nil
}

// memberCache caches group member lists for fan-out. Entries are dropped on
// a GroupChanged push record and expire after ttl in case one was lost.
type memberCache struct {
	groups GroupStore
	ttl    time.Duration

	mu      sync.Mutex
	entries map[string]*memberEntry
}

type memberEntry struct {
	ids     []string
	expires time.Time
	// ready is closed when ids is loaded; err is set on failure. Concurrent
	// lookups of one group share a single load.
	ready chan struct{}
	err   error
}

func newMemberCache(g GroupStore, ttl time.Duration) *memberCache {
	return &memberCache{groups: g, ttl: ttl, entries: make(map[string]*memberEntry)}
}

// members returns the group's member ids. The slice is shared: read-only.
func (c *memberCache) members(ctx context.Context, groupID string) ([]string, error) {
	c.mu.Lock()
	if e, ok := c.entries[groupID]; ok {
		select {
		case <-e.ready:
			if e.err == nil && time.Now().Before(e.expires) {
				c.mu.Unlock()
				return e.ids, nil
			}
			// Expired or failed: load again below.
		default:
			c.mu.Unlock()
			<-e.ready
			return e.ids, e.err
		}
	}
	e := &memberEntry{ready: make(chan struct{})}
	c.entries[groupID] = e
	c.mu.Unlock()

	e.ids, e.err = c.groups.GroupMemberIDs(ctx, groupID)
	e.expires = time.Now().Add(c.ttl)
	close(e.ready)
	if e.err != nil {
		c.invalidateEntry(groupID, e)
	}
	return e.ids, e.err
}

func (c *memberCache) invalidate(groupID string) {
	c.mu.Lock()
	delete(c.entries, groupID)
	c.mu.Unlock()
}

func (c *memberCache) invalidateEntry(groupID string, e *memberEntry) {
	c.mu.Lock()
	if c.entries[groupID] == e {
		delete(c.entries, groupID)
	}
	c.mu.Unlock()
}
