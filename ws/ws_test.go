package ws_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc/codes"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/ws"
)

func TestChatBothWaysAndDevices(t *testing.T) {
	e := startEnv(t, "")
	alicePhone := e.dial("alice", "ios")
	aliceWeb := e.dialWith(e.token("alice", "web", false), ws.Text)
	bob := e.dial("bob", "android")

	// 1. alice -> bob reaches bob and alice's other device, not the sender.
	sent := alicePhone.SendText("bob", "", "a1", "hi bob")
	if sent.GetSeq() != 1 || sent.GetConversationId() != "s:alice:bob" {
		t.Fatalf("send response = %v, want seq 1 in s:alice:bob", sent)
	}
	got := bob.WaitPush("push of a1 to bob", func(m *imlitev1.Message) bool { return m.GetClientMsgId() == "a1" })
	if got.GetContent() != "hi bob" || got.GetSenderId() != "alice" || got.GetSeq() != 1 {
		t.Errorf("bob got %v", got)
	}
	aliceWeb.WaitPush("push of a1 to alice's web device (JSON)", func(m *imlitev1.Message) bool { return m.GetClientMsgId() == "a1" })

	// 2. bob -> alice reaches both of alice's devices.
	bob.SendText("alice", "", "b1", "hi alice 👋")
	for name, c := range map[string]*client{"phone": alicePhone, "web": aliceWeb} {
		m := c.WaitPush("push of b1 to alice's "+name, func(m *imlitev1.Message) bool { return m.GetClientMsgId() == "b1" })
		if m.GetSeq() != 2 || m.GetContent() != "hi alice 👋" {
			t.Errorf("alice's %s got %v, want seq 2", name, m)
		}
	}
	time.Sleep(100 * time.Millisecond)
	for _, m := range alicePhone.Pushes() {
		if m.GetClientMsgId() == "a1" {
			t.Error("the sending connection got a push of its own message")
		}
	}
}

func TestGroupOfThree(t *testing.T) {
	e := startEnv(t, "")
	alice, bob, carol := e.dial("alice", "web"), e.dial("bob", "web"), e.dial("carol", "web")
	created := alice.Call(&imlitev1.Frame{Body: &imlitev1.Frame_CreateGroup{CreateGroup: &imlitev1.CreateGroupRequest{GroupId: "trio", MemberIds: []string{"bob", "carol"}}}})
	if created.GetCreateGroupResp().GetGroup().GetMemberCount() != 3 {
		t.Fatalf("group = %v, want 3 members", created.GetCreateGroupResp())
	}
	for i, c := range []*client{alice, bob, carol} {
		c.SendText("", "trio", fmt.Sprintf("m%d", i), fmt.Sprintf("from %d", i))
	}
	for name, c := range map[string]*client{"alice": alice, "bob": bob, "carol": carol} {
		var seqs []int64
		for _, m := range c.WaitPushes(2, 5*time.Second) {
			seqs = append(seqs, m.GetSeq())
		}
		if !slices.IsSorted(seqs) || len(seqs) != 2 {
			t.Errorf("%s got seqs %v, want two in ascending order", name, seqs)
		}
	}
}

func TestOfflineUserCatchesUp(t *testing.T) {
	e := startEnv(t, "")
	alice := e.dial("alice", "web")
	for i := 1; i <= 3; i++ {
		alice.SendText("bob", "", fmt.Sprintf("o%d", i), fmt.Sprintf("msg %d", i))
	}

	bob := e.dial("bob", "web")
	list := bob.Call(&imlitev1.Frame{Body: &imlitev1.Frame_ListConversations{ListConversations: &imlitev1.ListConversationsRequest{}}}).GetListConversationsResp()
	if len(list.GetConversations()) != 1 || list.GetConversations()[0].GetUnreadCount() != 3 {
		t.Fatalf("bob's conversations = %v, want one with 3 unread", list)
	}
	conv := list.GetConversations()[0]
	pulled := bob.Call(&imlitev1.Frame{Body: &imlitev1.Frame_PullMsg{PullMsg: &imlitev1.PullMsgRequest{ConversationId: conv.GetConversationId(), BeginSeq: conv.GetReadSeq() + 1}}}).GetPullMsgResp()
	var contents []string
	for _, m := range pulled.GetMessages() {
		contents = append(contents, m.GetContent())
	}
	if want := []string{"msg 1", "msg 2", "msg 3"}; !slices.Equal(contents, want) {
		t.Errorf("pulled %q, want %q", contents, want)
	}
	read := bob.Call(&imlitev1.Frame{Body: &imlitev1.Frame_MarkRead{MarkRead: &imlitev1.MarkReadRequest{ConversationId: conv.GetConversationId()}}}).GetMarkReadResp()
	if read.GetReadSeq() != 3 || read.GetUnreadCount() != 0 {
		t.Errorf("mark read = %v, want read 3, unread 0", read)
	}
}

