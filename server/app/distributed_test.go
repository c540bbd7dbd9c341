package app_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/internal/wstest"
	"github.com/imlite/imlite/ws"
)

func TestPodsChatAcrossPods(t *testing.T) {
	c := newCluster(t, "")
	pods := c.startPods("pod-a", "pod-b")
	alice, bob := c.dial(pods[0], "alice", "web"), c.dial(pods[1], "bob", "ios")

	sent := alice.SendText("bob", "", "a1", "hi from pod a")
	if sent.GetSeq() != 1 {
		t.Errorf("first seq = %d, want 1", sent.GetSeq())
	}
	bob.WaitPush("alice's message on pod b", func(m *imlitev1.Message) bool { return m.GetClientMsgId() == "a1" && m.GetSeq() == 1 })
	bob.SendText("alice", "", "b1", "hi from pod b")
	got := alice.WaitPush("bob's message on pod a", func(m *imlitev1.Message) bool { return m.GetClientMsgId() == "b1" })
	if got.GetSeq() != 2 || got.GetContent() != "hi from pod b" {
		t.Errorf("alice got %v, want seq 2 with bob's text", got)
	}
}

func TestGroupSpreadOverPodsGetsEveryMessageOnce(t *testing.T) {
	c := newCluster(t, "")
	pods := c.startPods("pod-a", "pod-b", "pod-c")
	members := []string{"m0", "m1", "m2", "m3", "m4", "m5"}
	c.createGroup(pods[0], "spread", members...)
	clients := make([]*wstest.Client, len(members))
	for i, m := range members {
		clients[i] = c.dial(pods[i%3], m, "web")
	}

	// Three members on three pods send five messages each.
	var wg sync.WaitGroup
	for s := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5 {
				clients[s].SendText("", "spread", fmt.Sprintf("s%d-%d", s, i), "x")
			}
		}()
	}
	wg.Wait()

	for i, cl := range clients {
		want := 15
		if i < 3 {
			want = 10 // a sender's own connection gets the others' messages only
		}
		cl.WaitPushes(want, 20*time.Second)
		time.Sleep(200 * time.Millisecond)
		got := cl.Pushes()
		var seqs []int64
		for _, m := range got {
			seqs = append(seqs, m.GetSeq())
		}
		if len(got) != want || !slices.IsSorted(seqs) || len(slices.Compact(slices.Clone(seqs))) != len(seqs) {
			t.Errorf("%s on %s got seqs %v, want %d distinct seqs in order", members[i], pods[i%3].name, seqs, want)
		}
	}
}

func TestKickOnOnePodClosesSocketOnAnother(t *testing.T) {
	c := newCluster(t, "")
	pods := c.startPods("pod-a", "pod-b", "pod-c")
	token := c.token("alice", "web", false)
	alice := wstest.MustDial(t, "ws://"+pods[0].app.WebsocketAddr()+"/ws", token, ws.Binary)

	req, _ := http.NewRequest(http.MethodPost, "http://"+pods[2].app.HTTPAddr()+"/v1/users/alice:kick", strings.NewReader(`{"reason":"cluster kick"}`))
	req.Header.Set("Authorization", "Bearer "+c.token("ops", "web", true))
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("kick on pod c: HTTP %d", resp.StatusCode)
	}
	code, reason := alice.WaitClosed(2 * time.Second)
	if code != ws.CloseKicked || reason != "cluster kick" {
		t.Errorf("close = %d %q, want %d %q", code, reason, ws.CloseKicked, "cluster kick")
	}
	t.Logf("socket on pod a closed %v after the kick on pod c", time.Since(start))

	for _, p := range pods {
		_, resp, err := wstest.Dial(t, "ws://"+p.app.WebsocketAddr()+"/ws", token, ws.Binary)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("old token on %s: err %v, response %v; want HTTP 401", p.name, err, resp)
		}
		client, ctx := c.grpcCallWithToken(p, token)
		_, err = client.SendMsg(ctx, &imlitev1.SendMsgRequest{ClientMsgId: "x", RecvId: "bob", Content: "x"})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("old token over gRPC on %s: %v, want Unauthenticated", p.name, err)
		}
	}
}

