package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	busv1 "github.com/imlite/imlite/gen/imlite/bus/v1"
	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server/apierr"
	"github.com/imlite/imlite/server/auth"
)

// SendMsg validates a message, publishes it to the msg topic and waits until
// the store stage has stored it, then returns its seq. A transient message
// (options.storage=false) goes straight to the push topic and gets seq 0.
//
// A retry with the same (sender, client_msg_id) returns the first result.
// Reusing a client_msg_id for another conversation fails with
// AlreadyExists, because returning the first result would report a message
// as sent that never went to the requested target. A send that times out returns DeadlineExceeded with the server_msg_id in the
// error metadata; the message may still be stored, and a retry returns its
// result.
func (s *Service) SendMsg(ctx context.Context, req *imlitev1.SendMsgRequest) (*imlitev1.SendMsgResponse, error) {
	pending, err := s.AcceptMsg(ctx, req)
	if err != nil {
		return nil, err
	}
	return pending.Wait(ctx)
}

// AcceptMsg runs the first half of SendMsg: it validates and publishes the
// message. Publishes from one goroutine keep their order, so a connection
// that accepts sends one by one and waits for them concurrently still gets
// seqs in its sending order.
func (s *Service) AcceptMsg(ctx context.Context, req *imlitev1.SendMsgRequest) (*PendingSend, error) {
	ctx, span := s.tracer.Start(ctx, spanSend)
	pending, err := s.acceptMsg(ctx, req, span)
	if err != nil {
		endSpan(span, err)
		return nil, err
	}
	return pending, nil
}

// PendingSend is a send that was accepted; Wait or OnDone returns its
// result once the push stage completed it or Options.SendTimeout passed.
// No goroutine or timer is held per send: the push stage and the expiry
// sweep complete it.
type PendingSend struct {
	s           *Service
	serverMsgID string
	span        trace.Span
	// conversationID is the conversation the send asked for, which the
	// stored message of a duplicate must match.
	conversationID string

	mu     sync.Mutex
	result *sendResult
	done   func(*imlitev1.SendMsgResponse, error)
	ready  chan struct{}
}

func (s *Service) newPending(serverMsgID string, span trace.Span) *PendingSend {
	return &PendingSend{s: s, serverMsgID: serverMsgID, span: span, ready: make(chan struct{})}
}

// completedPending returns a send whose result is known at once: a
// transient message or a retry of a stored one.
func (s *Service) completedPending(resp *imlitev1.SendMsgResponse, span trace.Span) *PendingSend {
	p := s.newPending(resp.GetServerMsgId(), span)
	p.complete(sendResult{resp: resp})
	return p
}

// complete records the result, ends the span and hands the result to the
// OnDone callback if one is set. Later calls do nothing.
func (p *PendingSend) complete(res sendResult) {
	p.mu.Lock()
	if p.result != nil {
		p.mu.Unlock()
		return
	}
	p.result = &res
	done := p.done
	p.mu.Unlock()
	close(p.ready)

	if res.resp != nil {
		p.span.SetAttributes(attribute.Int64("imlite.seq", res.resp.GetSeq()))
	}
	endSpan(p.span, res.err)
	if done != nil {
		done(res.resp, res.err)
	}
}

// Wait returns the stored result, DeadlineExceeded with the server_msg_id
// after Options.SendTimeout, or ctx's error.
func (p *PendingSend) Wait(ctx context.Context) (*imlitev1.SendMsgResponse, error) {
	select {
	case <-p.ready:
		return p.result.resp, p.result.err
	case <-ctx.Done():
		p.s.waiters.remove(p.serverMsgID)
		err := apierr.From(ctx.Err()).With("server_msg_id", p.serverMsgID)
		p.complete(sendResult{err: err})
		return p.result.resp, p.result.err
	}
}

// OnDone calls fn with the result once it is known, at once if it is
// already. fn runs on the push stage's goroutine, so it must not block.
func (p *PendingSend) OnDone(fn func(*imlitev1.SendMsgResponse, error)) {
	p.mu.Lock()
	if p.result == nil {
		p.done = fn
		p.mu.Unlock()
		return
	}
	res := *p.result
	p.mu.Unlock()
	fn(res.resp, res.err)
}

