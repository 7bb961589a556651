package paxos

import (
	"testing"

	"github.com/vestalabs/vesta/engine/wire"
)

func prepare(from int, round uint64, slot wire.Slot) wire.Message {
	return wire.Message{Type: wire.MsgPrepare, From: wire.ReplicaID(from), To: 1, Ballot: wire.Ballot{Round: round, Replica: wire.ReplicaID(from)}, Slot: slot}
}

func acceptMsg(from int, round uint64, commit wire.Slot, slots ...wire.Slot) wire.Message {
	b := wire.Ballot{Round: round, Replica: wire.ReplicaID(from)}
	m := wire.Message{Type: wire.MsgAccept, From: wire.ReplicaID(from), To: 1, Ballot: b, Commit: commit}
	for _, s := range slots {
		m.Entries = append(m.Entries, wire.Entry{Slot: s, Ballot: b, Value: batch("v" + itoa(uint64(s)) + "@" + itoa(round))})
	}
	return m
}

func mustStep(t *testing.T, n *Node, m wire.Message) {
	t.Helper()
	if err := n.Step(m); err != nil {
		t.Fatal(err)
	}
}

// A promise is persisted before it is revealed: the Promise leaves only
// after the hard state carrying it is durable.
func TestAcceptorPromiseIsPersistedBeforeRevealed(t *testing.T) {
	n := newTestNode(t, 1, 3)
	mustStep(t, n, prepare(2, 5, 0))
	rd := n.Ready()
	if !rd.SaveHardState || rd.HardState.Promised != (wire.Ballot{Round: 5, Replica: 2}) {
		t.Fatalf("promise not in the persist set: %+v", rd)
	}
	if len(rd.Send) != 0 {
		t.Fatalf("promise sent before persistence: %v", rd.Send)
	}
	if len(rd.SendAfterPersist) != 1 || rd.SendAfterPersist[0].Type != wire.MsgPromise {
		t.Fatalf("want one Promise after persist, got %v", rd.SendAfterPersist)
	}
}

// A promise reports every accepted entry at or above the prepared slot.
func TestAcceptorPromiseReportsAcceptedEntries(t *testing.T) {
	n := newTestNode(t, 1, 3)
	mustStep(t, n, acceptMsg(2, 1, 0, 0, 1, 2))
	drain(n)
	mustStep(t, n, prepare(3, 2, 1))
	msgs, _ := drain(n)
	p := msgs[0]
	if p.Type != wire.MsgPromise || len(p.Entries) != 2 || p.Entries[0].Slot != 1 || p.Entries[1].Slot != 2 {
		t.Fatalf("promise should report slots 1 and 2: %v", p)
	}
	if p.Entries[0].Ballot != (wire.Ballot{Round: 1, Replica: 2}) {
		t.Fatalf("promise must carry each entry's ballot: %+v", p.Entries[0])
	}
}

// Ballots only move up: a lower prepare or accept is refused with a Nack
// naming the promise, and changes nothing.
func TestAcceptorRefusesLowerBallots(t *testing.T) {
	n := newTestNode(t, 1, 3)
	mustStep(t, n, prepare(3, 7, 0))
	drain(n)
	for _, m := range []wire.Message{prepare(2, 6, 0), acceptMsg(2, 6, 0, 0)} {
		mustStep(t, n, m)
		rd := n.Ready()
		if len(rd.Entries) != 0 || rd.SaveHardState {
			t.Fatalf("%v: refused message changed durable state: %+v", m.Type, rd)
		}
		if len(rd.SendAfterPersist) != 1 || rd.SendAfterPersist[0].Type != wire.MsgNack || rd.SendAfterPersist[0].Ballot != (wire.Ballot{Round: 7, Replica: 3}) {
			t.Fatalf("%v: want Nack with the promise, got %v", m.Type, rd.SendAfterPersist)
		}
		n.Advance()
	}
	if n.Status().Promised != (wire.Ballot{Round: 7, Replica: 3}) {
		t.Fatalf("promise moved: %v", n.Status().Promised)
	}
}

