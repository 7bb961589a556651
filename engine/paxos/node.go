package paxos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"

	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/contract"
)

// Role is what a replica currently does beyond accepting and learning.
type Role uint8

const (
	// Follower accepts and learns.
	Follower Role = iota
	// Candidate runs phase 1 for its ballot.
	Candidate
	// Leader proposes in its ballot.
	Leader
)

func (r Role) String() string {
	switch r {
	case Follower:
		return "follower"
	case Candidate:
		return "candidate"
	case Leader:
		return "leader"
	}
	return "role?"
}

// HardState is what a replica must persist besides its accepted entries.
type HardState struct {
	// Promised is the highest ballot this acceptor promised.
	Promised wire.Ballot
	// Commit is a commit index whose entries are all durable in this log
	// with their chosen values, so they can be applied again after a restart.
	Commit wire.Slot
}

// Persisted is the durable state a replica restarts from: its newest valid
// checkpoint's slot and what its log held.
type Persisted struct {
	// Snapshot is the slot of the checkpoint the caller restored the state
	// machine from (0: none): every slot below it is chosen and applied in
	// that image, so the log need not hold those slots, and entries below it
	// are ignored. The checkpoint must be durable.
	Snapshot wire.Slot
	// Memberships are the configurations that govern Snapshot and later
	// slots, as the checkpoint recorded them (MembershipsAt); with none, the
	// replica is one of the cluster's first members: Config.Members voting
	// from slot 0, with Config.Alpha.
	Memberships []Membership
	HardState   HardState
	// Entries in the order they were written; a later entry for a slot
	// replaces an earlier one.
	Entries []wire.Entry
}

// Status is a snapshot of a replica's view, for metrics and tests.
type Status struct {
	ID       wire.ReplicaID
	Role     Role
	Leader   wire.ReplicaID // 0 when unknown
	Promised wire.Ballot
	Ballot   wire.Ballot // the ballot led or sought, when candidate or leader
	Commit   wire.Slot
	Applied  wire.Slot
	// Released is where the values this replica still holds begin: below
	// it every member holds every chosen value durably, or a durable
	// checkpoint here covers them (see Node.release).
	Released wire.Slot
	// Snapshot is the slot of the newest durable checkpoint this replica
	// reported (Compact, InstallSnapshot, or restored at New); 0 if none.
	Snapshot wire.Slot
	NextSlot wire.Slot // leader: the next slot it will propose
	Pending  int       // leader: proposals waiting for room in the window
	// HandingOver is the replica this leader hands leadership to (0:
	// none). Peer health is not here but in Peers: Status is taken on
	// every turn of the runtime's loop, and health costs a pass over the
	// window.
	HandingOver wire.ReplicaID
	// Epoch is the epoch of the configuration that governs the commit
	// index; Voter says whether this replica votes in it.
	Epoch uint64
	Voter bool
	// Removed: this replica was a member, is in no configuration from its
	// commit index on, and knows that every member of those holds the
	// slots it was needed for (removed). It takes no further part; the
	// runtime stops it.
	// (A replica that joins is in no configuration it knows until it
	// learns the change that adds it; it is not Removed meanwhile.)
	Removed bool
}

// Ready is the work a replica hands its caller; see the package comment for
// the contract. The slices belong to the caller once handed out.
type Ready struct {
	// HardState to persist, after Entries, when SaveHardState is set.
	HardState     HardState
	SaveHardState bool
	// Entries to persist: accepted (or learned chosen) entries.
	Entries []wire.Entry
	// Send may leave at once.
	Send []wire.Message
	// SendAfterPersist may leave once this and every earlier Ready is durable.
	SendAfterPersist []wire.Message
	// Apply lists chosen entries in slot order, continuing the last Ready's.
	Apply []wire.Entry
	// Dropped holds proposals that were queued but never proposed when this
	// replica stopped leading; they are safe to submit again elsewhere.
	Dropped []wire.Value
	// SendSnapshot lists peers that asked for chosen values this replica no
	// longer holds (they lie below its released prefix, Status.Released):
	// the caller sends each its newest durable checkpoint (state transfer),
	// which the peer installs with InstallSnapshot, once that checkpoint
	// reaches Status.Released; if it does not (the values were released
	// because every member held them, and the asker joined since), the
	// caller takes a checkpoint first. The
	// same peer is listed again while it stays behind and keeps asking, so a
	// caller sends one transfer per peer at a time and ignores repeats.
	SendSnapshot []wire.ReplicaID
	// Reads are reads asked with ReadIndex that a quorum confirmed: each
	// may be served from the state machine once every slot below its Index
	// is applied (read.go).
	Reads []ReadState
	// ReadsFailed are the IDs of reads asked with ReadIndex that will not
	// be confirmed: this replica stopped leading. Retry at the leader.
	ReadsFailed []uint64
}