func (s *Service) acceptMsg(ctx context.Context, req *imlitev1.SendMsgRequest, span trace.Span) (*PendingSend, error) {
	p, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	sender, err := senderFor(p, req.GetSenderId())
	if err != nil {
		return nil, err
	}
	if err := s.validateSend(req); err != nil {
		return nil, err
	}
	ref, err := s.sendTarget(ctx, p, sender, req)
	if err != nil {
		return nil, err
	}
	msg := s.newMessage(p, sender, ref, req)
	setMessageAttributes(span, msg)

	if !msg.GetOptions().GetStorage() {
		resp, err := s.sendTransient(ctx, msg)
		if err != nil {
			return nil, err
		}
		return s.completedPending(resp, span), nil
	}

	// A retry of a send that was stored earlier returns the stored result
	// without publishing anything. The lookup also fails a send at once
	// with Unavailable while the store is down, instead of accepting it
	// and timing out after SendTimeout.
	key := ClientMsgKey{SenderID: sender, ClientMsgID: req.GetClientMsgId()}
	found, err := s.b.Messages.FindByClientMsgIDs(ctx, []ClientMsgKey{key})
	if err != nil {
		return nil, s.backendError("look up client_msg_id", err)
	}
	if stored, ok := found[key]; ok {
		if err := checkSameConversation(stored, msg.GetConversationId()); err != nil {
			return nil, err
		}
		return s.completedPending(sendResponse(stored), span), nil
	}

	pending := s.newPending(msg.GetServerMsgId(), span)
	pending.conversationID = msg.GetConversationId()
	s.waiters.add(pending, time.Now().Add(s.timeout))
	rec := &busv1.MsgRecord{Msg: msg, OriginPod: s.pod, OriginConn: connIDFrom(ctx), Trace: injectTrace(ctx)}
	if err := s.b.MsgProducer.PublishMsg(ctx, rec); err != nil {
		s.waiters.remove(msg.GetServerMsgId())
		return nil, s.publishError(err, msg.GetServerMsgId())
	}
	s.obs.Accepted(msg)
	return pending, nil
}

func (s *Service) sendTransient(ctx context.Context, msg *imlitev1.Message) (*imlitev1.SendMsgResponse, error) {
	rec := &busv1.PushRecord{Event: &busv1.PushRecord_Delivery{Delivery: &busv1.Delivery{
		Msg: msg, OriginPod: s.pod, OriginConn: connIDFrom(ctx),
	}}, Trace: injectTrace(ctx)}
	if err := s.b.PushProducer.PublishPush(ctx, []KeyedPush{{Key: msg.GetConversationId(), Record: rec}}); err != nil {
		return nil, s.publishError(err, msg.GetServerMsgId())
	}
	s.obs.Accepted(msg)
	return sendResponse(msg), nil
}

func (s *Service) publishError(err error, serverMsgID string) error {
	var ae *apierr.Error
	if errors.As(err, &ae) {
		return ae
	}
	if errors.Is(err, context.Canceled) {
		return apierr.From(err)
	}
	s.log.Warn("publish to queue failed", "server_msg_id", serverMsgID, "err", err)
	return apierr.Unavailable(err, "message queue unavailable; the message may or may not be stored; retry with the same client_msg_id").With("server_msg_id", serverMsgID)
}

func sendResponse(m *imlitev1.Message) *imlitev1.SendMsgResponse {
	return &imlitev1.SendMsgResponse{
		ServerMsgId:    m.GetServerMsgId(),
		ConversationId: m.GetConversationId(),
		Seq:            m.GetSeq(),
		ServerTime:     m.GetServerTime(),
	}
}

// senderFor returns the user a message is sent as: the caller, or for an
// admin the requested sender_id.
func senderFor(p auth.Principal, requested string) (string, error) {
	if requested == "" || requested == p.UserID {
		return p.UserID, nil
	}
	if !p.IsAdmin() {
		return "", apierr.PermissionDenied("sender_id %q differs from the caller %q; only admin tokens may send as another user",
			printable(requested), p.UserID)
	}
	if err := ValidateID("sender_id", requested); err != nil {
		return "", err
	}
	return requested, nil
}

