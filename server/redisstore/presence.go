package redisstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// refreshBatchSize bounds the users whose entries one pipelined round trip
// of the presence refresh writes, so that one round trip never carries the
// connections of a whole pod.
const refreshBatchSize = 500

// addPresenceScript writes the members ARGV[2..] into the presence set
// KEYS[1] with an expiry of now + ARGV[1] ms, drops expired members and
// lets the key expire with its last member. Scores come from the Redis
// clock, so pods whose clocks differ still agree on what has expired.
var addPresenceScript = redis.NewScript(`
local time = redis.call('TIME')
local now = time[1] * 1000 + math.floor(time[2] / 1000)
local expiry = string.format('%.0f', now + tonumber(ARGV[1]))
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
for i = 2, #ARGV do
	redis.call('ZADD', KEYS[1], expiry, ARGV[i])
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return #ARGV - 1
`)

// livePresenceScript drops the expired members of the presence set KEYS[1]
// and returns the others.
var livePresenceScript = redis.NewScript(`
local time = redis.call('TIME')
local now = time[1] * 1000 + math.floor(time[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
return redis.call('ZRANGE', KEYS[1], 0, -1)
`)

// Connect records a live connection of this pod. The entry expires
// PresenceTTL after its last write, and the background refresh writes it
// again every PresenceTTL/3 until Disconnect. After a failed Connect the
// connection is not refreshed and needs no Disconnect; an entry that a
// timed-out call still wrote expires within PresenceTTL. Failures to reach
// Redis wrap server.ErrUnavailable.
func (s *Store) Connect(ctx context.Context, userID, platform, connID string) error {
	const op = "record presence"
	member, err := s.presenceMember(userID, platform, connID)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	conn, added := s.conns.add(userID, member)
	call := scriptCall{
		script: addPresenceScript,
		keys:   []string{s.presenceKey(userID)},
		args:   []any{s.ttl.Milliseconds(), member},
	}
	if err := s.runScripts(ctx, []scriptCall{call})[0].Err(); err != nil {
		if added {
			s.conns.remove(userID, member, conn)
		}
		return wrapErr(fmt.Sprintf("%s of user %s", op, userID), err)
	}
	return nil
}

// Disconnect removes a connection of this pod; removing an unknown one is a
// no-op. The refresh stops writing the connection even when Redis cannot be
// reached, so its entry then expires within PresenceTTL. Failures to reach
// Redis wrap server.ErrUnavailable.
func (s *Store) Disconnect(ctx context.Context, userID, platform, connID string) error {
	const op = "remove presence"
	member, err := s.presenceMember(userID, platform, connID)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	s.conns.remove(userID, member, nil)
	if err := s.client.ZRem(ctx, s.presenceKey(userID), member).Err(); err != nil {
		return wrapErr(fmt.Sprintf("%s of user %s", op, userID), err)
	}
	return nil
}

