package boltstore

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
)

// conversationMetaVersion is the first byte of a conversations record.
const conversationMetaVersion = 1

// conversationMeta is the per-conversation record that AppendMessages
// writes once per append.
type conversationMeta struct {
	maxSeq    int64
	updatedAt time.Time
}

func encodeConversationMeta(m conversationMeta) []byte {
	v := make([]byte, 17)
	v[0] = conversationMetaVersion
	putInt64(v[1:], m.maxSeq)
	putInt64(v[9:], encodeTime(m.updatedAt))
	return v
}

func decodeConversationMeta(v []byte) (conversationMeta, error) {
	if len(v) != 17 || v[0] != conversationMetaVersion {
		return conversationMeta{}, fmt.Errorf("corrupt conversation record: %d bytes, version %d", len(v), firstByte(v))
	}
	return conversationMeta{maxSeq: getInt64(v[1:]), updatedAt: decodeTime(getInt64(v[9:]))}, nil
}

func firstByte(v []byte) int {
	if len(v) == 0 {
		return -1
	}
	return int(v[0])
}

// storedMaxSeq returns the conversation's max seq, 0 when it has no messages.
func storedMaxSeq(tx *bbolt.Tx, conversationID string) (int64, error) {
	v := tx.Bucket(bucketConversations).Get([]byte(conversationID))
	if v == nil {
		return 0, nil
	}
	m, err := decodeConversationMeta(v)
	if err != nil {
		return 0, fmt.Errorf("conversation %s: %w", conversationID, err)
	}
	return m.maxSeq, nil
}

// clientMsgValue returns the client_msg_ids value that points at a message.
func clientMsgValue(conversationID string, seq int64) []byte {
	v := make([]byte, 8+len(conversationID))
	putInt64(v, seq)
	copy(v[8:], conversationID)
	return v
}

