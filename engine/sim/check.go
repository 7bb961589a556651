package sim

import (
	"fmt"
	"math/bits"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/wire"
)

// checker watches every durable vote and every applied slot of a run.
//
// "Chosen" is judged from durable state, not from what replicas believe: a
// value is chosen in a slot once a majority of acceptors durably accepted it
// under one ballot. A replica that applies a value no majority durably
// accepted, or two values chosen for one slot, is a violation.
type checker struct {
	votes   map[slotBallot]*voteSet
	bySlot  map[wire.Slot][]wire.Ballot // the ballots votes holds for each slot
	chosen  map[wire.Slot]wire.Value
	learned map[wire.Slot]wire.Value
	// leading maps a ballot to the incarnation of its replica that led it
	// (sent Accepts or heartbeats under it).
	leading map[wire.Ballot]int
	ledMax  []wire.Ballot // per replica: the highest ballot it ever led
	// configs is the truth about membership, from the slots learned in
	// order (not from any replica's view): which replicas (by index bit)
	// vote in each slot.
	configs []truthConfig
	alpha   wire.Slot
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

// truthConfig is a configuration as the checker derives it.
type truthConfig struct {
	from   wire.Slot
	voters uint64 // replica index bits
}

func newChecker(replicas int, initialVoters int, alpha wire.Slot) *checker {
	return &checker{
		configs: []truthConfig{{from: 0, voters: 1<<initialVoters - 1}},
		alpha:   alpha,
		bySlot:  map[wire.Slot][]wire.Ballot{},
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
		if v, ok := c.learned[e.Slot]; ok && !v.Equal(e.Value) {
			c.fail("chosen", "replica %d recorded %v as chosen in slot %d, but %v was learned", idx+1, e.Value, e.Slot, v)
		}
		if v, ok := c.chosen[e.Slot]; ok && !v.Equal(e.Value) {
			c.fail("chosen", "replica %d recorded %v as chosen in slot %d, another recorded %v", idx+1, e.Value, e.Slot, v)
		}
		c.chosen[e.Slot] = e.Value
		return
	}
	k := slotBallot{e.Slot, e.Ballot}
	vs := c.votes[k]
	if vs == nil {
		vs = &voteSet{value: e.Value}
		c.votes[k] = vs
		c.bySlot[e.Slot] = append(c.bySlot[e.Slot], e.Ballot)
	} else if !vs.value.Equal(e.Value) {
		c.fail("ballot", "slot %d has two values accepted under ballot %v: %v and %v (replica %d)", e.Slot, e.Ballot, vs.value, e.Value, idx+1)
		return
	}
	vs.voters |= 1 << idx
	if v, ok := c.learned[e.Slot]; ok {
		c.checkChosen(e.Slot, v)
	}
}

// configFor is the truth about which replicas vote in slot s; the caller
// knows every slot up to s-α learned.
func (c *checker) configFor(s wire.Slot) truthConfig {
	for i := len(c.configs) - 1; i > 0; i-- {
		if c.configs[i].from <= s {
			return c.configs[i]
		}
	}
	return c.configs[0]
}

// checkChosen checks that v, learned in slot s, is the only value a
// majority of s's voters durably accepted under one ballot, and reports
// whether it is chosen (so far).
func (c *checker) checkChosen(s wire.Slot, v wire.Value) bool {
	cfg := c.configFor(s)
	quorum := bits.OnesCount64(cfg.voters)/2 + 1
	found := false
	for _, b := range c.bySlot[s] {
		vs := c.votes[slotBallot{s, b}]
		if bits.OnesCount64(vs.voters&cfg.voters) < quorum {
			continue
		}
		if !vs.value.Equal(v) {
			c.fail("chosen", "slot %d chosen twice: %v was learned, and a majority of its voters %b accepted %v under ballot %v", s, v, cfg.voters, vs.value, b)
			return false
		}
		found = true
	}
	return found
}

// learnConfig takes note of a change learned in slot s: from s+α its
// voters vote.
func (c *checker) learnConfig(s wire.Slot, v wire.Value) {
	if v.Kind != wire.ValueConfig {
		return
	}
	m, err := paxos.DecodeChange(v.Data)
	if err != nil {
		c.fail("applied", "slot %d holds a malformed membership change: %v", s, err)
		return
	}
	var voters uint64
	for _, id := range m.Voters {
		voters |= 1 << (id - 1)
	}
	c.configs = append(c.configs, truthConfig{from: s + c.alpha, voters: voters})
}

// applied records that replica idx applied v in slot s.
func (c *checker) applied(idx int, s wire.Slot, v wire.Value) {
	if ch, ok := c.chosen[s]; ok && !ch.Equal(v) {
		c.fail("chosen", "replica %d applied %v in slot %d, but %v was recorded chosen", idx+1, v, s, ch)
		return
	}
	if l, ok := c.learned[s]; ok && !l.Equal(v) {
		c.fail("applied", "replica %d applied %v in slot %d, another replica applied %v", idx+1, v, s, l)
		return
	}
	if !c.checkChosen(s, v) {
		if len(c.violations) == 0 {
			c.fail("chosen", "replica %d applied %v in slot %d, which no majority of its voters %b durably accepted", idx+1, v, s, c.configFor(s).voters)
		}
		return
	}
	if _, ok := c.learned[s]; !ok {
		c.learned[s] = v
		c.learnConfig(s, v)
	}
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
