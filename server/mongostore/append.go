package mongostore

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
)

// appendPlan is an append checked and encoded before any write.
type appendPlan struct {
	conversationID string
	// users are the users of a single chat (one for a self-chat), nil for a
	// group.
	users       []string
	msgs        []*imlitev1.Message
	docs        []any
	keys        []server.ClientMsgKey
	first, last int64
	// repeatsKey is set when two messages of the append share a
	// (sender_id, client_msg_id).
	repeatsKey bool
	// dependsOn is the index of an earlier append of the same call whose
	// last seq is first-1, when that seq is not stored yet; -1 otherwise.
	dependsOn int
}

// planAppend validates an append and encodes its documents. An error means
// the caller broke the Append contract, which fails the whole call.
func planAppend(a server.Append) (appendPlan, error) {
	ref, err := server.ParseConversationID(a.ConversationID)
	if err != nil {
		// %v, not %w: the core must see a storage failure here, not a
		// client error of its own request.
		return appendPlan{}, fmt.Errorf("conversation id %q: %v", a.ConversationID, err)
	}
	p := appendPlan{conversationID: a.ConversationID, msgs: a.Messages, dependsOn: -1}
	if ref.Type == imlitev1.ConversationType_CONVERSATION_TYPE_SINGLE {
		p.users = ref.Users
	}
	p.docs = make([]any, len(a.Messages))
	p.keys = make([]server.ClientMsgKey, len(a.Messages))
	seen := make(map[server.ClientMsgKey]bool, len(a.Messages))
	for i, m := range a.Messages {
		if err := checkMessage(a.ConversationID, i, m, p.last); err != nil {
			return appendPlan{}, err
		}
		if i == 0 {
			p.first = m.GetSeq()
		}
		p.last = m.GetSeq()
		p.docs[i] = newMessageDoc(m)
		key := server.ClientMsgKey{SenderID: m.GetSenderId(), ClientMsgID: m.GetClientMsgId()}
		p.repeatsKey = p.repeatsKey || seen[key]
		seen[key] = true
		p.keys[i] = key
	}
	return p, nil
}

// checkMessage checks message i of an append; prev is the seq of message
// i-1.
func checkMessage(conversationID string, i int, m *imlitev1.Message, prev int64) error {
	switch {
	case m == nil:
		return fmt.Errorf("conversation %s: message %d is nil", conversationID, i)
	case m.GetConversationId() != conversationID:
		return fmt.Errorf("conversation %s: message %d has conversation_id %q", conversationID, i, m.GetConversationId())
	case m.GetSenderId() == "":
		return fmt.Errorf("conversation %s: message %d: sender id is empty", conversationID, i)
	case i == 0 && m.GetSeq() < 1:
		return fmt.Errorf("conversation %s: first seq is %d, expected at least 1", conversationID, m.GetSeq())
	case i > 0 && m.GetSeq() != prev+1:
		return fmt.Errorf("conversation %s: seq %d follows seq %d, expected contiguous seqs", conversationID, m.GetSeq(), prev)
	}
	return nil
}

// AppendMessages stores each append with an ordered insert, without a
// transaction. results[i] is nil or one of server.ErrSeqGap,
// server.ErrDuplicateMsg and server.ErrSeqTaken, checked in that order:
// the first two by one query before the insert, the last from the
// duplicate-key error of the insert. A concurrent writer can store a
// conflicting message after the query. The insert then stops at it and
// leaves the messages before it stored, with their max seq and per-user
// state updated as for a stored append. A malformed append fails the whole call before anything is
// written: an invalid conversation id, a nil message, a message of another
// conversation or without sender, or seqs that do not ascend by one from at
// least 1.
//
// The stored messages raise their conversation's max_seq, create the
// missing state of both users of a single chat, and move each sender's read
// seq forward to its latest message and its updated_at to now. A group
// sender without state gets none. Without conflicts the call runs three
// steps one after the other: the check, the insert, and the conversation
// and state updates, which run in parallel.
func (s *Store) AppendMessages(ctx context.Context, appends []server.Append) ([]error, error) {
	const op = "append messages"

	// 1. Validate every append, so a malformed one writes nothing.
	plans := make([]appendPlan, len(appends))
	for i, a := range appends {
		p, err := planAppend(a)
		if err != nil {
			return nil, fmt.Errorf("%s: append %d of %d: %w", op, i, len(appends), err)
		}
		plans[i] = p
	}

	// 2. Reject appends that would leave a gap or repeat a stored
	// client_msg_id.
	results := make([]error, len(appends))
	if err := s.precheckAppends(ctx, plans, results); err != nil {
		return nil, wrap(op, err)
	}

	// 3. Insert the accepted messages. When this step or the next fails,
	// the store stage retries, finds the stored messages and hands them to
	// ReapplyAppendEffects, which runs step 4 for them.
	stored, err := s.insertAppends(ctx, plans, results)
	if err != nil {
		return nil, wrap(op, err)
	}

	// 4. Raise max seqs and update per-user state for what is stored.
	if err := s.applyAppendEffects(ctx, plans, stored); err != nil {
		return nil, wrap(op, err)
	}
	return results, nil
}