// Accepted entries are in the persist set and acknowledged, as coalesced
// ranges, only after it; out-of-order slots are accepted.
func TestAcceptorAcksRangesAfterPersist(t *testing.T) {
	n := newTestNode(t, 1, 3)
	mustStep(t, n, acceptMsg(2, 1, 0, 5, 6, 7, 9, 3))
	rd := n.Ready()
	if len(rd.Entries) != 5 {
		t.Fatalf("want 5 entries to persist, got %d", len(rd.Entries))
	}
	if len(rd.Send) != 0 || len(rd.SendAfterPersist) != 1 {
		t.Fatalf("vote must wait for persistence: send=%v after=%v", rd.Send, rd.SendAfterPersist)
	}
	got := rd.SendAfterPersist[0].Ranges
	want := []wire.SlotRange{{Lo: 5, Hi: 8}, {Lo: 9, Hi: 10}, {Lo: 3, Hi: 4}}
	if len(got) != len(want) {
		t.Fatalf("ranges %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ranges %v, want %v", got, want)
		}
	}
}

// A higher ballot may replace an accepted value; the hard state keeps the
// promise at or above every accepted ballot.
func TestAcceptorHigherBallotReplacesValue(t *testing.T) {
	n := newTestNode(t, 1, 3)
	mustStep(t, n, acceptMsg(2, 1, 0, 0))
	drain(n)
	mustStep(t, n, acceptMsg(3, 2, 0, 0))
	rd := n.Ready()
	if len(rd.Entries) != 1 || rd.Entries[0].Ballot.Round != 2 || !rd.SaveHardState || rd.HardState.Promised.Round != 2 {
		t.Fatalf("higher ballot not accepted durably: %+v", rd)
	}
}

// Messages from outside are validated: each malformed one is an error that
// names the problem, and changes nothing.
func TestStepRejectsMalformedMessages(t *testing.T) {
	n := newTestNode(t, 1, 3)
	good := acceptMsg(2, 1, 0, 0)
	cases := map[string]wire.Message{
		"unknown type":      {Type: 99, From: 2, To: 1},
		"wrong recipient":   func() wire.Message { m := good; m.To = 3; return m }(),
		"non-member sender": func() wire.Message { m := good; m.From = 9; return m }(),
		"from itself":       func() wire.Message { m := good; m.From = 1; return m }(),
		"foreign ballot":    func() wire.Message { m := good; m.Ballot.Replica = 3; return m }(),
		"chosen ballot":     func() wire.Message { m := prepare(2, 1, 0); m.Ballot = wire.BallotChosen; return m }(),
		"bad value kind": func() wire.Message {
			m := acceptMsg(2, 1, 0, 0)
			m.Entries[0].Value.Kind = 77
			return m
		}(),
		"entry ballot mismatch": func() wire.Message {
			m := acceptMsg(2, 1, 0, 0)
			m.Entries[0].Ballot.Round = 9
			return m
		}(),
		"entries on heartbeat": func() wire.Message {
			m := acceptMsg(2, 1, 0, 0)
			m.Type = wire.MsgHeartbeat
			return m
		}(),
		"unchosen catch-up": {Type: wire.MsgCatchUp, From: 2, To: 1, Entries: []wire.Entry{{Slot: 0, Value: batch("x")}}},
		"inverted range":    {Type: wire.MsgAccepted, From: 2, To: 1, Ranges: []wire.SlotRange{{Lo: 5, Hi: 4}}},
	}
	for name, m := range cases {
		err := n.Step(m)
		if _, ok := err.(*MessageError); !ok {
			t.Errorf("%s: got %v, want *MessageError", name, err)
		}
		if n.HasReady() {
			t.Fatalf("%s: refused message produced work", name)
		}
	}
}
