package boltstore

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	imlitev1 "github.com/imlite/imlite/gen/imlite/v1"
	"github.com/imlite/imlite/server"
)

// openBench opens a store in a new temporary directory for a benchmark.
// The file is on the same disk as the test's temporary directory, and every
// write transaction ends with an fsync, so results depend on that disk.
func openBench(b *testing.B) *Store {
	b.Helper()
	s, err := Open(filepath.Join(b.TempDir(), "imlite.db"))
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

var benchContent = strings.Repeat("x", 100)

// benchMessage returns a message with the fields the store stage stores:
// a 36-byte server_msg_id and a 100-byte content.
func benchMessage(conv, sender, recv string, seq int64, n int) *imlitev1.Message {
	m := &imlitev1.Message{
		ServerMsgId:    fmt.Sprintf("01a242ec-2e6e-7c32-8aef-%012d", n),
		ClientMsgId:    fmt.Sprintf("m%d", n),
		SenderId:       sender,
		SenderPlatform: "web",
		ConversationId: conv,
		Seq:            seq,
		ContentType:    1,
		Content:        benchContent,
		ClientTime:     1764900000000,
		ServerTime:     1764900000003,
	}
	if recv != "" {
		m.ConversationType, m.RecvId = imlitev1.ConversationType_CONVERSATION_TYPE_SINGLE, recv
	} else {
		m.ConversationType, m.GroupId = imlitev1.ConversationType_CONVERSATION_TYPE_GROUP, conv[len("g:"):]
	}
	return m
}

// BenchmarkAllocate measures SeqAllocator.Allocate of one seq for one
// conversation, and for 100 conversations at once as a store-stage batch
// does. Counters are seeded before the timer starts.
func BenchmarkAllocate(b *testing.B) {
	for _, convs := range []int{1, 100} {
		b.Run(fmt.Sprintf("convs=%d", convs), func(b *testing.B) {
			s := openBench(b)
			counts := make(map[string]int64, convs)
			for i := range convs {
				counts[server.GroupConversationID(fmt.Sprintf("g%d", i))] = 1
			}
			if _, err := s.Allocate(b.Context(), counts); err != nil {
				b.Fatalf("Allocate: %v", err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Allocate(b.Context(), counts); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*convs)/b.Elapsed().Seconds(), "seqs/s")
		})
	}
}

// BenchmarkAppendMessages measures one AppendMessages call of batch
// messages. In "group" the call holds one append of a contiguous run in
// one group conversation. In "single" it holds batch appends of one
// message each to distinct single chats, which also create and update both
// users' state. Each call is one bbolt write transaction, which syncs the
// file before it returns.
func BenchmarkAppendMessages(b *testing.B) {
	for _, kind := range []string{"group", "single"} {
		for _, batch := range []int{1, 100, 500} {
			b.Run(fmt.Sprintf("%s/batch=%d", kind, batch), func(b *testing.B) {
				s := openBench(b)
				next := appendBatches(kind, batch)
				b.ReportAllocs()
				for b.Loop() {
					b.StopTimer()
					appends := next()
					b.StartTimer()
					results, err := s.AppendMessages(b.Context(), appends)
					if err != nil {
						b.Fatalf("AppendMessages: %v", err)
					}
					for i, r := range results {
						if r != nil {
							b.Fatalf("append %d rejected: %v", i, r)
						}
					}
				}
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "msgs/s")
			})
		}
	}
}

// appendBatches returns a generator of well-formed batches of the kind.
// Single chats cycle over 1,000 pairs, each with its own seq counter.
func appendBatches(kind string, batch int) func() []server.Append {
	n := 0
	if kind == "group" {
		conv := server.GroupConversationID("bench")
		var seq int64
		return func() []server.Append {
			msgs := make([]*imlitev1.Message, batch)
			for i := range msgs {
				seq++
				n++
				msgs[i] = benchMessage(conv, fmt.Sprintf("u%d", n%1000), "", seq, n)
			}
			return []server.Append{{ConversationID: conv, Messages: msgs}}
		}
	}
	const pairs = 1000
	seqs := make([]int64, pairs)
	pair := 0
	return func() []server.Append {
		appends := make([]server.Append, batch)
		for i := range appends {
			p := pair % pairs
			pair++
			n++
			seqs[p]++
			a, c := fmt.Sprintf("a%d", p), fmt.Sprintf("c%d", p)
			conv := server.SingleConversationID(a, c)
			appends[i] = server.Append{ConversationID: conv, Messages: []*imlitev1.Message{benchMessage(conv, a, c, seqs[p], n)}}
		}
		return appends
	}
}

// BenchmarkRangeMessages measures RangeMessages of 100 messages at a
// random offset in a conversation of 10,000.
func BenchmarkRangeMessages(b *testing.B) {
	const stored, page = 10_000, 100
	s := openBench(b)
	next := appendBatches("group", 500)
	for range stored / 500 {
		if _, err := s.AppendMessages(b.Context(), next()); err != nil {
			b.Fatalf("fill: %v", err)
		}
	}
	conv := server.GroupConversationID("bench")
	b.ReportAllocs()
	for b.Loop() {
		begin := 1 + rand.Int64N(stored-page+1)
		msgs, err := s.RangeMessages(b.Context(), conv, begin, begin+page-1, page)
		if err != nil {
			b.Fatal(err)
		}
		if len(msgs) != page {
			b.Fatalf("RangeMessages from seq %d returned %d messages, want %d", begin, len(msgs), page)
		}
	}
	b.ReportMetric(float64(b.N*page)/b.Elapsed().Seconds(), "msgs/s")
}
