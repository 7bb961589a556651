package paxos

import (
	"fmt"
	"testing"

	"github.com/vestalabs/vesta/engine/wire"
	"pgregory.net/rapid"
)

// propReplica is one replica of the property-test world: its node, the
// Readys handed out but not yet durable, and its durable state.
type propReplica struct {
	node     *Node
	pending  []Ready
	hs       HardState
	entries  map[wire.Slot]wire.Entry
	order    []wire.Slot
	next     wire.Slot   // the next slot to apply
	snap     wire.Slot   // its durable checkpoint's slot (0: none)
	commit   wire.Slot   // last commit index seen this incarnation
	promised wire.Ballot // last promise seen this incarnation
}

func (r *propReplica) persisted() Persisted {
	p := Persisted{Snapshot: r.snap, HardState: r.hs}
	for _, s := range r.order {
		p.Entries = append(p.Entries, r.entries[s])
	}
	return p
}

// TestPropertySafetyUnderAnyInterleaving drives a small cluster through
// random interleavings of message delivery, loss, duplication, ticks,
// proposals, persistence and crashes, and checks after every action the
// postconditions the contracts state:
//
//   - persist-before-reveal: a Promise, Nack or Accepted leaves only when the
//     promise or vote it reveals is durable;
//   - the commit index and the promise never move back;
//   - a slot's applied value is the same on every replica, slots apply in
//     order without gaps, except that a replica that installs a checkpoint
//     (state transfer) or restarts from one goes on from its slot.
//
// The contracts inside the node run too; any violation panics and fails.
func TestPropertySafetyUnderAnyInterleaving(t *testing.T) {
	var runs, withChosen, totalChosen, withTransfer int
	defer func() {
		t.Logf("%d interleavings, %d chose at least one value, %d slots chosen in all, %d installed a checkpoint sent by a peer", runs, withChosen, totalChosen, withTransfer)
		if withChosen < runs/4 {
			t.Errorf("only %d of %d interleavings chose a value: the property is nearly vacuous", withChosen, runs)
		}
	}()
	// Ten rounds of rapid's default 100 interleavings: each is cheap.
	for range 10 {
		rapid.Check(t, propertyWorld(&runs, &withChosen, &totalChosen, &withTransfer))
	}
}