func TestKickThroughRESTClosesSocket(t *testing.T) {
	e := startEnv(t, "")
	token := e.token("alice", "web", false)
	alice := e.dialWith(token, ws.Binary)
	other := e.dial("alice", "ios")

	body := strings.NewReader(`{"platforms":["web"],"reason":"account locked"}`)
	req, _ := http.NewRequest(http.MethodPost, "http://"+e.app.HTTPAddr()+"/v1/users/alice:kick", body)
	req.Header.Set("Authorization", "Bearer "+e.token("ops", "web", true))
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("kick: HTTP %d", resp.StatusCode)
	}

	code, reason := alice.WaitClosed(time.Second)
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("socket closed %v after the kick, want within 1s", elapsed)
	}
	if code != ws.CloseKicked || reason != "account locked" {
		t.Errorf("close = %d %q, want %d %q", code, reason, ws.CloseKicked, "account locked")
	}
	notice := alice.Wait(time.Second, "kick notice", func(f *imlitev1.Frame) bool { return f.GetKick() != nil })
	if notice.GetKick().GetReason() != "account locked" {
		t.Errorf("kick notice = %v", notice.GetKick())
	}

	// The old token cannot reconnect; the ios connection was not kicked.
	_, httpResp, err := e.tryDial(token, ws.Binary)
	if err == nil || httpResp == nil || httpResp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("reconnect with the kicked token: err %v, response %v; want HTTP 401", err, httpResp)
	}
	var apiErr struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	data, _ := io.ReadAll(httpResp.Body)
	if err := json.Unmarshal(data, &apiErr); err != nil || !strings.Contains(apiErr.Message, "revoked") {
		t.Errorf("401 body = %q, want JSON naming the revocation", data)
	}
	other.SendText("bob", "", "still-here", "ios is still connected")
}

func TestReplacementClosesOldConnection(t *testing.T) {
	e := startEnv(t, "")
	first := e.dial("alice", "web")
	first.SendText("bob", "", "x", "ping")
	second := e.dial("alice", "web")

	code, _ := first.WaitClosed(2 * time.Second)
	if code != ws.CloseReplaced {
		t.Errorf("old connection closed with %d, want %d", code, ws.CloseReplaced)
	}
	first.Wait(time.Second, "kick notice on the old connection", func(f *imlitev1.Frame) bool { return f.GetKick() != nil })
	// The new one keeps working.
	second.SendText("bob", "", "y", "still here")
}

