package server

import (
	"context"
	"errors"
	"time"

	busv1 "github.com/imlite/imlite/gen/imlite/bus/v1"
	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
)

// The service core depends only on the interfaces in this file. The embedded
// backends (boltstore, memqueue, mempresence) and the distributed ones
// (mongostore, redisstore, kafkaqueue) implement them, and the shared suites
// in storetest and queuetest run against each.
//
// Stored messages are shared between goroutines: callers and implementations
// treat every *imlitev1.Message they receive or return as read-only.

// Errors that repositories return, possibly wrapped.
var (
	// ErrNotFound means the group (or other keyed record) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists means a create hit an existing key.
	ErrAlreadyExists = errors.New("already exists")
	// ErrUnavailable means the backend could not be reached or timed out.
	// The operation may be retried and left no partial state that a retry
	// cannot repair.
	ErrUnavailable = errors.New("backend unavailable")
	// ErrSeqGap means an append starts above max seq + 1, because seqs were
	// allocated but never stored (a crash, or a counter ahead of the store).
	ErrSeqGap = errors.New("seq gap")
	// ErrSeqTaken means a seq of the append is already stored, because the
	// counter fell behind the store (for example after a Redis flush).
	ErrSeqTaken = errors.New("seq already stored")
	// ErrDuplicateMsg means a (sender_id, client_msg_id) of the append is
	// already stored.
	ErrDuplicateMsg = errors.New("duplicate client_msg_id")
)

// ClientMsgKey identifies a message by its sender and client message id.
type ClientMsgKey struct {
	SenderID    string
	ClientMsgID string
}

// Append is a run of messages of one conversation with contiguous seqs.
type Append struct {
	ConversationID string
	// Messages ascend by seq without gaps.
	Messages []*imlitev1.Message
}

// MessageStore stores messages and each conversation's max seq.
type MessageStore interface {
	// FindByClientMsgIDs returns the stored messages with the given keys;
	// keys not stored are absent from the map.
	FindByClientMsgIDs(ctx context.Context, keys []ClientMsgKey) (map[ClientMsgKey]*imlitev1.Message, error)

	// AppendMessages stores each append as a unit. results[i] is nil or one of
	// ErrSeqGap, ErrSeqTaken, ErrDuplicateMsg for appends[i], and then leaves
	// that conversation unchanged; a backend without transactions may have
	// stored a prefix of the append when a concurrent writer raced it, which
	// the core repairs by looking up the client_msg_ids. err reports a
	// failure of the whole call.
	//
	// Storing also raises the conversation's max seq, creates the per-user
	// state of both users of a single chat, and moves each sender's read seq
	// to its own latest message, so a user's own messages are never unread.
	// A group sender without state gets none: a message racing with the
	// sender's removal must not bring the state back.
	AppendMessages(ctx context.Context, appends []Append) (results []error, err error)

	// MaxSeqs returns the max stored seq of each conversation; a conversation
	// without messages maps to 0.
	MaxSeqs(ctx context.Context, conversationIDs []string) (map[string]int64, error)

	// RangeMessages returns up to limit messages with begin <= seq <= end,
	// ascending by seq; none when limit <= 0.
	RangeMessages(ctx context.Context, conversationID string, begin, end int64, limit int) ([]*imlitev1.Message, error)

	// MessagesBySeqs returns the stored messages with the given seqs,
	// ascending by seq, each once.
	MessagesBySeqs(ctx context.Context, conversationID string, seqs []int64) ([]*imlitev1.Message, error)
}

// AppendEffectsReapplier is implemented by a MessageStore whose
// AppendMessages can fail after it stored messages and before it raised
// their conversation's max seq and moved the senders' read seqs, because
// the backend has no transactions. When the store stage finds a message
// that an earlier attempt of the same record stored, it calls
// ReapplyAppendEffects with it. The effects are those of AppendMessages.
// They only raise values and create missing state, so applying them again
// is harmless.
type AppendEffectsReapplier interface {
	// ReapplyAppendEffects applies the effects of storing the messages of
	// each append, whose messages ascend by seq and may have gaps.
	ReapplyAppendEffects(ctx context.Context, appends []Append) error
}

// SeqAllocator hands out seqs. It may hand out a seq that is never stored
// (a crash between allocation and storage); AppendMessages detects the gap
// and the core calls Reset.
type SeqAllocator interface {
	// Allocate reserves counts[c] consecutive seqs for each conversation c and
	// returns the first of each.
	Allocate(ctx context.Context, counts map[string]int64) (map[string]int64, error)
	// Reset sets a conversation's counter to storedMax, the max seq in the
	// message store, after AppendMessages reported ErrSeqGap or ErrSeqTaken.
	Reset(ctx context.Context, conversationID string, storedMax int64) error
}

// UserConversation is one user's state in one conversation.
type UserConversation struct {
	UserID         string
	ConversationID string
	// ReadSeq is the highest seq the user has read.
	ReadSeq int64
	// MinSeq is the smallest seq the user may see; 0 means 1.
	MinSeq int64
	// HideSeq is one more than the max seq when the user hid the
	// conversation; it stays hidden while max seq < HideSeq. Zero means
	// never hidden.
	HideSeq int64
	Pinned  bool
	RecvOpt imlitev1.RecvOpt
	// UpdatedAt is the time of the last change to this state.
	UpdatedAt time.Time
}

// ConversationUpdate changes a user's conversation state. Nil fields stay as
// they are. The seq fields only ever move forward: a smaller value than the
// stored one is ignored.
type ConversationUpdate struct {
	ReadSeq *int64
	MinSeq  *int64
	HideSeq *int64
	Pinned  *bool
	RecvOpt *imlitev1.RecvOpt
}