var _ server.AppendEffectsReapplier = (*Store)(nil)

// ReapplyAppendEffects runs the last step of AppendMessages again for
// messages that are stored: it raises each conversation's max_seq, creates
// the missing state of single-chat users and moves each sender's read seq to
// its latest message. It implements server.AppendEffectsReapplier, for
// messages whose AppendMessages call failed after the insert.
func (s *Store) ReapplyAppendEffects(ctx context.Context, appends []server.Append) error {
	const op = "reapply append effects"
	plans := make([]appendPlan, 0, len(appends))
	stored := make([]int, 0, len(appends))
	for i, a := range appends {
		ref, err := server.ParseConversationID(a.ConversationID)
		if err != nil {
			return fmt.Errorf("%s: append %d of %d: conversation id %q: %v", op, i, len(appends), a.ConversationID, err)
		}
		p := appendPlan{conversationID: a.ConversationID, msgs: a.Messages}
		if ref.Type == imlitev1.ConversationType_CONVERSATION_TYPE_SINGLE {
			p.users = ref.Users
		}
		for j, m := range a.Messages {
			if m == nil || m.GetConversationId() != a.ConversationID || (j > 0 && m.GetSeq() <= a.Messages[j-1].GetSeq()) {
				return fmt.Errorf("%s: append %d of %d: message %d is nil, of another conversation or not above the seq before it", op, i, len(appends), j)
			}
		}
		plans = append(plans, p)
		stored = append(stored, len(a.Messages))
	}
	return wrap(op, s.applyAppendEffects(ctx, plans, stored))
}

// seqRef is one seq of one conversation.
type seqRef struct {
	conversationID string
	seq            int64
}

