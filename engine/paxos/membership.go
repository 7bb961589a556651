package paxos

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"

	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/contract"
)

// Membership changes.
//
// The member set is part of the log. A change is a value of kind
// wire.ValueConfig; chosen in slot s, it governs every slot from s+α on,
// where α (Membership.Alpha) is fixed when the cluster is created. Which
// configuration governs a slot is therefore a function of the chosen values
// below it, the same on every replica.
//
// Why s+α, and why it composes with pipelining. A leader may propose slot t
// only once it knows the configuration of t: every slot up to t-α must be
// chosen and known to it, that is t < commit+α. So a leader keeps at most α
// slots beyond its commit index in flight, whatever its Window (a Window
// above α is simply capped). Had a change taken effect at s itself, the
// leader would have proposed slots s+1.. with the old configuration's
// quorums before learning that s changes it, and two leaders could then
// count those slots with quorums of different configurations that do not
// intersect: the planted BugConfigAtChosenSlot does exactly that.
//
// Phase 1 with several configurations. A candidate prepares every slot from
// its commit index c. It knows the configurations of [c, c+α); it wins once
// its promises (its own included) are a quorum of each of them. Beyond
// c+α it knows nothing yet: as a leader it proposes slot t only while its
// promises are a quorum of t's configuration as well, and when they are not
// (a change it learned made new voters) it stops at t, lets its window
// drain, and runs phase 1 again, under a higher ballot, from its commit
// index, which then knows that configuration. Reads (read index, leases)
// likewise need the leader's promises, and the probe round's answers, to be
// quorums of every configuration it knows from its commit index on.
//
// Learners receive the leader's Accepts and chosen values but do not vote:
// their acknowledgements count in no quorum, and they never campaign. A
// replica that is in no configuration from its commit index on has been
// removed (Status.Removed): the runtime stops it.
//
// The configurations that govern slots from the log's base on are kept in
// memory; the runtime writes the ones that govern a checkpoint's slot and
// after into the checkpoint (MembershipsAt), and hands them back at restart
// and after a state transfer (Persisted.Memberships, InstallSnapshot).

// Membership is a configuration: who votes and who learns, from which slot.
type Membership struct {
	// Epoch counts configurations: 1 for the one a cluster is created
	// with, one more for each change chosen after it.
	Epoch uint64
	// From is the first slot this configuration governs.
	From wire.Slot
	// Alpha is α: a change chosen in slot s governs from s+Alpha on. It is
	// fixed when the cluster is created and copied into every change.
	Alpha uint64
	// Voters accept in phase 1 and 2 and count in quorums: a majority of
	// them is a quorum. At least one, at most 64 IDs in all, none 0.
	Voters []wire.ReplicaID
	// Learners receive every chosen value but do not vote.
	Learners []wire.ReplicaID
}

// IsVoter reports whether id votes in m.
func (m *Membership) IsVoter(id wire.ReplicaID) bool { return slices.Contains(m.Voters, id) }

// IsMember reports whether id votes or learns in m.
func (m *Membership) IsMember(id wire.ReplicaID) bool {
	return m.IsVoter(id) || slices.Contains(m.Learners, id)
}

// Validate reports what is wrong with m's member lists.
func (m *Membership) Validate() error {
	if len(m.Voters) == 0 {
		return errors.New("no voters")
	}
	if len(m.Voters)+len(m.Learners) > 64 {
		return fmt.Errorf("%d members, at most 64", len(m.Voters)+len(m.Learners))
	}
	all := append(slices.Clone(m.Voters), m.Learners...)
	for i, id := range all {
		if id == 0 {
			return errors.New("replica ID 0 is reserved")
		}
		if slices.Index(all[:i], id) >= 0 {
			return fmt.Errorf("replica %d listed twice", id)
		}
	}
	if m.Alpha == 0 {
		return errors.New("alpha is 0")
	}
	return nil
}

func (m Membership) String() string {
	return fmt.Sprintf("epoch %d from slot %d: voters %v learners %v", m.Epoch, m.From, m.Voters, m.Learners)
}

// membershipVersion is the first byte of a ValueConfig's data.
const membershipVersion = 1

