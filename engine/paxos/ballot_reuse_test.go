//go:build contracts

package paxos

import (
	"testing"

	"github.com/vestalabs/vesta/engine/wire"
)

// reuseNet routes messages between the nodes of TestCrashedCandidateCannot
// ReuseItsBallot by hand: every message waits in flight until the schedule
// delivers or drops it.
type reuseNet struct {
	t        *testing.T
	nodes    map[wire.ReplicaID]*Node
	inflight []wire.Message
	applied  map[wire.ReplicaID]map[wire.Slot]wire.Value
}

// collect takes node id's Readys; the first durable of them are advanced
// (persisted at once), the rest stay outstanding: their persist has not
// finished. Only durable Readys release their SendAfterPersist.
func (nt *reuseNet) collect(id wire.ReplicaID, durable bool) {
	n := nt.nodes[id]
	for n.HasReady() {
		rd := n.Ready()
		nt.inflight = append(nt.inflight, rd.Send...)
		for _, e := range rd.Apply {
			nt.applied[id][e.Slot] = e.Value
		}
		if !durable {
			return
		}
		nt.inflight = append(nt.inflight, rd.SendAfterPersist...)
		n.Advance()
	}
}

// deliver steps every in-flight message that matches, in order, and lets
// its addressee persist (durable) or not.
func (nt *reuseNet) deliver(match func(m wire.Message) bool, durable bool) int {
	var keep []wire.Message
	var todo []wire.Message
	for _, m := range nt.inflight {
		if match(m) {
			todo = append(todo, m)
		} else {
			keep = append(keep, m)
		}
	}
	nt.inflight = keep
	for _, m := range todo {
		if n := nt.nodes[m.To]; n != nil {
			if err := n.Step(m); err != nil {
				nt.t.Fatalf("step %v: %v", m, err)
			}
			nt.collect(m.To, durable)
		}
	}
	return len(todo)
}

// take removes the in-flight messages that match and returns them: lost, or
// delayed until the schedule puts them back.
func (nt *reuseNet) take(match func(m wire.Message) bool) (taken []wire.Message) {
	var keep []wire.Message
	for _, m := range nt.inflight {
		if match(m) {
			taken = append(taken, m)
		} else {
			keep = append(keep, m)
		}
	}
	nt.inflight = keep
	return taken
}

func msg(typ wire.MsgType, from, to wire.ReplicaID) func(wire.Message) bool {
	return func(m wire.Message) bool { return m.Type == typ && m.From == from && m.To == to }
}

