package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
)

// userConversationVersion is the first byte of a user_conversations record.
const userConversationVersion = 1

const userConversationLen = 1 + 8 + 8 + 8 + 1 + 4 + 8

func encodeUserConversation(st server.UserConversation) []byte {
	v := make([]byte, userConversationLen)
	v[0] = userConversationVersion
	putInt64(v[1:], st.ReadSeq)
	putInt64(v[9:], st.MinSeq)
	putInt64(v[17:], st.HideSeq)
	if st.Pinned {
		v[25] = 1
	}
	binary.BigEndian.PutUint32(v[26:], uint32(st.RecvOpt))
	putInt64(v[30:], encodeTime(st.UpdatedAt))
	return v
}

func decodeUserConversation(userID, conversationID string, v []byte) (server.UserConversation, error) {
	if len(v) != userConversationLen || v[0] != userConversationVersion {
		return server.UserConversation{}, fmt.Errorf("corrupt state of user %s in conversation %s: %d bytes, version %d",
			userID, conversationID, len(v), firstByte(v))
	}
	return server.UserConversation{
		UserID:         userID,
		ConversationID: conversationID,
		ReadSeq:        getInt64(v[1:]),
		MinSeq:         getInt64(v[9:]),
		HideSeq:        getInt64(v[17:]),
		Pinned:         v[25] == 1,
		RecvOpt:        imlitev1.RecvOpt(int32(binary.BigEndian.Uint32(v[26:]))),
		UpdatedAt:      decodeTime(getInt64(v[30:])),
	}, nil
}

// getUserConversation loads one state. found is false when it is missing.
func getUserConversation(states *bbolt.Bucket, userID, conversationID string) (st server.UserConversation, found bool, err error) {
	v := states.Get(joinKey(userID, conversationID))
	if v == nil {
		return server.UserConversation{}, false, nil
	}
	st, err = decodeUserConversation(userID, conversationID, v)
	if err != nil {
		return server.UserConversation{}, false, err
	}
	return st, true, nil
}

func putUserConversation(states *bbolt.Bucket, st server.UserConversation) error {
	if err := states.Put(joinKey(st.UserID, st.ConversationID), encodeUserConversation(st)); err != nil {
		return fmt.Errorf("put state of user %s: %w", st.UserID, err)
	}
	return nil
}

// GetUserConversation returns the user's state in the conversation, or an
// error wrapping server.ErrNotFound.
func (s *Store) GetUserConversation(ctx context.Context, userID, conversationID string) (server.UserConversation, error) {
	const op = "get user conversation"
	if err := errors.Join(checkID("user id", userID), checkID("conversation id", conversationID)); err != nil {
		return server.UserConversation{}, fmt.Errorf("%s: %w", op, err)
	}
	var st server.UserConversation
	err := s.view(ctx, op, func(tx *bbolt.Tx) error {
		var found bool
		var err error
		st, found, err = getUserConversation(tx.Bucket(bucketUserConversations), userID, conversationID)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("user %s in conversation %s: %w", userID, conversationID, server.ErrNotFound)
		}
		return nil
	})
	if err != nil {
		return server.UserConversation{}, err
	}
	return st, nil
}

// ListUserConversations returns every conversation state of the user,
// ascending by conversation id.
func (s *Store) ListUserConversations(ctx context.Context, userID string) ([]server.UserConversation, error) {
	const op = "list user conversations"
	if err := checkID("user id", userID); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	var out []server.UserConversation
	err := s.view(ctx, op, func(tx *bbolt.Tx) error {
		prefix := prefixKey(userID)
		c := tx.Bucket(bucketUserConversations).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			st, err := decodeUserConversation(userID, string(k[len(prefix):]), v)
			if err != nil {
				return err
			}
			out = append(out, st)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UpdateUserConversation applies u, creating the state if missing, and
// returns the result. A seq field smaller than the stored one is ignored.
// UpdatedAt moves to now when the state is created or a field changes.
func (s *Store) UpdateUserConversation(ctx context.Context, userID, conversationID string, u server.ConversationUpdate) (server.UserConversation, error) {
	const op = "update user conversation"
	if err := errors.Join(checkID("user id", userID), checkID("conversation id", conversationID)); err != nil {
		return server.UserConversation{}, fmt.Errorf("%s: %w", op, err)
	}
	var st server.UserConversation
	err := s.update(ctx, op, func(tx *bbolt.Tx) error {
		states := tx.Bucket(bucketUserConversations)
		var found bool
		var err error
		st, found, err = getUserConversation(states, userID, conversationID)
		if err != nil {
			return err
		}
		if !found {
			st = server.UserConversation{UserID: userID, ConversationID: conversationID}
		}
		if !applyUpdate(&st, u) && found {
			return nil
		}
		st.UpdatedAt = time.Now()
		return putUserConversation(states, st)
	})
	if err != nil {
		return server.UserConversation{}, err
	}
	return st, nil
}

// applyUpdate applies u to st and reports whether a field changed.
func applyUpdate(st *server.UserConversation, u server.ConversationUpdate) bool {
	changed := false
	raise := func(field *int64, v *int64) {
		if v != nil && *v > *field {
			*field = *v
			changed = true
		}
	}
	raise(&st.ReadSeq, u.ReadSeq)
	raise(&st.MinSeq, u.MinSeq)
	raise(&st.HideSeq, u.HideSeq)
	if u.Pinned != nil && *u.Pinned != st.Pinned {
		st.Pinned = *u.Pinned
		changed = true
	}
	if u.RecvOpt != nil && *u.RecvOpt != st.RecvOpt {
		st.RecvOpt = *u.RecvOpt
		changed = true
	}
	return changed
}

// JoinConversation creates the state of the users who have none, with
// MinSeq minSeq and ReadSeq minSeq - 1 (at least 0), so earlier messages are
// neither visible nor unread. Existing state is kept, so a retried join does
// not undo reads made since the first attempt.
func (s *Store) JoinConversation(ctx context.Context, conversationID string, userIDs []string, minSeq int64) error {
	const op = "join conversation"
	if err := errors.Join(checkID("conversation id", conversationID), checkIDs("user id", userIDs)); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	now := time.Now()
	return s.update(ctx, op, func(tx *bbolt.Tx) error {
		states := tx.Bucket(bucketUserConversations)
		for _, userID := range userIDs {
			if states.Get(joinKey(userID, conversationID)) != nil {
				continue
			}
			st := server.UserConversation{
				UserID:         userID,
				ConversationID: conversationID,
				MinSeq:         minSeq,
				ReadSeq:        max(minSeq-1, 0),
				UpdatedAt:      now,
			}
			if err := putUserConversation(states, st); err != nil {
				return err
			}
		}
		return nil
	})
}

// LeaveConversation deletes the state of the users. Users without state are
// skipped.
func (s *Store) LeaveConversation(ctx context.Context, conversationID string, userIDs []string) error {
	const op = "leave conversation"
	if err := errors.Join(checkID("conversation id", conversationID), checkIDs("user id", userIDs)); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return s.update(ctx, op, func(tx *bbolt.Tx) error {
		states := tx.Bucket(bucketUserConversations)
		for _, userID := range userIDs {
			if err := states.Delete(joinKey(userID, conversationID)); err != nil {
				return fmt.Errorf("delete state of user %s: %w", userID, err)
			}
		}
		return nil
	})
}