func (s *Service) validateSend(req *imlitev1.SendMsgRequest) error {
	cmid := req.GetClientMsgId()
	switch {
	case cmid == "":
		return apierr.InvalidArgument("client_msg_id is required; reuse it when retrying the same message")
	case len(cmid) > s.limits.MaxClientMsgIDLen:
		return apierr.InvalidArgument("client_msg_id is %d bytes, longer than the maximum %d", len(cmid), s.limits.MaxClientMsgIDLen)
	}
	for i := 0; i < len(cmid); i++ {
		if cmid[i] < 0x21 || cmid[i] > 0x7e {
			return apierr.InvalidArgument("client_msg_id %q must be printable ASCII without spaces", printable(cmid))
		}
	}

	switch {
	case req.GetRecvId() == "" && req.GetGroupId() == "":
		return apierr.InvalidArgument("set one of recv_id (single chat) and group_id (group chat); both are empty")
	case req.GetRecvId() != "" && req.GetGroupId() != "":
		return apierr.InvalidArgument("set only one of recv_id and group_id; both are set")
	}

	if req.GetContent() == "" {
		return apierr.InvalidArgument("content is empty")
	}
	if err := validateText("content", req.GetContent(), s.limits.MaxContentBytes); err != nil {
		return err
	}
	if err := validateText("ex", req.GetEx(), s.limits.MaxExBytes); err != nil {
		return err
	}
	if op := req.GetOfflinePush(); op != nil {
		for _, f := range []struct{ name, v string }{
			{"offline_push.title", op.GetTitle()}, {"offline_push.desc", op.GetDesc()}, {"offline_push.ex", op.GetEx()},
		} {
			if err := validateText(f.name, f.v, s.limits.MaxExBytes); err != nil {
				return err
			}
		}
	}
	if req.GetClientTime() < 0 {
		return apierr.InvalidArgument("client_time %d is negative; use milliseconds since the Unix epoch", req.GetClientTime())
	}
	return nil
}

// sendTarget resolves the conversation and checks that the sender may write
// to it: anyone may write to a single chat, and only members (or admins) to
// a group.
func (s *Service) sendTarget(ctx context.Context, p auth.Principal, sender string, req *imlitev1.SendMsgRequest) (ConversationRef, error) {
	if recv := req.GetRecvId(); recv != "" {
		if err := ValidateID("recv_id", recv); err != nil {
			return ConversationRef{}, err
		}
		return ParseConversationID(SingleConversationID(sender, recv))
	}
	gid := req.GetGroupId()
	if err := ValidateID("group_id", gid); err != nil {
		return ConversationRef{}, err
	}
	ref := ConversationRef{ID: GroupConversationID(gid), Type: imlitev1.ConversationType_CONVERSATION_TYPE_GROUP, GroupID: gid}
	member, err := s.b.Groups.IsGroupMember(ctx, gid, sender)
	switch {
	case errors.Is(err, ErrNotFound):
		return ConversationRef{}, apierr.NotFound("group_id %q: no such group", gid)
	case err != nil:
		return ConversationRef{}, s.backendError("check group membership", err)
	case !member && !p.IsAdmin():
		return ConversationRef{}, apierr.PermissionDenied("user %q is not a member of group %q", sender, gid)
	}
	return ref, nil
}

func (s *Service) newMessage(p auth.Principal, sender string, ref ConversationRef, req *imlitev1.SendMsgRequest) *imlitev1.Message {
	// SenderPlatform is the platform of the caller's token; for an admin
	// sending on behalf of a user, that is the admin's platform.
	msg := &imlitev1.Message{
		ServerMsgId:      newServerMsgID(),
		ClientMsgId:      req.GetClientMsgId(),
		SenderId:         sender,
		SenderPlatform:   p.Platform,
		ConversationId:   ref.ID,
		ConversationType: ref.Type,
		GroupId:          ref.GroupID,
		ContentType:      req.GetContentType(),
		Content:          req.GetContent(),
		ClientTime:       req.GetClientTime(),
		ServerTime:       nowMillis(),
		OfflinePush:      req.GetOfflinePush(),
		Ex:               req.GetEx(),
	}
	if ref.Type == imlitev1.ConversationType_CONVERSATION_TYPE_SINGLE {
		msg.RecvId = req.GetRecvId()
	}
	if o := req.GetOptions(); o != nil {
		msg.Options = proto.CloneOf(o)
	}
	return msg
}