// slotState is one slot of the in-memory log.
type slotState struct {
	ballot wire.Ballot // accepted ballot; zero if nothing accepted
	value  wire.Value
	chosen bool   // the value is known to be chosen
	votes  uint64 // leader only: members that accepted in the leader's ballot
}

// Node is one replica's protocol state. It is not safe for concurrent use.
type Node struct {
	cfg   Config
	self  uint64 // this replica's bit in vote masks
	index map[wire.ReplicaID]int
	ids   []wire.ReplicaID // every replica ID in index, by its bit
	rng   *rand.Rand
	// configs is the configuration history (membership.go): the one that
	// governs base, then every later one known, by From.
	configs           []configAt
	membershipChanged bool      // a change was chosen since MembershipChanged
	wasMember         bool      // some configuration known listed this replica
	releaseSeen       wire.Slot // the highest release point a leader announced
	bugs              Bug       // planted protocol bugs, test builds only; zero otherwise

	// Acceptor and learner state.
	promised wire.Ballot
	// durablePromised is the highest promise known durable in the log:
	// restored at start, raised as Readys carrying it are advanced. A
	// replica leads a ballot only at or below it (maybeWinElection).
	durablePromised wire.Ballot
	log             []slotState // slot s lives at log[s-base]; see at
	base            wire.Slot   // the first slot log holds; slots below are released
	released        wire.Slot   // values below are dropped: every member holds them durably, or snapshot covers them (release.go)
	snapshot        wire.Slot   // every slot below is in a durable checkpoint here (Compact, InstallSnapshot, New)
	commit          wire.Slot   // every slot below is chosen and, from released on, its value is in log
	applied         wire.Slot   // every slot below has been handed out in Ready.Apply
	leader          wire.ReplicaID

	// What is known durable, for release.go. durableCommit is this
	// replica's commit index as far as its log holds it; peerCommit[i] is the
	// highest commit index member i reported in a message that left it only
	// once durable (Accepted, Promise, Nack).
	durableCommit wire.Slot
	peerCommit    []wire.Slot

	// Timers, in ticks.
	electionElapsed  int
	electionTimeout  int
	heartbeatElapsed int
	quorumElapsed    int
	catchUpElapsed   int
	catchUpInFlight  bool
	catchUpMisses    int // catch-up requests in a row that went unanswered
	maxRoundSeen     uint64

	// Pre-vote (prevote.go): a follower asking whether a quorum would take
	// part in its election.
	preVoting bool
	preBallot wire.Ballot // the ballot it asked about
	preVotes  uint64      // members that said yes, itself included

	// Candidate and leader state.
	role          Role
	ballot        wire.Ballot
	prepareFrom   wire.Slot
	promises      uint64                   // members whose promise for ballot arrived (self once durable)
	merged        map[wire.Slot]wire.Entry // candidate: phase 1's reports; leader: those not yet re-proposed
	mergedEnd     wire.Slot                // leader: the end of the slots phase 1 reported
	selfPromised  bool
	nextSlot      wire.Slot
	inflightBytes int       // value bytes in [commit, nextSlot): see windowHasRoom
	unsent        wire.Slot // first slot not yet broadcast in ballot
	pending       []wire.Value
	heardFrom     uint64
	// leadStart is where the slots re-proposed on winning the ballot end:
	// a read index is never below it (read.go).
	leadStart wire.Slot

	// Read-index rounds (read.go), leader only.
	readQueue   []uint64 // reads waiting for the next round
	readBatch   []uint64 // reads of the round out
	readIndex   wire.Slot
	readRound   uint64    // the round's number; acks of others are stale
	readAcks    uint64    // members that acknowledged the round, self included
	roundFrom   wire.Slot // the commit index when the round was sent: its acks must be quorums of the configurations from there
	readElapsed int
	roundOut    bool   // a probe round is out
	roundSentAt uint64 // ticks when the round out (or the last) was sent
	leaseUntil  uint64 // leader: its lease holds while ticks is below

	// Time, in ticks since New, and the lease this acceptor granted (lease.go).
	ticks           uint64
	leaseGrantTo    wire.Ballot
	leaseGrantUntil uint64

	// Leadership control (handover.go).
	handoverTo      wire.ReplicaID // leader: handing leadership to it (0: not)
	handoverElapsed int
	handoverSent    bool     // MsgTimeoutNow sent
	vetoed          bool     // SetCanLead(false): may not lead
	lastHeard       []uint64 // ticks when each member was last heard from

	// Work for the next Ready.
	savedHS     HardState // last hard state handed out to persist
	unstable    []wire.Entry
	send        []wire.Message
	sendAfter   []wire.Message
	dropped     []wire.Value
	snapTo      []wire.ReplicaID
	reads       []ReadState
	readsFailed []uint64
	inflight    []inflightReady // Readys handed out and not yet advanced, oldest first
}

