package mongostore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/imlite/imlite/server"
)

// groupDoc is the stored form of server.Group.
//
// member_count changes in a call of its own, before the member documents
// on an add and after them on a removal. An add whose insert fails gives
// back the room of the users it did not add.
//
// TODO: when that give-back or a removal's decrement fails too, the count
// stays above the number of members (never below, so adds never exceed the
// limit), and no method recounts it.
type groupDoc struct {
	ID          string    `bson:"_id"`
	Name        string    `bson:"name"`
	OwnerID     string    `bson:"owner_id"`
	Ex          string    `bson:"ex"`
	CreatedAt   time.Time `bson:"created_at"`
	MemberCount int64     `bson:"member_count"`
	// Creating is set until CreateGroup has stored every member. Until then
	// the group reads as missing, and only a create by the same owner may
	// finish it.
	Creating bool `bson:"creating,omitempty"`
}

func (d *groupDoc) group() server.Group {
	return server.Group{
		ID:          d.ID,
		Name:        d.Name,
		OwnerID:     d.OwnerID,
		Ex:          d.Ex,
		CreatedAt:   d.CreatedAt,
		MemberCount: int(d.MemberCount),
	}
}

// memberDoc is one document of group_members.
type memberDoc struct {
	GroupID  string    `bson:"group_id"`
	UserID   string    `bson:"user_id"`
	JoinedAt time.Time `bson:"joined_at"`
}

// visibleGroup matches a group whose creation has finished.
func visibleGroup(groupID string) bson.D {
	return bson.D{{Key: "_id", Value: groupID}, {Key: "creating", Value: bson.D{{Key: "$exists", Value: false}}}}
}

func memberFilter(groupID, userID string) bson.D {
	return bson.D{{Key: "group_id", Value: groupID}, {Key: "user_id", Value: userID}}
}

// CreateGroup stores g with its members, or returns an error wrapping
// server.ErrAlreadyExists when the group id is taken. The stored member count
// is the number of distinct members, and g.MemberCount is ignored.
//
// The group document is written first, marked as being created, so a
// second create of the id fails before it adds members. When a create
// failed after that, a create by the same owner finishes it and adds its
// own members, while the group fields of the first attempt stay.
func (s *Store) CreateGroup(ctx context.Context, g server.Group, members []server.GroupMember) error {
	const op = "create group"
	if err := checkID("group id", g.ID); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := checkMembers(members); err != nil {
		return fmt.Errorf("%s %s: %w", op, g.ID, err)
	}
	members = uniqueMembers(members)

	// 1. Claim the id.
	if err := s.insertCreatingGroup(ctx, g, len(members)); err != nil {
		return wrap(fmt.Sprintf("%s %s", op, g.ID), err)
	}

	// 2. Store the members. Those stored by an earlier attempt stay.
	if _, err := s.insertMembers(ctx, g.ID, members); err != nil {
		return wrap(fmt.Sprintf("%s %s", op, g.ID), err)
	}

	// 3. Count the members and show the group.
	if err := s.finishCreate(ctx, g.ID); err != nil {
		return wrap(fmt.Sprintf("%s %s", op, g.ID), err)
	}
	return nil
}

// insertCreatingGroup inserts the group document marked as being created.
// It returns nil for an unfinished create of the same owner, and an error
// wrapping server.ErrAlreadyExists for any other existing group.
func (s *Store) insertCreatingGroup(ctx context.Context, g server.Group, memberCount int) error {
	doc := groupDoc{
		ID:          g.ID,
		Name:        g.Name,
		OwnerID:     g.OwnerID,
		Ex:          g.Ex,
		CreatedAt:   g.CreatedAt,
		MemberCount: int64(memberCount),
		Creating:    true,
	}
	ictx, cancel := s.opCtx(ctx)
	_, err := s.groups.InsertOne(ictx, doc)
	cancel()
	if !mongo.IsDuplicateKeyError(err) {
		return err
	}

	fctx, cancel := s.opCtx(ctx)
	defer cancel()
	var existing groupDoc
	err = s.groups.FindOne(fctx, bson.D{{Key: "_id", Value: g.ID}}).Decode(&existing)
	switch {
	case err != nil && !errors.Is(err, mongo.ErrNoDocuments):
		return fmt.Errorf("load existing group: %w", err)
	case err == nil && existing.Creating && existing.OwnerID == g.OwnerID:
		s.log.Info("mongo store: finishing an unfinished group create", "group_id", g.ID)
		return nil
	}
	return fmt.Errorf("group id is taken: %w", server.ErrAlreadyExists)
}