// Platforms returns the sorted platforms of each online user, across all
// pods, in one pipelined round trip; offline users are absent from the map.
// It ignores and deletes entries that have not been refreshed for
// PresenceTTL, so a pod that died stops counting within PresenceTTL.
// Failures to reach Redis wrap server.ErrUnavailable.
func (s *Store) Platforms(ctx context.Context, userIDs []string) (map[string][]string, error) {
	const op = "load presence"
	ids := make([]string, 0, len(userIDs))
	seen := make(map[string]bool, len(userIDs))
	for _, id := range userIDs {
		if id == "" {
			return nil, fmt.Errorf("%s: user id is empty", op)
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	out := make(map[string][]string)
	if len(ids) == 0 {
		return out, nil
	}

	calls := make([]scriptCall, len(ids))
	for i, id := range ids {
		calls[i] = scriptCall{script: livePresenceScript, keys: []string{s.presenceKey(id)}}
	}
	for i, cmd := range s.runScripts(ctx, calls) {
		members, err := cmd.StringSlice()
		if err != nil {
			return nil, wrapErr(fmt.Sprintf("%s of user %s", op, ids[i]), err)
		}
		if platforms := s.platformsOf(ids[i], members); len(platforms) > 0 {
			out[ids[i]] = platforms
		}
	}
	return out, nil
}

// presenceMember returns the member of a connection in its user's presence
// set, after checking the parts.
func (s *Store) presenceMember(userID, platform, connID string) (string, error) {
	switch {
	case userID == "":
		return "", errors.New("user id is empty")
	case platform == "":
		return "", fmt.Errorf("platform name of user %s is empty", userID)
	case strings.Contains(platform, memberSeparator):
		return "", fmt.Errorf("platform name %q of user %s contains %q", platform, userID, memberSeparator)
	case connID == "":
		return "", fmt.Errorf("connection id of user %s is empty", userID)
	}
	return platform + memberSeparator + s.pod + memberSeparator + connID, nil
}

// platformsOf returns the sorted distinct platforms of presence members.
// Members that are not "<platform>|<pod>|<conn id>" were not written by
// this package; they are skipped and logged.
func (s *Store) platformsOf(userID string, members []string) []string {
	var platforms []string
	malformed := 0
	for _, m := range members {
		platform, rest, ok := strings.Cut(m, memberSeparator)
		if !ok || platform == "" || !strings.Contains(rest, memberSeparator) {
			malformed++
			continue
		}
		if !slices.Contains(platforms, platform) {
			platforms = append(platforms, platform)
		}
	}
	if malformed > 0 {
		s.log.Warn("skipping malformed presence entries", "user_id", userID, "key", s.presenceKey(userID), "count", malformed)
	}
	slices.Sort(platforms)
	return platforms
}

// refreshLoop writes this pod's presence entries again every third of the
// TTL until ctx ends, so each entry survives two failed rounds. It logs the
// first failure of a run of failed rounds and the recovery.
func (s *Store) refreshLoop(ctx context.Context) {
	defer close(s.refreshDone)
	interval := s.ttl / 3
	ticker := time.NewTicker(interval)
	defer ticker.Stop()

	failedRounds := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		err := s.refreshPresence(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			failedRounds++
			if failedRounds == 1 {
				s.log.Warn("presence refresh failed; retrying every interval, entries expire after the TTL",
					"err", err, "interval", interval, "ttl", s.ttl)
			}
		case failedRounds > 0:
			s.log.Info("presence refresh recovered", "failed_rounds", failedRounds)
			failedRounds = 0
		}
	}
}

// refreshPresence writes every live connection of this pod, in batches of
// refreshBatchSize users per round trip. A batch that fails because Redis
// cannot be reached ends the round, since the next batches would fail too.
// The error reports the number of users not written and the first cause.
func (s *Store) refreshPresence(ctx context.Context) error {
	writes := s.conns.snapshot()
	if len(writes) == 0 {
		return nil
	}
	var (
		firstErr error
		failed   int
	)
	for written := 0; written < len(writes); written += refreshBatchSize {
		batch := writes[written:min(written+refreshBatchSize, len(writes))]
		calls := make([]scriptCall, len(batch))
		for i, w := range batch {
			args := make([]any, 0, 1+len(w.members))
			args = append(args, s.ttl.Milliseconds())
			for _, m := range w.members {
				args = append(args, m)
			}
			calls[i] = scriptCall{script: addPresenceScript, keys: []string{s.presenceKey(w.userID)}, args: args}
		}
		unavailable := false
		for i, cmd := range s.runScripts(ctx, calls) {
			err := cmd.Err()
			if err == nil {
				continue
			}
			failed++
			if firstErr == nil {
				firstErr = wrapErr("user "+batch[i].userID, err)
			}
			unavailable = unavailable || isUnavailable(err)
		}
		if unavailable {
			failed += len(writes) - written - len(batch)
			break
		}
	}

	// A Disconnect that ran during the round may have deleted its member
	// before this round wrote it again.
	removeErr := s.removeDisconnected(ctx, writes)
	if firstErr != nil {
		firstErr = fmt.Errorf("refresh presence of %d of %d users: %w", failed, len(writes), firstErr)
	}
	return errors.Join(firstErr, removeErr)
}

// removeDisconnected deletes the members of writes whose connections were
// removed since the snapshot.
func (s *Store) removeDisconnected(ctx context.Context, writes []presenceWrite) error {
	pipe := s.client.Pipeline()
	s.conns.mu.Lock()
	for _, w := range writes {
		for i, c := range w.conns {
			if c.removed {
				pipe.ZRem(ctx, s.presenceKey(w.userID), w.members[i])
			}
		}
	}
	s.conns.mu.Unlock()
	if pipe.Len() == 0 {
		return nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return wrapErr("remove presence of connections closed during the refresh", err)
	}
	return nil
}

// localConns are the live connections of this pod, which the refresh
// writes again. It is safe for concurrent use.
type localConns struct {
	mu sync.Mutex
	// users maps user id -> presence member -> connection.
	users map[string]map[string]*localConn
}

// localConn is a live connection. removed is set under localConns.mu when
// the connection is removed, so that a refresh that copied it before can
// delete the member it wrote.
type localConn struct {
	removed bool
}

// presenceWrite is one user's members in a refresh; conns[i] belongs to
// members[i].
type presenceWrite struct {
	userID  string
	members []string
	conns   []*localConn
}

// add records a connection and returns it, and whether it is new.
func (l *localConns) add(userID, member string) (*localConn, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	members := l.users[userID]
	if members == nil {
		members = make(map[string]*localConn)
		l.users[userID] = members
	}
	if c, ok := members[member]; ok {
		return c, false
	}
	c := &localConn{}
	members[member] = c
	return c, true
}

// remove removes a connection. If expected is not nil, it removes the
// connection only while it is still expected, which keeps a connection that
// a concurrent Disconnect and Connect replaced.
func (l *localConns) remove(userID, member string, expected *localConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	members := l.users[userID]
	c, ok := members[member]
	if !ok || (expected != nil && c != expected) {
		return
	}
	c.removed = true
	delete(members, member)
	if len(members) == 0 {
		delete(l.users, userID)
	}
}

// snapshot copies the connections, grouped by user.
func (l *localConns) snapshot() []presenceWrite {
	l.mu.Lock()
	defer l.mu.Unlock()
	writes := make([]presenceWrite, 0, len(l.users))
	for userID, members := range l.users {
		w := presenceWrite{
			userID:  userID,
			members: make([]string, 0, len(members)),
			conns:   make([]*localConn, 0, len(members)),
		}
		for m, c := range members {
			w.members = append(w.members, m)
			w.conns = append(w.conns, c)
		}
		writes = append(writes, w)
	}
	return writes
}
