package ws_test

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/ws"
)

// TestThousandConnectionsNoLossNoDuplicates runs 1,000 connections in 100
// groups of 10; every member sends into its group at once, and every
// connection must receive each other member's messages exactly once, in
// seq order.
func TestThousandConnectionsNoLossNoDuplicates(t *testing.T) {
	const groups, members, perMember = 100, 10, 3
	e := startEnv(t, "MaxConnNum: 2000")
	// An admin creates the groups without joining them.
	admin := e.dialWith(e.token("admin", "web", true), ws.Binary)
	for g := range groups {
		ids := make([]string, members)
		for m := range members {
			ids[m] = fmt.Sprintf("g%d-u%d", g, m)
		}
		admin.Call(&imlitev1.Frame{Body: &imlitev1.Frame_CreateGroup{CreateGroup: &imlitev1.CreateGroupRequest{GroupId: fmt.Sprintf("g%d", g), OwnerId: ids[0], MemberIds: ids}}})
	}

	// 1. Connect everyone.
	clients := make([][]*client, groups)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range groups {
		clients[g] = make([]*client, members)
		for m := range members {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, resp, err := e.tryDial(e.token(fmt.Sprintf("g%d-u%d", g, m), "web", false), ws.Binary)
				if err != nil {
					status := 0
					if resp != nil {
						status = resp.StatusCode
					}
					t.Errorf("dial g%d-u%d: %v (HTTP %d)", g, m, err, status)
					return
				}
				mu.Lock()
				clients[g][m] = c
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// 2. Everyone sends, all at once.
	for g := range groups {
		for m, c := range clients[g] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perMember {
					req := &imlitev1.SendMsgRequest{ClientMsgId: fmt.Sprintf("m%d", i), GroupId: fmt.Sprintf("g%d", g), Content: fmt.Sprintf("g%d-u%d #%d", g, m, i)}
					c.Send(&imlitev1.Frame{Body: &imlitev1.Frame_SendMsg{SendMsg: req}})
				}
			}()
		}
	}
	wg.Wait()

	// 3. Each connection gets the other members' messages once, in order.
	want := (members - 1) * perMember
	for g := range groups {
		for m, c := range clients[g] {
			c.WaitPushes(want, 60*time.Second)
			got := c.Pushes()
			if len(got) != want {
				t.Fatalf("g%d-u%d got %d pushes, want %d", g, m, len(got), want)
			}
			seqs := make([]int64, len(got))
			for i, msg := range got {
				seqs[i] = msg.GetSeq()
				if msg.GetSenderId() == fmt.Sprintf("g%d-u%d", g, m) {
					t.Errorf("g%d-u%d got a push of its own message %q", g, m, msg.GetContent())
				}
			}
			if !slices.IsSorted(seqs) {
				t.Errorf("g%d-u%d got seqs out of order: %v", g, m, seqs)
			}
			if len(slices.Compact(slices.Clone(seqs))) != len(seqs) {
				t.Errorf("g%d-u%d got duplicate seqs: %v", g, m, seqs)
			}
		}
	}

	// 4. The group's seqs are 1..N with none missing.
	pulled := admin.Call(&imlitev1.Frame{Body: &imlitev1.Frame_PullMsg{PullMsg: &imlitev1.PullMsgRequest{ConversationId: "g:g0", Limit: 500}}}).GetPullMsgResp()
	if int(pulled.GetMaxSeq()) != members*perMember || len(pulled.GetMessages()) != members*perMember {
		t.Errorf("g0 max seq %d with %d messages, want %d", pulled.GetMaxSeq(), len(pulled.GetMessages()), members*perMember)
	}
}

func TestOnlineStatusFollowsConnections(t *testing.T) {
	e := startEnv(t, "")
	web := e.dial("alice", "web")
	e.dial("alice", "ios")
	status := func() []*imlitev1.UserOnlineStatus {
		return web.Call(&imlitev1.Frame{Body: &imlitev1.Frame_GetOnlineStatus{GetOnlineStatus: &imlitev1.GetOnlineStatusRequest{UserIds: []string{"alice", "bob"}}}}).GetGetOnlineStatusResp().GetStatuses()
	}
	got := status()
	if !got[0].GetOnline() || !slices.Equal(got[0].GetPlatforms(), []string{"ios", "web"}) || got[1].GetOnline() {
		t.Fatalf("status = %v, want alice online on ios and web, bob offline", got)
	}

	h := http.Header{}
	h.Set("Authorization", "Bearer "+e.token("bob", "android", false))
	bob, _, err := websocket.DefaultDialer.Dial(e.url(), h)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !status()[1].GetOnline() {
		if time.Now().After(deadline) {
			t.Fatal("bob not online 2s after connecting")
		}
		time.Sleep(10 * time.Millisecond)
	}
	bob.Close()
	for status()[1].GetOnline() {
		if time.Now().After(deadline.Add(2 * time.Second)) {
			t.Fatal("bob still online after closing his only connection")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
