package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc/codes"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
	"github.com/imlite/imlite/server/apierr"
	"github.com/imlite/imlite/server/app"
	"github.com/imlite/imlite/server/auth"
	"github.com/imlite/imlite/ws"
)

const chatHelp = `Commands:
  /to USER              chat with USER (a single chat)
  /group GROUP          chat in GROUP
  TEXT                  send TEXT to the current chat
  /history [N]          show the last N messages of the current chat (default 20)
  /list                 list conversations with unread counts
  /read                 mark the current chat read
  /create GROUP USER... create GROUP with the users and switch to it
  /online USER...       show which platforms the users are connected from
  /help                 show this help
  /quit                 leave
`

// chat connects to the websocket endpoint as a user and runs an interactive
// session on in and out.
func chat(args []string, in io.Reader, out, stderr io.Writer) error {
	fs := flag.NewFlagSet("imlite chat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "configuration `file` of the server, to mint a token with its secret when --token is empty")
	user := fs.String("user", "", "user `id` to chat as; required unless --token names the user")
	platform := fs.String("platform", "desktop", "`platform` of the connection, when a token is minted")
	token := fs.String("token", "", "access `token`, which decides the user and platform; empty mints one from the server's secret (embedded mode on this machine)")
	addr := fs.String("url", "ws://127.0.0.1:31000/ws", "websocket `URL` of the server")
	to := fs.String("to", "", "start chatting with this `user`")
	group := fs.String("group", "", "start chatting in this `group`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	for _, id := range []struct{ flag, value string }{{"--to", *to}, {"--group", *group}} {
		if id.value == "" {
			continue
		}
		if err := server.ValidateID(id.flag, id.value); err != nil {
			return usageError(err)
		}
	}
	if *token != "" {
		// The server acts on the token's user and platform, so those are
		// the ones to show, and a --user that differs is a mistake.
		tokenUser, tokenPlatform, err := auth.Subject(*token)
		if err != nil {
			return fmt.Errorf("%w: --token: %v", errUsage, err)
		}
		if *user != "" && *user != tokenUser {
			return fmt.Errorf("%w: --user %s does not match the token, which is for %s; drop --user or pass a token of %s", errUsage, *user, tokenUser, *user)
		}
		*user, *platform = tokenUser, tokenPlatform
	} else {
		if err := server.ValidateID("--user", *user); err != nil {
			return usageError(err)
		}
		t, err := mintChatToken(*file, *user, *platform)
		if err != nil {
			return fmt.Errorf("mint a token (pass --token to use your own): %w", err)
		}
		*token = t
	}

	s, err := dialChat(*addr, *token, out)
	if err != nil {
		return err
	}
	defer s.close()
	s.printf("connected as %s (%s) to %s; type /help for commands\n", *user, *platform, *addr)
	switch {
	case *to != "":
		s.command("/to " + *to)
	case *group != "":
		s.command("/group " + *group)
	}

	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				s.drain()
				return nil
			}
			if !s.command(line) {
				return nil
			}
		case <-s.done:
			return s.endErr()
		}
	}
}

func mintChatToken(file, user, platform string) (string, error) {
	cfg, err := loadConfig(file)
	if err != nil {
		return "", err
	}
	secret, err := app.ReadSecret(cfg)
	if err != nil {
		return "", err
	}
	signer, err := auth.NewSigner(secret, time.Duration(cfg.Auth.AccessExpire)*time.Second)
	if err != nil {
		return "", err
	}
	tok, _, err := signer.Issue(user, platform, imlitev1.Role_ROLE_USER, 0)
	return tok, err
}

// chatSession is one connection with the state of the prompt.
type chatSession struct {
	conn *websocket.Conn
	out  io.Writer

	outMu   sync.Mutex
	writeMu sync.Mutex
	nextID  atomic.Int64

	mu      sync.Mutex
	pending map[string]chan *imlitev1.Frame
	target  target

	done   chan struct{}
	ended  error
	closed atomic.Bool
}

// target is the current chat: a user or a group.
type target struct {
	user, group string
}