func TestSlowConsumerIsDisconnected(t *testing.T) {
	e := startEnv(t, "SendQueue: 64")
	sender := e.dial("sender", "web")
	fast := e.dial("fast", "web")
	// The slow client completes the handshake and then never reads.
	h := http.Header{}
	h.Set("Authorization", "Bearer "+e.token("slow", "web", false))
	slow, _, err := websocket.DefaultDialer.Dial(e.url()+"?encoding=proto", h)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	sender.Call(&imlitev1.Frame{Body: &imlitev1.Frame_CreateGroup{CreateGroup: &imlitev1.CreateGroupRequest{GroupId: "room", MemberIds: []string{"fast", "slow"}}}})

	// Large messages fill the slow client's socket buffers, then its queue.
	content := strings.Repeat("x", 60<<10)
	var wg sync.WaitGroup
	const n = 400
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := &imlitev1.SendMsgRequest{ClientMsgId: fmt.Sprintf("big-%d", i), GroupId: "room", Content: content}
			sender.Send(&imlitev1.Frame{Body: &imlitev1.Frame_SendMsg{SendMsg: req}})
		}()
		if i%50 == 49 {
			wg.Wait()
		}
	}
	wg.Wait()
	fast.WaitPushes(n, 30*time.Second)

	deadline := time.Now().Add(10 * time.Second)
	for e.app.Hub().Count() > 2 {
		if time.Now().After(deadline) {
			t.Fatalf("slow client still connected: %d connections", e.app.Hub().Count())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestBadFrames(t *testing.T) {
	e := startEnv(t, "MaxFrameBytes: 70000\nMaxBadFrames: 4")
	token := e.token("alice", "web", false)

	// 1. Undecodable frames get error frames; too many close the connection.
	{
		c := e.dialWith(token, ws.Binary)
		cases := []struct {
			name    string
			msgType int
			data    []byte
			want    string
		}{
			{"invalid protobuf", websocket.BinaryMessage, []byte{0xff, 0xff, 0xff}, "invalid protobuf"},
			{"invalid JSON", websocket.TextMessage, []byte(`{"req_id": "j1", "send_msg": `), "invalid JSON"},
			{"unknown JSON field", websocket.TextMessage, []byte(`{"req_id": "j2", "shout": {}}`), "shout"},
		}
		for _, tc := range cases {
			if err := c.WriteRaw(tc.msgType, tc.data); err != nil {
				t.Fatal(err)
			}
			f := c.Wait(2*time.Second, "error frame for "+tc.name, func(f *imlitev1.Frame) bool {
				return f.GetError() != nil && strings.Contains(f.GetError().GetMessage(), tc.want)
			})
			if f.GetError().GetCode() != int32(codes.InvalidArgument) {
				t.Errorf("%s: code %d, want InvalidArgument", tc.name, f.GetError().GetCode())
			}
		}
		id := c.Send(&imlitev1.Frame{Body: &imlitev1.Frame_Push{Push: &imlitev1.PushMsg{}}})
		f := c.Reply(id)
		if f.GetError() == nil || !strings.Contains(f.GetError().GetMessage(), "push") {
			t.Errorf("server-only body: got %v, want an error naming push", f)
		}
		// Still usable: a good request works.
		c.SendText("bob", "", "ok-1", "fine")
		// A fifth bad frame passes the limit of 4 per minute.
		_ = c.WriteRaw(websocket.BinaryMessage, []byte{0xff})
		code, reason := c.WaitClosed(2 * time.Second)
		if code != ws.ClosePolicyViolation || !strings.Contains(reason, "malformed") {
			t.Errorf("close = %d %q, want %d for repeated garbage", code, reason, ws.ClosePolicyViolation)
		}
	}

	// 2. A frame over MaxFrameBytes closes with 1009.
	{
		c := e.dialWith(e.token("bob", "web", false), ws.Binary)
		if err := c.WriteRaw(websocket.BinaryMessage, bytes.Repeat([]byte{1}, 70001)); err != nil {
			t.Fatal(err)
		}
		code, reason := c.WaitClosed(2 * time.Second)
		if code != ws.CloseMessageTooBig || !strings.Contains(reason, "70000") {
			t.Errorf("close = %d %q, want 1009 naming the limit", code, reason)
		}
	}

	// 3. Content over the limit in a frame under it gets an error frame.
	{
		c := e.dialWith(e.token("carol", "web", false), ws.Text)
		id := c.Send(&imlitev1.Frame{Body: &imlitev1.Frame_SendMsg{SendMsg: &imlitev1.SendMsgRequest{ClientMsgId: "big", RecvId: "bob", Content: strings.Repeat("é", 33000)}}})
		f := c.Reply(id)
		if f.GetError().GetCode() != int32(codes.InvalidArgument) || !strings.Contains(f.GetError().GetMessage(), "content") {
			t.Errorf("oversized content: %v, want InvalidArgument naming content", f)
		}
	}
}

func TestUpgradeRefusals(t *testing.T) {
	e := startEnv(t, "AllowedOrigins: [\"https://chat.example\"]")
	base := "http://" + e.app.WebsocketAddr()
	expired, _, err := e.signer.Issue("alice", "web", imlitev1.Role_ROLE_USER, time.Nanosecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Millisecond)
	cases := []struct {
		name   string
		path   string
		header map[string]string
		status int
		want   string
	}{
		{"no token", "/ws", nil, 401, "Bearer"},
		{"garbage token", "/ws?token=abc", nil, 401, "malformed"},
		{"expired token", "/ws?token=" + expired, nil, 401, "expired"},
		{"bad origin", "/ws?token=" + e.token("alice", "web", false), map[string]string{"Origin": "https://evil.example"}, 403, "evil.example"},
		{"bad encoding", "/ws?encoding=xml&token=" + e.token("alice", "web", false), nil, 400, "xml"},
		{"unknown path", "/chat", nil, 404, "/ws"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tc.header {
				h.Set(k, v)
			}
			_, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http")+tc.path, h)
			if err == nil {
				t.Fatal("dial succeeded, want a refusal")
			}
			if resp == nil || resp.StatusCode != tc.status {
				t.Fatalf("response = %v, want HTTP %d", resp, tc.status)
			}
			data, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(data), tc.want) || !json.Valid(data) {
				t.Errorf("body %q, want JSON containing %q", data, tc.want)
			}
		})
	}
	// The original server's path / still accepts clients.
	h := http.Header{}
	h.Set("Authorization", "Bearer "+e.token("alice", "web", false))
	c, _, err := websocket.DefaultDialer.Dial("ws://"+e.app.WebsocketAddr()+"/", h)
	if err != nil {
		t.Fatalf("dial /: %v", err)
	}
	c.Close()
}

