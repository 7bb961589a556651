package paxos

import (
	"errors"
	"slices"
	"testing"

	"github.com/vestalabs/vesta/engine/wire"
	"pgregory.net/rapid"
)

// A new leader whose phase 1 reports values beyond commit+α re-proposes
// them only once it knows their configuration, in slot order, before any
// new value: neither a proposal nor a membership change may take one of
// their slots.
func TestReportsBeyondAlphaAreReproposedFirst(t *testing.T) {
	cfg := testConfig(1, 3)
	cfg.Alpha, cfg.Window = 4, 4
	n, err := New(cfg, Persisted{})
	if err != nil {
		t.Fatal(err)
	}
	for n.Status().Role != Candidate {
		n.Tick()
	}
	b := n.Status().Ballot
	n.Ready()
	old := wire.Ballot{Round: 0, Replica: 2}
	var reported []wire.Entry
	for s := wire.Slot(0); s < 10; s++ {
		reported = append(reported, wire.Entry{Slot: s, Ballot: old, Value: batch(string(rune('a' + s)))})
	}
	mustStep(t, n, wire.Message{Type: wire.MsgPromise, From: 2, To: 1, Ballot: b, Entries: reported})
	n.Advance()
	if n.Status().Role != Leader {
		t.Fatalf("not leading: %+v", n.Status())
	}
	if st := n.Status(); st.NextSlot != 4 {
		t.Fatalf("proposed up to %d, want 4 (commit 0 + α 4)", st.NextSlot)
	}
	if err := n.Propose(batch("new")); err != nil {
		t.Fatal(err)
	}
	if _, err := n.ProposeMembership([]wire.ReplicaID{1, 2, 3}, []wire.ReplicaID{4}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("a membership change while reports wait: %v, want ErrQueueFull", err)
	}
	// Everyone accepts everything; slots become chosen, the window moves.
	var got []wire.Entry
	for range 20 {
		msgs, applied := drain(n)
		got = append(got, applied...)
		for _, m := range msgs {
			if m.Type != wire.MsgAccept || m.To != 2 {
				continue
			}
			var ranges []wire.SlotRange
			for _, e := range m.Entries {
				ranges = append(ranges, wire.SlotRange{Lo: e.Slot, Hi: e.Slot + 1})
			}
			mustStep(t, n, wire.Message{Type: wire.MsgAccepted, From: 2, To: 1, Ballot: b, Ranges: ranges})
		}
	}
	if len(got) != 11 {
		t.Fatalf("applied %d slots, want 11: %v", len(got), got)
	}
	for s := range 10 {
		if !got[s].Value.Equal(reported[s].Value) {
			t.Fatalf("slot %d holds %v, phase 1 reported %v", s, got[s].Value, reported[s].Value)
		}
	}
	if !got[10].Value.Equal(batch("new")) {
		t.Fatalf("slot 10 holds %v, want the new proposal", got[10].Value)
	}
	if s, err := n.ProposeMembership([]wire.ReplicaID{1, 2, 3}, []wire.ReplicaID{4}); err != nil || s != 11 {
		t.Fatalf("membership change after the reports: slot %d, %v", s, err)
	}
}

