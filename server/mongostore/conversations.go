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

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
)

// maxUpdateAttempts bounds the attempts of UpdateUserConversation when
// concurrent writers keep changing the state between its two calls.
const maxUpdateAttempts = 5

// userConversationDoc is the stored form of server.UserConversation.
type userConversationDoc struct {
	UserID         string        `bson:"user_id"`
	ConversationID string        `bson:"conversation_id"`
	ReadSeq        int64         `bson:"read_seq"`
	MinSeq         int64         `bson:"min_seq"`
	HideSeq        int64         `bson:"hide_seq"`
	Pinned         bool          `bson:"pinned"`
	RecvOpt        int32         `bson:"recv_opt"`
	UpdatedAt      bson.DateTime `bson:"updated_at"`
}

func (d *userConversationDoc) state() server.UserConversation {
	return server.UserConversation{
		UserID:         d.UserID,
		ConversationID: d.ConversationID,
		ReadSeq:        d.ReadSeq,
		MinSeq:         d.MinSeq,
		HideSeq:        d.HideSeq,
		Pinned:         d.Pinned,
		RecvOpt:        imlitev1.RecvOpt(d.RecvOpt),
		UpdatedAt:      d.UpdatedAt.Time(),
	}
}

// nowMillis returns the current time at the millisecond precision of BSON
// dates, so a time returned to the caller equals the one stored.
func nowMillis() bson.DateTime {
	return bson.NewDateTimeFromTime(time.Now())
}

func stateFilter(userID, conversationID string) bson.D {
	return bson.D{{Key: "user_id", Value: userID}, {Key: "conversation_id", Value: conversationID}}
}

// initialState returns the fields of a new state, for $setOnInsert.
func initialState(readSeq, minSeq int64, now bson.DateTime) bson.D {
	return bson.D{
		{Key: "read_seq", Value: readSeq},
		{Key: "min_seq", Value: minSeq},
		{Key: "hide_seq", Value: int64(0)},
		{Key: "pinned", Value: false},
		{Key: "recv_opt", Value: int32(0)},
		{Key: "updated_at", Value: now},
	}
}

// GetUserConversation returns the user's state in the conversation, or an
// error wrapping server.ErrNotFound.
func (s *Store) GetUserConversation(ctx context.Context, userID, conversationID string) (server.UserConversation, error) {
	const op = "get user conversation"
	if err := errors.Join(checkID("user id", userID), checkID("conversation id", conversationID)); err != nil {
		return server.UserConversation{}, fmt.Errorf("%s: %w", op, err)
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	var d userConversationDoc
	err := s.userConversations.FindOne(ctx, stateFilter(userID, conversationID)).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return server.UserConversation{}, fmt.Errorf("%s: user %s in conversation %s: %w", op, userID, conversationID, server.ErrNotFound)
	}
	if err != nil {
		return server.UserConversation{}, wrap(fmt.Sprintf("%s of user %s in %s", op, userID, conversationID), err)
	}
	return d.state(), nil
}

// ListUserConversations returns every conversation state of the user,
// ascending by conversation id.
func (s *Store) ListUserConversations(ctx context.Context, userID string) ([]server.UserConversation, error) {
	const op = "list user conversations"
	if err := checkID("user id", userID); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	var out []server.UserConversation
	opts := options.Find().SetSort(bson.D{{Key: "conversation_id", Value: 1}})
	err := s.find(ctx, s.userConversations, bson.D{{Key: "user_id", Value: userID}}, opts, func(cur *mongo.Cursor) error {
		var d userConversationDoc
		if err := cur.Decode(&d); err != nil {
			return fmt.Errorf("decode state %v: %w", cur.Current.Lookup("_id"), err)
		}
		out = append(out, d.state())
		return nil
	})
	if err != nil {
		return nil, wrap(fmt.Sprintf("%s of user %s", op, userID), err)
	}
	return out, nil
}

// UpdateUserConversation applies u, creating the state if missing, and
// returns the result. A seq field smaller than the stored one is ignored.
// updated_at moves to now when the state is created or a field changes.
//
// A change is one conditional update that matches only a state that u
// changes, so updated_at stays put for an update that changes nothing.
// When it matches nothing, an upsert creates the missing state.
func (s *Store) UpdateUserConversation(ctx context.Context, userID, conversationID string, u server.ConversationUpdate) (server.UserConversation, error) {
	const op = "update user conversation"
	if err := errors.Join(checkID("user id", userID), checkID("conversation id", conversationID)); err != nil {
		return server.UserConversation{}, fmt.Errorf("%s: %w", op, err)
	}
	for range maxUpdateAttempts {
		st, done, err := s.tryUpdateState(ctx, userID, conversationID, u)
		if err != nil {
			return server.UserConversation{}, wrap(fmt.Sprintf("%s of user %s in %s", op, userID, conversationID), err)
		}
		if done {
			return st, nil
		}
	}
	return server.UserConversation{}, fmt.Errorf("%s of user %s in %s: concurrent writers changed the state on each of %d attempts",
		op, userID, conversationID, maxUpdateAttempts)
}