// ConversationStore holds per-user conversation state.
type ConversationStore interface {
	// GetUserConversation returns the state, or ErrNotFound.
	GetUserConversation(ctx context.Context, userID, conversationID string) (UserConversation, error)
	// ListUserConversations returns every conversation state of the user.
	ListUserConversations(ctx context.Context, userID string) ([]UserConversation, error)
	// UpdateUserConversation applies u, creating the state if missing, and
	// returns the result.
	UpdateUserConversation(ctx context.Context, userID, conversationID string, u ConversationUpdate) (UserConversation, error)
	// JoinConversation creates the state of users who join a group, with
	// MinSeq minSeq and ReadSeq minSeq - 1 so earlier messages are neither
	// visible nor unread. Users that have state keep it unchanged, so a
	// retried join changes nothing.
	JoinConversation(ctx context.Context, conversationID string, userIDs []string, minSeq int64) error
	// LeaveConversation deletes the state of users who left a group.
	LeaveConversation(ctx context.Context, conversationID string, userIDs []string) error
}

// Group is a group's stored record.
type Group struct {
	ID          string
	Name        string
	OwnerID     string
	Ex          string
	CreatedAt   time.Time
	MemberCount int
}

// GroupMember is one membership.
type GroupMember struct {
	UserID   string
	JoinedAt time.Time
}

// GroupStore holds groups and their members.
type GroupStore interface {
	// CreateGroup stores g with its members (the owner among them), or
	// returns ErrAlreadyExists.
	CreateGroup(ctx context.Context, g Group, members []GroupMember) error
	// GetGroup returns the group with its member count, or ErrNotFound.
	GetGroup(ctx context.Context, groupID string) (Group, error)
	// AddGroupMembers adds the users who are not members yet and returns them
	// with the new member count. It adds nothing and returns ErrGroupFull
	// when the count would exceed maxMembers; ErrNotFound for no group.
	AddGroupMembers(ctx context.Context, groupID string, members []GroupMember, maxMembers int) (added []string, count int, err error)
	// RemoveGroupMembers removes the users who are members and returns them
	// with the new member count.
	RemoveGroupMembers(ctx context.Context, groupID string, userIDs []string) (removed []string, count int, err error)
	// IsGroupMember reports whether userID is a member; ErrNotFound for no group.
	IsGroupMember(ctx context.Context, groupID, userID string) (bool, error)
	// ListGroupMembers returns up to limit members with user id > after,
	// ascending by user id.
	ListGroupMembers(ctx context.Context, groupID, after string, limit int) ([]GroupMember, error)
	// GroupMemberIDs returns every member's user id, for fan-out.
	GroupMemberIDs(ctx context.Context, groupID string) ([]string, error)
}

// ErrGroupFull means an add would exceed the group size limit.
var ErrGroupFull = errors.New("group is full")

// RevocationStore records kicks, which revoke earlier tokens.
type RevocationStore interface {
	// Revoke records that tokens of userID issued before at are revoked on
	// the platforms; no platforms means all. An earlier time never replaces a
	// later one.
	Revoke(ctx context.Context, userID string, platforms []string, at time.Time) error
	// RevokedBefore returns the time before which tokens of the user on the
	// platform are revoked, considering kicks of all platforms too; zero if none.
	RevokedBefore(ctx context.Context, userID, platform string) (time.Time, error)
}

// Revocation is one recorded kick.
type Revocation struct {
	UserID string
	// Platform is the kicked platform; empty means all.
	Platform string
	// At revokes tokens of the user issued up to this time.
	At time.Time
}

// Presence records which users are connected on which platform, cluster-wide.
type Presence interface {
	// Connect records a live connection on this pod.
	Connect(ctx context.Context, userID, platform, connID string) error
	// Disconnect removes it.
	Disconnect(ctx context.Context, userID, platform, connID string) error
	// Platforms returns each user's platforms with a live connection, sorted;
	// offline users are absent from the map.
	Platforms(ctx context.Context, userIDs []string) (map[string][]string, error)
}

// MsgProducer publishes accepted sends to the msg topic, keyed by
// conversation id so that one conversation keeps its order.
type MsgProducer interface {
	PublishMsg(ctx context.Context, rec *busv1.MsgRecord) error
}

// MsgHandler processes a batch of msg records, in topic order per
// conversation. The consumer acknowledges the batch only when it returns nil.
// The core's handler retries backend failures itself and returns an error
// only when ctx ended; the consumer then stops without acknowledging, and a
// durable queue redelivers the records to the next consumer.
type MsgHandler func(ctx context.Context, recs []*busv1.MsgRecord) error

// MsgConsumer runs the store stage: it reads the msg topic in batches until
// ctx ends.
type MsgConsumer interface {
	ConsumeMsgs(ctx context.Context, handle MsgHandler) error
}

// PushProducer publishes push records. key orders records: the conversation
// id for deliveries, the user id for kicks.
type PushProducer interface {
	PublishPush(ctx context.Context, recs []KeyedPush) error
}

// KeyedPush is a push record with its ordering key.
type KeyedPush struct {
	Key    string
	Record *busv1.PushRecord
}

// PushHandler receives push records in order per key.
type PushHandler func(ctx context.Context, recs []*busv1.PushRecord)

// PushConsumer runs the push stage on this pod: every pod sees every push
// record published after it started.
type PushConsumer interface {
	ConsumePush(ctx context.Context, handle PushHandler) error
}

// Pinger is implemented by backends that can report their reachability.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Readier is implemented by consumers that need time to join their topic,
// for example to resolve their starting offsets. Records published before
// Ready is closed may be missed, so the process accepts calls only after
// every consumer is ready (Service.WaitReady).
type Readier interface {
	Ready() <-chan struct{}
}
