package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
)

// sender is one client that sends during the measured phase.
type sender struct {
	c     *client
	recv  string
	group string
}

// runSingle runs -pairs pairs of users; each user sends to the other at an
// equal share of -rate.
func (r *runner) runSingle(ctx context.Context) (*report, error) {
	started, load := time.Now(), loadAverage()
	srv := r.startTracking(ctx)

	// 1. Connect both users of every pair.
	specs := make([]clientSpec, 0, 2*r.o.pairs)
	for i := range r.o.pairs {
		a, b := fmt.Sprintf("%s-p%d-a", r.o.prefix, i), fmt.Sprintf("%s-p%d-b", r.o.prefix, i)
		conv := server.SingleConversationID(a, b)
		specs = append(specs,
			clientSpec{user: a, convs: []string{conv}, fanout: 1, window: r.o.window},
			clientSpec{user: b, convs: []string{conv}, fanout: 1, window: r.o.window})
	}
	clients, err := r.dialAll(ctx, specs)
	if err != nil {
		return nil, fmt.Errorf("connect pairs: %w", err)
	}
	senders := make([]sender, len(clients))
	for i, c := range clients {
		senders[i] = sender{c: c, recv: clients[i^1].spec.user}
	}

	// 2. Send, drain and check.
	return r.runSending(ctx, started, load, srv, clients, senders)
}

// runGroup creates -groups groups of -group-size members, connects every
// member, and lets the first -senders members of each group send at an
// equal share of -rate.
func (r *runner) runGroup(ctx context.Context) (*report, error) {
	started, load := time.Now(), loadAverage()
	srv := r.startTracking(ctx)

	// 1. Create the groups through an admin connection.
	members := make([][]string, r.o.groups)
	for g := range members {
		members[g] = make([]string, r.o.groupSize)
		for m := range members[g] {
			members[g][m] = fmt.Sprintf("%s-g%d-u%d", r.o.prefix, g, m)
		}
		if err := r.createGroup(ctx, r.groupID(g), members[g]); err != nil {
			return nil, err
		}
	}

	// 2. Connect every member.
	var specs []clientSpec
	for g := range members {
		conv := server.GroupConversationID(r.groupID(g))
		for m, user := range members[g] {
			window := 0
			if m < r.o.senders {
				window = r.o.window
			}
			specs = append(specs, clientSpec{user: user, convs: []string{conv}, fanout: int64(r.o.groupSize - 1), window: window})
		}
	}
	clients, err := r.dialAll(ctx, specs)
	if err != nil {
		return nil, fmt.Errorf("connect group members: %w", err)
	}
	var senders []sender
	for i, c := range clients {
		if i%r.o.groupSize < r.o.senders {
			senders = append(senders, sender{c: c, group: r.groupID(i / r.o.groupSize)})
		}
	}

	// 3. Send, drain and check.
	return r.runSending(ctx, started, load, srv, clients, senders)
}

func (r *runner) groupID(g int) string { return fmt.Sprintf("%s-g%d", r.o.prefix, g) }

// groupChunk is the most member ids one request carries, the server's
// default Limits.MaxBatchUserIDs.
const groupChunk = 500

// createGroup creates a group with the members through an admin
// connection, in chunks that fit the server's batch limit.
func (r *runner) createGroup(ctx context.Context, groupID string, members []string) error {
	admin, err := r.dial(ctx, clientSpec{user: r.o.prefix + "-admin", admin: true})
	if err != nil {
		return fmt.Errorf("connect admin to create group %s: %w", groupID, err)
	}
	defer admin.close()
	first := members[:min(groupChunk, len(members))]
	create := &imlitev1.CreateGroupRequest{GroupId: groupID, OwnerId: members[0], Name: "imlite-bench", MemberIds: first}
	if _, err := admin.call(ctx, &imlitev1.Frame{Body: &imlitev1.Frame_CreateGroup{CreateGroup: create}}); err != nil {
		return fmt.Errorf("create group %s: %w", groupID, err)
	}
	for start := len(first); start < len(members); start += groupChunk {
		add := &imlitev1.AddGroupMembersRequest{GroupId: groupID, MemberIds: members[start:min(start+groupChunk, len(members))]}
		if _, err := admin.call(ctx, &imlitev1.Frame{Body: &imlitev1.Frame_AddGroupMembers{AddGroupMembers: add}}); err != nil {
			return fmt.Errorf("add members %d.. to group %s: %w", start, groupID, err)
		}
	}
	return nil
}

// runSending is the measured phase shared by single and group: every
// sender sends for -duration, the tool waits up to -drain for replies and
// pushes, and then checks each receiver's seqs.
func (r *runner) runSending(ctx context.Context, started time.Time, load string, srv *serverTracker, clients []*client, senders []sender) (*report, error) {
	stopProgress := r.startProgress(ctx, srv.progressRSS(ctx))
	defer stopProgress()

	// 1. Send for -duration.
	srv.markPhase(ctx)
	phaseStart := r.startMeasuring()
	sendCtx, stopSending := context.WithTimeout(ctx, r.o.duration)
	perSender := r.o.rate / float64(len(senders))
	var wg sync.WaitGroup
	for i, s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.c.sendLoop(sendCtx, s.recv, s.group, perSender, staggerDelay(i, r.o.rate))
		}()
	}
	wg.Wait()
	stopSending()
	phase := time.Since(phaseStart)

	// 2. Wait for replies and pushes, then close so the readers stop and
	// their tracks can be read.
	r.drainSends(ctx, clients)
	srv.sample(ctx)
	stopProgress()
	rep := r.newReport(started, load, len(clients))
	rep.PhaseSeconds = round3(phase.Seconds())
	rep.Connections.Held = countAlive(clients)
	rep.Messages = r.messages(phaseStart)
	rep.Server = srv.report(0)
	closeAll(clients)

	// 3. Check every receiver's seqs against the accepted sends.
	var acct deliveryAccount
	for _, c := range clients {
		acct.addReceiver(r.acc, c.spec.convs, c.tracks)
	}
	rep.Delivery = &acct
	r.finish(rep)
	if rep.Messages.Accepted == 0 && ctx.Err() == nil {
		return rep, errors.New("no send was accepted; see errors in the report")
	}
	return rep, nil
}
