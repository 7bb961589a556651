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
	quorum     int
	votes      map[slotBallot]*voteSet
	chosen     map[wire.Slot]wire.Value
	learned    map[wire.Slot]wire.Value
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