func TestConcurrentSendersOnAllPodsGetContiguousSeqs(t *testing.T) {
	c := newCluster(t, "")
	pods := c.startPods("pod-a", "pod-b", "pod-c")
	const senders, each = 20, 10
	var members []string
	for i := range senders {
		members = append(members, fmt.Sprintf("u%02d", i))
	}
	c.createGroup(pods[0], "busy", members...)
	listener := c.dial(pods[1], "u00", "ios")

	var wg sync.WaitGroup
	errs := make(chan error, senders*each)
	for i, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client, ctx := c.grpcCall(pods[i%3], m, false)
			for j := range each {
				if _, err := client.SendMsg(ctx, &imlitev1.SendMsgRequest{ClientMsgId: fmt.Sprint(j), GroupId: "busy", Content: m}); err != nil {
					errs <- fmt.Errorf("%s #%d on %s: %w", m, j, pods[i%3].name, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	got := listener.WaitPushes(senders*each, 20*time.Second)
	for i, m := range got {
		if m.GetSeq() != int64(i+1) {
			t.Fatalf("push %d has seq %d, want %d: seqs must be contiguous and in order", i, m.GetSeq(), i+1)
		}
	}
}

func TestRedisFlushKeepsSeqContiguous(t *testing.T) {
	c := newCluster(t, "")
	pods := c.startPods("pod-a")
	client, ctx := c.grpcCall(pods[0], "alice", false)
	send := func(id string) int64 {
		t.Helper()
		resp, err := client.SendMsg(ctx, &imlitev1.SendMsgRequest{ClientMsgId: id, RecvId: "bob", Content: id})
		if err != nil {
			t.Fatalf("send %s: %v", id, err)
		}
		return resp.GetSeq()
	}
	send("1")
	send("2")
	c.redis.FlushAll()
	if seq := send("3"); seq != 3 {
		t.Errorf("seq after FLUSHALL = %d, want 3 (continuing from MongoDB's max seq)", seq)
	}
}

func TestBackendOutagesFailFastThenRecover(t *testing.T) {
	c := newCluster(t, "Limits: {SendTimeout: 5s}")
	pods := c.startPods("pod-a")
	client, ctx := c.grpcCall(pods[0], "alice", false)
	send := func(id string) (*imlitev1.SendMsgResponse, error, time.Duration) {
		start := time.Now()
		resp, err := client.SendMsg(ctx, &imlitev1.SendMsgRequest{ClientMsgId: id, RecvId: "bob", Content: id})
		return resp, err, time.Since(start)
	}
	if _, err, _ := send("before"); err != nil {
		t.Fatalf("send before the outages: %v", err)
	}

	outages := []struct {
		name          string
		down, restore func()
	}{
		{"kafka", c.kafka.Stop, func() { c.kafka.Restart(t) }},
		{"mongo", c.mongo.Stop, c.mongo.Restart},
	}
	for i, o := range outages {
		o.down()
		_, err, took := send("during-" + o.name)
		if status.Code(err) != codes.Unavailable {
			t.Errorf("%s down: send returned %v after %v, want Unavailable", o.name, err, took)
		}
		if took > 4*time.Second {
			t.Errorf("%s down: send took %v, want a fast failure", o.name, took)
		}
		o.restore()

		// The send that failed stored nothing, so the next seq follows on.
		var resp *imlitev1.SendMsgResponse
		deadline := time.Now().Add(20 * time.Second)
		for {
			resp, err, _ = send("after-" + o.name)
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("%s back: send still failing: %v", o.name, err)
		}
		if want := int64(i + 2); resp.GetSeq() != want {
			t.Errorf("%s back: seq %d, want %d (the failed send must not be stored)", o.name, resp.GetSeq(), want)
		}
	}
}

func TestOnlineStatusAcrossPodsAndDeadPod(t *testing.T) {
	c := newCluster(t, "")
	pods := c.startPods("pod-a", "pod-c")
	doomed := c.startProcess("pod-b")
	c.dial(pods[0], "alice", "web")
	wstest.MustDial(t, "ws://"+doomed.addrs.Websocket+"/ws", c.token("alice", "ios", false), ws.Binary)
	bob := c.dial(pods[1], "bob", "android")

	status := func() []*imlitev1.UserOnlineStatus {
		return bob.Call(&imlitev1.Frame{Body: &imlitev1.Frame_GetOnlineStatus{GetOnlineStatus: &imlitev1.GetOnlineStatusRequest{UserIds: []string{"alice", "carol"}}}}).GetGetOnlineStatusResp().GetStatuses()
	}
	waitStatus := func(what string, cond func([]*imlitev1.UserOnlineStatus) bool, deadline time.Time) {
		t.Helper()
		for {
			st := status()
			if cond(st) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: status still %v", what, st)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitStatus("alice online on two pods, carol offline", func(st []*imlitev1.UserOnlineStatus) bool {
		return slices.Equal(st[0].GetPlatforms(), []string{"ios", "web"}) && !st[1].GetOnline()
	}, time.Now().Add(3*time.Second))

	// Pod b crashes: it neither removes nor refreshes its presence entries,
	// which then expire within Redis.PresenceTTL (2s here).
	doomed.kill(t)
	died := time.Now()
	waitStatus("alice's ios connection gone with its pod", func(st []*imlitev1.UserOnlineStatus) bool {
		return slices.Equal(st[0].GetPlatforms(), []string{"web"})
	}, died.Add(2*time.Second+500*time.Millisecond))
	t.Logf("dead pod's entry gone %v after the crash (Redis.PresenceTTL 2s)", time.Since(died))
}

func TestPodStoppedDuringBurstLosesNoAcknowledgedMessage(t *testing.T) {
	c := newCluster(t, "")
	pods := c.startPods("pod-a", "pod-b")
	const total = 60

	// Three senders on pod a; pod a stops once a quarter of the sends are
	// acknowledged, while the rest are in flight, and starts again.
	type result struct {
		id  string
		seq int64
		err error
	}
	results := make(chan result, total)
	acks := make(chan struct{}, total)
	var wg sync.WaitGroup
	client, ctx := c.grpcCall(pods[0], "alice", false)
	for s := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range total / 3 {
				id := fmt.Sprintf("burst-%d-%02d", s, i)
				resp, err := client.SendMsg(ctx, &imlitev1.SendMsgRequest{ClientMsgId: id, RecvId: "bob", Content: id})
				results <- result{id: id, seq: resp.GetSeq(), err: err}
				if err == nil {
					acks <- struct{}{}
				}
			}
		}()
	}
	for range total / 4 {
		<-acks
	}
	pods[0].stop()
	wg.Wait()
	close(results)
	restarted := c.start("pod-a")

	acked := map[string]int64{}
	var failed []string
	for r := range results {
		if r.err == nil {
			acked[r.id] = r.seq
		} else {
			failed = append(failed, r.id)
		}
	}
	t.Logf("%d sends acknowledged, %d failed while pod a stopped", len(acked), len(failed))
	if len(acked) < total/4 || len(failed) == 0 {
		t.Fatalf("%d acknowledged and %d failed: the stop did not land inside the burst", len(acked), len(failed))
	}

	// Retrying the failed sends on pod b stores each at most once.
	retry, rctx := c.grpcCall(pods[1], "alice", false)
	for _, id := range failed {
		resp, err := retry.SendMsg(rctx, &imlitev1.SendMsgRequest{ClientMsgId: id, RecvId: "bob", Content: id})
		if err != nil {
			t.Fatalf("retry %s on pod b: %v", id, err)
		}
		acked[id] = resp.GetSeq()
	}

	// Every message is stored exactly once, with contiguous seqs.
	puller, pctx := c.grpcCall(restarted, "bob", false)
	pulled, err := puller.PullMsg(pctx, &imlitev1.PullMsgRequest{ConversationId: "s:alice:bob", BeginSeq: 1, Limit: 500})
	if err != nil {
		t.Fatalf("pull after restart: %v", err)
	}
	seen := map[string]int{}
	for i, m := range pulled.GetMessages() {
		seen[m.GetClientMsgId()]++
		if m.GetSeq() != int64(i+1) {
			t.Fatalf("pulled seq %d at position %d: seqs must be contiguous", m.GetSeq(), i)
		}
	}
	for id, seq := range acked {
		if seen[id] != 1 {
			t.Errorf("acknowledged %s (seq %d) stored %d times, want once", id, seq, seen[id])
		}
	}
	if len(pulled.GetMessages()) != total {
		t.Errorf("stored %d messages, want %d", len(pulled.GetMessages()), total)
	}
}

func TestCrashedPodLosesNoAcknowledgedMessage(t *testing.T) {
	c := newCluster(t, "")
	survivor := c.start("pod-a")
	doomed := c.startProcess("pod-b")
	const total = 60

	// Three senders on pod b, which crashes once a quarter of the sends
	// are acknowledged.
	type result struct {
		id  string
		err error
	}
	results := make(chan result, total)
	acks := make(chan struct{}, total)
	client, ctx := c.grpcCallAddr(doomed.addrs.GRPC, c.token("alice", "web", false))
	var wg sync.WaitGroup
	for s := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range total / 3 {
				id := fmt.Sprintf("crash-%d-%02d", s, i)
				_, err := client.SendMsg(ctx, &imlitev1.SendMsgRequest{ClientMsgId: id, RecvId: "bob", Content: id})
				results <- result{id: id, err: err}
				if err == nil {
					acks <- struct{}{}
				}
			}
		}()
	}
	for range total / 4 {
		<-acks
	}
	doomed.kill(t)
	wg.Wait()
	close(results)

	acked := map[string]bool{}
	var failed []string
	for r := range results {
		if r.err == nil {
			acked[r.id] = true
		} else {
			failed = append(failed, r.id)
		}
	}
	t.Logf("%d sends acknowledged before the crash, %d failed", len(acked), len(failed))

	// The survivor takes over the msg topic's partitions; retries of the
	// failed sends through it store each message at most once.
	retry, rctx := c.grpcCall(survivor, "alice", false)
	for _, id := range failed {
		var err error
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err = retry.SendMsg(rctx, &imlitev1.SendMsgRequest{ClientMsgId: id, RecvId: "bob", Content: id})
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("retry %s on the surviving pod: %v", id, err)
		}
		acked[id] = true
	}

	puller, pctx := c.grpcCall(survivor, "bob", false)
	pulled, err := puller.PullMsg(pctx, &imlitev1.PullMsgRequest{ConversationId: "s:alice:bob", BeginSeq: 1, Limit: 500})
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	seen := map[string]int{}
	for i, m := range pulled.GetMessages() {
		seen[m.GetClientMsgId()]++
		if m.GetSeq() != int64(i+1) {
			t.Fatalf("pulled seq %d at position %d: seqs must be contiguous", m.GetSeq(), i)
		}
	}
	for id := range acked {
		if seen[id] != 1 {
			t.Errorf("acknowledged %s stored %d times, want once", id, seen[id])
		}
	}
}