// finishCreate sets the member count of a group being created from its
// member documents and clears the creating mark. Once the mark is cleared,
// member_count changes only by $inc.
func (s *Store) finishCreate(ctx context.Context, groupID string) error {
	cctx, cancel := s.opCtx(ctx)
	n, err := s.groupMembers.CountDocuments(cctx, bson.D{{Key: "group_id", Value: groupID}})
	cancel()
	if err != nil {
		return fmt.Errorf("count members: %w", err)
	}
	uctx, cancel := s.opCtx(ctx)
	defer cancel()
	filter := bson.D{{Key: "_id", Value: groupID}, {Key: "creating", Value: true}}
	update := bson.D{
		{Key: "$set", Value: bson.D{{Key: "member_count", Value: n}}},
		{Key: "$unset", Value: bson.D{{Key: "creating", Value: ""}}},
	}
	if _, err := s.groups.UpdateOne(uctx, filter, update); err != nil {
		return fmt.Errorf("finish group: %w", err)
	}
	return nil
}

// insertMembers inserts the member documents, unordered, and returns the
// indexes of the members that were members already (a duplicate key).
func (s *Store) insertMembers(ctx context.Context, groupID string, members []server.GroupMember) ([]int, error) {
	if len(members) == 0 {
		return nil, nil
	}
	docs := make([]any, len(members))
	for i, m := range members {
		docs[i] = memberDoc{GroupID: groupID, UserID: m.UserID, JoinedAt: m.JoinedAt}
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	_, err := s.groupMembers.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	if err == nil {
		return nil, nil
	}
	if dups, ok := duplicateKeyIndexes(err); ok {
		return dups, nil
	}
	return nil, fmt.Errorf("insert members: %w", err)
}

// GetGroup returns the group with its member count, or an error wrapping
// server.ErrNotFound.
func (s *Store) GetGroup(ctx context.Context, groupID string) (server.Group, error) {
	const op = "get group"
	if err := checkID("group id", groupID); err != nil {
		return server.Group{}, fmt.Errorf("%s: %w", op, err)
	}
	d, err := s.loadGroup(ctx, groupID)
	if err != nil {
		return server.Group{}, wrap(op, err)
	}
	return d.group(), nil
}

// loadGroup returns the group document, or an error wrapping
// server.ErrNotFound for a missing group or one still being created.
func (s *Store) loadGroup(ctx context.Context, groupID string) (groupDoc, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var d groupDoc
	err := s.groups.FindOne(ctx, visibleGroup(groupID)).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return groupDoc{}, fmt.Errorf("group %s: %w", groupID, server.ErrNotFound)
	}
	if err != nil {
		return groupDoc{}, fmt.Errorf("load group %s: %w", groupID, err)
	}
	return d, nil
}

// AddGroupMembers adds the users who are not members yet and returns their
// ids, in request order, with the new member count. When the new count would
// exceed maxMembers, it adds nothing and returns an error wrapping
// server.ErrGroupFull. Users who are members already do not count, so an add
// of members only never fails that way. A missing group is
// server.ErrNotFound.
//
// The add first reserves room with a conditional $inc of member_count, so
// concurrent adds cannot exceed maxMembers together, then inserts the
// members. A user added concurrently in between gives its room back.
func (s *Store) AddGroupMembers(ctx context.Context, groupID string, members []server.GroupMember, maxMembers int) ([]string, int, error) {
	const op = "add group members"
	if err := checkID("group id", groupID); err != nil {
		return nil, 0, fmt.Errorf("%s: %w", op, err)
	}
	if err := checkMembers(members); err != nil {
		return nil, 0, fmt.Errorf("%s to %s: %w", op, groupID, err)
	}
	opName := fmt.Sprintf("%s to %s", op, groupID)

	// 1. Leave out the users who are members.
	g, err := s.loadGroup(ctx, groupID)
	if err != nil {
		return nil, 0, wrap(opName, err)
	}
	fresh, err := s.nonMembers(ctx, groupID, uniqueMembers(members))
	if err != nil {
		return nil, 0, wrap(opName, err)
	}
	if len(fresh) == 0 {
		return []string{}, int(g.MemberCount), nil
	}

	// 2. Reserve room for the rest.
	count, err := s.reserveMembers(ctx, groupID, len(fresh), maxMembers)
	if err != nil {
		return nil, 0, wrap(opName, err)
	}

	// 3. Insert them.
	if s.beforeInsertMembers != nil {
		s.beforeInsertMembers()
	}
	dups, err := s.insertMembers(ctx, groupID, fresh)
	if err != nil {
		s.giveBackRoom(ctx, groupID, fresh, err)
		return nil, 0, wrap(opName, err)
	}
	if len(dups) > 0 {
		if count, err = s.changeMemberCount(ctx, groupID, -len(dups)); err != nil {
			return nil, 0, wrap(opName, err)
		}
	}
	isDup := make(map[int]bool, len(dups))
	for _, i := range dups {
		isDup[i] = true
	}
	added := make([]string, 0, len(fresh))
	for i, m := range fresh {
		if !isDup[i] {
			added = append(added, m.UserID)
		}
	}
	return added, count, nil
}

