// Package server is imlite's service core. It holds every business rule
// (authorisation, validation, seq allocation, idempotence, fan-out) and
// depends on no transport. The gRPC, REST and Connect wiring in server/api
// and the websocket adapter in ws call the same methods, which take and
// return the generated imlite.v1 messages.
//
// A message goes through two stages, each behind a queue: SendMsg validates
// it and publishes it to the msg topic; the store stage (handleMsgs) assigns
// seqs, stores the batch and publishes each stored message to the push topic;
// the push stage (handlePush), running on every pod, delivers it to local
// connections and completes the waiting SendMsg on the pod that accepted it.
//
// All exported methods are safe for concurrent use. Every error they return
// is an *apierr.Error.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server/apierr"
	"github.com/imlite/imlite/server/auth"
)

// Limits bound what clients may send. Zero fields take the defaults of
// DefaultLimits.
type Limits struct {
	// MaxContentBytes bounds a message's content.
	MaxContentBytes int
	// MaxExBytes bounds each extension and offline-push field.
	MaxExBytes int
	// MaxClientMsgIDLen bounds client_msg_id, in bytes.
	MaxClientMsgIDLen int
	// DefaultPullLimit is the page size of a PullMsg without a limit.
	DefaultPullLimit int
	// MaxPullLimit bounds PullMsg's limit and PullMsgBySeqs' seq count.
	MaxPullLimit int
	// MaxGroupMembers bounds a group's size, owner included.
	MaxGroupMembers int
	// MaxBatchUserIDs bounds the user ids of one online-status or group
	// membership call.
	MaxBatchUserIDs int
}

// DefaultLimits are the limits used for zero fields.
var DefaultLimits = Limits{
	MaxContentBytes:   64 << 10,
	MaxExBytes:        4 << 10,
	MaxClientMsgIDLen: 64,
	DefaultPullLimit:  100,
	MaxPullLimit:      500,
	MaxGroupMembers:   10000,
	MaxBatchUserIDs:   500,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	set := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&l.MaxContentBytes, d.MaxContentBytes)
	set(&l.MaxExBytes, d.MaxExBytes)
	set(&l.MaxClientMsgIDLen, d.MaxClientMsgIDLen)
	set(&l.DefaultPullLimit, d.DefaultPullLimit)
	set(&l.MaxPullLimit, d.MaxPullLimit)
	set(&l.MaxGroupMembers, d.MaxGroupMembers)
	set(&l.MaxBatchUserIDs, d.MaxBatchUserIDs)
	return l
}

// Options configure a Service. Zero values take the documented defaults.
type Options struct {
	// PodName identifies this process among the pods; push records name the
	// pod that waits for them. Default "imlite".
	PodName string
	Limits  Limits
	// SendTimeout bounds how long SendMsg waits for its message to be
	// stored. Default 5s.
	SendTimeout time.Duration
	// GroupCacheTTL bounds how long a cached member list serves fan-out when
	// a membership event was lost. Default 30s.
	GroupCacheTTL time.Duration
	Logger        *slog.Logger
	// Observer receives pipeline events for metrics; nil means none.
	Observer Observer
	// TracerProvider creates the spans of each message's trace; nil means
	// the global provider, which traces nothing unless one was installed.
	TracerProvider trace.TracerProvider
}

// Backends are the repositories the core works on.
type Backends struct {
	Messages      MessageStore
	Seqs          SeqAllocator
	Conversations ConversationStore
	Groups        GroupStore
	Revocations   RevocationStore
	Presence      Presence
	MsgProducer   MsgProducer
	MsgConsumer   MsgConsumer
	PushProducer  PushProducer
	PushConsumer  PushConsumer
}