func propertyWorld(runs, withChosen, totalChosen, withTransfer *int) func(*rapid.T) {
	return func(t *rapid.T) {
		*runs++
		chosen := map[wire.Slot]wire.Value{}
		transfers := 0
		defer func() {
			if transfers > 0 {
				*withTransfer++
			}
			if len(chosen) > 0 {
				*withChosen++
			}
			*totalChosen += len(chosen)
		}()
		n := rapid.SampledFrom([]int{3, 5}).Draw(t, "replicas")
		reps := make([]*propReplica, n)
		preVote := rapid.Bool().Draw(t, "prevote")
		for i := range reps {
			cfg := testConfig(i+1, n)
			cfg.ElectionTicks, cfg.HeartbeatTicks = 4, 1
			cfg.PreVote = preVote
			nd, err := New(cfg, Persisted{})
			if err != nil {
				t.Fatal(err)
			}
			reps[i] = &propReplica{node: nd, entries: map[wire.Slot]wire.Entry{}}
		}
		var net []wire.Message
		proposals := 0
		var takeReady func(r *propReplica)

		send := func(from *propReplica, msgs []wire.Message, afterPersist bool) {
			for _, m := range msgs {
				if afterPersist {
					checkRevealsOnlyDurable(t, from, m)
				}
				net = append(net, m)
			}
		}
		takeReady = func(r *propReplica) {
			for r.node.HasReady() {
				rd := r.node.Ready()
				send(r, rd.Send, false)
				for _, e := range rd.Apply {
					if e.Slot != r.next {
						t.Fatalf("replica %d applied slot %d, expected %d", r.node.cfg.ID, e.Slot, r.next)
					}
					if v, ok := chosen[e.Slot]; ok && !v.Equal(e.Value) {
						t.Fatalf("slot %d applied as %v and as %v", e.Slot, v, e.Value)
					}
					chosen[e.Slot] = e.Value
					r.next++
				}
				r.pending = append(r.pending, rd)
				// State transfer: the peer gets this replica's checkpoint
				// at once (a durable copy), if it needs it.
				for _, to := range rd.SendSnapshot {
					p, s := reps[to-1], r.snap
					if s == 0 || !p.node.NeedsSnapshot(s) {
						continue
					}
					p.snap = max(p.snap, s)
					if !p.node.InstallSnapshot(s, r.node.MembershipsAt(s)) {
						t.Fatalf("replica %d refused checkpoint %d it needs", to, s)
					}
					p.next = s
					transfers++
				}
			}
		}
		deliver := func(m wire.Message) {
			if err := reps[m.To-1].node.Step(m); err != nil {
				t.Fatalf("well-formed message refused: %v: %v", m, err)
			}
		}
		persistOne := func(r *propReplica) {
			if len(r.pending) == 0 {
				return
			}
			rd := r.pending[0]
			r.pending = r.pending[1:]
			for _, e := range rd.Entries {
				if _, ok := r.entries[e.Slot]; !ok {
					r.order = append(r.order, e.Slot)
				}
				r.entries[e.Slot] = e
			}
			if rd.SaveHardState {
				r.hs = rd.HardState
			}
			send(r, rd.SendAfterPersist, true)
			r.node.Advance()
		}

		steps := rapid.IntRange(100, 600).Draw(t, "steps")
		for range steps {
			r := reps[rapid.IntRange(0, n-1).Draw(t, "replica")]
			switch action := rapid.IntRange(0, 20).Draw(t, "action"); {
			case action < 6: // deliver a message (sometimes keep a duplicate)
				if len(net) == 0 {
					continue
				}
				i := rapid.IntRange(0, len(net)-1).Draw(t, "msg")
				m := net[i]
				if !rapid.Bool().Draw(t, "duplicate") {
					net = append(net[:i], net[i+1:]...)
				}
				deliver(m)
			case action < 8: // deliver the oldest messages in order, as a burst
				k := min(len(net), 8)
				burst := append([]wire.Message(nil), net[:k]...)
				net = net[k:]
				for _, m := range burst {
					deliver(m)
				}
			case action < 9: // lose a message
				if len(net) > 0 {
					i := rapid.IntRange(0, len(net)-1).Draw(t, "lost")
					net = append(net[:i], net[i+1:]...)
				}
			case action < 12:
				r.node.Tick()
			case action < 14:
				proposals++
				_ = r.node.Propose(batch(fmt.Sprintf("p%d", proposals)))
			case action < 16:
				persistOne(r)
			case action < 18: // every replica's disk catches up
				for _, x := range reps {
					for len(x.pending) > 0 {
						persistOne(x)
					}
				}
			case action < 19: // crash, now and then: what is not durable is lost
				if rapid.IntRange(0, 7).Draw(t, "crash") != 0 {
					continue
				}
				cfg := r.node.cfg
				nd, err := New(cfg, r.persisted())
				if err != nil {
					t.Fatalf("restart: %v", err)
				}
				*r = propReplica{node: nd, hs: r.hs, entries: r.entries, order: r.order, snap: r.snap, next: r.snap}
			case action < 20: // a checkpoint of what it applied becomes durable
				if a := r.node.Status().Applied; a > r.snap && rapid.IntRange(0, 2).Draw(t, "checkpoint") == 0 {
					r.snap = a
					r.node.Compact(a)
				}
			default:
			}
			for _, x := range reps {
				takeReady(x)
			}
			st := r.node.Status()
			if st.Commit < r.commit {
				t.Fatalf("replica %d commit moved back %d -> %d", st.ID, r.commit, st.Commit)
			}
			if st.Promised.Less(r.promised) {
				t.Fatalf("replica %d promise moved back %v -> %v", st.ID, r.promised, st.Promised)
			}
			r.commit, r.promised = st.Commit, st.Promised
		}
	}
}

// checkRevealsOnlyDurable fails if m reveals a promise or vote that r has not
// made durable.
func checkRevealsOnlyDurable(t *rapid.T, r *propReplica, m wire.Message) {
	promised := r.hs.Promised
	for _, e := range r.entries {
		if e.Ballot != wire.BallotChosen && promised.Less(e.Ballot) {
			promised = e.Ballot // an accept implies the promise
		}
	}
	switch m.Type {
	case wire.MsgPromise, wire.MsgNack:
		if promised.Less(m.Ballot) {
			t.Fatalf("%v reveals promise %v, durable promise is %v", m.Type, m.Ballot, promised)
		}
	case wire.MsgAccepted:
		for _, rg := range m.Ranges {
			for s := rg.Lo; s < rg.Hi; s++ {
				e, ok := r.entries[s]
				if !ok || (e.Ballot != m.Ballot && e.Ballot != wire.BallotChosen) {
					t.Fatalf("Accepted reveals a vote for slot %d in %v that is not durable (disk has %+v)", s, m.Ballot, e)
				}
			}
		}
	}
}