// giveBackRoom lowers member_count by the number of reserved users whom a
// failed insert left out. An unordered insert may have stored some of
// them, so they are looked up first. The give-back runs even when ctx
// ended, because the failure it repairs may be that end.
func (s *Store) giveBackRoom(ctx context.Context, groupID string, reserved []server.GroupMember, insertErr error) {
	ctx = context.WithoutCancel(ctx)
	missing, err := s.nonMembers(ctx, groupID, slices.Clone(reserved))
	if err == nil && len(missing) > 0 {
		_, err = s.changeMemberCount(ctx, groupID, -len(missing))
	}
	if err != nil {
		s.log.Warn("mongo store: giving back room after a failed member insert failed; member count stays high",
			"group_id", groupID, "reserved", len(reserved), "insert_err", insertErr, "err", err)
	}
}

// nonMembers returns the members of the list who are not in the group.
func (s *Store) nonMembers(ctx context.Context, groupID string, members []server.GroupMember) ([]server.GroupMember, error) {
	ids := make([]string, len(members))
	for i, m := range members {
		ids[i] = m.UserID
	}
	existing, err := s.memberIDs(ctx, groupID, bson.D{{Key: "$in", Value: ids}}, 0)
	if err != nil {
		return nil, err
	}
	isMember := make(map[string]bool, len(existing))
	for _, id := range existing {
		isMember[id] = true
	}
	return slices.DeleteFunc(members, func(m server.GroupMember) bool { return isMember[m.UserID] }), nil
}

// reserveMembers raises member_count by n unless it would exceed
// maxMembers, and returns the new count.
func (s *Store) reserveMembers(ctx context.Context, groupID string, n, maxMembers int) (int, error) {
	rctx, cancel := s.opCtx(ctx)
	defer cancel()
	filter := append(visibleGroup(groupID), bson.E{Key: "member_count", Value: bson.D{{Key: "$lte", Value: int64(maxMembers - n)}}})
	update := bson.D{{Key: "$inc", Value: bson.D{{Key: "member_count", Value: int64(n)}}}}
	opts := options.FindOneAndUpdate().SetReturnDocument(options.After)
	var d groupDoc
	err := s.groups.FindOneAndUpdate(rctx, filter, update, opts).Decode(&d)
	if err == nil {
		return int(d.MemberCount), nil
	}
	if !errors.Is(err, mongo.ErrNoDocuments) {
		return 0, fmt.Errorf("reserve room for %d members: %w", n, err)
	}

	// The group is missing or full.
	g, err := s.loadGroup(ctx, groupID)
	if err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("group %s has %d members, adding %d would exceed %d: %w",
		groupID, g.MemberCount, n, maxMembers, server.ErrGroupFull)
}

// changeMemberCount adds delta to member_count and returns the new count.
func (s *Store) changeMemberCount(ctx context.Context, groupID string, delta int) (int, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	update := bson.D{{Key: "$inc", Value: bson.D{{Key: "member_count", Value: int64(delta)}}}}
	opts := options.FindOneAndUpdate().SetReturnDocument(options.After)
	var d groupDoc
	err := s.groups.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: groupID}}, update, opts).Decode(&d)
	if err != nil {
		return 0, fmt.Errorf("change member count by %d: %w", delta, err)
	}
	return int(d.MemberCount), nil
}