func (b Backends) check() error {
	missing := []struct {
		name string
		nil  bool
	}{
		{"Messages", b.Messages == nil},
		{"Seqs", b.Seqs == nil},
		{"Conversations", b.Conversations == nil},
		{"Groups", b.Groups == nil},
		{"Revocations", b.Revocations == nil},
		{"Presence", b.Presence == nil},
		{"MsgProducer", b.MsgProducer == nil},
		{"MsgConsumer", b.MsgConsumer == nil},
		{"PushProducer", b.PushProducer == nil},
		{"PushConsumer", b.PushConsumer == nil},
	}
	for _, m := range missing {
		if m.nil {
			return fmt.Errorf("backend %s is nil", m.name)
		}
	}
	return nil
}

// Deliverer hands pushes to the connections of this pod. The websocket hub
// implements it. Methods must not block on a slow connection.
type Deliverer interface {
	// Deliver sends msg to every local connection of the users, except the
	// connection exceptConn (empty: none). ctx carries the push stage's
	// span. storedAt is when the message was stored, zero for a transient
	// one, for the store-to-deliver latency.
	Deliver(ctx context.Context, msg *imlitev1.Message, userIDs []string, exceptConn string, storedAt time.Time)
	// Disconnect closes the local connections that d matches.
	Disconnect(d Disconnect)
}

// DisconnectKind distinguishes a kick from a replacement.
type DisconnectKind int

const (
	// Kicked connections were closed by KickUser.
	Kicked DisconnectKind = iota + 1
	// Replaced connections were superseded by a newer connection of the same
	// user and platform.
	Replaced
)

// Disconnect selects connections of one user to close.
type Disconnect struct {
	Kind   DisconnectKind
	UserID string
	// Platforms to close; empty means all.
	Platforms []string
	Reason    string
	// Kicked: close connections whose token was issued before At.
	// Replaced: close connections opened before At.
	At time.Time
	// KeepConn stays open (the replacing connection), if it is local.
	KeepConn string
}

// Service is the service core. Create it with New, attach a Deliverer with
// SetDeliverer, and call Run to start the store and push stages.
type Service struct {
	b       Backends
	signer  *auth.Signer
	limits  Limits
	pod     string
	timeout time.Duration
	log     *slog.Logger
	obs     Observer
	tracer  trace.Tracer

	waiters *waiters
	groups  *memberCache

	mu        sync.RWMutex
	deliverer Deliverer
}

// New returns a Service over the backends.
func New(b Backends, signer *auth.Signer, opts Options) (*Service, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	if signer == nil {
		return nil, errors.New("token signer is nil")
	}
	if opts.PodName == "" {
		opts.PodName = "imlite"
	}
	if opts.SendTimeout <= 0 {
		opts.SendTimeout = 5 * time.Second
	}
	if opts.GroupCacheTTL <= 0 {
		opts.GroupCacheTTL = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	if opts.TracerProvider == nil {
		opts.TracerProvider = otel.GetTracerProvider()
	}
	s := &Service{
		b:       b,
		signer:  signer,
		limits:  opts.Limits.withDefaults(),
		pod:     opts.PodName,
		timeout: opts.SendTimeout,
		log:     opts.Logger,
		obs:     opts.Observer,
		tracer:  opts.TracerProvider.Tracer(TracerName),
		waiters: newWaiters(),
	}
	s.groups = newMemberCache(b.Groups, opts.GroupCacheTTL)
	return s, nil
}

// Limits returns the effective limits.
func (s *Service) Limits() Limits { return s.limits }

// SendTimeout returns how long SendMsg waits for its message to be stored.
func (s *Service) SendTimeout() time.Duration { return s.timeout }

// PodName returns the name this pod uses in push records.
func (s *Service) PodName() string { return s.pod }

// Signer returns the token signer.
func (s *Service) Signer() *auth.Signer { return s.signer }

// SetDeliverer attaches the local connection hub. Pushes that arrive while no
// deliverer is attached still complete waiting sends.
func (s *Service) SetDeliverer(d Deliverer) {
	s.mu.Lock()
	s.deliverer = d
	s.mu.Unlock()
}

func (s *Service) currentDeliverer() Deliverer {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.deliverer
}

// Run runs the store stage and the push stage until ctx ends, then returns
// the first error of either, or nil when both stopped because of ctx.
func (s *Service) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- s.b.MsgConsumer.ConsumeMsgs(ctx, s.handleMsgs) }()
	go func() { errc <- s.b.PushConsumer.ConsumePush(ctx, s.handlePush) }()
	go s.expireSends(ctx)

	var first error
	for range 2 {
		err := <-errc
		if err != nil && !errors.Is(err, context.Canceled) && first == nil {
			first = err
			s.log.Error("pipeline stage stopped", "err", err)
		}
		cancel()
	}
	return first
}

