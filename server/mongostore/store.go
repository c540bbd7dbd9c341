// Package mongostore is the MongoDB backend of distributed mode. It
// implements server.MessageStore, server.ConversationStore,
// server.GroupStore and server.RevocationStore on
// go.mongodb.org/mongo-driver/v2. Redis serves revocation checks; this store
// keeps the kicks durably, so a flushed Redis can be filled again.
//
// # Collections
//
// Documents use readable field names, so operators can query them with any
// MongoDB tool. Times are BSON dates with millisecond precision, except the
// message times, which stay int64 milliseconds as in the API.
//
//	messages            one document per stored message: conversation_id, seq, server_msg_id,
//	                    client_msg_id, sender_id, content, ...; unique (conversation_id, seq)
//	                    and unique (sender_id, client_msg_id)
//	conversations       _id = conversation id: max_seq, updated_at
//	user_conversations  user_id, conversation_id, read_seq, min_seq, hide_seq, pinned,
//	                    recv_opt, updated_at; unique (user_id, conversation_id)
//	groups              _id = group id: name, owner_id, ex, created_at, member_count
//	group_members       group_id, user_id, joined_at; unique (group_id, user_id)
//	revocations         _id = user id + "\x00" + platform ("*": all): user_id, platform, at
//
// # Consistency without transactions
//
// The store uses no multi-document transactions, so it also runs on
// servers without them. Each write is idempotent or guarded by a unique
// index or a conditional update, and writes are ordered so that a retry
// repairs what a failure leaves behind, except for the gaps marked at
// AppendMessages and groupDoc. Concurrent writers stay correct because
// MongoDB applies each update of one document atomically. FerretDB v1.24.2
// does not: it reads the document and writes the result back.
//
// The conversations collection records each conversation's max seq for
// operators, but MaxSeqs reads the messages collection, because that record
// may lag after a failure.
//
// # Timeouts and failures
//
// Config.Timeout bounds every MongoDB call, so a method that makes several
// calls may take several times as long. Errors of an unreachable server, a
// timeout or a server that is stepping down wrap server.ErrUnavailable.
// A *Store is safe for concurrent use.
package mongostore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"

	"github.com/imlite/imlite/server"
)

var (
	_ server.MessageStore      = (*Store)(nil)
	_ server.ConversationStore = (*Store)(nil)
	_ server.GroupStore        = (*Store)(nil)
	_ server.Pinger            = (*Store)(nil)
)

// DefaultTimeout is the per-call timeout of a Config without one. It
// matches the default of the Mongo.DBTimeout setting.
const DefaultTimeout = 10 * time.Second

// maxSelectionTimeout bounds how long a call waits for a reachable server,
// so that calls to a stopped MongoDB fail within seconds instead of after
// the driver's default of 30 seconds.
const maxSelectionTimeout = 5 * time.Second

// Collection names.
const (
	collMessages          = "messages"
	collConversations     = "conversations"
	collUserConversations = "user_conversations"
	collGroups            = "groups"
	collGroupMembers      = "group_members"
	collRevocations       = "revocations"
)

// Index names. An existing index of the same name with other keys makes
// Open fail, and on MongoDB so does one of the same keys under another
// name, so that a changed definition does not go unnoticed.
const (
	indexConversationSeq  = "conversation_seq"
	indexSenderClientMsg  = "sender_client_msg_id"
	indexUserConversation = "user_conversation"
	indexGroupUser        = "group_user"
)

// Config configures Open.
type Config struct {
	// URI is a mongodb:// or mongodb+srv:// connection string. Timeouts set
	// in it (serverSelectionTimeoutMS, connectTimeoutMS) take precedence
	// over the ones derived from Timeout.
	URI string
	// Database names the database that holds the collections.
	Database string
	// Timeout bounds each MongoDB call, and the wait for a reachable server
	// is at most the smaller of Timeout and 5 seconds. Zero means
	// DefaultTimeout.
	Timeout time.Duration
	// Logger receives start, stop and repair events, never message content.
	// Nil means slog.Default().
	Logger *slog.Logger
}

// Store implements the message, conversation and group repositories on
// MongoDB. Create it with Open and release it with Close.
type Store struct {
	client  *mongo.Client
	db      *mongo.Database
	timeout time.Duration
	log     *slog.Logger
	closed  atomic.Bool

	messages          *mongo.Collection
	conversations     *mongo.Collection
	userConversations *mongo.Collection
	groups            *mongo.Collection
	groupMembers      *mongo.Collection
	revocations       *mongo.Collection

	// beforeInsertMembers, when set by a test, runs before AddGroupMembers
	// inserts the members, to make the insert fail.
	beforeInsertMembers func()
}

// Open connects to MongoDB and creates the indexes the store needs. Indexes
// that exist already are kept, so Open is idempotent. It fails with an error
// wrapping server.ErrUnavailable when no server is reachable within the
// selection timeout.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	const op = "open mongo store"
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}

	client, err := mongo.Connect(clientOptions(cfg))
	if err != nil {
		// Connect only parses the options; it dials in the background.
		return nil, fmt.Errorf("%s: invalid URI: %s", op, redactUserinfo(err.Error(), cfg.URI))
	}
	s := newStore(client, cfg)
	if err := s.ensureIndexes(ctx); err != nil {
		s.disconnect(ctx)
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	s.log.Info("mongo store opened", "database", cfg.Database, "timeout", cfg.Timeout)
	return s, nil
}