// runBallotReuseSchedule replays the schedule of issue 12, item 1, with 3
// replicas L=1, A=2, B=3, and returns what each replica applied:
//
//  1. L runs for ballot b; A and B promise it; L's own promise is not yet
//     durable. (With the bug, L leads on A's and B's promises alone.)
//  2. L proposes v1 in slot 0; its Accept reaches A, whose Accepted is
//     delayed; the Accept to B is lost.
//  3. L crashes before its promise reaches its log, and restarts from
//     nothing durable: it picks ballot b again.
//  4. L runs again; only B answers; L leads on its own (now durable)
//     promise and B's; it proposes v2 in slot 0; the Accept to B is lost.
//  5. A's delayed Accepted(b, slot 0) arrives, and L counts it for v2: with
//     its own vote, v2 is chosen and applied.
//  6. B runs with a higher ballot, learns (0, b, v1) from A's promise,
//     re-proposes v1, which A and B choose and apply.
func runBallotReuseSchedule(t *testing.T, bug Bug) map[wire.ReplicaID]map[wire.Slot]wire.Value {
	nt := &reuseNet{t: t, nodes: map[wire.ReplicaID]*Node{}, applied: map[wire.ReplicaID]map[wire.Slot]wire.Value{}}
	start := func(id wire.ReplicaID, p Persisted) {
		n, err := New(testConfig(int(id), 3), p)
		if err != nil {
			t.Fatal(err)
		}
		if bug != 0 {
			n.PlantBug(bug)
		}
		nt.nodes[id] = n
		if nt.applied[id] == nil {
			nt.applied[id] = map[wire.Slot]wire.Value{}
		}
	}
	const L, A, B = 1, 2, 3
	for id := wire.ReplicaID(1); id <= 3; id++ {
		start(id, Persisted{})
	}
	campaign := func(id wire.ReplicaID, durable bool) wire.Ballot {
		n := nt.nodes[id]
		for i := 0; n.Status().Role == Follower; i++ {
			if i > 100 {
				t.Fatalf("replica %d never ran for leader", id)
			}
			n.Tick()
		}
		nt.collect(id, durable)
		return n.Status().Ballot
	}

	// 1. L's own promise of b stays in its unfinished persist.
	b := campaign(L, false)
	nt.deliver(msg(wire.MsgPrepare, L, A), true)
	nt.deliver(msg(wire.MsgPrepare, L, B), true)
	nt.deliver(msg(wire.MsgPromise, A, L), false)
	nt.deliver(msg(wire.MsgPromise, B, L), false)
	var delayed []wire.Message
	if nt.nodes[L].Status().Role == Leader {
		// 2. The bug's path: L leads on its peers' promises and proposes.
		if err := nt.nodes[L].Propose(batch("v1")); err != nil {
			t.Fatal(err)
		}
		nt.collect(L, false)
		nt.take(msg(wire.MsgAccept, L, B))
		nt.deliver(msg(wire.MsgAccept, L, A), true)
		delayed = nt.take(msg(wire.MsgAccepted, A, L))
	} else {
		for _, m := range nt.inflight {
			if m.Type == wire.MsgAccept {
				t.Fatalf("an Accept left L before its promise was durable: %v", m)
			}
		}
	}

	// 3. L crashes: nothing of its unfinished persist survives.
	nt.take(func(m wire.Message) bool { return m.From == L || m.To == L })
	start(L, Persisted{})

	// 4. L runs again, and B alone answers.
	b2 := campaign(L, true)
	t.Logf("first ballot %v, second %v", b, b2)
	nt.deliver(msg(wire.MsgPrepare, L, B), true)
	nt.take(msg(wire.MsgPrepare, L, A))
	nt.deliver(msg(wire.MsgPromise, B, L), true)
	if nt.nodes[L].Status().Role != Leader {
		t.Fatalf("L does not lead again: %+v", nt.nodes[L].Status())
	}
	if err := nt.nodes[L].Propose(batch("v2")); err != nil {
		t.Fatal(err)
	}
	nt.collect(L, true)
	nt.take(msg(wire.MsgAccept, L, B))
	nt.take(msg(wire.MsgAccept, L, A))

	// 5. A's delayed Accepted arrives at the new incarnation.
	nt.inflight = append(nt.inflight, delayed...)
	nt.deliver(msg(wire.MsgAccepted, A, L), true)
	nt.take(func(m wire.Message) bool { return m.From == L || m.To == L })

	// 6. B leads with a higher ballot, on A's promise and its own.
	campaign(B, true)
	nt.deliver(msg(wire.MsgPrepare, B, A), true)
	nt.take(msg(wire.MsgPrepare, B, L))
	nt.deliver(msg(wire.MsgPromise, A, B), true)
	if nt.nodes[B].Status().Role != Leader {
		t.Fatalf("B does not lead: %+v", nt.nodes[B].Status())
	}
	nt.deliver(func(m wire.Message) bool { return m.To == A }, true)
	nt.deliver(func(m wire.Message) bool { return m.To == B }, true)
	nt.deliver(func(m wire.Message) bool { return m.To == A }, true)
	return nt.applied
}

// A ballot is used by one incarnation only (issue 12, item 1): a candidate
// leads only once its own promise of its ballot is durable, so a replica that
// crashes and restarts never proposes a second value under a ballot it led
// with. The schedule below chose two values in slot 0 before the fix; the
// planted bug reverts the fix and shows the schedule still finds it.
func TestCrashedCandidateCannotReuseItsBallot(t *testing.T) {
	check := func(applied map[wire.ReplicaID]map[wire.Slot]wire.Value) (diverged bool) {
		var first wire.Value
		var who wire.ReplicaID
		for id := wire.ReplicaID(1); id <= 3; id++ {
			v, ok := applied[id][0]
			if !ok {
				continue
			}
			if who != 0 && !v.Equal(first) {
				t.Logf("slot 0: replica %d applied %v, replica %d applied %v", who, first, id, v)
				return true
			}
			first, who = v, id
		}
		return false
	}
	if check(runBallotReuseSchedule(t, 0)) {
		t.Fatal("two values chosen in slot 0 after a crashed candidate reused its ballot")
	}
	if !check(runBallotReuseSchedule(t, BugLeadBeforeOwnPromise)) {
		t.Fatal("with the fix reverted (BugLeadBeforeOwnPromise) the schedule no longer chooses two values: the test lost its teeth")
	}
}