func TestKickSurvivesRedisFlush(t *testing.T) {
	c := newCluster(t, "")
	pods := c.startPods("pod-a", "pod-b")
	kicked := c.token("alice", "web", false)
	req, _ := http.NewRequest(http.MethodPost, "http://"+pods[0].app.HTTPAddr()+"/v1/users/alice:kick", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer "+c.token("ops", "web", true))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("kick: HTTP %d", resp.StatusCode)
	}

	// Redis loses everything, as after a restart without persistence; the
	// kick is loaded again from MongoDB on the next check.
	c.redis.FlushAll()
	fresh := c.token("alice", "web", false)
	for _, p := range pods {
		client, ctx := c.grpcCallWithToken(p, kicked)
		_, err := client.SendMsg(ctx, &imlitev1.SendMsgRequest{ClientMsgId: "x", RecvId: "bob", Content: "x"})
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "revoked") {
			t.Errorf("kicked token on %s after FLUSHALL: %v, want Unauthenticated (revoked)", p.name, err)
		}
		client, ctx = c.grpcCallWithToken(p, fresh)
		if _, err := client.SendMsg(ctx, &imlitev1.SendMsgRequest{ClientMsgId: "y-" + p.name, RecvId: "bob", Content: "y"}); err != nil {
			t.Errorf("token issued after the kick on %s: %v", p.name, err)
		}
	}
}