// precheckAppends sets results[i] for the appends that start above the
// stored max seq + 1 (ErrSeqGap) or repeat a (sender_id, client_msg_id)
// (ErrDuplicateMsg). One query per maxOrBranches looks up the seq before
// each append and every client_msg_id.
func (s *Store) precheckAppends(ctx context.Context, plans []appendPlan, results []error) error {
	var branches []bson.D
	for _, p := range plans {
		if p.first > 1 {
			branches = append(branches, bson.D{{Key: "conversation_id", Value: p.conversationID}, {Key: "seq", Value: p.first - 1}})
		}
		for _, k := range p.keys {
			branches = append(branches, clientKeyFilter(k))
		}
	}
	if len(branches) == 0 {
		return nil
	}
	seqStored := make(map[seqRef]bool)
	keyStored := make(map[server.ClientMsgKey]bool)
	projection := bson.D{
		{Key: "_id", Value: 0}, {Key: "conversation_id", Value: 1}, {Key: "seq", Value: 1},
		{Key: "sender_id", Value: 1}, {Key: "client_msg_id", Value: 1},
	}
	err := s.findOr(ctx, s.messages, branches, projection, func(cur *mongo.Cursor) error {
		var d messageDoc
		if err := cur.Decode(&d); err != nil {
			return fmt.Errorf("decode message %s: %w", describeRaw(cur.Current), err)
		}
		seqStored[seqRef{d.ConversationID, d.Seq}] = true
		keyStored[server.ClientMsgKey{SenderID: d.SenderID, ClientMsgID: d.ClientMsgID}] = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("check seqs and client_msg_ids: %w", err)
	}
	classifyAppends(plans, results, seqStored, keyStored)
	return nil
}

// classifyAppends sets the results of the precheck. An append may follow an
// earlier accepted append of the same call instead of a stored seq, and then
// depends on that append being stored in full. A key of an earlier accepted
// append counts as stored.
func classifyAppends(plans []appendPlan, results []error, seqStored map[seqRef]bool, keyStored map[server.ClientMsgKey]bool) {
	lastAccepted := make(map[string]int)
	for i := range plans {
		p := &plans[i]
		if len(p.msgs) == 0 {
			continue
		}
		if p.first > 1 && !seqStored[seqRef{p.conversationID, p.first - 1}] {
			j, ok := lastAccepted[p.conversationID]
			if !ok || plans[j].last != p.first-1 {
				results[i] = server.ErrSeqGap
				continue
			}
			p.dependsOn = j
		}
		if p.repeatsKey || anyStored(p.keys, keyStored) {
			results[i] = server.ErrDuplicateMsg
			continue
		}
		lastAccepted[p.conversationID] = i
		for _, k := range p.keys {
			keyStored[k] = true
		}
	}
}

func anyStored(keys []server.ClientMsgKey, stored map[server.ClientMsgKey]bool) bool {
	for _, k := range keys {
		if stored[k] {
			return true
		}
	}
	return false
}

// insertAppends inserts the messages of the accepted appends in one ordered
// insert, and returns how many messages of each append it stored. The
// insert stops at the first duplicate key: the append that caused it gets
// ErrSeqTaken or ErrDuplicateMsg with its earlier messages stored, and the
// insert continues with the next append.
func (s *Store) insertAppends(ctx context.Context, plans []appendPlan, results []error) ([]int, error) {
	stored := make([]int, len(plans))
	next := 0
	for {
		docs, owners := s.pendingDocs(plans, results, next)
		if len(docs) == 0 {
			return stored, nil
		}
		ictx, cancel := s.opCtx(ctx)
		_, err := s.messages.InsertMany(ictx, docs, options.InsertMany().SetOrdered(true))
		cancel()
		if err == nil {
			for _, o := range owners {
				stored[o.plan] = max(stored[o.plan], o.offset+1)
			}
			return stored, nil
		}
		we, ok := firstWriteError(err)
		if !ok || !isDuplicateKeyCode(we.Code) {
			return stored, fmt.Errorf("insert messages: %w", err)
		}

		failed := owners[we.Index]
		for _, o := range owners[:we.Index] {
			stored[o.plan] = max(stored[o.plan], o.offset+1)
		}
		cause, err := s.conflictCause(ctx, plans[failed.plan].msgs[failed.offset])
		if err != nil {
			return stored, err
		}
		results[failed.plan] = cause
		if failed.offset > 0 {
			s.log.Warn("mongo store: append stored in part after a concurrent write",
				"conversation_id", plans[failed.plan].conversationID, "stored", failed.offset,
				"of", len(plans[failed.plan].msgs), "cause", cause)
		}
		next = failed.plan + 1
	}
}

// docOwner locates a document of pendingDocs in its append.
type docOwner struct {
	plan, offset int
}

// pendingDocs returns the documents of the accepted appends from index
// from on, in order. An append whose predecessor in the call was rejected
// is rejected with ErrSeqGap instead.
func (s *Store) pendingDocs(plans []appendPlan, results []error, from int) ([]any, []docOwner) {
	var docs []any
	var owners []docOwner
	for i := from; i < len(plans); i++ {
		p := &plans[i]
		if results[i] != nil || len(p.docs) == 0 {
			continue
		}
		if p.dependsOn >= 0 && results[p.dependsOn] != nil {
			results[i] = server.ErrSeqGap
			continue
		}
		for j, d := range p.docs {
			docs = append(docs, d)
			owners = append(owners, docOwner{plan: i, offset: j})
		}
	}
	return docs, owners
}

// conflictCause returns the sentinel for the unique index that rejected m:
// ErrSeqTaken when its seq is stored, ErrDuplicateMsg otherwise. It queries
// the server because duplicate-key messages differ between servers
// (FerretDB v1.24.2 names no index).
func (s *Store) conflictCause(ctx context.Context, m *imlitev1.Message) (cause, err error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	filter := bson.D{{Key: "conversation_id", Value: m.GetConversationId()}, {Key: "seq", Value: m.GetSeq()}}
	opts := options.FindOne().SetProjection(bson.D{{Key: "_id", Value: 1}})
	err = s.messages.FindOne(ctx, filter, opts).Err()
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		return server.ErrDuplicateMsg, nil
	case err != nil:
		return nil, fmt.Errorf("look up seq %d of %s after a duplicate key: %w", m.GetSeq(), m.GetConversationId(), err)
	}
	return server.ErrSeqTaken, nil
}

