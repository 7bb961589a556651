package sim

import (
	"fmt"
	"math/bits"

	"github.com/vestalabs/vesta/engine/wire"
)

// checker watches every durable vote and every applied slot of a run.
//
// "Chosen" is judged from durable state, not from what replicas believe: a
// value is chosen in a slot once a majority of acceptors durably accepted it
// under one ballot. A replica that applies a value no majority durably
// accepted, or two values chosen for one slot, is a violation.
type checker struct {
	quorum  int
	votes   map[slotBallot]*voteSet
	chosen  map[wire.Slot]wire.Value
	learned map[wire.Slot]wire.Value
	// leading maps a ballot to the incarnation of its replica that led it
	// (sent Accepts or heartbeats under it).
	leading map[wire.Ballot]int
	ledMax  []wire.Ballot // per replica: the highest ballot it ever led
	// digests maps an applied slot to the state machine's digest there, as
	// the first replica to report it had it.
	digests    map[wire.Slot]digestAt
	violations []Violation
}

type slotBallot struct {
	slot   wire.Slot
	ballot wire.Ballot
}

type voteSet struct {
	value  wire.Value
	voters uint64
}

func newChecker(replicas int) *checker {
	return &checker{
		quorum:  replicas/2 + 1,
		votes:   map[slotBallot]*voteSet{},
		chosen:  map[wire.Slot]wire.Value{},
		learned: map[wire.Slot]wire.Value{},
		leading: map[wire.Ballot]int{},
		ledMax:  make([]wire.Ballot, replicas),
		digests: map[wire.Slot]digestAt{},
	}
}

// restarted checks the promise replica idx restarts with against every
// ballot it led before: a replica picks its next ballot above its promise,
// so a promise below a ballot it led would let it lead that ballot again
// in this incarnation (see led). The promise of a ballot must be durable
// before the ballot is led.
func (c *checker) restarted(idx int, promised wire.Ballot) {
	if promised.Less(c.ledMax[idx]) {
		c.fail("ballot", "replica %d restarted with promise %v below ballot %v it led before it crashed: it may lead that ballot again", idx+1, promised, c.ledMax[idx])
	}
}

// led records that incarnation gen of replica idx sent m. A ballot is led
// by one incarnation only: otherwise a restarted replica could propose a
// second value in a slot under a ballot it already used, and a late vote
// for the first would count for the second (issue 12, item 1). A replica
// must pick, after any restart, a ballot above every one it led.
func (c *checker) led(idx, gen int, m wire.Message) {
	if m.Type != wire.MsgAccept && m.Type != wire.MsgHeartbeat {
		return
	}
	if c.ledMax[idx].Less(m.Ballot) {
		c.ledMax[idx] = m.Ballot
	}
	g, ok := c.leading[m.Ballot]
	if !ok {
		c.leading[m.Ballot] = gen
		return
	}
	if g != gen {
		c.fail("ballot", "replica %d led ballot %v in two incarnations (%d, then %d)", idx+1, m.Ballot, g, gen)
	}
}

func (c *checker) fail(check, format string, args ...any) {
	c.violations = append(c.violations, Violation{Check: check, Detail: fmt.Sprintf(format, args...)})
}

// durable records that replica idx durably wrote entry e.
func (c *checker) durable(idx int, e wire.Entry) {
	if e.Ballot == wire.BallotChosen {
		if v, ok := c.chosen[e.Slot]; ok && !v.Equal(e.Value) {
			c.fail("chosen", "replica %d recorded %v as chosen in slot %d, but %v was chosen", idx+1, e.Value, e.Slot, v)
		}
		return
	}
	k := slotBallot{e.Slot, e.Ballot}
	vs := c.votes[k]
	if vs == nil {
		vs = &voteSet{value: e.Value}
		c.votes[k] = vs
	} else if !vs.value.Equal(e.Value) {
		c.fail("ballot", "slot %d has two values accepted under ballot %v: %v and %v (replica %d)", e.Slot, e.Ballot, vs.value, e.Value, idx+1)
		return
	}
	before := bits.OnesCount64(vs.voters)
	vs.voters |= 1 << idx
	if before < c.quorum && bits.OnesCount64(vs.voters) >= c.quorum {
		if v, ok := c.chosen[e.Slot]; ok && !v.Equal(e.Value) {
			c.fail("chosen", "slot %d chosen twice: %v, then %v under ballot %v", e.Slot, v, e.Value, e.Ballot)
			return
		}
		c.chosen[e.Slot] = e.Value
	}
}

// applied records that replica idx applied v in slot s.
func (c *checker) applied(idx int, s wire.Slot, v wire.Value) {
	ch, ok := c.chosen[s]
	switch {
	case !ok:
		c.fail("chosen", "replica %d applied %v in slot %d, which no majority durably accepted", idx+1, v, s)
		return
	case !ch.Equal(v):
		c.fail("chosen", "replica %d applied %v in slot %d, but %v was chosen", idx+1, v, s, ch)
		return
	}
	if l, ok := c.learned[s]; ok && !l.Equal(v) {
		c.fail("applied", "replica %d applied %v in slot %d, another replica applied %v", idx+1, v, s, l)
		return
	}
	c.learned[s] = v
}

type digestAt struct {
	replica int
	digest  uint64
}

// digest records that replica idx's state machine, having applied every
// slot below s (from its own applies, a checkpoint it restored, or one it
// received), has digest d. Replicas at equal applied slots must agree: a
// checkpoint restored at the wrong slot, or an image that lost a write,
// shows here.
func (c *checker) digest(idx int, s wire.Slot, d uint64) {
	if prev, ok := c.digests[s]; !ok {
		c.digests[s] = digestAt{idx, d}
	} else if prev.digest != d {
		c.fail("digest", "replica %d's state machine after slot %d has digest %016x, replica %d's had %016x", idx+1, s, d, prev.replica+1, prev.digest)
	}
}