// EncodeChange is the data of the ValueConfig value that changes the member
// set to voters and learners: a version byte, α (u64), the counts of voters
// and learners (u8 each), then each ID (u32), little-endian. The epoch and
// the first slot are not in it: they follow from the slot it is chosen in.
func EncodeChange(alpha uint64, voters, learners []wire.ReplicaID) wire.Value {
	b := make([]byte, 0, 11+4*(len(voters)+len(learners)))
	b = append(b, membershipVersion)
	b = binary.LittleEndian.AppendUint64(b, alpha)
	b = append(b, byte(len(voters)), byte(len(learners)))
	for _, id := range voters {
		b = binary.LittleEndian.AppendUint32(b, uint32(id))
	}
	for _, id := range learners {
		b = binary.LittleEndian.AppendUint32(b, uint32(id))
	}
	return wire.Value{Kind: wire.ValueConfig, Data: b}
}

// DecodeChange reads a ValueConfig's data (EncodeChange). The result's
// Epoch and From are zero. Malformed data is an error naming the problem.
func DecodeChange(data []byte) (Membership, error) {
	if len(data) < 11 {
		return Membership{}, fmt.Errorf("membership change of %d bytes, need at least 11", len(data))
	}
	if data[0] != membershipVersion {
		return Membership{}, fmt.Errorf("membership change version %d, this build reads %d", data[0], membershipVersion)
	}
	m := Membership{Alpha: binary.LittleEndian.Uint64(data[1:])}
	nv, nl := int(data[9]), int(data[10])
	if len(data) != 11+4*(nv+nl) {
		return Membership{}, fmt.Errorf("membership change of %d bytes lists %d voters and %d learners", len(data), nv, nl)
	}
	p := data[11:]
	for i := 0; i < nv+nl; i++ {
		id := wire.ReplicaID(binary.LittleEndian.Uint32(p[4*i:]))
		if i < nv {
			m.Voters = append(m.Voters, id)
		} else {
			m.Learners = append(m.Learners, id)
		}
	}
	if err := m.Validate(); err != nil {
		return Membership{}, fmt.Errorf("membership change: %w", err)
	}
	return m, nil
}

// ErrChangeInProgress is returned by ProposeMembership while an earlier
// change is proposed and not yet chosen: wait for its result, then retry.
var ErrChangeInProgress = errors.New("paxos: a membership change is already in progress")

// configAt is one configuration of the history with its masks over n.index.
type configAt struct {
	m      Membership
	voters uint64 // bits of the voters
	all    uint64 // bits of voters and learners
	quorum int
}

// knowID gives id a bit, if it has none. The caller checked that fewer than
// 64 IDs are known.
func (n *Node) knowID(id wire.ReplicaID) {
	if _, ok := n.index[id]; ok {
		return
	}
	contract.Require(len(n.index) < 64, "a 65th replica ID")
	n.index[id] = len(n.index)
	n.ids = append(n.ids, id)
	n.peerCommit = append(n.peerCommit, 0)
	n.lastHeard = append(n.lastHeard, n.ticks)
}

// setHistory replaces the configuration history (New, InstallSnapshot).
func (n *Node) setHistory(ms []Membership) error {
	n.configs = n.configs[:0]
	for _, m := range ms {
		if err := n.addConfig(m); err != nil {
			return err
		}
	}
	return nil
}

// addConfig appends m to the history. It must govern from after the newest.
func (n *Node) addConfig(m Membership) error {
	if err := m.Validate(); err != nil {
		return err
	}
	if k := len(n.configs); k > 0 && m.From <= n.configs[k-1].m.From {
		return fmt.Errorf("configuration %v does not start after %v", m, n.configs[k-1].m)
	}
	c := configAt{m: m, quorum: len(m.Voters)/2 + 1}
	for i, id := range append(slices.Clone(m.Voters), m.Learners...) {
		if _, ok := n.index[id]; !ok {
			if len(n.index) == 64 {
				return fmt.Errorf("configuration %v: this replica already knows 64 replica IDs", m)
			}
			n.knowID(id)
		}
		if i < len(m.Voters) {
			c.voters |= n.bit(id)
		}
		c.all |= n.bit(id)
	}
	n.wasMember = n.wasMember || c.all&n.self != 0
	n.configs = append(n.configs, c)
	return nil
}

// registerChosen takes note of a change chosen in slot s (advanceCommit
// calls it for every slot, in order, as it becomes part of the commit
// index). Data that does not decode was refused on the way in (validate,
// New), so it cannot be here.
func (n *Node) registerChosen(s wire.Slot, v wire.Value) {
	if v.Kind != wire.ValueConfig {
		return
	}
	newest := n.newest().m
	m, err := NextMembership(newest, s, v)
	n.requiref(err == nil, "slot %d: chosen membership change does not decode: %v", s, err)
	if err != nil {
		return
	}
	if n.bugs&BugConfigAtChosenSlot != 0 {
		m.From = s + 1
	}
	if m.From <= newest.From {
		// Only a planted bug gets here (two changes within α of each
		// other, with BugConfigAtChosenSlot).
		m.From = newest.From + 1
	}
	err = n.addConfig(m)
	n.requiref(err == nil, "slot %d: chosen membership change refused: %v", s, err)
	n.membershipChanged = true
}