// inflightReady remembers what a Ready asked to persist, so that Advance can
// count the votes and promise it made durable.
type inflightReady struct {
	entries []wire.Entry
	hs      HardState
	saveHS  bool
}

// New returns a replica restarted from its persisted state (the zero
// Persisted for a new replica). The config is validated; persisted state that
// contradicts itself is refused with a *RestoreError.
func New(cfg Config, p Persisted) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{
		cfg:   cfg,
		index: make(map[wire.ReplicaID]int, len(cfg.Members)),
		rng:   rand.New(rand.NewPCG(cfg.Seed, uint64(cfg.ID))),
	}
	// This replica's own bit first, so that it has one even when it is in
	// no configuration (a removed replica restarting).
	n.index[cfg.ID] = 0
	n.ids = append(n.ids, cfg.ID)
	n.peerCommit, n.lastHeard = make([]wire.Slot, 1), make([]uint64, 1)
	n.self = 1
	history := p.Memberships
	if len(history) == 0 {
		if !slices.Contains(cfg.Members, cfg.ID) {
			return nil, &ConfigError{"ID", fmt.Sprintf("%d is not in Members %v (a replica that joins a running cluster starts from a checkpoint)", cfg.ID, cfg.Members)}
		}
		history = []Membership{cfg.Bootstrap()}
	}
	if err := n.setHistory(history); err != nil {
		return nil, &RestoreError{Reason: "membership: " + err.Error()}
	}
	if n.configs[0].m.From > p.Snapshot {
		return nil, &RestoreError{Reason: fmt.Sprintf("the oldest membership restored (%v) starts after the checkpoint's slot %d", n.configs[0].m, p.Snapshot)}
	}
	n.promised = p.HardState.Promised
	snap := p.Snapshot
	n.base, n.released, n.snapshot, n.applied = snap, snap, snap, snap
	for _, e := range p.Entries {
		if e.Slot < snap {
			// In the checkpoint. Its ballot still bounds the promise.
			if e.Ballot != wire.BallotChosen && n.promised.Less(e.Ballot) {
				n.promised = e.Ballot
			}
			continue
		}
		if !e.Value.Kind.Valid() {
			return nil, &RestoreError{Reason: "entry for slot " + itoa(uint64(e.Slot)) + " has an unknown value kind"}
		}
		if e.Value.Kind == wire.ValueConfig {
			if _, err := DecodeChange(e.Value.Data); err != nil {
				return nil, &RestoreError{Reason: "entry for slot " + itoa(uint64(e.Slot)) + ": " + err.Error()}
			}
		}
		st := n.slot(e.Slot)
		st.ballot, st.value = e.Ballot, e.Value
		if e.Ballot == wire.BallotChosen {
			st.chosen = true
		} else if n.promised.Less(e.Ballot) {
			// Accepting implies promising; the promise record may have been
			// lost to a torn write after the entry was written.
			n.promised = e.Ballot
		}
	}
	for s := snap; s < p.HardState.Commit; s++ {
		if s >= n.end() || n.at(s).ballot.IsZero() {
			return nil, &RestoreError{Reason: "commit index " + itoa(uint64(p.HardState.Commit)) + " covers slot " + itoa(uint64(s)) + " which has no entry (and the checkpoint restored ends at slot " + itoa(uint64(snap)) + ")"}
		}
		n.at(s).chosen = true
	}
	// The commit index walks over the restored chosen prefix, so that the
	// changes in it are registered in slot order.
	n.commit = snap
	n.advanceCommit()
	n.requiref(n.commit >= p.HardState.Commit, "restored commit %d short of the hard state's %d", n.commit, p.HardState.Commit)
	n.durableCommit = n.commit
	n.savedHS = p.HardState
	// The promise restored (raised to the highest accepted ballot, whose
	// entry is durable) is durable, and a new ballot is picked above it.
	n.durablePromised = n.promised
	n.maxRoundSeen = n.promised.Round
	n.resetElectionTimer()
	// A grant of the previous incarnation may still run: promise nothing
	// until it surely ended (lease.go).
	n.leaseGrantUntil = uint64(cfg.LeaseTicks)
	n.checkInvariants()
	return n, nil
}