// expireSends fails sends that were not stored within the send timeout.
// It checks ten times per timeout, so a send fails at most 10% late.
func (s *Service) expireSends(ctx context.Context) {
	t := time.NewTicker(max(s.timeout/10, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.waiters.expire(now, s.timeout)
		}
	}
}

// WaitReady returns once every consumer that implements Readier is ready,
// or with ctx's error.
func (s *Service) WaitReady(ctx context.Context) error {
	for _, c := range []any{s.b.MsgConsumer, s.b.PushConsumer} {
		r, ok := c.(Readier)
		if !ok {
			continue
		}
		select {
		case <-r.Ready():
		case <-ctx.Done():
			return fmt.Errorf("wait for queue consumers: %w", ctx.Err())
		}
	}
	return nil
}

// Authenticate verifies a bearer token and checks that no kick revoked it.
func (s *Service) Authenticate(ctx context.Context, token string) (auth.Principal, error) {
	p, err := s.signer.Verify(token)
	if err != nil {
		return auth.Principal{}, apierr.Unauthenticated("%v", err)
	}
	revoked, err := s.b.Revocations.RevokedBefore(ctx, p.UserID, p.Platform)
	if err != nil {
		return auth.Principal{}, s.backendError("check token revocation", err)
	}
	if !revoked.IsZero() && !p.IssuedAt.After(revoked) {
		return auth.Principal{}, apierr.Unauthenticated("token of user %q on platform %q was revoked by a kick at %s; get a new token",
			p.UserID, p.Platform, revoked.UTC().Format(time.RFC3339Nano))
	}
	return p, nil
}

// caller returns the principal of the request: one attached by the
// websocket adapter, or the Authorization header attached by gRPC, REST or
// Connect, verified now.
func (s *Service) caller(ctx context.Context) (auth.Principal, error) {
	if p, ok := auth.PrincipalFrom(ctx); ok {
		return p, nil
	}
	token, err := auth.ParseBearer(auth.AuthorizationFrom(ctx))
	if err != nil {
		return auth.Principal{}, apierr.Unauthenticated("%v; send \"Authorization: Bearer <token>\"", err)
	}
	return s.Authenticate(ctx, token)
}

// requireAdmin returns PermissionDenied unless p is an admin.
func requireAdmin(p auth.Principal, what string) error {
	if !p.IsAdmin() {
		return apierr.PermissionDenied("%s needs an admin token; user %q has role user", what, p.UserID)
	}
	return nil
}

// backendError turns a repository failure into a client error: Unavailable
// for an unreachable backend or a timeout, Internal otherwise. Both are
// logged with the operation.
func (s *Service) backendError(op string, err error) error {
	var ae *apierr.Error
	if errors.As(err, &ae) {
		return ae
	}
	if errors.Is(err, context.Canceled) {
		return apierr.From(err)
	}
	if errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("backend unavailable", "op", op, "err", err)
		return apierr.Unavailable(err, "%s failed: a backend is unavailable, retry later", op)
	}
	s.log.Error("backend failure", "op", op, "err", err)
	return apierr.Internal(op, err)
}

type connIDKey struct{}

// WithConnID returns ctx naming the local connection a request came from,
// so the push of a sent message skips that connection.
func WithConnID(ctx context.Context, connID string) context.Context {
	return context.WithValue(ctx, connIDKey{}, connID)
}

func connIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(connIDKey{}).(string)
	return id
}

func nowMillis() int64 { return time.Now().UnixMilli() }