func dialChat(addr, token string, out io.Writer) (*chatSession, error) {
	u, err := url.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: --url %q: %v", errUsage, addr, err)
	}
	q := u.Query()
	q.Set("encoding", "proto")
	u.RawQuery = q.Encode()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	conn, resp, err := websocket.DefaultDialer.Dial(u.String(), h)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			return nil, fmt.Errorf("connect to %s: HTTP %d: %s", addr, resp.StatusCode, strings.TrimSpace(string(body)))
		}
		return nil, fmt.Errorf("connect to %s: %w (is the server running?)", addr, err)
	}
	s := &chatSession{conn: conn, out: out, pending: make(map[string]chan *imlitev1.Frame), done: make(chan struct{})}
	go s.readLoop()
	return s, nil
}

func (s *chatSession) printf(format string, args ...any) {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	fmt.Fprintf(s.out, format, args...)
}

func (s *chatSession) readLoop() {
	defer close(s.done)
	for {
		mt, data, err := s.conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				s.ended = fmt.Errorf("server closed the connection: %d %s", ce.Code, ce.Text)
			} else if !s.closed.Load() {
				s.ended = fmt.Errorf("connection lost: %w", err)
			}
			return
		}
		enc := ws.Binary
		if mt == websocket.TextMessage {
			enc = ws.Text
		}
		f, err := ws.DecodeFrame(enc, data)
		if f == nil {
			s.printf("! cannot decode a frame from the server: %v\n", err)
			continue
		}
		s.onFrame(f)
	}
}

func (s *chatSession) onFrame(f *imlitev1.Frame) {
	if id := f.GetReqId(); id != "" {
		s.mu.Lock()
		ch := s.pending[id]
		delete(s.pending, id)
		s.mu.Unlock()
		if ch != nil {
			ch <- f
			return
		}
	}
	switch {
	case f.GetPush() != nil:
		s.printMessage(f.GetPush().GetMsg())
	case f.GetKick() != nil:
		s.printf("* disconnected by the server: %s\n", f.GetKick().GetReason())
	case f.GetError() != nil:
		s.printf("! server error %d: %s\n", f.GetError().GetCode(), f.GetError().GetMessage())
	}
}

func (s *chatSession) printMessage(m *imlitev1.Message) {
	when := time.UnixMilli(m.GetServerTime()).Format("15:04:05")
	where := m.GetConversationId()
	if m.GetGroupId() != "" {
		where = "#" + m.GetGroupId()
	}
	seq := "~"
	if m.GetSeq() > 0 {
		seq = strconv.FormatInt(m.GetSeq(), 10)
	}
	s.printf("[%s %s seq %s] %s: %s\n", when, where, seq, m.GetSenderId(), m.GetContent())
}

// call sends a request and waits for its reply.
func (s *chatSession) call(f *imlitev1.Frame) (*imlitev1.Frame, error) {
	f.ReqId = "c" + strconv.FormatInt(s.nextID.Add(1), 10)
	ch := make(chan *imlitev1.Frame, 1)
	s.mu.Lock()
	s.pending[f.ReqId] = ch
	s.mu.Unlock()
	data, err := ws.EncodeFrame(ws.Binary, f)
	if err != nil {
		return nil, err
	}
	s.writeMu.Lock()
	err = s.conn.WriteMessage(websocket.BinaryMessage, data)
	s.writeMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	select {
	case r := <-ch:
		if e := r.GetError(); e != nil {
			return nil, &replyError{code: codes.Code(e.GetCode()), msg: e.GetMessage()}
		}
		return r, nil
	case <-s.done:
		return nil, fmt.Errorf("%w: %w", errNoReply, s.endErr())
	case <-time.After(15 * time.Second):
		return nil, fmt.Errorf("%w within 15s", errNoReply)
	}
}

// errNoReply marks a request whose outcome is unknown, because the
// connection ended or no reply arrived in time.
var errNoReply = errors.New("no reply")

// replyError is the error body of the server's reply to a request.
type replyError struct {
	code codes.Code
	msg  string
}

func (e *replyError) Error() string { return fmt.Sprintf("%s (code %d %s)", e.msg, e.code, e.code) }

