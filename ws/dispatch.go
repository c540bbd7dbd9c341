package ws

import (
	"context"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/reflect/protoreflect"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server/apierr"
)

// request is a decoded client frame waiting to be handled.
type request struct {
	frame *imlitev1.Frame
	enc   Encoding
	// at is when the frame was read; the request's deadline counts from
	// here, so time spent queued behind slow requests counts too.
	at time.Time
}

// queueRequest adds a request for the connection's request goroutine, which
// runs while requests are queued and handles them in arrival order.
func (c *conn) queueRequest(r request) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	if len(c.reqs) >= c.h.opts.MaxQueuedRequests {
		c.mu.Unlock()
		c.sendFrame(errorFrame(r.frame.GetReqId(), int32(codes.ResourceExhausted),
			"more than "+itoa(c.h.opts.MaxQueuedRequests)+" requests waiting on this connection; wait for replies before sending more", nil), r.enc)
		return
	}
	r.at = time.Now()
	c.reqs = append(c.reqs, r)
	start := !c.handling
	c.handling = true
	c.mu.Unlock()
	if start {
		go c.handleRequests()
	}
}

func (c *conn) handleRequests() {
	for {
		c.mu.Lock()
		if len(c.reqs) == 0 || c.closing {
			c.reqs = nil
			c.handling = false
			c.mu.Unlock()
			return
		}
		r := c.reqs[0]
		c.reqs = c.reqs[1:]
		c.mu.Unlock()
		c.handle(r)
	}
}

// handle calls the core for one request and queues the reply. A client may
// send many messages without waiting for each reply.
func (c *conn) handle(r request) {
	id := r.frame.GetReqId()
	reply := func(f *imlitev1.Frame, err error) {
		if err != nil {
			e := apierr.From(err)
			f = errorFrame(id, int32(e.Code), e.Message, e.Metadata)
		}
		f.ReqId = id
		c.sendFrame(f, r.enc)
	}

	// A send is bounded by the send timeout from its arrival, as a gRPC
	// client's deadline would bound it, and other requests by
	// requestTimeout. When a backend is slow, requests queued behind a
	// slow one then fail at once with a clear error instead of each
	// waiting its full timeout in turn.
	limit := requestTimeout
	if _, ok := r.frame.GetBody().(*imlitev1.Frame_SendMsg); ok {
		limit = c.h.svc.SendTimeout()
	}
	deadline := r.at.Add(limit)
	if waited := time.Since(r.at); !time.Now().Before(deadline) {
		c.sendFrame(errorFrame(id, int32(codes.DeadlineExceeded),
			"request waited "+waited.Round(time.Millisecond).String()+" behind earlier requests on this connection, past its "+limit.String()+
				" limit; the server or a backend is slow, retry later", nil), r.enc)
		return
	}
	ctx, cancel := context.WithDeadline(c.requestContext(), deadline)

	// Sends are pipelined: the message is published here, in order, and
	// the wait for its seq runs aside.
	if b, ok := r.frame.GetBody().(*imlitev1.Frame_SendMsg); ok {
		pending, err := c.h.svc.AcceptMsg(ctx, b.SendMsg)
		if err != nil {
			cancel()
			reply(nil, err)
			return
		}
		pending.OnDone(func(resp *imlitev1.SendMsgResponse, err error) {
			cancel()
			reply(&imlitev1.Frame{Body: &imlitev1.Frame_SendMsgResp{SendMsgResp: resp}}, err)
		})
		return
	}

	defer cancel()
	switch b := r.frame.GetBody().(type) {
	case *imlitev1.Frame_PullMsg:
		resp, err := c.h.svc.PullMsg(ctx, b.PullMsg)
		reply(&imlitev1.Frame{Body: &imlitev1.Frame_PullMsgResp{PullMsgResp: resp}}, err)
	case *imlitev1.Frame_PullMsgBySeqs:
		resp, err := c.h.svc.PullMsgBySeqs(ctx, b.PullMsgBySeqs)
		reply(&imlitev1.Frame{Body: &imlitev1.Frame_PullMsgBySeqsResp{PullMsgBySeqsResp: resp}}, err)
	case *imlitev1.Frame_ListConversations:
		resp, err := c.h.svc.ListConversations(ctx, b.ListConversations)
		reply(&imlitev1.Frame{Body: &imlitev1.Frame_ListConversationsResp{ListConversationsResp: resp}}, err)
	case *imlitev1.Frame_MarkRead:
		resp, err := c.h.svc.MarkRead(ctx, b.MarkRead)
		reply(&imlitev1.Frame{Body: &imlitev1.Frame_MarkReadResp{MarkReadResp: resp}}, err)
	case *imlitev1.Frame_ClearHistory:
		resp, err := c.h.svc.ClearHistory(ctx, b.ClearHistory)
		reply(&imlitev1.Frame{Body: &imlitev1.Frame_ClearHistoryResp{ClearHistoryResp: resp}}, err)
	case *imlitev1.Frame_HideConversation:
		resp, err := c.h.svc.HideConversation(ctx, b.HideConversation)
		reply(&imlitev1.Frame{Body: &imlitev1.Frame_HideConversationResp{HideConversationResp: resp}}, err)
	case *imlitev1.Frame_UpdateConversation:
		resp, err := c.h.svc.UpdateConversation(ctx, b.UpdateConversation)
		reply(&imlitev1.Frame{Body: &imlitev1.Frame_UpdateConversationResp{UpdateConversationResp: resp}}, err)
	case *imlitev1.Frame_GetOnlineStatus:
		resp, err := c.h.svc.GetOnlineStatus(ctx, b.GetOnlineStatus)
		reply(&imlitev1.Frame{Body: &imlitev1.Frame_GetOnlineStatusResp{GetOnlineStatusResp: resp}}, err)
	case *imlitev1.Frame_CreateGroup:
		resp, err := c.h.svc.CreateGroup(ctx, b.CreateGroup)
		reply(&imlitev1.Frame{Body: &imlitev1.Frame_CreateGroupResp{CreateGroupResp: resp}}, err)
	case *imlitev1.Frame_GetGroup:
		resp, err := c.h.svc.GetGroup(ctx, b.GetGroup)
		reply(&imlitev1.Frame{Body: &imlitev1.Frame_GetGroupResp{GetGroupResp: resp}}, err)
	case *imlitev1.Frame_AddGroupMembers:
		resp, err := c.h.svc.AddGroupMembers(ctx, b.AddGroupMembers)
		reply(&imlitev1.Frame{Body: &imlitev1.Frame_AddGroupMembersResp{AddGroupMembersResp: resp}}, err)
	case *imlitev1.Frame_RemoveGroupMembers:
		resp, err := c.h.svc.RemoveGroupMembers(ctx, b.RemoveGroupMembers)
		reply(&imlitev1.Frame{Body: &imlitev1.Frame_RemoveGroupMembersResp{RemoveGroupMembersResp: resp}}, err)
	case *imlitev1.Frame_ListGroupMembers:
		resp, err := c.h.svc.ListGroupMembers(ctx, b.ListGroupMembers)
		reply(&imlitev1.Frame{Body: &imlitev1.Frame_ListGroupMembersResp{ListGroupMembersResp: resp}}, err)
	case *imlitev1.Frame_Ping:
		reply(&imlitev1.Frame{Body: &imlitev1.Frame_Pong{Pong: &imlitev1.Pong{ClientTime: b.Ping.GetClientTime(), ServerTime: time.Now().UnixMilli()}}}, nil)
	default:
		// isRequestBody let through a body this switch does not know.
		reply(nil, apierr.Internal("dispatch frame", nil))
	}
}