// configFor returns the configuration that governs slot s as far as this
// replica knows: the newest whose From is at or below s.
func (n *Node) configFor(s wire.Slot) *configAt {
	for i := len(n.configs) - 1; i > 0; i-- {
		if n.configs[i].m.From <= s {
			return &n.configs[i]
		}
	}
	return &n.configs[0]
}

// newest returns the newest configuration known.
func (n *Node) newest() *configAt { return &n.configs[len(n.configs)-1] }

// configsFrom returns the configurations that govern slots at or above s.
func (n *Node) configsFrom(s wire.Slot) []configAt {
	i := len(n.configs) - 1
	for i > 0 && n.configs[i].m.From > s {
		i--
	}
	return n.configs[i:]
}

// quorumOf reports whether mask holds a quorum of c's voters.
func (n *Node) quorumOf(c *configAt, mask uint64) bool {
	q := c.quorum
	if n.bugs&BugSmallQuorum != 0 && q > 1 {
		q--
	}
	return bits.OnesCount64(mask&c.voters) >= q
}

// isQuorumFor reports whether mask holds a quorum of slot s's voters.
func (n *Node) isQuorumFor(s wire.Slot, mask uint64) bool { return n.quorumOf(n.configFor(s), mask) }

// isQuorumFrom reports whether mask holds a quorum of every configuration
// known to govern slots at or above s.
func (n *Node) isQuorumFrom(s wire.Slot, mask uint64) bool {
	for i, cs := 0, n.configsFrom(s); i < len(cs); i++ {
		if !n.quorumOf(&cs[i], mask) {
			return false
		}
	}
	return true
}

// votersFrom is the mask of every voter of the configurations governing
// slots at or above s; membersFrom the same with learners.
func (n *Node) votersFrom(s wire.Slot) uint64 {
	var mask uint64
	for _, c := range n.configsFrom(s) {
		mask |= c.voters
	}
	return mask
}

func (n *Node) membersFrom(s wire.Slot) uint64 {
	var mask uint64
	for _, c := range n.configsFrom(s) {
		mask |= c.all
	}
	return mask
}

// recipients is who a leader sends its Accepts and heartbeats to: every
// member of the configurations from α slots below its commit index on, so
// that a member removed by a change hears that the change took effect
// before it is left out.
func (n *Node) recipients() uint64 {
	from := wire.Slot(0)
	if a := wire.Slot(n.newest().m.Alpha); n.commit > a {
		from = n.commit - a
	}
	return n.membersFrom(from) &^ n.self
}

// removed reports whether this replica is out of the cluster for good: it
// was a member, no configuration from its commit index on lists it, and
// every member of those configurations durably holds every slot below the
// first one it no longer governs (the release point says so). Before that,
// a member that lags may still need it: slots below that one are counted
// with the quorums of configurations that list it, and a replica that does
// not know them chosen needs such a quorum to learn them.
func (n *Node) removed() bool {
	if !n.wasMember || n.membersFrom(n.commit)&n.self != 0 {
		return false
	}
	var left wire.Slot // where the configurations without it begin
	for i := len(n.configs) - 1; i >= 0 && n.configs[i].all&n.self == 0; i-- {
		left = n.configs[i].m.From
	}
	seen := n.releaseSeen
	if n.role == Leader {
		seen = n.releasePoint()
	}
	return seen >= left
}

// forEachPeer calls f for every replica ID whose bit is in mask, in
// index order (the order IDs were first seen), which is deterministic.
func (n *Node) forEachPeer(mask uint64, f func(wire.ReplicaID)) {
	for _, id := range n.ids {
		if mask&n.bit(id) != 0 {
			f(id)
		}
	}
}

// canPropose reports whether a leader may propose slot s now: it knows s's
// configuration (s < commit+α) and its promises are a quorum of it.
func (n *Node) canPropose(s wire.Slot) bool {
	if s >= n.commit+wire.Slot(n.newest().m.Alpha) {
		return false
	}
	return n.quorumOf(n.configFor(s), n.promises|n.self)
}