// Status reports the replica's current view.
func (n *Node) Status() Status {
	st := Status{
		ID: n.cfg.ID, Role: n.role, Leader: n.leader, Promised: n.promised,
		Commit: n.commit, Applied: n.applied, Released: n.released, Snapshot: n.snapshot,
	}
	c := n.configFor(n.commit)
	st.Epoch, st.Voter = c.m.Epoch, c.voters&n.self != 0
	st.Removed = n.removed()
	if n.role != Follower {
		st.Ballot = n.ballot
	}
	if n.role == Leader {
		st.NextSlot = n.nextSlot
		st.Pending = len(n.pending)
		st.HandingOver = n.handoverTo
	}
	return st
}

// HasReady reports whether Ready would hand out any work.
func (n *Node) HasReady() bool {
	return len(n.unstable) > 0 || n.hardState() != n.savedHS || len(n.send) > 0 ||
		len(n.sendAfter) > 0 || n.applied < n.commit || len(n.dropped) > 0 || len(n.snapTo) > 0 ||
		len(n.reads) > 0 || len(n.readsFailed) > 0 ||
		(n.role == Leader && n.unsent < n.nextSlot)
}

// Ready hands out the accumulated work. The caller must perform it as the
// package comment says and call Advance once it is durable. Ready may be
// called again before that: persistence is pipelined.
func (n *Node) Ready() Ready {
	contract.Require(len(n.inflight) < 1<<20, "Readys are not being advanced")
	if n.role == Leader {
		n.broadcastNewAccepts()
	}
	rd := Ready{
		Entries:          n.unstable,
		Send:             n.send,
		SendAfterPersist: n.sendAfter,
		Dropped:          n.dropped,
		SendSnapshot:     n.snapTo,
		Reads:            n.reads,
		ReadsFailed:      n.readsFailed,
	}
	if hs := n.hardState(); hs != n.savedHS {
		contract.Ensure(!hs.Promised.Less(n.savedHS.Promised), "hard state promise moved back")
		contract.Ensure(hs.Commit >= n.savedHS.Commit, "hard state commit moved back")
		rd.HardState, rd.SaveHardState = hs, true
		n.savedHS = hs
	}
	if n.applied < n.commit {
		rd.Apply = make([]wire.Entry, 0, n.commit-n.applied)
		for s := n.applied; s < n.commit; s++ {
			st := n.at(s)
			contract.Invariantf(st.chosen, "slot %d below commit %d is not chosen", s, n.commit)
			rd.Apply = append(rd.Apply, wire.Entry{Slot: s, Ballot: st.ballot, Value: st.value})
		}
		n.applied = n.commit
	}
	if n.role == Leader {
		// Followers release on the leader's Accepts and Heartbeats; the
		// leader releases as it announces.
		n.release(n.releasePoint())
	}
	n.inflight = append(n.inflight, inflightReady{entries: rd.Entries, hs: rd.HardState, saveHS: rd.SaveHardState})
	n.unstable, n.send, n.sendAfter, n.dropped, n.snapTo = nil, nil, nil, nil, nil
	n.reads, n.readsFailed = nil, nil
	return rd
}

// hardState is the hard state as it should be persisted now. The persisted
// commit index may only cover entries that are durable no later than it, which
// holds because entries are written before the hard state of the same Ready.
func (n *Node) hardState() HardState {
	return HardState{Promised: n.promised, Commit: n.commit}
}

// Advance reports that the oldest outstanding Ready was carried out: its
// entries and hard state are durable (as are all earlier Readys') and its
// messages were handed to the transport.
func (n *Node) Advance() {
	contract.Require(len(n.inflight) > 0, "Advance without an outstanding Ready")
	done := n.inflight[0]
	n.inflight[0] = inflightReady{}
	n.inflight = n.inflight[1:]
	if done.saveHS && done.hs.Commit > n.durableCommit {
		n.durableCommit = done.hs.Commit
	}
	if done.saveHS && n.durablePromised.Less(done.hs.Promised) {
		n.durablePromised = done.hs.Promised
	}
	// The leader's own vote counts only now that it is durable.
	if n.role == Leader {
		for _, e := range done.entries {
			if e.Ballot == n.ballot && e.Slot >= n.commit && e.Slot < n.nextSlot {
				st := n.at(e.Slot)
				if st.ballot == n.ballot {
					st.votes |= n.self
					n.checkChosen(e.Slot)
				}
			}
		}
		n.advanceCommit()
		n.fillWindow()
	}
	// A candidate's own promise counts only once durable, too.
	if n.role == Candidate && !n.selfPromised && done.saveHS && done.hs.Promised == n.ballot {
		n.selfPromised = true
		n.mergePromise(n.ownAcceptedFrom(n.prepareFrom))
		n.maybeWinElection()
	}
	n.checkInvariants()
}