// requestBodies are the Frame fields a client may send.
var requestBodies = map[protoreflect.Name]bool{
	"send_msg": true, "pull_msg": true, "pull_msg_by_seqs": true, "list_conversations": true,
	"mark_read": true, "clear_history": true, "hide_conversation": true, "update_conversation": true,
	"get_online_status": true, "create_group": true, "get_group": true, "add_group_members": true,
	"remove_group_members": true, "list_group_members": true, "ping": true,
}

func isRequestBody(f *imlitev1.Frame) bool { return requestBodies[protoreflect.Name(bodyName(f))] }

// bodyName returns the field name of the frame's body, such as "send_msg".
func bodyName(f *imlitev1.Frame) string {
	m := f.ProtoReflect()
	od := m.Descriptor().Oneofs().ByName("body")
	fd := m.WhichOneof(od)
	if fd == nil {
		return ""
	}
	return string(fd.Name())
}

// reqIDOf returns the frame's req_id, made safe to echo.
func reqIDOf(f *imlitev1.Frame) string {
	if f == nil {
		return ""
	}
	id := strings.ToValidUTF8(f.GetReqId(), "\uFFFD")
	if len(id) > maxReqIDLen {
		id = id[:maxReqIDLen]
	}
	return strings.ToValidUTF8(id, "")
}

func errorFrame(reqID string, code int32, message string, metadata map[string]string) *imlitev1.Frame {
	return &imlitev1.Frame{ReqId: reqID, Body: &imlitev1.Frame_Error{Error: &imlitev1.Error{Code: code, Message: message, Metadata: metadata}}}
}

func itoa(n int) string { return strconv.Itoa(n) }

// requestTimeout bounds one request so a stuck backend cannot hold a
// connection's request goroutine forever.
const requestTimeout = 30 * time.Second