// established reports whether this leader's promises are a quorum of every
// configuration it knows from its commit index on: phase 1 is complete for
// every slot it may propose or read at.
func (n *Node) established() bool { return n.isQuorumFrom(n.commit, n.promises|n.self) }

// maybeRenewBallot runs phase 1 again, under a higher ballot, when this
// leader's promises are not a quorum of a configuration it learned after
// it won (see the comment at the top). It waits for its window to drain
// first, so the new phase 1 starts from everything it proposed.
func (n *Node) maybeRenewBallot() {
	if n.role != Leader || n.nextSlot != n.commit || n.established() {
		return
	}
	n.renounceLease()
	n.startElection()
}

// maybeLeaveLeadership hands leadership over once the configuration of the
// leader's commit index no longer lists it as a voter.
func (n *Node) maybeLeaveLeadership() {
	if n.role != Leader || n.configFor(n.commit).voters&n.self != 0 || n.handoverTo != 0 {
		return
	}
	if err := n.TransferLeadership(0); err != nil {
		n.stepDown()
	}
}

// fillToChange proposes no-ops up to where the newest configuration takes
// effect, when nothing else waits, so that a change chosen in an idle
// cluster still takes effect.
func (n *Node) fillToChange() {
	if len(n.pending) > 0 || n.handoverTo != 0 {
		return
	}
	for n.nextSlot < n.newest().m.From && n.windowHasRoom() {
		n.proposeNext(wire.Noop)
	}
}

// ProposeMembership proposes changing the member set to voters and
// learners. It is accepted only by the leader and only while no other change
// is proposed and not chosen (ErrChangeInProgress). The change is proposed
// in the next free slot s, ahead of queued proposals; once chosen it
// governs from s+α (Memberships shows it). It returns s.
func (n *Node) ProposeMembership(voters, learners []wire.ReplicaID) (wire.Slot, error) {
	if n.role != Leader {
		return 0, ErrNotLeader
	}
	if n.handoverTo != 0 {
		return 0, ErrHandover
	}
	m := Membership{Alpha: n.newest().m.Alpha, Voters: voters, Learners: learners}
	if err := m.Validate(); err != nil {
		return 0, fmt.Errorf("paxos: membership change refused: %w", err)
	}
	ids := len(n.index)
	for _, id := range append(slices.Clone(voters), learners...) {
		if _, ok := n.index[id]; !ok {
			ids++
		}
	}
	if ids > 64 {
		return 0, fmt.Errorf("paxos: membership change refused: this replica would know %d replica IDs, at most 64 (restart it to forget old ones)", ids)
	}
	if n.changeInFlight() {
		return 0, ErrChangeInProgress
	}
	if n.nextSlot < n.mergedEnd || !n.windowHasRoom() {
		// Phase 1 reported values for slots not re-proposed yet: they go
		// first (a new value there could contradict a chosen one). Or the
		// window is full. Either lasts briefly: the caller retries.
		return 0, ErrQueueFull
	}
	s := n.nextSlot
	n.proposeNext(EncodeChange(m.Alpha, voters, learners))
	return s, nil
}

// changeInFlight reports whether a change is proposed (or to be
// re-proposed) and not chosen.
func (n *Node) changeInFlight() bool {
	for s := n.commit; s < n.nextSlot; s++ {
		if n.at(s).value.Kind == wire.ValueConfig {
			return true
		}
	}
	for _, e := range n.merged {
		if e.Value.Kind == wire.ValueConfig && e.Slot >= n.nextSlot {
			return true
		}
	}
	return false
}

// Memberships returns the configurations this replica knows, oldest first:
// the one that governs its log's first slot, and every later one.
func (n *Node) Memberships() []Membership {
	out := make([]Membership, len(n.configs))
	for i := range n.configs {
		out[i] = n.configs[i].m
	}
	return out
}

// MembershipsAt returns what a checkpoint of slot s must hold for a replica
// that restores it to know the configuration of every slot from s on: the
// configuration governing s and every later one chosen below s. s must be
// at most the applied index.
func (n *Node) MembershipsAt(s wire.Slot) []Membership {
	contract.Require(s <= n.applied, "memberships asked beyond the applied index")
	return MembershipsAt(n.Memberships(), s)
}

// MembershipChanged reports, once, that a change was chosen since the last
// call: the runtime then tells the state machine and its observers.
func (n *Node) MembershipChanged() bool {
	ch := n.membershipChanged
	n.membershipChanged = false
	return ch
}