// outcomeUnknown reports whether a failed send may still have been stored.
// That is so when the server stopped waiting for the store, when a queue
// publish timed out (Kafka may still write such a record), or when no
// reply arrived.
func outcomeUnknown(err error) bool {
	var re *replyError
	if errors.As(err, &re) {
		return re.code == codes.DeadlineExceeded || re.code == codes.Unavailable
	}
	return errors.Is(err, errNoReply)
}

func (s *chatSession) endErr() error {
	if s.ended != nil {
		return s.ended
	}
	return errors.New("connection closed")
}

// command runs one input line; it returns false to leave.
func (s *chatSession) command(line string) bool {
	line = strings.TrimSpace(line)
	if line == "" {
		return true
	}
	if !strings.HasPrefix(line, "/") {
		s.sendText(line)
		return true
	}
	fields := strings.Fields(line)
	var err error
	switch fields[0] {
	case "/quit", "/exit":
		return false
	case "/help":
		s.printf("%s", chatHelp)
	case "/to":
		err = s.setTarget(fields, target{})
	case "/group":
		err = s.setTarget(fields, target{group: "set"})
	case "/history":
		err = s.history(fields)
	case "/list":
		err = s.list()
	case "/read":
		err = s.markRead()
	case "/create":
		err = s.createGroup(fields)
	case "/online":
		err = s.online(fields[1:])
	default:
		err = fmt.Errorf("unknown command %s; type /help", fields[0])
	}
	if err != nil {
		s.printf("! %v\n", err)
	}
	return true
}

func (s *chatSession) setTarget(fields []string, kind target) error {
	switch {
	case len(fields) < 2:
		return fmt.Errorf("usage: %s NAME", fields[0])
	case len(fields) > 2:
		return fmt.Errorf("%s takes one id, got %q; ids contain no spaces", fields[0], strings.Join(fields[1:], " "))
	}
	if err := server.ValidateID(fields[0][1:], fields[1]); err != nil {
		return errors.New(apierr.From(err).Message)
	}
	if kind.group != "" {
		// Fail now rather than at the first send when the group is
		// missing or the user is not a member.
		req := &imlitev1.ListGroupMembersRequest{GroupId: fields[1], PageSize: 1}
		if _, err := s.call(&imlitev1.Frame{Body: &imlitev1.Frame_ListGroupMembers{ListGroupMembers: req}}); err != nil {
			return fmt.Errorf("cannot chat in group %s: %w", fields[1], err)
		}
	}
	s.mu.Lock()
	if kind.group != "" {
		s.target = target{group: fields[1]}
	} else {
		s.target = target{user: fields[1]}
	}
	s.mu.Unlock()
	s.printf("* now chatting %s %s\n", map[bool]string{true: "in group", false: "with"}[kind.group != ""], fields[1])
	return nil
}

func (s *chatSession) current() (target, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.target == (target{}) {
		return target{}, errors.New("no chat selected; use /to USER or /group GROUP first")
	}
	return s.target, nil
}

func (s *chatSession) sendText(text string) {
	t, err := s.current()
	if err != nil {
		s.printf("! %v\n", err)
		return
	}
	req := &imlitev1.SendMsgRequest{
		ClientMsgId: "chat-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		RecvId:      t.user, GroupId: t.group, ContentType: 1, Content: text,
		ClientTime: time.Now().UnixMilli(),
	}
	r, err := s.call(&imlitev1.Frame{Body: &imlitev1.Frame_SendMsg{SendMsg: req}})
	switch {
	case err != nil && outcomeUnknown(err):
		s.printf("! not confirmed: %v; it may still be stored, and /history shows it if it was\n", err)
		return
	case err != nil:
		s.printf("! not sent: %v\n", err)
		return
	}
	s.printf("  (sent, seq %d)\n", r.GetSendMsgResp().GetSeq())
}

func (s *chatSession) history(fields []string) error {
	t, err := s.current()
	if err != nil {
		return err
	}
	n := 20
	if len(fields) > 1 {
		if n, err = strconv.Atoi(fields[1]); err != nil || n < 1 || n > 500 {
			return errors.New("usage: /history [N], N from 1 to 500")
		}
	}
	conv, err := s.conversationOf(t)
	if err != nil {
		return err
	}
	r, err := s.call(&imlitev1.Frame{Body: &imlitev1.Frame_PullMsg{PullMsg: &imlitev1.PullMsgRequest{ConversationId: conv, Limit: int32(n)}}})
	if err != nil {
		return err
	}
	msgs := r.GetPullMsgResp().GetMessages()
	if len(msgs) == 0 {
		s.printf("* no messages\n")
	}
	for _, m := range msgs {
		s.printMessage(m)
	}
	return nil
}

// conversationOf finds the conversation id of a target from the list, which
// spares the client from knowing its own user id.
func (s *chatSession) conversationOf(t target) (string, error) {
	if t.group != "" {
		return server.GroupConversationID(t.group), nil
	}
	r, err := s.call(&imlitev1.Frame{Body: &imlitev1.Frame_ListConversations{ListConversations: &imlitev1.ListConversationsRequest{IncludeHidden: true}}})
	if err != nil {
		return "", err
	}
	for _, c := range r.GetListConversationsResp().GetConversations() {
		if c.GetPeerId() == t.user {
			return c.GetConversationId(), nil
		}
	}
	return "", fmt.Errorf("no conversation with %s yet", t.user)
}

func (s *chatSession) list() error {
	r, err := s.call(&imlitev1.Frame{Body: &imlitev1.Frame_ListConversations{ListConversations: &imlitev1.ListConversationsRequest{}}})
	if err != nil {
		return err
	}
	convs := r.GetListConversationsResp().GetConversations()
	if len(convs) == 0 {
		s.printf("* no conversations\n")
	}
	for _, c := range convs {
		name := c.GetPeerId()
		if c.GetGroupId() != "" {
			name = "#" + c.GetGroupId()
		}
		latest := ""
		if m := c.GetLatestMsg(); m != nil {
			latest = m.GetSenderId() + ": " + m.GetContent()
		}
		s.printf("  %-20s unread %-4d max seq %-6d %s\n", name, c.GetUnreadCount(), c.GetMaxSeq(), latest)
	}
	return nil
}

func (s *chatSession) markRead() error {
	t, err := s.current()
	if err != nil {
		return err
	}
	conv, err := s.conversationOf(t)
	if err != nil {
		return err
	}
	r, err := s.call(&imlitev1.Frame{Body: &imlitev1.Frame_MarkRead{MarkRead: &imlitev1.MarkReadRequest{ConversationId: conv}}})
	if err != nil {
		return err
	}
	s.printf("* read up to seq %d\n", r.GetMarkReadResp().GetReadSeq())
	return nil
}

func (s *chatSession) createGroup(fields []string) error {
	if len(fields) < 2 {
		return errors.New("usage: /create GROUP USER...")
	}
	_, err := s.call(&imlitev1.Frame{Body: &imlitev1.Frame_CreateGroup{CreateGroup: &imlitev1.CreateGroupRequest{GroupId: fields[1], MemberIds: fields[2:]}}})
	if err != nil {
		return err
	}
	return s.setTarget([]string{"/group", fields[1]}, target{group: "set"})
}

func (s *chatSession) online(users []string) error {
	if len(users) == 0 {
		return errors.New("usage: /online USER...")
	}
	r, err := s.call(&imlitev1.Frame{Body: &imlitev1.Frame_GetOnlineStatus{GetOnlineStatus: &imlitev1.GetOnlineStatusRequest{UserIds: users}}})
	if err != nil {
		return err
	}
	for _, st := range r.GetGetOnlineStatusResp().GetStatuses() {
		if st.GetOnline() {
			s.printf("  %s online on %s\n", st.GetUserId(), strings.Join(st.GetPlatforms(), ", "))
		} else {
			s.printf("  %s offline\n", st.GetUserId())
		}
	}
	return nil
}

// drain waits briefly for pushes in flight when input ends.
func (s *chatSession) drain() {
	select {
	case <-s.done:
	case <-time.After(300 * time.Millisecond):
	}
}

func (s *chatSession) close() {
	s.closed.Store(true)
	s.writeMu.Lock()
	_ = s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
	s.writeMu.Unlock()
	_ = s.conn.Close()
}
