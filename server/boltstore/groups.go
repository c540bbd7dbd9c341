package boltstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/imlite/imlite/server"
)

// groupRecord is the stored form of server.Group without its id, which is
// the key.
type groupRecord struct {
	Name        string    `json:"name"`
	OwnerID     string    `json:"owner_id"`
	Ex          string    `json:"ex,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	MemberCount int       `json:"member_count"`
}

func getGroup(tx *bbolt.Tx, groupID string) (server.Group, error) {
	v := tx.Bucket(bucketGroups).Get([]byte(groupID))
	if v == nil {
		return server.Group{}, fmt.Errorf("group %s: %w", groupID, server.ErrNotFound)
	}
	var rec groupRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return server.Group{}, fmt.Errorf("decode group %s: %w", groupID, err)
	}
	return server.Group{
		ID:          groupID,
		Name:        rec.Name,
		OwnerID:     rec.OwnerID,
		Ex:          rec.Ex,
		CreatedAt:   rec.CreatedAt,
		MemberCount: rec.MemberCount,
	}, nil
}

func putGroup(tx *bbolt.Tx, g server.Group) error {
	v, err := json.Marshal(groupRecord{Name: g.Name, OwnerID: g.OwnerID, Ex: g.Ex, CreatedAt: g.CreatedAt, MemberCount: g.MemberCount})
	if err != nil {
		return fmt.Errorf("encode group %s: %w", g.ID, err)
	}
	if err := tx.Bucket(bucketGroups).Put([]byte(g.ID), v); err != nil {
		return fmt.Errorf("put group %s: %w", g.ID, err)
	}
	return nil
}

// CreateGroup stores g with its members, or returns an error wrapping
// server.ErrAlreadyExists when the group id is taken. The stored member count
// is the number of distinct members, and g.MemberCount is ignored.
func (s *Store) CreateGroup(ctx context.Context, g server.Group, members []server.GroupMember) error {
	const op = "create group"
	if err := checkID("group id", g.ID); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	for _, m := range members {
		if err := checkID("member user id", m.UserID); err != nil {
			return fmt.Errorf("%s %s: %w", op, g.ID, err)
		}
	}
	return s.update(ctx, op, func(tx *bbolt.Tx) error {
		if tx.Bucket(bucketGroups).Get([]byte(g.ID)) != nil {
			return fmt.Errorf("group %s: %w", g.ID, server.ErrAlreadyExists)
		}
		added, err := putNewMembers(tx, g.ID, members)
		if err != nil {
			return err
		}
		g.MemberCount = len(added)
		return putGroup(tx, g)
	})
}

// putNewMembers stores the members who are not stored yet, each once, and
// returns their user ids in request order.
func putNewMembers(tx *bbolt.Tx, groupID string, members []server.GroupMember) ([]string, error) {
	bucket := tx.Bucket(bucketGroupMembers)
	added := make([]string, 0, len(members))
	for _, m := range members {
		k := joinKey(groupID, m.UserID)
		if bucket.Get(k) != nil {
			continue
		}
		if err := bucket.Put(k, encodeTimeValue(m.JoinedAt)); err != nil {
			return nil, fmt.Errorf("put member %s of group %s: %w", m.UserID, groupID, err)
		}
		added = append(added, m.UserID)
	}
	return added, nil
}

// GetGroup returns the group with its member count, or an error wrapping
// server.ErrNotFound.
func (s *Store) GetGroup(ctx context.Context, groupID string) (server.Group, error) {
	const op = "get group"
	if err := checkID("group id", groupID); err != nil {
		return server.Group{}, fmt.Errorf("%s: %w", op, err)
	}
	var g server.Group
	err := s.view(ctx, op, func(tx *bbolt.Tx) error {
		var err error
		g, err = getGroup(tx, groupID)
		return err
	})
	if err != nil {
		return server.Group{}, err
	}
	return g, nil
}

// AddGroupMembers adds the users who are not members yet and returns their
// ids, in request order, with the new member count. When the new count would
// exceed maxMembers, it adds nothing and returns an error wrapping
// server.ErrGroupFull. Users who are members already do not count, so an add
// of members only never fails that way. A missing group is
// server.ErrNotFound.
func (s *Store) AddGroupMembers(ctx context.Context, groupID string, members []server.GroupMember, maxMembers int) ([]string, int, error) {
	const op = "add group members"
	if err := checkID("group id", groupID); err != nil {
		return nil, 0, fmt.Errorf("%s: %w", op, err)
	}
	for _, m := range members {
		if err := checkID("member user id", m.UserID); err != nil {
			return nil, 0, fmt.Errorf("%s to %s: %w", op, groupID, err)
		}
	}
	var added []string
	var count int
	err := s.update(ctx, op, func(tx *bbolt.Tx) error {
		g, err := getGroup(tx, groupID)
		if err != nil {
			return err
		}
		added, err = putNewMembers(tx, groupID, members)
		if err != nil {
			return err
		}
		if len(added) == 0 {
			count = g.MemberCount
			return nil
		}
		if g.MemberCount+len(added) > maxMembers {
			// Returning an error rolls back the members put above.
			return fmt.Errorf("group %s has %d members, adding %d would exceed %d: %w",
				groupID, g.MemberCount, len(added), maxMembers, server.ErrGroupFull)
		}
		g.MemberCount += len(added)
		count = g.MemberCount
		return putGroup(tx, g)
	})
	if err != nil {
		return nil, 0, err
	}
	return added, count, nil
}

// RemoveGroupMembers removes the users who are members and returns their
// ids, in request order, with the new member count. A missing group is
// server.ErrNotFound.
func (s *Store) RemoveGroupMembers(ctx context.Context, groupID string, userIDs []string) ([]string, int, error) {
	const op = "remove group members"
	if err := errors.Join(checkID("group id", groupID), checkIDs("member user id", userIDs)); err != nil {
		return nil, 0, fmt.Errorf("%s: %w", op, err)
	}
	var removed []string
	var count int
	err := s.update(ctx, op, func(tx *bbolt.Tx) error {
		g, err := getGroup(tx, groupID)
		if err != nil {
			return err
		}
		bucket := tx.Bucket(bucketGroupMembers)
		removed = make([]string, 0, len(userIDs))
		for _, userID := range userIDs {
			k := joinKey(groupID, userID)
			if bucket.Get(k) == nil {
				continue
			}
			if err := bucket.Delete(k); err != nil {
				return fmt.Errorf("delete member %s of group %s: %w", userID, groupID, err)
			}
			removed = append(removed, userID)
		}
		g.MemberCount -= len(removed)
		count = g.MemberCount
		if len(removed) == 0 {
			return nil
		}
		return putGroup(tx, g)
	})
	if err != nil {
		return nil, 0, err
	}
	return removed, count, nil
}

// IsGroupMember reports whether userID is a member. A missing group is
// server.ErrNotFound.
func (s *Store) IsGroupMember(ctx context.Context, groupID, userID string) (bool, error) {
	const op = "check group membership"
	if err := errors.Join(checkID("group id", groupID), checkID("user id", userID)); err != nil {
		return false, fmt.Errorf("%s: %w", op, err)
	}
	var member bool
	err := s.view(ctx, op, func(tx *bbolt.Tx) error {
		if _, err := getGroup(tx, groupID); err != nil {
			return err
		}
		member = tx.Bucket(bucketGroupMembers).Get(joinKey(groupID, userID)) != nil
		return nil
	})
	if err != nil {
		return false, err
	}
	return member, nil
}

// ListGroupMembers returns up to limit members with user id > after,
// ascending by user id. A limit of zero or less returns none. A missing group
// is server.ErrNotFound.
func (s *Store) ListGroupMembers(ctx context.Context, groupID, after string, limit int) ([]server.GroupMember, error) {
	const op = "list group members"
	if err := checkID("group id", groupID); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	var out []server.GroupMember
	err := s.view(ctx, op, func(tx *bbolt.Tx) error {
		if _, err := getGroup(tx, groupID); err != nil {
			return err
		}
		if limit <= 0 {
			return nil
		}
		return forEachMember(tx, groupID, after, func(userID string, v []byte) (bool, error) {
			joinedAt, err := decodeTimeValue(v)
			if err != nil {
				return false, fmt.Errorf("member %s of group %s: %w", userID, groupID, err)
			}
			out = append(out, server.GroupMember{UserID: userID, JoinedAt: joinedAt})
			return len(out) < limit, nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GroupMemberIDs returns every member's user id, ascending. A missing group
// is server.ErrNotFound.
func (s *Store) GroupMemberIDs(ctx context.Context, groupID string) ([]string, error) {
	const op = "list group member ids"
	if err := checkID("group id", groupID); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	var out []string
	err := s.view(ctx, op, func(tx *bbolt.Tx) error {
		g, err := getGroup(tx, groupID)
		if err != nil {
			return err
		}
		out = make([]string, 0, g.MemberCount)
		return forEachMember(tx, groupID, "", func(userID string, _ []byte) (bool, error) {
			out = append(out, userID)
			return true, nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// forEachMember calls fn for the members with user id > after, ascending,
// until fn returns false or an error.
func forEachMember(tx *bbolt.Tx, groupID, after string, fn func(userID string, v []byte) (bool, error)) error {
	prefix := prefixKey(groupID)
	start := joinKey(groupID, after)
	c := tx.Bucket(bucketGroupMembers).Cursor()
	k, v := c.Seek(start)
	if k != nil && after != "" && bytes.Equal(k, start) {
		k, v = c.Next()
	}
	for ; k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		more, err := fn(string(k[len(prefix):]), v)
		if err != nil || !more {
			return err
		}
	}
	return nil
}