// newServerMsgID returns a UUIDv7: unique across pods and ordered by time,
// which keeps index inserts local.
func newServerMsgID() string {
	id, err := uuid.NewV7()
	if err != nil {
		// NewV7 returns an error only when reading the system random
		// source fails; a random UUID is still unique.
		return uuid.NewString()
	}
	return id.String()
}

// sendResult is the result of a waiting SendMsg.
type sendResult struct {
	resp *imlitev1.SendMsgResponse
	err  error
}

// waiters maps the server_msg_id of each send in flight on this pod to its
// PendingSend, in shards so that many senders do not contend on one lock.
type waiters struct {
	shards [waiterShards]waiterShard
}

const waiterShards = 32

type waiterShard struct {
	mu sync.Mutex
	m  map[string]waiter
}

type waiter struct {
	pending  *PendingSend
	deadline time.Time
}

func newWaiters() *waiters {
	w := &waiters{}
	for i := range w.shards {
		w.shards[i].m = make(map[string]waiter)
	}
	return w
}

func (w *waiters) shard(id string) *waiterShard {
	var h uint32 = 2166136261
	for i := 0; i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	return &w.shards[h%waiterShards]
}

func (w *waiters) add(p *PendingSend, deadline time.Time) {
	sh := w.shard(p.serverMsgID)
	sh.mu.Lock()
	sh.m[p.serverMsgID] = waiter{pending: p, deadline: deadline}
	sh.mu.Unlock()
}

func (w *waiters) take(id string) (waiter, bool) {
	sh := w.shard(id)
	sh.mu.Lock()
	wt, ok := sh.m[id]
	delete(sh.m, id)
	sh.mu.Unlock()
	return wt, ok
}

func (w *waiters) remove(id string) { w.take(id) }

// completeDuplicate hands the result of stored, the message first sent with
// the same client_msg_id, to the send of id, if it is still waiting on this
// pod. Two sends that reuse one client_msg_id for different conversations
// can both pass the check of acceptMsg before either is stored. The later
// one ends here, so it fails as acceptMsg would have failed it.
func (w *waiters) completeDuplicate(id string, stored *imlitev1.Message) {
	wt, ok := w.take(id)
	if !ok {
		return
	}
	if err := checkSameConversation(stored, wt.pending.conversationID); err != nil {
		wt.pending.complete(sendResult{err: err})
		return
	}
	wt.pending.complete(sendResult{resp: sendResponse(stored)})
}

// checkSameConversation fails a retry whose client_msg_id was first used
// for a message in another conversation.
func checkSameConversation(stored *imlitev1.Message, conversationID string) error {
	if stored.GetConversationId() == conversationID {
		return nil
	}
	return apierr.AlreadyExists("client_msg_id %q was already used for message %s in conversation %s, not %s; use a new client_msg_id for a new message",
		stored.GetClientMsgId(), stored.GetServerMsgId(), stored.GetConversationId(), conversationID).
		With("server_msg_id", stored.GetServerMsgId())
}

// complete hands res to the send of id, if it is still waiting on this pod.
func (w *waiters) complete(id string, res sendResult) {
	if wt, ok := w.take(id); ok {
		wt.pending.complete(res)
	}
}

// expire fails the sends whose deadline passed with DeadlineExceeded
// carrying the server_msg_id, so the client can retry with the same
// client_msg_id.
func (w *waiters) expire(now time.Time, timeout time.Duration) {
	for i := range w.shards {
		sh := &w.shards[i]
		var expired []*PendingSend
		sh.mu.Lock()
		for id, wt := range sh.m {
			if now.After(wt.deadline) {
				expired = append(expired, wt.pending)
				delete(sh.m, id)
			}
		}
		sh.mu.Unlock()
		for _, p := range expired {
			p.complete(sendResult{err: apierr.DeadlineExceeded("message %s was accepted but not stored within %v; retry with the same client_msg_id to get its result",
				p.serverMsgID, timeout).With("server_msg_id", p.serverMsgID)})
		}
	}
}

func failureResult(code int32, message string) sendResult {
	return sendResult{err: &apierr.Error{Code: codes.Code(code), Message: message}}
}