// RemoveGroupMembers removes the users who are members and returns their
// ids, in request order, with the new member count. A missing group is
// server.ErrNotFound. Each user is deleted by a call of its own, so that
// of two concurrent removals of a user only one reports it.
func (s *Store) RemoveGroupMembers(ctx context.Context, groupID string, userIDs []string) ([]string, int, error) {
	const op = "remove group members"
	if err := errors.Join(checkID("group id", groupID), checkIDs("member user id", userIDs)); err != nil {
		return nil, 0, fmt.Errorf("%s: %w", op, err)
	}
	opName := fmt.Sprintf("%s from %s", op, groupID)
	g, err := s.loadGroup(ctx, groupID)
	if err != nil {
		return nil, 0, wrap(opName, err)
	}

	ids := uniqueStrings(userIDs)
	deleted := make([]bool, len(ids))
	err = forEachParallel(ctx, len(ids), func(ctx context.Context, i int) error {
		ctx, cancel := s.opCtx(ctx)
		defer cancel()
		res, err := s.groupMembers.DeleteOne(ctx, memberFilter(groupID, ids[i]))
		if err != nil {
			return fmt.Errorf("delete member %s: %w", ids[i], err)
		}
		deleted[i] = res.DeletedCount > 0
		return nil
	})
	if err != nil {
		return nil, 0, wrap(opName, err)
	}

	removed := make([]string, 0, len(ids))
	for i, id := range ids {
		if deleted[i] {
			removed = append(removed, id)
		}
	}
	if len(removed) == 0 {
		return removed, int(g.MemberCount), nil
	}
	count, err := s.changeMemberCount(ctx, groupID, -len(removed))
	if err != nil {
		return nil, 0, wrap(opName, err)
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
	opName := fmt.Sprintf("%s of %s in %s", op, userID, groupID)
	if _, err := s.loadGroup(ctx, groupID); err != nil {
		return false, wrap(opName, err)
	}
	ids, err := s.memberIDs(ctx, groupID, userID, 1)
	if err != nil {
		return false, wrap(opName, err)
	}
	return len(ids) > 0, nil
}

// ListGroupMembers returns up to limit members with user id > after,
// ascending by user id. A limit of zero or less returns none. A missing group
// is server.ErrNotFound.
func (s *Store) ListGroupMembers(ctx context.Context, groupID, after string, limit int) ([]server.GroupMember, error) {
	const op = "list group members"
	if err := checkID("group id", groupID); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	opName := fmt.Sprintf("%s of %s", op, groupID)
	if _, err := s.loadGroup(ctx, groupID); err != nil {
		return nil, wrap(opName, err)
	}
	if limit <= 0 {
		return nil, nil
	}
	filter := bson.D{{Key: "group_id", Value: groupID}, {Key: "user_id", Value: bson.D{{Key: "$gt", Value: after}}}}
	opts := options.Find().SetSort(bson.D{{Key: "user_id", Value: 1}}).SetLimit(int64(limit))
	var out []server.GroupMember
	err := s.find(ctx, s.groupMembers, filter, opts, func(cur *mongo.Cursor) error {
		var d memberDoc
		if err := cur.Decode(&d); err != nil {
			return fmt.Errorf("decode member %v: %w", cur.Current.Lookup("user_id"), err)
		}
		out = append(out, server.GroupMember{UserID: d.UserID, JoinedAt: d.JoinedAt})
		return nil
	})
	if err != nil {
		return nil, wrap(opName, err)
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
	opName := fmt.Sprintf("%s of %s", op, groupID)
	if _, err := s.loadGroup(ctx, groupID); err != nil {
		return nil, wrap(opName, err)
	}
	ids, err := s.memberIDs(ctx, groupID, nil, 0)
	if err != nil {
		return nil, wrap(opName, err)
	}
	return ids, nil
}

// memberIDs returns the user ids of the group's members, ascending.
// userFilter is the filter value of user_id, a user id or an operator
// document such as {$in: [...]}; nil matches every member. limit bounds the
// result when positive.
func (s *Store) memberIDs(ctx context.Context, groupID string, userFilter any, limit int) ([]string, error) {
	filter := bson.D{{Key: "group_id", Value: groupID}}
	if userFilter != nil {
		filter = append(filter, bson.E{Key: "user_id", Value: userFilter})
	}
	opts := options.Find().
		SetSort(bson.D{{Key: "user_id", Value: 1}}).
		SetProjection(bson.D{{Key: "_id", Value: 0}, {Key: "user_id", Value: 1}})
	if limit > 0 {
		opts.SetLimit(int64(limit))
	}
	var out []string
	err := s.find(ctx, s.groupMembers, filter, opts, func(cur *mongo.Cursor) error {
		var d memberDoc
		if err := cur.Decode(&d); err != nil {
			return fmt.Errorf("decode member: %w", err)
		}
		out = append(out, d.UserID)
		return nil
	})
	return out, err
}

// checkMembers rejects a member without a user id.
func checkMembers(members []server.GroupMember) error {
	for _, m := range members {
		if err := checkID("member user id", m.UserID); err != nil {
			return err
		}
	}
	return nil
}

// uniqueMembers returns members with each user id once, at its first
// occurrence.
func uniqueMembers(members []server.GroupMember) []server.GroupMember {
	seen := make(map[string]bool, len(members))
	out := make([]server.GroupMember, 0, len(members))
	for _, m := range members {
		if !seen[m.UserID] {
			seen[m.UserID] = true
			out = append(out, m)
		}
	}
	return out
}

// uniqueStrings returns ids with each id once, at its first occurrence.
func uniqueStrings(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}
