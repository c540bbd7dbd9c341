package main

import "testing"

func TestSeqSetAdd(t *testing.T) {
	var s seqSet
	cases := []struct {
		seq  int64
		want bool
	}{
		{1, true}, {64, true}, {63, true}, {1, false}, {1000, true}, {0, false}, {-5, false}, {maxTrackedSeq + 1, false},
	}
	for _, tc := range cases {
		if got := s.Add(tc.seq); got != tc.want {
			t.Errorf("Add(%d) = %v, want %v", tc.seq, got, tc.want)
		}
	}
	if s.Len() != 4 {
		t.Errorf("Len = %d, want 4 distinct valid seqs", s.Len())
	}
	if !s.Has(1000) || s.Has(999) || s.Has(0) {
		t.Error("Has: want 1000 present, 999 and 0 absent")
	}
}

func set(seqs ...int64) *seqSet {
	s := &seqSet{}
	for _, q := range seqs {
		s.Add(q)
	}
	return s
}

func TestDeliveryAccount(t *testing.T) {
	const conv = "s:a:b"
	cases := []struct {
		name     string
		accepted []int64
		own      []int64
		pushed   []int64
		noTrack  bool
		want     deliveryAccount
	}{
		{name: "every seq pushed", accepted: []int64{1, 2, 3}, pushed: []int64{1, 2, 3}},
		{name: "own sends are not expected", accepted: []int64{1, 2, 3, 4}, own: []int64{2, 4}, pushed: []int64{1, 3}},
		{name: "one seq missing", accepted: []int64{1, 2, 3}, pushed: []int64{1, 3}, want: deliveryAccount{Lost: 1}},
		{name: "seq pushed twice", accepted: []int64{1, 2}, pushed: []int64{1, 2, 2}, want: deliveryAccount{Duplicated: 1}},
		{name: "seq below the highest seen", accepted: []int64{1, 2, 3}, pushed: []int64{1, 3, 2}, want: deliveryAccount{OutOfOrder: 1}},
		{name: "push without a confirmed send", accepted: []int64{1}, pushed: []int64{1, 2}, want: deliveryAccount{Unconfirmed: 1}},
		{name: "receiver saw nothing", accepted: []int64{1, 2, 3}, noTrack: true, want: deliveryAccount{Lost: 3}},
		{name: "nothing accepted", want: deliveryAccount{}},
		{name: "seqs across words", accepted: []int64{63, 64, 65, 200}, pushed: []int64{63, 65}, want: deliveryAccount{Lost: 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			acc := newAcceptedSeqs()
			for _, q := range tc.accepted {
				acc.Add(conv, q)
			}
			tracks := map[string]*convTrack{}
			if !tc.noTrack {
				tr := &convTrack{}
				for _, q := range tc.own {
					tr.own.Add(q)
				}
				for _, q := range tc.pushed {
					tr.push(q)
				}
				tracks[conv] = tr
			}
			var got deliveryAccount
			got.addReceiver(acc, []string{conv}, tracks)
			if got != tc.want {
				t.Errorf("account = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestCountMissingNilSets(t *testing.T) {
	if got := countMissing(nil, nil, nil); got != 0 {
		t.Errorf("countMissing with nothing expected = %d, want 0", got)
	}
	if got := countMissing(set(1, 2), nil, nil); got != 2 {
		t.Errorf("countMissing with no own or received set = %d, want 2", got)
	}
	if got := countUnconfirmed(nil, set(5)); got != 1 {
		t.Errorf("countUnconfirmed with nothing accepted = %d, want 1", got)
	}
}

func TestAcceptedSeqsAddReportsNew(t *testing.T) {
	acc := newAcceptedSeqs()
	if !acc.Add("g:x", 7) {
		t.Error("first Add(7) = false, want true")
	}
	if acc.Add("g:x", 7) {
		t.Error("second Add(7) = true, want false for a seq confirmed twice")
	}
	if acc.Get("g:y") != nil {
		t.Error("Get of an unknown conversation is not nil")
	}
}