// FindByClientMsgIDs returns the stored messages with the given keys; keys
// not stored are absent from the map.
func (s *Store) FindByClientMsgIDs(ctx context.Context, keys []server.ClientMsgKey) (map[server.ClientMsgKey]*imlitev1.Message, error) {
	const op = "find messages by client_msg_id"
	for _, k := range keys {
		if err := checkID("sender id", k.SenderID); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	found := make(map[server.ClientMsgKey]*imlitev1.Message, len(keys))
	err := s.view(ctx, op, func(tx *bbolt.Tx) error {
		index := tx.Bucket(bucketClientMsgIDs)
		msgs := tx.Bucket(bucketMessages)
		for _, k := range keys {
			ref := index.Get(joinKey(k.SenderID, k.ClientMsgID))
			if ref == nil {
				continue
			}
			if len(ref) < 8 {
				return fmt.Errorf("corrupt client_msg_id record of sender %s: %d bytes", k.SenderID, len(ref))
			}
			conv, seq := string(ref[8:]), getInt64(ref)
			v := msgs.Get(messageKey(conv, seq))
			if v == nil {
				return fmt.Errorf("client_msg_id %q of sender %s points at missing message %s seq %d", k.ClientMsgID, k.SenderID, conv, seq)
			}
			m, err := unmarshalMessage(v, conv, seq)
			if err != nil {
				return err
			}
			found[k] = m
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return found, nil
}

// appendPlan is an append checked and encoded before the write
// transaction, so the transaction, which blocks every other writer, only
// looks up keys and writes bytes.
type appendPlan struct {
	conversationID string
	// users are the users of a single chat, nil for a group.
	users       []string
	first, last int64
	msgKeys     [][]byte
	msgValues   [][]byte
	clientKeys  [][]byte
	// senderSeqs holds each sender's latest seq in the append, in the order
	// the senders first appear.
	senderSeqs []senderSeq
	// repeatsClientKey is set when two messages of the append share a
	// (sender_id, client_msg_id).
	repeatsClientKey bool
}

type senderSeq struct {
	userID string
	seq    int64
}

// planAppend validates an append and encodes its records. An error means
// the caller broke the Append contract, which fails the whole call.
func planAppend(a server.Append) (appendPlan, error) {
	ref, err := server.ParseConversationID(a.ConversationID)
	if err != nil {
		// %v, not %w: the core must see a storage failure here, not a
		// client error of its own request.
		return appendPlan{}, fmt.Errorf("conversation id %q: %v", a.ConversationID, err)
	}
	p := appendPlan{conversationID: a.ConversationID}
	if ref.Type == imlitev1.ConversationType_CONVERSATION_TYPE_SINGLE {
		p.users = ref.Users
	}
	if len(a.Messages) == 0 {
		return p, nil
	}

	n := len(a.Messages)
	p.msgKeys = make([][]byte, n)
	p.msgValues = make([][]byte, n)
	p.clientKeys = make([][]byte, n)
	seen := make(map[server.ClientMsgKey]bool, n)
	senderIndex := make(map[string]int)
	for i, m := range a.Messages {
		if m == nil {
			return appendPlan{}, fmt.Errorf("conversation %s: message %d is nil", a.ConversationID, i)
		}
		if m.GetConversationId() != a.ConversationID {
			return appendPlan{}, fmt.Errorf("conversation %s: message %d has conversation_id %q", a.ConversationID, i, m.GetConversationId())
		}
		if err := checkID("sender id", m.GetSenderId()); err != nil {
			return appendPlan{}, fmt.Errorf("conversation %s: message %d: %w", a.ConversationID, i, err)
		}
		seq := m.GetSeq()
		switch {
		case i == 0 && seq < 1:
			return appendPlan{}, fmt.Errorf("conversation %s: first seq is %d, expected at least 1", a.ConversationID, seq)
		case i > 0 && seq != p.last+1:
			return appendPlan{}, fmt.Errorf("conversation %s: seq %d follows seq %d, expected contiguous seqs", a.ConversationID, seq, p.last)
		}
		if i == 0 {
			p.first = seq
		}
		p.last = seq

		v, err := proto.Marshal(m)
		if err != nil {
			return appendPlan{}, fmt.Errorf("conversation %s: encode seq %d: %w", a.ConversationID, seq, err)
		}
		p.msgKeys[i] = messageKey(a.ConversationID, seq)
		p.msgValues[i] = v

		key := server.ClientMsgKey{SenderID: m.GetSenderId(), ClientMsgID: m.GetClientMsgId()}
		if seen[key] {
			p.repeatsClientKey = true
		}
		seen[key] = true
		p.clientKeys[i] = joinKey(key.SenderID, key.ClientMsgID)

		if j, ok := senderIndex[key.SenderID]; ok {
			p.senderSeqs[j].seq = seq
		} else {
			senderIndex[key.SenderID] = len(p.senderSeqs)
			p.senderSeqs = append(p.senderSeqs, senderSeq{userID: key.SenderID, seq: seq})
		}
	}
	return p, nil
}

// AppendMessages stores all appends in one write transaction, so a batch
// costs one disk sync. results[i] is nil or one of server.ErrSeqGap,
// server.ErrSeqTaken and server.ErrDuplicateMsg, checked in that order. A
// rejected append writes nothing, while the others in the call still commit.
// An append that repeats a (sender_id, client_msg_id) within itself is
// rejected with server.ErrDuplicateMsg too. A malformed append fails the whole
// call before anything is written: an invalid conversation id, a nil message,
// a message of another conversation or without sender, or seqs that do not
// ascend by one from at least 1.
//
// A stored append raises the conversation's max seq and creates the missing
// per-user state of both users of a single chat. Each sender's read seq moves
// forward to its latest message in the append and its UpdatedAt is set. In a
// group, a sender without state gets none: the state belongs to members, and
// a message racing with the sender's removal must not bring it back.
func (s *Store) AppendMessages(ctx context.Context, appends []server.Append) ([]error, error) {
	const op = "append messages"
	plans := make([]appendPlan, len(appends))
	for i, a := range appends {
		p, err := planAppend(a)
		if err != nil {
			return nil, fmt.Errorf("%s: append %d of %d: %w", op, i, len(appends), err)
		}
		plans[i] = p
	}

	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	req := &appendRequest{plans: plans, results: make([]error, len(appends)), done: make(chan struct{})}
	select {
	case s.appends <- req:
	case <-s.stop:
		return nil, fmt.Errorf("%s: %w", op, bbolt.ErrDatabaseNotOpen)
	}
	// Once handed over, the request may commit, so it is waited for even
	// when ctx ends: the result says what was stored.
	<-req.done
	if req.err != nil {
		return nil, fmt.Errorf("%s: %w", op, req.err)
	}
	return req.results, nil
}

// appendRequest is one AppendMessages call waiting for the committer.
type appendRequest struct {
	plans   []appendPlan
	results []error
	err     error
	done    chan struct{}
}

// maxGroupedAppends bounds the calls stored in one transaction.
const maxGroupedAppends = 64

// commitAppends is the group committer: it stores every AppendMessages call
// that arrived while the previous transaction was committing in one
// transaction, so concurrent store-stage workers share one file sync
// instead of queueing for one each. It runs until Close.
func (s *Store) commitAppends() {
	defer close(s.committed)
	for {
		var first *appendRequest
		select {
		case first = <-s.appends:
		case <-s.stop:
			return
		}
		group := []*appendRequest{first}
	gather:
		for len(group) < maxGroupedAppends {
			select {
			case r := <-s.appends:
				group = append(group, r)
			default:
				break gather
			}
		}
		s.commitGroup(group)
	}
}

// commitGroup stores a group in one transaction. When that fails, each
// request is retried alone, so a failing write fails only its own call.
func (s *Store) commitGroup(group []*appendRequest) {
	now := time.Now()
	err := s.db.Update(func(tx *bbolt.Tx) error {
		for _, r := range group {
			for i := range r.plans {
				rejected, err := storeAppend(tx, &r.plans[i], now)
				if err != nil {
					return fmt.Errorf("conversation %s: %w", r.plans[i].conversationID, err)
				}
				r.results[i] = rejected
			}
		}
		return nil
	})
	if err != nil && len(group) > 1 {
		for _, r := range group {
			s.commitGroup([]*appendRequest{r})
		}
		return
	}
	for _, r := range group {
		r.err = err
		close(r.done)
	}
}

// storeAppend writes one planned append. It returns the sentinel error that
// rejects the append, with nothing written, or the error of a failed write,
// which aborts the transaction.
func storeAppend(tx *bbolt.Tx, p *appendPlan, now time.Time) (rejected, err error) {
	if len(p.msgKeys) == 0 {
		return nil, nil
	}
	msgs := tx.Bucket(bucketMessages)
	index := tx.Bucket(bucketClientMsgIDs)

	if p.first > 1 && msgs.Get(messageKey(p.conversationID, p.first-1)) == nil {
		return server.ErrSeqGap, nil
	}
	// The keys of seqs first..last are contiguous in the bucket, so one seek
	// finds any of them that is stored.
	k, _ := msgs.Cursor().Seek(p.msgKeys[0])
	if k != nil && bytes.Compare(k, p.msgKeys[len(p.msgKeys)-1]) <= 0 {
		return server.ErrSeqTaken, nil
	}
	if p.repeatsClientKey {
		return server.ErrDuplicateMsg, nil
	}
	for _, ck := range p.clientKeys {
		if index.Get(ck) != nil {
			return server.ErrDuplicateMsg, nil
		}
	}

	for i, mk := range p.msgKeys {
		if err := msgs.Put(mk, p.msgValues[i]); err != nil {
			return nil, fmt.Errorf("put seq %d: %w", p.first+int64(i), err)
		}
		if err := index.Put(p.clientKeys[i], clientMsgValue(p.conversationID, p.first+int64(i))); err != nil {
			return nil, fmt.Errorf("put client_msg_id of seq %d: %w", p.first+int64(i), err)
		}
	}
	if err := raiseMaxSeq(tx, p.conversationID, p.last, now); err != nil {
		return nil, err
	}
	if err := updateSenderStates(tx, p, now); err != nil {
		return nil, err
	}
	return nil, nil
}

func raiseMaxSeq(tx *bbolt.Tx, conversationID string, seq int64, now time.Time) error {
	maxSeq, err := storedMaxSeq(tx, conversationID)
	if err != nil {
		return err
	}
	meta := conversationMeta{maxSeq: max(maxSeq, seq), updatedAt: now}
	if err := tx.Bucket(bucketConversations).Put([]byte(conversationID), encodeConversationMeta(meta)); err != nil {
		return fmt.Errorf("put max seq: %w", err)
	}
	return nil
}

// updateSenderStates creates the missing state of single-chat users and
// moves each sender's read seq forward, writing every state at most once.
func updateSenderStates(tx *bbolt.Tx, p *appendPlan, now time.Time) error {
	states := tx.Bucket(bucketUserConversations)
	type pending struct {
		state server.UserConversation
		dirty bool
	}
	byUser := make(map[string]*pending, len(p.users)+len(p.senderSeqs))
	var order []string
	load := func(userID string, create bool) (*pending, error) {
		if st, ok := byUser[userID]; ok {
			return st, nil
		}
		st, found, err := getUserConversation(states, userID, p.conversationID)
		if err != nil {
			return nil, err
		}
		if !found && !create {
			return nil, nil
		}
		ps := &pending{state: st}
		if !found {
			ps.state = server.UserConversation{UserID: userID, ConversationID: p.conversationID, UpdatedAt: now}
			ps.dirty = true
		}
		byUser[userID] = ps
		order = append(order, userID)
		return ps, nil
	}

	for _, u := range p.users {
		if _, err := load(u, true); err != nil {
			return err
		}
	}
	for _, ss := range p.senderSeqs {
		ps, err := load(ss.userID, false)
		if err != nil {
			return err
		}
		if ps == nil {
			continue
		}
		ps.state.ReadSeq = max(ps.state.ReadSeq, ss.seq)
		ps.state.UpdatedAt = now
		ps.dirty = true
	}

	for _, u := range order {
		ps := byUser[u]
		if !ps.dirty {
			continue
		}
		if err := putUserConversation(states, ps.state); err != nil {
			return err
		}
	}
	return nil
}

// MaxSeqs returns the max stored seq of each conversation; a conversation
// without messages maps to 0.
func (s *Store) MaxSeqs(ctx context.Context, conversationIDs []string) (map[string]int64, error) {
	const op = "load max seqs"
	out := make(map[string]int64, len(conversationIDs))
	err := s.view(ctx, op, func(tx *bbolt.Tx) error {
		for _, id := range conversationIDs {
			maxSeq, err := storedMaxSeq(tx, id)
			if err != nil {
				return err
			}
			out[id] = maxSeq
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// RangeMessages returns up to limit messages with begin <= seq <= end,
// ascending by seq. A limit of zero or less returns none.
func (s *Store) RangeMessages(ctx context.Context, conversationID string, begin, end int64, limit int) ([]*imlitev1.Message, error) {
	const op = "range messages"
	if err := checkID("conversation id", conversationID); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	begin = max(begin, 1)
	if limit <= 0 || end < begin {
		return nil, nil
	}
	var out []*imlitev1.Message
	err := s.view(ctx, op, func(tx *bbolt.Tx) error {
		endKey := messageKey(conversationID, end)
		c := tx.Bucket(bucketMessages).Cursor()
		for k, v := c.Seek(messageKey(conversationID, begin)); k != nil && bytes.Compare(k, endKey) <= 0; k, v = c.Next() {
			seq := getInt64(k[len(conversationID)+1:])
			m, err := unmarshalMessage(v, conversationID, seq)
			if err != nil {
				return err
			}
			out = append(out, m)
			if len(out) == limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// MessagesBySeqs returns the stored messages with the given seqs, ascending
// by seq. A seq listed twice is returned once.
func (s *Store) MessagesBySeqs(ctx context.Context, conversationID string, seqs []int64) ([]*imlitev1.Message, error) {
	const op = "load messages by seq"
	if err := checkID("conversation id", conversationID); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	sorted := slices.Clone(seqs)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	var out []*imlitev1.Message
	err := s.view(ctx, op, func(tx *bbolt.Tx) error {
		msgs := tx.Bucket(bucketMessages)
		for _, seq := range sorted {
			if seq < 1 {
				continue
			}
			v := msgs.Get(messageKey(conversationID, seq))
			if v == nil {
				continue
			}
			m, err := unmarshalMessage(v, conversationID, seq)
			if err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// unmarshalMessage decodes a stored message. proto.Unmarshal copies what it
// keeps, so the result stays valid after the transaction ends.
func unmarshalMessage(v []byte, conversationID string, seq int64) (*imlitev1.Message, error) {
	m := new(imlitev1.Message)
	if err := proto.Unmarshal(v, m); err != nil {
		return nil, fmt.Errorf("decode message %s seq %d: %w", conversationID, seq, err)
	}
	return m, nil
}