// tryUpdateState makes one attempt of UpdateUserConversation. done is false
// when a concurrent writer changed the state between the conditional update
// and the upsert, so that u would change it again.
func (s *Store) tryUpdateState(ctx context.Context, userID, conversationID string, u server.ConversationUpdate) (st server.UserConversation, done bool, err error) {
	now := nowMillis()
	filter := stateFilter(userID, conversationID)

	// 1. Change an existing state that u changes.
	if conds := changeConditions(u); len(conds) > 0 {
		changed := append(slices.Clone(filter), bson.E{Key: "$or", Value: conds})
		d, err := s.findOneAndUpdateState(ctx, changed, stateUpdate(u, now), false)
		if err == nil {
			return d.state(), true, nil
		}
		if !errors.Is(err, mongo.ErrNoDocuments) {
			return server.UserConversation{}, false, err
		}
	}

	// 2. Create the state if missing; an existing one is returned as it is.
	var created server.UserConversation
	applyUpdate(&created, u)
	insert := bson.D{{Key: "$setOnInsert", Value: bson.D{
		{Key: "read_seq", Value: created.ReadSeq},
		{Key: "min_seq", Value: created.MinSeq},
		{Key: "hide_seq", Value: created.HideSeq},
		{Key: "pinned", Value: created.Pinned},
		{Key: "recv_opt", Value: int32(created.RecvOpt)},
		{Key: "updated_at", Value: now},
	}}}
	d, err := s.findOneAndUpdateState(ctx, filter, insert, true)
	if mongo.IsDuplicateKeyError(err) {
		// A concurrent upsert created the state first.
		return server.UserConversation{}, false, nil
	}
	if err != nil {
		return server.UserConversation{}, false, err
	}
	st = d.state()
	if applyUpdate(&st, u) {
		return server.UserConversation{}, false, nil
	}
	// applyUpdate changed nothing, so st is the stored state.
	return st, true, nil
}

func (s *Store) findOneAndUpdateState(ctx context.Context, filter, update bson.D, upsert bool) (userConversationDoc, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	opts := options.FindOneAndUpdate().SetReturnDocument(options.After).SetUpsert(upsert)
	var d userConversationDoc
	err := s.userConversations.FindOneAndUpdate(ctx, filter, update, opts).Decode(&d)
	return d, err
}

// changeConditions returns a filter clause per field of u that matches a
// state which u changes.
func changeConditions(u server.ConversationUpdate) bson.A {
	var conds bson.A
	lower := func(field string, v *int64) {
		if v != nil {
			conds = append(conds, bson.D{{Key: field, Value: bson.D{{Key: "$lt", Value: *v}}}})
		}
	}
	lower("read_seq", u.ReadSeq)
	lower("min_seq", u.MinSeq)
	lower("hide_seq", u.HideSeq)
	if u.Pinned != nil {
		conds = append(conds, bson.D{{Key: "pinned", Value: bson.D{{Key: "$ne", Value: *u.Pinned}}}})
	}
	if u.RecvOpt != nil {
		conds = append(conds, bson.D{{Key: "recv_opt", Value: bson.D{{Key: "$ne", Value: int32(*u.RecvOpt)}}}})
	}
	return conds
}

// stateUpdate returns the update that applies u: $max for the seq fields,
// $set for the others and updated_at.
func stateUpdate(u server.ConversationUpdate, now bson.DateTime) bson.D {
	var raise bson.D
	for _, f := range []struct {
		field string
		v     *int64
	}{{"read_seq", u.ReadSeq}, {"min_seq", u.MinSeq}, {"hide_seq", u.HideSeq}} {
		if f.v != nil {
			raise = append(raise, bson.E{Key: f.field, Value: *f.v})
		}
	}
	set := bson.D{{Key: "updated_at", Value: now}}
	if u.Pinned != nil {
		set = append(set, bson.E{Key: "pinned", Value: *u.Pinned})
	}
	if u.RecvOpt != nil {
		set = append(set, bson.E{Key: "recv_opt", Value: int32(*u.RecvOpt)})
	}
	update := bson.D{{Key: "$set", Value: set}}
	if len(raise) > 0 {
		update = append(update, bson.E{Key: "$max", Value: raise})
	}
	return update
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
	now := nowMillis()
	fields := initialState(max(minSeq-1, 0), minSeq, now)
	models := make([]mongo.WriteModel, 0, len(userIDs))
	for _, userID := range slices.Compact(slices.Sorted(slices.Values(userIDs))) {
		models = append(models, mongo.NewUpdateOneModel().
			SetFilter(stateFilter(userID, conversationID)).
			SetUpdate(bson.D{{Key: "$setOnInsert", Value: fields}}).
			SetUpsert(true))
	}
	return wrap(fmt.Sprintf("%s %s", op, conversationID), s.bulkUpsert(ctx, s.userConversations, models))
}

// LeaveConversation deletes the state of the users. Users without state are
// skipped.
func (s *Store) LeaveConversation(ctx context.Context, conversationID string, userIDs []string) error {
	const op = "leave conversation"
	if err := errors.Join(checkID("conversation id", conversationID), checkIDs("user id", userIDs)); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if len(userIDs) == 0 {
		return nil
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	filter := bson.D{
		{Key: "conversation_id", Value: conversationID},
		{Key: "user_id", Value: bson.D{{Key: "$in", Value: userIDs}}},
	}
	_, err := s.userConversations.DeleteMany(ctx, filter)
	return wrap(fmt.Sprintf("%s %s", op, conversationID), err)
}

// checkID rejects an empty id. No caller passes one on purpose, and it would
// read or write state that belongs to no user or conversation.
func checkID(kind, id string) error {
	if id == "" {
		return fmt.Errorf("%s is empty", kind)
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