// slot returns the state of slot s, growing the log as needed. Slots below
// base are gone: callers check s >= released first.
func (n *Node) slot(s wire.Slot) *slotState {
	contract.Require(s >= n.base, "slot below the log's base")
	for n.end() <= s {
		n.log = append(n.log, slotState{})
	}
	return n.at(s)
}

// at returns the state of slot s, which the log holds: base <= s < end().
func (n *Node) at(s wire.Slot) *slotState { return &n.log[s-n.base] }

// end is the slot after the last one the log holds.
func (n *Node) end() wire.Slot { return n.base + wire.Slot(len(n.log)) }

// accept records value v in slot s under ballot b (durably, via Ready).
func (n *Node) accept(s wire.Slot, b wire.Ballot, v wire.Value) {
	st := n.slot(s)
	n.requiref(!(st.ballot == b && !st.value.Equal(v)), "slot %d: two values accepted under ballot %v: %v and %v", s, b, st.value, v)
	n.requiref(!st.chosen || st.value.Equal(v), "slot %d: chosen value %v replaced by %v", s, st.value, v)
	if st.ballot == b && st.value.Equal(v) {
		return // duplicate: already accepted (and in a Ready)
	}
	st.ballot, st.value = b, v
	n.unstable = append(n.unstable, wire.Entry{Slot: s, Ballot: b, Value: v})
}

// learnChosen records that v is chosen in slot s.
func (n *Node) learnChosen(s wire.Slot, v wire.Value) {
	st := n.slot(s)
	n.requiref(!st.chosen || st.value.Equal(v), "slot %d: chosen value %v contradicted by %v", s, st.value, v)
	if st.chosen && st.ballot == wire.BallotChosen {
		return
	}
	st.chosen = true
	if st.ballot != wire.BallotChosen || !st.value.Equal(v) {
		st.ballot, st.value = wire.BallotChosen, v
		n.unstable = append(n.unstable, wire.Entry{Slot: s, Ballot: wire.BallotChosen, Value: v})
	}
}

// advanceCommit moves the commit index over the contiguous chosen prefix.
func (n *Node) advanceCommit() {
	old := n.commit
	for n.commit < n.end() && n.at(n.commit).chosen {
		st := n.at(n.commit)
		if n.role == Leader && n.commit < n.nextSlot {
			n.inflightBytes -= len(st.value.Data)
		}
		n.registerChosen(n.commit, st.value)
		n.commit++
	}
	contract.Ensure(n.commit >= old, "commit index moved back")
}

func (n *Node) send1(m wire.Message) {
	m.From = n.cfg.ID
	n.send = append(n.send, m)
}

// sendRevealing queues a message that reveals this acceptor's promise or vote:
// it may leave only after the current state is durable.
func (n *Node) sendRevealing(m wire.Message) {
	m.From = n.cfg.ID
	if n.bugs&BugRevealBeforePersist != 0 {
		n.send = append(n.send, m)
		return
	}
	n.sendAfter = append(n.sendAfter, m)
}

func (n *Node) resetElectionTimer() {
	n.electionElapsed = 0
	n.electionTimeout = n.cfg.ElectionTicks + n.rng.IntN(n.cfg.ElectionTicks)
}

func (n *Node) bit(id wire.ReplicaID) uint64 { return 1 << n.index[id] }

// ownAcceptedFrom lists this replica's accepted entries at or above from, as a
// promise reports them: entries below the commit index as chosen. Released
// slots are left out: they are chosen and their values are gone here. An
// acceptor never promises from below its commit index, so only a
// candidate's own promise, whose commit index and releases moved on during
// the election, meets them (becomeLeader skips them).
func (n *Node) ownAcceptedFrom(from wire.Slot) []wire.Entry {
	var out []wire.Entry
	for s := max(from, n.released); s < n.end(); s++ {
		st := n.at(s)
		if st.ballot.IsZero() {
			continue
		}
		b := st.ballot
		if st.chosen {
			b = wire.BallotChosen
		}
		out = append(out, wire.Entry{Slot: s, Ballot: b, Value: st.value})
	}
	return out
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }
