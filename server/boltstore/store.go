// Package boltstore is the embedded storage backend: one bbolt file holds the
// messages, seq state, conversation state, groups and revocations of a
// single-process imlite.
//
// # Bucket layout
//
// Keys join ids with a 0 byte. Ids never contain one (server.ValidateID
// rejects it, and the store checks again), so a cursor seek on "id\x00"
// visits exactly the records of that id, even when another id starts with the
// same bytes. Integers are big-endian, so message keys sort by seq. Times in
// binary records are Unix nanoseconds.
//
//	messages            conversationID \x00 seq(8)  -> imlitev1.Message (protobuf)
//	client_msg_ids      senderID \x00 clientMsgID   -> seq(8) conversationID
//	conversations       conversationID              -> version(1) maxSeq(8) updatedAt(8)
//	user_conversations  userID \x00 conversationID  -> version(1) readSeq(8) minSeq(8) hideSeq(8) pinned(1) recvOpt(4) updatedAt(8)
//	groups              groupID                     -> JSON group record with the member count
//	group_members       groupID \x00 userID         -> joinedAt(8)
//	revocations         userID \x00 platform        -> revokedAt(8); platform "*" means all
//
// # Concurrency
//
// A *Store is safe for concurrent use. bbolt runs one write transaction at a
// time and any number of read transactions beside it, each on a consistent
// snapshot. Every method that reads or writes the file does so in a single
// transaction, so a concurrent reader sees all of a call's writes or none.
// The seq counters live in memory behind a mutex. The file is locked for the
// lifetime of the Store, so only one Store in one process can open it.
//
// The methods check ctx before they start, but a started transaction runs to
// its end because bbolt cannot abort one from outside.
package boltstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/imlite/imlite/server"
)

var (
	_ server.MessageStore      = (*Store)(nil)
	_ server.SeqAllocator      = (*Store)(nil)
	_ server.ConversationStore = (*Store)(nil)
	_ server.GroupStore        = (*Store)(nil)
	_ server.RevocationStore   = (*Store)(nil)
	_ server.Pinger            = (*Store)(nil)
)

// ErrLocked means that another Store, usually in another process, has the
// data file open.
var ErrLocked = errors.New("data file is locked by another process")

// DefaultLockTimeout is how long Open waits for the file lock before it
// returns ErrLocked.
const DefaultLockTimeout = time.Second

var (
	bucketMessages          = []byte("messages")
	bucketClientMsgIDs      = []byte("client_msg_ids")
	bucketConversations     = []byte("conversations")
	bucketUserConversations = []byte("user_conversations")
	bucketGroups            = []byte("groups")
	bucketGroupMembers      = []byte("group_members")
	bucketRevocations       = []byte("revocations")
)

var allBuckets = [][]byte{
	bucketMessages,
	bucketClientMsgIDs,
	bucketConversations,
	bucketUserConversations,
	bucketGroups,
	bucketGroupMembers,
	bucketRevocations,
}

// Store is a bbolt-backed implementation of the repositories of the service
// core. Create it with Open and release the file with Close.
type Store struct {
	db *bbolt.DB

	// appends feeds the committer goroutine, which stores the appends of
	// concurrent AppendMessages calls in one write transaction.
	appends   chan *appendRequest
	stop      chan struct{}
	committed chan struct{}
	closeOnce sync.Once

	seqMu sync.Mutex
	// seqs holds the last seq handed out per conversation.
	seqs map[string]int64
}

type config struct {
	lockTimeout time.Duration
}

// initialMmapSize is the address space reserved for the data file: 1 GiB,
// beyond which bbolt grows the map as usual.
const initialMmapSize = 1 << 30

// Option configures Open.
type Option func(*config)

// WithLockTimeout sets how long Open waits for another process to release
// the data file before it returns ErrLocked. The default is
// DefaultLockTimeout, and zero or less waits forever.
func WithLockTimeout(d time.Duration) Option {
	return func(c *config) { c.lockTimeout = d }
}