func (cfg Config) validate() error {
	switch {
	case cfg.URI == "":
		return errors.New("URI is empty; set a mongodb:// connection string")
	case cfg.Database == "":
		return errors.New("database name is empty")
	case strings.ContainsAny(cfg.Database, "/\\. \"$\x00"):
		return fmt.Errorf("database name %q contains one of the characters /\\. \"$ or a 0 byte, which MongoDB does not allow", cfg.Database)
	case cfg.Timeout < 0:
		return fmt.Errorf("timeout %v is negative", cfg.Timeout)
	}
	return nil
}

// clientOptions returns the driver options: the URI's settings, with
// short server selection and connect timeouts unless the URI sets them.
func clientOptions(cfg Config) *options.ClientOptions {
	opts := options.Client().ApplyURI(cfg.URI).SetAppName("imlite")
	short := min(cfg.Timeout, maxSelectionTimeout)
	if opts.ServerSelectionTimeout == nil {
		opts.SetServerSelectionTimeout(short)
	}
	if opts.ConnectTimeout == nil {
		opts.SetConnectTimeout(short)
	}
	return opts
}

// quoted matches the double-quoted fragments of a driver error message.
var quoted = regexp.MustCompile(`"[^"]*"`)

// redactUserinfo replaces each quoted fragment of msg that occurs in the
// user info of uri. The driver quotes the invalid part of a URI in its
// parse errors, which may be a piece of the password.
func redactUserinfo(msg, uri string) string {
	_, rest, ok := strings.Cut(uri, "://")
	at := strings.LastIndex(rest, "@")
	if !ok || at < 0 {
		return msg
	}
	userinfo := rest[:at]
	return quoted.ReplaceAllStringFunc(msg, func(q string) string {
		if len(q) > 2 && strings.Contains(userinfo, q[1:len(q)-1]) {
			return `"<redacted>"`
		}
		return q
	})
}

func newStore(client *mongo.Client, cfg Config) *Store {
	db := client.Database(cfg.Database)
	return &Store{
		client:            client,
		db:                db,
		timeout:           cfg.Timeout,
		log:               cfg.Logger,
		messages:          db.Collection(collMessages),
		conversations:     db.Collection(collConversations),
		userConversations: db.Collection(collUserConversations),
		groups:            db.Collection(collGroups),
		groupMembers:      db.Collection(collGroupMembers),
		revocations:       db.Collection(collRevocations),
	}
}

// indexSpecs lists the secondary indexes per collection. The conversations
// and groups collections are keyed by _id only.
func (s *Store) indexSpecs() []struct {
	coll   *mongo.Collection
	models []mongo.IndexModel
} {
	unique := func(name string, keys bson.D) mongo.IndexModel {
		return mongo.IndexModel{Keys: keys, Options: options.Index().SetName(name).SetUnique(true)}
	}
	return []struct {
		coll   *mongo.Collection
		models []mongo.IndexModel
	}{
		{s.messages, []mongo.IndexModel{
			unique(indexConversationSeq, bson.D{{Key: "conversation_id", Value: 1}, {Key: "seq", Value: 1}}),
			unique(indexSenderClientMsg, bson.D{{Key: "sender_id", Value: 1}, {Key: "client_msg_id", Value: 1}}),
		}},
		{s.userConversations, []mongo.IndexModel{
			unique(indexUserConversation, bson.D{{Key: "user_id", Value: 1}, {Key: "conversation_id", Value: 1}}),
		}},
		{s.groupMembers, []mongo.IndexModel{
			unique(indexGroupUser, bson.D{{Key: "group_id", Value: 1}, {Key: "user_id", Value: 1}}),
		}},
	}
}

// ensureIndexes creates the indexes. createIndexes succeeds without change
// for an index that exists with the same name and definition. Each index
// gets a call of its own, because FerretDB v1.24.2 closes the connection on
// a createIndexes of several indexes that exist already.
func (s *Store) ensureIndexes(ctx context.Context) error {
	for _, spec := range s.indexSpecs() {
		for _, model := range spec.models {
			cctx, cancel := s.opCtx(ctx)
			_, err := spec.coll.Indexes().CreateOne(cctx, model)
			cancel()
			if err != nil {
				return wrap("create indexes of "+spec.coll.Name(), err)
			}
		}
	}
	return nil
}

// Close disconnects from MongoDB, waiting at most the store's timeout for
// calls in progress. Calls after the first return nil, and the other methods
// fail once Close has returned, with errors that do not wrap
// server.ErrUnavailable.
func (s *Store) Close(ctx context.Context) error {
	if s.closed.Swap(true) {
		return nil
	}
	cctx, cancel := s.opCtx(ctx)
	defer cancel()
	if err := s.client.Disconnect(cctx); err != nil {
		return wrap("close mongo store", err)
	}
	s.log.Info("mongo store closed")
	return nil
}

// disconnect releases the client of a store that failed to open.
func (s *Store) disconnect(ctx context.Context) {
	cctx, cancel := s.opCtx(context.WithoutCancel(ctx))
	defer cancel()
	if err := s.client.Disconnect(cctx); err != nil {
		s.log.Warn("mongo store: disconnect after a failed open", "err", err)
	}
}

// Ping checks that the primary replies within the timeout.
func (s *Store) Ping(ctx context.Context) error {
	cctx, cancel := s.opCtx(ctx)
	defer cancel()
	return wrap("ping mongo", s.client.Ping(cctx, readpref.Primary()))
}

// opCtx returns ctx bounded by the store's timeout. Every driver call runs
// under one.
func (s *Store) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}