// Changes are encoded and decoded losslessly; hostile bytes are errors.
func TestMembershipEncodings(t *testing.T) {
	v := EncodeChange(16, []wire.ReplicaID{1, 2, 3}, []wire.ReplicaID{9})
	m, err := DecodeChange(v.Data)
	if err != nil || m.Alpha != 16 || !slices.Equal(m.Voters, []wire.ReplicaID{1, 2, 3}) || !slices.Equal(m.Learners, []wire.ReplicaID{9}) {
		t.Fatalf("round trip: %v %v", m, err)
	}
	hist := []Membership{{Epoch: 1, Alpha: 16, Voters: []wire.ReplicaID{1, 2, 3}}, {Epoch: 2, From: 40, Alpha: 16, Voters: []wire.ReplicaID{1, 2}, Learners: []wire.ReplicaID{5}}}
	back, err := DecodeMemberships(EncodeMemberships(hist))
	if err != nil || len(back) != 2 || back[1].From != 40 || !slices.Equal(back[1].Learners, []wire.ReplicaID{5}) {
		t.Fatalf("history round trip: %v %v", back, err)
	}
	for _, bad := range [][]byte{
		nil, {1}, {2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0}, // too short, wrong version
		EncodeChange(16, nil, []wire.ReplicaID{1}).Data,            // no voters
		EncodeChange(16, []wire.ReplicaID{1, 1}, nil).Data,         // twice
		EncodeChange(0, []wire.ReplicaID{1}, nil).Data,             // alpha 0
		append(EncodeChange(16, []wire.ReplicaID{1}, nil).Data, 0), // trailing byte
	} {
		if _, err := DecodeChange(bad); err == nil {
			t.Errorf("DecodeChange(%x) accepted", bad)
		}
	}
	for _, bad := range [][]byte{nil, {1, 0}, {1, 1, 0}, EncodeMemberships([]Membership{hist[1], hist[0]})} {
		if _, err := DecodeMemberships(bad); err == nil {
			t.Errorf("DecodeMemberships(%x) accepted", bad)
		}
	}
}

// Decoding never panics, and what decodes encodes back to the same bytes.
func TestMembershipDecodersOnRandomBytes(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		b := rapid.SliceOfN(rapid.Byte(), 0, 96).Draw(t, "bytes")
		if m, err := DecodeChange(b); err == nil {
			if got := EncodeChange(m.Alpha, m.Voters, m.Learners).Data; !slices.Equal(got, b) {
				t.Fatalf("DecodeChange(%x) = %v, which encodes to %x", b, m, got)
			}
		}
		if ms, err := DecodeMemberships(b); err == nil {
			if got := EncodeMemberships(ms); !slices.Equal(got, b) {
				t.Fatalf("DecodeMemberships(%x) = %v, which encodes to %x", b, ms, got)
			}
		}
	})
}

// A leader whose re-proposed slots were chosen in an earlier ballot, and
// that its peers released (so they vote for them no more), learns them
// from a peer that reports a higher commit index instead of waiting for
// votes that never come.
func TestLeaderLearnsSlotsItsPeersReleased(t *testing.T) {
	n := newTestNode(t, 1, 3)
	for n.Status().Role != Candidate {
		n.Tick()
	}
	b := n.Status().Ballot
	n.Ready()
	old := wire.Ballot{Round: 0, Replica: 2}
	reported := []wire.Entry{{Slot: 0, Ballot: old, Value: batch("x")}, {Slot: 1, Ballot: old, Value: batch("y")}}
	mustStep(t, n, wire.Message{Type: wire.MsgPromise, From: 2, To: 1, Ballot: b, Entries: reported})
	n.Advance()
	if n.Status().Role != Leader || n.Status().NextSlot != 2 {
		t.Fatalf("not leading slots 0 and 1: %+v", n.Status())
	}
	drain(n)
	// Replica 3 acknowledges nothing (it released them) but reports commit 2.
	mustStep(t, n, wire.Message{Type: wire.MsgAccepted, From: 3, To: 1, Ballot: b, Commit: 2})
	msgs, _ := drain(n)
	var asked bool
	for _, m := range msgs {
		asked = asked || (m.Type == wire.MsgCatchUpRequest && m.To == 3 && m.Slot == 0 && m.Commit == 2)
	}
	if !asked {
		t.Fatalf("the leader did not ask replica 3 for the slots it knows chosen: %v", msgs)
	}
	mustStep(t, n, wire.Message{Type: wire.MsgCatchUp, From: 3, To: 1, Commit: 2, Entries: []wire.Entry{
		{Slot: 0, Ballot: wire.BallotChosen, Value: batch("x")}, {Slot: 1, Ballot: wire.BallotChosen, Value: batch("y")}}})
	_, applied := drain(n)
	if n.Status().Commit != 2 || len(applied) != 2 || !applied[1].Value.Equal(batch("y")) {
		t.Fatalf("after the catch-up: commit %d, applied %v", n.Status().Commit, applied)
	}
}
