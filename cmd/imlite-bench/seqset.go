package main

import (
	"math/bits"
	"sync"
)

// maxTrackedSeq bounds the seqs a seqSet stores, so a corrupt push cannot
// make the tool allocate without limit. Runs use fresh conversations, whose
// seqs start at 1.
const maxTrackedSeq = 1 << 30

// seqSet is a set of seqs of one conversation, one bit per seq. It is not
// safe for concurrent use.
type seqSet struct {
	words []uint64
	n     int
}

// Add inserts seq and reports whether it was new. Seqs below 1 or above
// maxTrackedSeq are not stored and report false.
func (s *seqSet) Add(seq int64) bool {
	if seq < 1 || seq > maxTrackedSeq {
		return false
	}
	w, bit := int(seq/64), uint64(1)<<(seq%64)
	if w >= len(s.words) {
		s.words = append(s.words, make([]uint64, w+1-len(s.words))...)
	}
	if s.words[w]&bit != 0 {
		return false
	}
	s.words[w] |= bit
	s.n++
	return true
}

// Has reports whether seq is in the set.
func (s *seqSet) Has(seq int64) bool {
	if seq < 1 || seq > maxTrackedSeq {
		return false
	}
	w := int(seq / 64)
	return w < len(s.words) && s.words[w]&(uint64(1)<<(seq%64)) != 0
}

// Len returns the number of seqs in the set.
func (s *seqSet) Len() int { return s.n }

// wordAt returns word i, or 0 past the end; a nil set is empty.
func (s *seqSet) wordAt(i int) uint64 {
	if s == nil || i >= len(s.words) {
		return 0
	}
	return s.words[i]
}

// countMissing returns how many seqs of expected are in neither own nor got:
// the messages a receiver should have been pushed but was not. own holds the
// receiver's own sends, which are never pushed back to the sending
// connection.
func countMissing(expected, own, got *seqSet) int {
	if expected == nil {
		return 0
	}
	n := 0
	for i, w := range expected.words {
		n += bits.OnesCount64(w &^ own.wordAt(i) &^ got.wordAt(i))
	}
	return n
}

// countUnconfirmed returns how many seqs of got are not in accepted: pushes
// of messages whose sender saw no success reply, for example after a send
// timeout. They are neither lost nor duplicated.
func countUnconfirmed(accepted, got *seqSet) int {
	if got == nil {
		return 0
	}
	n := 0
	for i, w := range got.words {
		n += bits.OnesCount64(w &^ accepted.wordAt(i))
	}
	return n
}

// convTrack is what one receiving connection saw of one conversation. Only
// the connection's reader goroutine writes it.
type convTrack struct {
	received seqSet
	own      seqSet
	// duplicates counts pushes of a seq received before.
	duplicates int64
	// outOfOrder counts new seqs that arrived below the highest seq seen,
	// which breaks the per-connection order the server promises.
	outOfOrder int64
	last       int64
}

// push records a pushed seq.
func (t *convTrack) push(seq int64) {
	if !t.received.Add(seq) {
		t.duplicates++
		return
	}
	if seq < t.last {
		t.outOfOrder++
	}
	t.last = max(t.last, seq)
}

// acceptedSeqs records, per conversation, the seqs that a send reply
// confirmed. It is safe for concurrent use.
type acceptedSeqs struct {
	mu    sync.Mutex
	convs map[string]*seqSet
}

func newAcceptedSeqs() *acceptedSeqs {
	return &acceptedSeqs{convs: make(map[string]*seqSet)}
}

// Add records a confirmed seq and reports whether it was new.
func (a *acceptedSeqs) Add(conv string, seq int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.convs[conv]
	if s == nil {
		s = &seqSet{}
		a.convs[conv] = s
	}
	return s.Add(seq)
}

// Get returns the set of a conversation, or nil. Call it only after every
// sender stopped, because the set is shared without a lock.
func (a *acceptedSeqs) Get(conv string) *seqSet {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.convs[conv]
}

// deliveryAccount sums the checks of every receiver.
type deliveryAccount struct {
	Lost        int64 `json:"lost"`
	Duplicated  int64 `json:"duplicated"`
	OutOfOrder  int64 `json:"out_of_order"`
	Unconfirmed int64 `json:"unconfirmed"`
}

// addReceiver adds what one receiver saw of the conversations it belongs to.
// A conversation the receiver never saw a push or reply of has no track and
// counts every accepted seq as lost.
func (d *deliveryAccount) addReceiver(accepted *acceptedSeqs, convs []string, tracks map[string]*convTrack) {
	for _, conv := range convs {
		exp := accepted.Get(conv)
		t := tracks[conv]
		if t == nil {
			t = &convTrack{}
		}
		d.Lost += int64(countMissing(exp, &t.own, &t.received))
		d.Unconfirmed += int64(countUnconfirmed(exp, &t.received))
		d.Duplicated += t.duplicates
		d.OutOfOrder += t.outOfOrder
	}
}