func TestMaxConnNumExactUnderBurst(t *testing.T) {
	const limit = 50
	e := startEnv(t, fmt.Sprintf("MaxConnNum: %d", limit))
	var ok, refused, other atomic.Int64
	var wg sync.WaitGroup
	conns := make(chan *websocket.Conn, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := http.Header{}
			h.Set("Authorization", "Bearer "+e.token(fmt.Sprintf("u%d", i), "web", false))
			c, resp, err := websocket.DefaultDialer.Dial(e.url(), h)
			switch {
			case err == nil:
				ok.Add(1)
				conns <- c
			case resp != nil && resp.StatusCode == http.StatusServiceUnavailable:
				refused.Add(1)
			default:
				other.Add(1)
				t.Errorf("dial %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	close(conns)
	if ok.Load() != limit || refused.Load() != 200-limit {
		t.Errorf("accepted %d, refused %d; want exactly %d accepted and %d refused", ok.Load(), refused.Load(), limit, 200-limit)
	}
	if n := e.app.Hub().Count(); n != limit {
		t.Errorf("hub holds %d connections, want %d", n, limit)
	}
	for c := range conns {
		c.Close()
	}
	// Closed connections free their slots.
	deadline := time.Now().Add(5 * time.Second)
	for e.app.Hub().Count() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	e.dial("late", "web").SendText("x", "", "after", "slots are free again")
}

func TestPingsAndTransientMessages(t *testing.T) {
	e := startEnv(t, "PingInterval: 100ms\nPongTimeout: 1s")
	alice, bob := e.dial("alice", "web"), e.dial("bob", "web")

	// The application-level ping is answered with a pong.
	pong := alice.Call(&imlitev1.Frame{Body: &imlitev1.Frame_Ping{Ping: &imlitev1.Ping{ClientTime: 42}}}).GetPong()
	if pong.GetClientTime() != 42 || pong.GetServerTime() == 0 {
		t.Errorf("pong = %v, want client_time 42 and a server time", pong)
	}

	// Websocket pings arrive, and answering them keeps the connection
	// alive past PongTimeout.
	time.Sleep(1500 * time.Millisecond)
	if alice.Pings.Load() == 0 {
		t.Error("no websocket ping arrived within 1.5s at PingInterval 100ms")
	}

	// A transient message reaches online members and gets no seq.
	storage := false
	id := alice.Send(&imlitev1.Frame{Body: &imlitev1.Frame_SendMsg{SendMsg: &imlitev1.SendMsgRequest{ClientMsgId: "typing", RecvId: "bob", Content: "typing…", Options: &imlitev1.MsgOptions{Storage: &storage}}}})
	if r := alice.Reply(id).GetSendMsgResp(); r.GetSeq() != 0 {
		t.Errorf("transient seq = %d, want 0", r.GetSeq())
	}
	bob.WaitPush("transient push", func(m *imlitev1.Message) bool { return m.GetClientMsgId() == "typing" && m.GetSeq() == 0 })
}

func TestHeartbeatTimeoutCloses(t *testing.T) {
	e := startEnv(t, "PingInterval: 100ms\nPongTimeout: 300ms")
	c := e.dial("alice", "web")
	// The client ignores pings, so the server hears nothing.
	c.IgnorePings.Store(true)
	code, _ := c.WaitClosed(3 * time.Second)
	if code != ws.CloseHeartbeatTimeout {
		t.Errorf("close code = %d, want %d", code, ws.CloseHeartbeatTimeout)
	}
}