// Open opens the bbolt file at path, creating it (mode 0600) and its parent
// directory (mode 0700) if missing. It returns an error wrapping ErrLocked
// when another Store holds the file for longer than the lock timeout.
func Open(path string, opts ...Option) (*Store, error) {
	cfg := config{lockTimeout: DefaultLockTimeout}
	for _, opt := range opts {
		opt(&cfg)
	}
	if path == "" {
		return nil, errors.New("open bolt store: path is empty")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open bolt store: create data directory: %w", err)
	}

	boltOpts := *bbolt.DefaultOptions
	boltOpts.Timeout = max(cfg.lockTimeout, 0)
	// Growing the memory map stops every transaction while the file is
	// remapped, which showed as stalls of up to a second under load; an
	// address-space reservation up front avoids it and costs no memory
	// until pages are used.
	boltOpts.InitialMmapSize = initialMmapSize
	// The freelist is rebuilt when the file opens instead of being written
	// on every commit, and a hashmap freelist keeps allocation fast in a
	// large file.
	boltOpts.NoFreelistSync = true
	boltOpts.FreelistType = bbolt.FreelistMapType
	db, err := bbolt.Open(path, 0o600, &boltOpts)
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open bolt store %s: %w (waited %v); stop the other imlite process or use another data path",
			path, ErrLocked, cfg.lockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open bolt store %s: %w", path, err)
	}

	err = db.Update(func(tx *bbolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open bolt store %s: %w", path, err)
	}
	s := &Store{
		db:        db,
		seqs:      make(map[string]int64),
		appends:   make(chan *appendRequest),
		stop:      make(chan struct{}),
		committed: make(chan struct{}),
	}
	go s.commitAppends()
	return s, nil
}

// Close releases the data file. Calls after the first return nil, and the
// other methods fail once Close has returned.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.committed
	})
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close bolt store: %w", err)
	}
	return nil
}

// Ping reports whether the store is open and ctx is live.
func (s *Store) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ping bolt store: %w", err)
	}
	if err := s.db.View(func(*bbolt.Tx) error { return nil }); err != nil {
		return fmt.Errorf("ping bolt store: %w", err)
	}
	return nil
}

// view runs fn in a read transaction after checking ctx. op names the
// operation in the returned error.
func (s *Store) view(ctx context.Context, op string, fn func(*bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := s.db.View(fn); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// update runs fn in a write transaction after checking ctx. op names the
// operation in the returned error.
func (s *Store) update(ctx context.Context, op string, fn func(*bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := s.db.Update(fn); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// checkID rejects an id that would break the key layout. An id is the first
// part of a composite key, so a 0 byte inside it could address another
// id's records, and an empty id would address every record.
func checkID(kind, id string) error {
	if id == "" {
		return fmt.Errorf("%s is empty", kind)
	}
	if strings.IndexByte(id, 0) >= 0 {
		return fmt.Errorf("%s %q contains a 0 byte", kind, id)
	}
	return nil
}

func checkIDs(kind string, ids []string) error {
	for _, id := range ids {
		if err := checkID(kind, id); err != nil {
			return err
		}
	}
	return nil
}

// joinKey returns a + "\x00" + b in a new slice. bbolt requires a key to
// stay unchanged until its transaction ends, so keys are never reused.
func joinKey(a, b string) []byte {
	k := make([]byte, 0, len(a)+1+len(b))
	k = append(k, a...)
	k = append(k, 0)
	return append(k, b...)
}

// prefixKey returns id + "\x00", the common prefix of id's composite keys.
func prefixKey(id string) []byte {
	return joinKey(id, "")
}

// messageKey returns the messages bucket key of one seq. Seqs are positive,
// so their big-endian bytes sort like the numbers.
func messageKey(conversationID string, seq int64) []byte {
	k := make([]byte, len(conversationID)+1+8)
	copy(k, conversationID)
	binary.BigEndian.PutUint64(k[len(conversationID)+1:], uint64(seq))
	return k
}

// encodeTime returns t as Unix nanoseconds, or 0 for the zero time. The Unix
// epoch itself therefore reads back as the zero time, a time that no caller
// stores. Times outside the years 1678 to 2262 do not fit in int64 nanoseconds.
func encodeTime(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func decodeTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func putInt64(b []byte, v int64) { binary.BigEndian.PutUint64(b, uint64(v)) }

func getInt64(b []byte) int64 { return int64(binary.BigEndian.Uint64(b)) }

// encodeTimeValue returns the 8-byte value of a time-only record.
func encodeTimeValue(t time.Time) []byte {
	v := make([]byte, 8)
	putInt64(v, encodeTime(t))
	return v
}

func decodeTimeValue(v []byte) (time.Time, error) {
	if len(v) != 8 {
		return time.Time{}, fmt.Errorf("corrupt time record: %d bytes, expected 8", len(v))
	}
	return decodeTime(getInt64(v)), nil
}