// applyAppendEffects raises the max seq of each conversation with stored
// messages and updates the per-user state, both collections in parallel.
func (s *Store) applyAppendEffects(ctx context.Context, plans []appendPlan, stored []int) error {
	now := nowMillis()
	var convModels, stateModels []mongo.WriteModel
	for i, p := range plans {
		n := stored[i]
		if n == 0 {
			continue
		}
		convModels = append(convModels, mongo.NewUpdateOneModel().
			SetFilter(bson.D{{Key: "_id", Value: p.conversationID}}).
			SetUpdate(bson.D{{Key: "$max", Value: bson.D{{Key: "max_seq", Value: p.msgs[n-1].GetSeq()}, {Key: "updated_at", Value: now}}}}).
			SetUpsert(true))
		stateModels = append(stateModels, appendStateModels(p.conversationID, p.users, p.msgs[:n], now)...)
	}
	tasks := []struct {
		coll   *mongo.Collection
		models []mongo.WriteModel
	}{{s.conversations, convModels}, {s.userConversations, stateModels}}
	return forEachParallel(ctx, len(tasks), func(ctx context.Context, i int) error {
		return s.bulkUpsert(ctx, tasks[i].coll, tasks[i].models)
	})
}

// appendStateModels returns the state updates for stored messages of one
// conversation: each user of a single chat gets state if missing, and each
// sender with state (in a single chat, every sender) gets its read seq
// raised to its latest message.
func appendStateModels(conversationID string, users []string, msgs []*imlitev1.Message, now bson.DateTime) []mongo.WriteModel {
	var senders []string
	latest := make(map[string]int64)
	for _, m := range msgs {
		if _, ok := latest[m.GetSenderId()]; !ok {
			senders = append(senders, m.GetSenderId())
		}
		latest[m.GetSenderId()] = m.GetSeq()
	}

	var models []mongo.WriteModel
	for _, u := range users {
		if _, sent := latest[u]; sent {
			continue
		}
		models = append(models, mongo.NewUpdateOneModel().
			SetFilter(stateFilter(u, conversationID)).
			SetUpdate(bson.D{{Key: "$setOnInsert", Value: initialState(0, 0, now)}}).
			SetUpsert(true))
	}
	for _, u := range senders {
		update := bson.D{
			{Key: "$max", Value: bson.D{{Key: "read_seq", Value: latest[u]}}},
			{Key: "$set", Value: bson.D{{Key: "updated_at", Value: now}}},
		}
		model := mongo.NewUpdateOneModel().SetFilter(stateFilter(u, conversationID))
		if slices.Contains(users, u) {
			update = append(update, bson.E{Key: "$setOnInsert", Value: bson.D{
				{Key: "min_seq", Value: int64(0)}, {Key: "hide_seq", Value: int64(0)},
				{Key: "pinned", Value: false}, {Key: "recv_opt", Value: int32(0)},
			}})
			model.SetUpsert(true)
		}
		models = append(models, model.SetUpdate(update))
	}
	return models
}

// bulkUpsert runs models as one unordered bulk write. Of two upserts that
// race to create the same document, one fails with a duplicate key. The
// failed models run once more, when the document exists and the update
// applies.
func (s *Store) bulkUpsert(ctx context.Context, coll *mongo.Collection, models []mongo.WriteModel) error {
	for attempt := 0; len(models) > 0; attempt++ {
		bctx, cancel := s.opCtx(ctx)
		_, err := coll.BulkWrite(bctx, models, options.BulkWrite().SetOrdered(false))
		cancel()
		if err == nil {
			return nil
		}
		failed, dupOnly := duplicateKeyIndexes(err)
		if !dupOnly || attempt > 0 {
			return fmt.Errorf("update %s: %w", coll.Name(), err)
		}
		retry := make([]mongo.WriteModel, len(failed))
		for i, idx := range failed {
			retry[i] = models[idx]
		}
		models = retry
	}
	return nil
}