// pruneHistory forgets configurations that govern no slot from α below the
// log's base on: recipients still needs those (a removed member hears
// from the leader until the commit index is α past its removal).
func (n *Node) pruneHistory() {
	k := 0
	for k+1 < len(n.configs) && n.configs[k+1].m.From+wire.Slot(n.configs[k+1].m.Alpha) <= n.base {
		k++
	}
	if k > 0 {
		n.configs = slices.Delete(n.configs, 0, k)
	}
}

// NextMembership is the configuration a change v chosen in slot s makes of
// newest, the newest configuration before it: epoch one more, α kept,
// governing from s+α. The runtime's applier uses it to follow the
// configuration as it applies, as Node does as it commits.
func NextMembership(newest Membership, s wire.Slot, v wire.Value) (Membership, error) {
	if v.Kind != wire.ValueConfig {
		return Membership{}, fmt.Errorf("slot %d holds %v, not a membership change", s, v)
	}
	m, err := DecodeChange(v.Data)
	if err != nil {
		return Membership{}, err
	}
	m.Epoch, m.Alpha = newest.Epoch+1, newest.Alpha
	m.From = s + wire.Slot(m.Alpha)
	return m, nil
}

// MembershipsAt picks out of a history (oldest first) what a checkpoint of
// slot s must hold: the configuration governing s and every later one
// chosen below s (Node.MembershipsAt).
func MembershipsAt(history []Membership, s wire.Slot) []Membership {
	i := len(history) - 1
	for i > 0 && history[i].From > s {
		i--
	}
	var out []Membership
	for k, m := range history[i:] {
		if k == 0 || m.From < s+wire.Slot(m.Alpha) {
			out = append(out, m)
		}
	}
	return out
}

// EncodeMemberships encodes a history for a checkpoint's header: a version
// byte, a count (u8), then per configuration its epoch, first slot and α
// (u64 each), the counts of voters and learners (u8 each) and their IDs
// (u32 each), little-endian.
func EncodeMemberships(ms []Membership) []byte {
	b := []byte{membershipVersion, byte(len(ms))}
	for _, m := range ms {
		b = binary.LittleEndian.AppendUint64(b, m.Epoch)
		b = binary.LittleEndian.AppendUint64(b, uint64(m.From))
		b = binary.LittleEndian.AppendUint64(b, m.Alpha)
		b = append(b, byte(len(m.Voters)), byte(len(m.Learners)))
		for _, id := range append(slices.Clone(m.Voters), m.Learners...) {
			b = binary.LittleEndian.AppendUint32(b, uint32(id))
		}
	}
	return b
}

// DecodeMemberships reads EncodeMemberships's bytes; malformed bytes are an
// error naming the problem, never a panic.
func DecodeMemberships(b []byte) ([]Membership, error) {
	if len(b) < 2 || b[0] != membershipVersion {
		return nil, fmt.Errorf("membership history: %d bytes without a version %d header", len(b), membershipVersion)
	}
	n, p := int(b[1]), b[2:]
	if n == 0 {
		return nil, errors.New("membership history is empty")
	}
	out := make([]Membership, 0, n)
	for i := range n {
		if len(p) < 26 {
			return nil, fmt.Errorf("membership history: configuration %d is cut short", i)
		}
		m := Membership{Epoch: binary.LittleEndian.Uint64(p), From: wire.Slot(binary.LittleEndian.Uint64(p[8:])), Alpha: binary.LittleEndian.Uint64(p[16:])}
		nv, nl := int(p[24]), int(p[25])
		p = p[26:]
		if len(p) < 4*(nv+nl) {
			return nil, fmt.Errorf("membership history: configuration %d is cut short", i)
		}
		for k := range nv + nl {
			id := wire.ReplicaID(binary.LittleEndian.Uint32(p[4*k:]))
			if k < nv {
				m.Voters = append(m.Voters, id)
			} else {
				m.Learners = append(m.Learners, id)
			}
		}
		p = p[4*(nv+nl):]
		if err := m.Validate(); err != nil {
			return nil, fmt.Errorf("membership history: configuration %d: %w", i, err)
		}
		if i > 0 && (m.From <= out[i-1].From || m.Epoch <= out[i-1].Epoch) {
			return nil, fmt.Errorf("membership history: configuration %d (epoch %d from slot %d) does not follow epoch %d from slot %d", i, m.Epoch, m.From, out[i-1].Epoch, out[i-1].From)
		}
		out = append(out, m)
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("membership history: %d bytes left over", len(p))
	}
	return out, nil
}
