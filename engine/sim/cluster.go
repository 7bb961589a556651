package sim

import (
	"cmp"
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/pmem"
)

// tick is the nominal length of one tick in simulated time units.
const tick = 1000

// Timing of the simulated world, in time units.
const (
	clientTimeout = 40 * tick
	// A client that hears nothing for attemptTimeout sends its operation
	// again to another replica (as the real client's attempt timeout and
	// hedging do): a write is safe to send twice (its session).
	attemptTimeout = 6 * tick
	retryBackoff   = tick / 4
	// Messages to a replica that is down wait in their senders' transports
	// (at most maxHeld per replica) and reach it within heldDelay of its
	// restart: senders redial with a backoff.
	maxHeld   = 64
	heldDelay = 30 * tick
	// While faults last, every disk stalls now and then (fsync's tail is
	// tens of times its median); slow-sync and slow-disk seeds stall more.
	stallChance = 0.1
	// Checkpoints: each replica keeps its newest keepCheckpoints; writing
	// one takes a while, and so does sending one to a peer (in chunks, in
	// the real runtime), during which either side may crash. A transfer to
	// a peer is not started again while one is under way.
	keepCheckpoints = 2
	digestEvery     = 8 // applied slots between recorded state digests
)

// checkpoint is a durable image of a replica's state machine: every slot
// below slot applied. The image is never modified once taken.
type checkpoint struct {
	slot    wire.Slot
	kv      *kvStore
	members []paxos.Membership // the configurations from slot on (MembershipsAt)
}

// cluster is one simulated run.
type cluster struct {
	opts   Options
	rng    *rand.Rand
	now    int64
	seq    uint64
	events eventHeap

	ids      []wire.ReplicaID
	replicas []*replica
	clients  []*client
	check    *checker
	history  []porcupine.Operation
	res      Result

	// Fault profile.
	faulty        bool // faults are being injected now
	loss, dup     float64
	crashEvery    int64   // mean time between crashes; 0: none
	crashOnWin    float64 // chance that a replica crashes right after it wins an election
	slowSync      float64 // chance that a sync stalls (a disk's tail latency)
	slowDisk      int     // a replica whose syncs stall with chance slowDiskP; -1: none
	slowDiskP     float64
	partEvery     int64 // mean time between partition changes; 0: none
	pauseEvery    int64 // mean time between pauses; 0: none
	blocked       [][]bool
	healAt        int64
	recoveredAt   int64 // commands issued from here on must complete
	clientsStopAt int64
	endAt         int64
	lastLeader    wire.Ballot
}

type replica struct {
	idx      int
	id       wire.ReplicaID
	up       bool
	removed  bool // learned it was removed from the cluster: stopped for good
	retiring bool // a change that removes it was proposed: never added again
	gen      int
	period   int64 // this replica's tick length: clocks drift apart
	// pausedUntil: the process is stopped until then (a SIGSTOP, a long
	// pause): everything addressed to it waits, then arrives at once.
	pausedUntil int64
	missedTicks int            // ticks that passed while paused, not yet given to node
	led         wire.Ballot    // the last ballot this incarnation was seen leading
	held        []wire.Message // sent to it while it was down, delivered after it restarts
	node        *paxos.Node
	disk        disk
	// Readys handed out and not yet durable, oldest first; the first
	// syncing of them are in the sync now under way (group commit).
	pending []*paxos.Ready
	syncing int
	kv      *kvStore
	applied wire.Slot
	dev     *pmem.SimDevice // PmemLog: the replica's persistent memory
	plog    *pmem.Log       // PmemLog: the log open on it
	// Checkpoints survive crashes, like the disk; the one being written
	// and the transfers under way do not.
	ckpts   []*checkpoint // oldest first
	writing *checkpoint
	sending map[int]int64 // peer index: when the transfer to it ends
	queue   []command
	waiting map[cmdID]int // commands submitted here: client index
	// Read-index gets: asked of the protocol (by read ID), then waiting
	// until applied reaches their index.
	nextRead  uint64
	reads     map[uint64]pendingRead
	readsWait []pendingRead
}

// pendingRead is a read-index get at its replica.
type pendingRead struct {
	client int
	cmd    command
	index  wire.Slot
}

// disk is what survives a crash: the last hard state and the latest entry
// per slot. With PmemLog it is the model of what the pmem log must recover
// at least: everything synced.
type disk struct {
	hs      paxos.HardState
	entries []wire.Entry // indexed by slot; zero Ballot means absent
}

type client struct {
	idx     int
	id      uint32
	seq     uint64
	target  int
	cur     *command
	call    int64
	stopped bool
}

// Run simulates one seed and checks it.
func Run(opts Options) (res Result) {
	opts = opts.withDefaults()
	c := &cluster{
		opts:  opts,
		rng:   rand.New(rand.NewPCG(opts.Seed, 0x5eed_5eed)),
		check: newChecker(opts.Replicas+opts.Spares, opts.Replicas, wire.Slot(opts.alpha())),
	}
	c.res.Seed = opts.Seed
	defer func() {
		if r := recover(); r != nil {
			res = c.res
			stack := string(debug.Stack())
			if i := strings.Index(stack, "panic("); i >= 0 {
				stack = stack[i:]
			}
			if len(stack) > 1500 {
				stack = stack[:1500]
			}
			res.Violations = append(res.Violations, Violation{Check: "panic", Detail: fmt.Sprintf("%v at t=%s\n%s", r, c.clock(), stack)})
		}
	}()
	c.setup()
	c.loop()
	c.finish()
	return c.res
}

func (c *cluster) clock() string { return fmt.Sprintf("%d.%03d", c.now/tick, c.now%tick) }

func (c *cluster) tracef(format string, args ...any) {
	if c.opts.Trace != nil {
		fmt.Fprintf(c.opts.Trace, "[%10s] %s\n", c.clock(), fmt.Sprintf(format, args...))
	}
}

func (c *cluster) schedule(at int64, e *event) {
	e.at = at
	c.seq++
	e.seq = c.seq
	heap.Push(&c.events, e)
}

func (c *cluster) between(lo, hi int64) int64 { return lo + c.rng.Int64N(hi-lo+1) }

func (c *cluster) setup() {
	o := c.opts
	for i := range o.Replicas {
		c.ids = append(c.ids, wire.ReplicaID(i+1))
	}
	total := o.Replicas + o.Spares
	c.blocked = make([][]bool, total)
	for i := range c.blocked {
		c.blocked[i] = make([]bool, total)
	}
	var profile []string
	if !o.NoFaults {
		if c.rng.IntN(10) < 7 {
			c.loss = c.rng.Float64() * 0.3
			profile = append(profile, fmt.Sprintf("loss=%.0f%%", c.loss*100))
		}
		if c.rng.IntN(2) == 0 {
			c.dup = c.rng.Float64() * 0.1
			profile = append(profile, fmt.Sprintf("dup=%.0f%%", c.dup*100))
		}
		if c.rng.IntN(10) < 7 {
			c.crashEvery = c.between(20, 80) * tick
			profile = append(profile, fmt.Sprintf("crash/%dt", c.crashEvery/tick))
		}
		if c.rng.IntN(10) < 7 {
			c.partEvery = c.between(10, 60) * tick
			profile = append(profile, fmt.Sprintf("partition/%dt", c.partEvery/tick))
		}
		c.slowDisk = -1
		switch c.rng.IntN(3) {
		case 0:
			c.slowSync = 0.1 + 0.3*c.rng.Float64()
			profile = append(profile, fmt.Sprintf("slow-sync=%.0f%%", c.slowSync*100))
		case 1:
			c.slowDisk, c.slowDiskP = c.rng.IntN(o.Replicas), 0.3+0.5*c.rng.Float64()
			profile = append(profile, fmt.Sprintf("slow-disk=r%d/%.0f%%", c.slowDisk+1, c.slowDiskP*100))
		}
		if c.rng.IntN(10) < 6 {
			c.crashOnWin = 0.5 + 0.5*c.rng.Float64()
			profile = append(profile, fmt.Sprintf("crash-on-win=%.0f%%", c.crashOnWin*100))
		}
		if c.rng.IntN(2) == 0 {
			c.pauseEvery = c.between(30, 90) * tick
			profile = append(profile, fmt.Sprintf("pause/%dt", c.pauseEvery/tick))
		}
	}
	if len(profile) == 0 {
		profile = append(profile, "healthy")
	}
	c.res.Profile = strings.Join(profile, " ")
	c.faulty = true
	c.healAt = int64(o.FaultTicks) * tick
	c.recoveredAt = c.healAt + RecoveryTicks*tick
	c.endAt = c.healAt + int64(o.HealTicks)*tick
	c.clientsStopAt = c.endAt - clientTimeout - 20*tick
	c.tracef("seed %d: %d replicas, %d clients, profile %s", o.Seed, o.Replicas, o.Clients, c.res.Profile)

	for i := range total {
		r := &replica{idx: i, id: wire.ReplicaID(i + 1), period: c.between(tick*8/10, tick*12/10)}
		c.replicas = append(c.replicas, r)
		c.start(r)
	}
	for i := range o.Clients {
		cl := &client{idx: i, id: uint32(i + 1), target: c.rng.IntN(total)}
		c.clients = append(c.clients, cl)
		c.schedule(c.between(0, 2*tick), &event{kind: evClientNext, client: i})
	}
	if c.crashEvery > 0 {
		c.schedule(c.between(c.crashEvery/2, c.crashEvery*3/2), &event{kind: evCrash})
	}
	if c.pauseEvery > 0 {
		c.schedule(c.between(c.pauseEvery/2, c.pauseEvery*3/2), &event{kind: evPause})
	}
	if c.partEvery > 0 {
		c.schedule(c.between(c.partEvery/2, c.partEvery*3/2), &event{kind: evPartition})
	}
	c.schedule(c.healAt, &event{kind: evHeal})
	c.schedule(c.clientsStopAt, &event{kind: evStopClients})
}

// start (re)creates a replica's protocol state from its disk.
func (c *cluster) start(r *replica) {
	cfg := paxos.Config{
		ID: r.id, Members: c.ids, Alpha: c.opts.alpha(), ElectionTicks: 10, HeartbeatTicks: 2,
		// Leases: clocks here run at 0.8 to 1.2 of the nominal tick, so
		// one runs at most 50% faster than another (DriftBeyondBound
		// breaks that on purpose).
		LeaseTicks: 8, MaxDriftPercent: 50,
		Window: c.opts.Window, MaxPending: 64, MaxCatchUpEntries: 32, PreVote: true, Seed: c.rng.Uint64(),
		// Small, so that replicas that lag (restarted, partitioned) refuse
		// Accepts beyond their reach and must catch up first.
		MaxSlotsAhead: max(32, 2*c.opts.Window),
	}
	var p paxos.Persisted
	snap := r.newestCheckpoint()
	if snap != nil {
		p.Snapshot = snap.slot
	}
	if c.opts.PmemLog {
		var ok bool
		if p, ok = c.recoverPmem(r); !ok {
			return
		}
		if snap != nil {
			p.Snapshot = snap.slot
		}
	} else {
		p.HardState = r.disk.hs
		for _, e := range r.disk.entries {
			if !e.Ballot.IsZero() {
				p.Entries = append(p.Entries, e)
			}
		}
	}
	switch {
	case snap != nil:
		p.Memberships = snap.members
	case int(r.id) > len(c.ids):
		// A spare: it knows how the cluster began, and learns the rest.
		p.Memberships = []paxos.Membership{cfg.Bootstrap()}
	}
	n, err := paxos.New(cfg, p)
	if err != nil {
		c.check.fail("restore", "replica %d cannot restart from its disk: %v", r.id, err)
		return
	}
	c.check.restarted(r.idx, n.Status().Promised)
	if c.opts.NodeHook != nil {
		c.opts.NodeHook(n)
	}
	r.node, r.up, r.pending, r.syncing = n, true, nil, 0
	r.gen++
	r.kv, r.applied, r.queue, r.waiting = newKV(), 0, nil, map[cmdID]int{}
	r.reads, r.readsWait = map[uint64]pendingRead{}, nil
	r.writing, r.sending = nil, map[int]int64{}
	if snap != nil {
		// Recovery: the newest checkpoint, then the log after it.
		r.kv, r.applied = snap.kv.clone(), snap.slot
	}
	c.schedule(c.now+c.between(0, r.period), &event{kind: evTick, node: r.idx, gen: r.gen})
	c.tracef("r%d start: snapshot=%d promised=%v commit=%d entries=%d held=%d", r.id, p.Snapshot, r.disk.hs.Promised, r.disk.hs.Commit, len(p.Entries), len(r.held))
	for _, m := range r.held {
		c.schedule(c.now+c.between(0, heldDelay), &event{kind: evDeliver, node: r.idx, msg: m})
	}
	r.held = nil
}

func (c *cluster) loop() {
	for c.events.Len() > 0 && len(c.check.violations) == 0 {
		e := heap.Pop(&c.events).(*event)
		if e.at > c.endAt {
			break
		}
		c.now = e.at
		c.handle(e)
	}
}

func (c *cluster) handle(e *event) {
	switch e.kind {
	case evDeliver, evTick, evPersisted, evRequest, evCheckpointed, evSnapshot:
		r := c.replicas[e.node]
		if r.up && r.pausedUntil > c.now {
			if e.kind == evTick && r.gen == e.gen {
				// Its clock goes on: the runtime counts ticks from the
				// monotonic clock and catches them up when it runs again.
				r.missedTicks++
				c.schedule(c.now+r.period+c.between(-r.period/20, r.period/20), &event{kind: evTick, node: r.idx, gen: r.gen})
				return
			}
			// Stopped: it takes this when it runs again, in a random order
			// with everything else that waited.
			c.schedule(r.pausedUntil+c.between(0, tick/2), e)
			return
		}
		if r.up && r.missedTicks > 0 {
			// Awake: first the time it missed, as the runtime tells the
			// protocol before it looks at anything (a lease above all);
			// timers do not count it.
			r.node.AdvanceClock(uint64(r.missedTicks))
			r.missedTicks = 0
		}
	}
	switch e.kind {
	case evDeliver:
		r := c.replicas[e.node]
		if !r.up {
			// The sender's transport keeps what it could not deliver and
			// sends it once the replica is back (TCP: the peer's queue
			// survives redials, up to its bound): a message may reach
			// the next incarnation. Half are lost with the connection.
			if len(r.held) < maxHeld && c.rng.IntN(2) == 0 {
				r.held = append(r.held, e.msg)
			}
			return
		}
		c.tracef("r%d <- %v", r.id, e.msg)
		if err := r.node.Step(e.msg); err != nil {
			var me *paxos.MessageError
			if errors.As(err, &me) && me.Kind == paxos.RefusedSlotTooFar {
				c.tracef("r%d refused: %v", r.id, err)
				return
			}
			c.check.fail("step", "replica %d refused a well-formed message %v: %v", r.id, e.msg, err)
			return
		}
		c.process(r)
	case evTick:
		r := c.replicas[e.node]
		if !r.up || r.gen != e.gen {
			return
		}
		r.node.Tick()
		if !c.opts.NoHandovers && r.node.Status().Role == paxos.Leader && r.node.HandingOver() == 0 && c.rng.IntN(200) == 0 {
			// Now and then the leader hands leadership over, to a random
			// peer or the most caught-up one (paxos handover.go).
			to := wire.ReplicaID(0)
			if c.rng.IntN(2) == 0 {
				to = c.replicas[c.rng.IntN(len(c.replicas))].id
			}
			if to != r.id && r.node.TransferLeadership(to) == nil {
				c.res.Handovers++
				c.tracef("r%d hands leadership over to %d", r.id, r.node.HandingOver())
			}
		}
		c.maybeChangeMembership(r)
		c.process(r)
		if c.retireIfRemoved(r) {
			return
		}
		c.schedule(c.now+r.period+c.between(-r.period/20, r.period/20), &event{kind: evTick, node: r.idx, gen: r.gen})
	case evPersisted:
		r := c.replicas[e.node]
		if !r.up || r.gen != e.gen || r.syncing == 0 {
			return
		}
		if r.plog != nil {
			if err := r.plog.Sync(); err != nil {
				c.check.fail("log", "replica %d: pmem sync: %v", r.id, err)
				return
			}
		}
		for _, rd := range r.pending[:r.syncing] {
			c.persist(r, rd, len(rd.Entries)+1)
		}
		c.completeDurable(r, r.syncing)
		r.syncing = 0
		c.startSync(r)
		c.process(r)
	case evRequest:
		c.onRequest(c.replicas[e.node], e.client, e.cmd)
	case evResponse:
		c.onResponse(c.clients[e.client], e.resp)
	case evClientNext:
		c.nextOp(c.clients[e.client])
	case evClientTimeout:
		c.onTimeout(c.clients[e.client], e.resp.seq)
	case evClientRetry:
		if cl := c.clients[e.client]; cl.cur != nil && cl.cur.Seq == e.resp.seq {
			cl.target = c.otherTarget(cl.target)
			c.sendRequest(cl)
			c.schedule(c.now+attemptTimeout, &event{kind: evClientRetry, client: cl.idx, resp: e.resp})
		}
	case evCrash:
		c.crashSome()
	case evCrashNode:
		if r := c.replicas[e.node]; r.up && r.gen == e.gen && c.faulty {
			// Back quickly, while its peers still hold its ballot as their
			// promise and before their election timers run out.
			c.crash(r, c.between(tick/10, tick), false)
		}
	case evRestart:
		r := c.replicas[e.node]
		if !r.up && r.gen == e.gen && !r.removed {
			c.start(r)
		}
	case evPartition:
		c.repartition()
	case evPause:
		c.pauseSome()
	case evHeal:
		c.heal()
	case evStopClients:
		for _, cl := range c.clients {
			cl.stopped = true
		}
	case evCheckpointed:
		r := c.replicas[e.node]
		if !r.up || r.gen != e.gen || r.writing != e.ckpt {
			return // lost in a crash while being written
		}
		r.writing = nil
		c.addCheckpoint(r, e.ckpt)
		c.res.Checkpoints++
		c.tracef("r%d checkpoint at slot %d durable", r.id, e.ckpt.slot)
		r.node.Compact(e.ckpt.slot)
		c.compactDisk(r)
		c.process(r)
	case evSnapshot:
		c.receiveSnapshot(c.replicas[e.node], e.msg.From, e.ckpt)
	}
}

// process drives a replica after any input: propose what its clients sent,
// then carry out Readys until one must wait for persistence.
func (c *cluster) process(r *replica) {
	if c.opts.DriftBeyondBound && r.up {
		// The worst drift for leases: the leader's clock runs sixteen
		// times slower than its followers', far beyond the 50% they
		// assume (and beyond the margin of the election timeout over the
		// lease).
		if r.node.Status().Role == paxos.Leader {
			r.period = 4 * tick
		} else {
			r.period = tick / 4
		}
	}
	for r.up {
		c.flushQueue(r)
		if st := r.node.Status(); st.Role == paxos.Leader && st.Ballot != r.led {
			r.led = st.Ballot
			if c.lastLeader.Less(st.Ballot) {
				c.lastLeader = st.Ballot
				c.res.Elections++
			}
			c.tracef("r%d leads in ballot %v from slot %d", r.id, st.Ballot, st.Commit)

			if c.faulty && r.syncing > 0 && c.rng.Float64() < c.crashOnWin {
				// Crash it right after it wins: after its first Accepts
				// leave (this Ready), before the sync under way completes
				// (10-400 units). A leader that led before its own promise
				// was durable now restarts below its ballot.
				c.schedule(c.now+c.between(1, 20), &event{kind: evCrashNode, node: r.idx, gen: r.gen})
			}
		}
		if !r.node.HasReady() {
			return
		}
		rd := r.node.Ready()
		for _, m := range rd.Send {
			c.check.led(r.idx, r.gen, m)
			c.send(m)
		}
		c.apply(r, rd.Apply)
		for _, rs := range rd.Reads {
			pr, ok := r.reads[rs.ID]
			if !ok {
				c.check.fail("read", "replica %d: read %d confirmed, never asked", r.id, rs.ID)
				continue
			}
			delete(r.reads, rs.ID)
			pr.index = rs.Index
			r.readsWait = append(r.readsWait, pr)
		}
		for _, id := range rd.ReadsFailed {
			if pr, ok := r.reads[id]; ok {
				delete(r.reads, id)
				c.respond(r, pr.client, response{seq: pr.cmd.Seq, notLeader: true, hint: r.node.Status().Leader})
			}
		}
		c.serveReads(r)
		for _, v := range rd.Dropped {
			cmds, _ := decodeBatch(v.Data)
			for _, cmd := range cmds {
				c.refuse(r, cmd)
			}
		}
		for _, to := range rd.SendSnapshot {
			c.sendSnapshot(r, to)
		}
		r.pending = append(r.pending, &rd)
		c.completeDurable(r, 0)
		c.startSync(r)
	}
}

// completeDurable advances the first k pending Readys, which are durable now,
// and any that follow them with nothing to persist: they only had to wait
// their turn.
func (c *cluster) completeDurable(r *replica, k int) {
	for k < len(r.pending) && r.syncing == 0 && len(r.pending[k].Entries) == 0 && !r.pending[k].SaveHardState {
		k++
	}
	for _, rd := range r.pending[:k] {
		for _, m := range rd.SendAfterPersist {
			c.send(m)
		}
		r.node.Advance()
	}
	r.pending = r.pending[k:]
}

// startSync begins one sync covering every pending Ready, unless one runs.
// On a pmem log the Readys are appended now (stores only); the sync's
// completion fences them.
func (c *cluster) startSync(r *replica) {
	if r.syncing > 0 || len(r.pending) == 0 {
		return
	}
	r.syncing = len(r.pending)
	if r.plog != nil {
		for _, rd := range r.pending {
			if len(rd.Entries) == 0 && !rd.SaveHardState {
				continue
			}
			if err := r.plog.Append(rd.Entries, rd.HardState, rd.SaveHardState); err != nil {
				c.check.fail("log", "replica %d: pmem append: %v", r.id, err)
				return
			}
		}
	}
	d := c.between(10, 400)
	p := c.slowSync
	if r.idx == c.slowDisk {
		p = c.slowDiskP
	}
	if c.faulty && c.rng.Float64() < stallChance+p {
		// A stall: the replica's peers, their own syncs included, answer
		// long before its own sync completes.
		d += c.between(400, 4000)
	}
	c.schedule(c.now+d, &event{kind: evPersisted, node: r.idx, gen: r.gen})
}

// persist writes the first k records of a Ready to disk: its entries in
// order, then its hard state. A crash persists a random prefix.
func (c *cluster) persist(r *replica, rd *paxos.Ready, k int) {
	for i, e := range rd.Entries {
		if i >= k {
			return
		}
		c.check.durable(r.idx, e)
		if e.Slot < r.compactedBelow() {
			continue // the log was compacted below a checkpoint meanwhile
		}
		for wire.Slot(len(r.disk.entries)) <= e.Slot {
			r.disk.entries = append(r.disk.entries, wire.Entry{})
		}
		r.disk.entries[e.Slot] = e
	}
	if k > len(rd.Entries) && rd.SaveHardState {
		r.disk.hs = rd.HardState
	}
}

// recoverPmem opens the replica's pmem log (creating its device on first
// start), checks that it recovered everything synced, and records what it
// recovered as durable.
func (c *cluster) recoverPmem(r *replica) (paxos.Persisted, bool) {
	if r.dev == nil {
		dev, err := pmem.NewSimDevice(16<<20, storage.Identity{ClusterID: 1, ReplicaID: r.id, Members: c.allIDs()})
		if err != nil {
			c.check.fail("log", "replica %d: %v", r.id, err)
			return paxos.Persisted{}, false
		}
		r.dev = dev
	}
	l, err := r.dev.Open()
	if err != nil {
		c.check.fail("log", "replica %d: pmem recovery failed: %v", r.id, err)
		return paxos.Persisted{}, false
	}
	p, err := l.Load()
	if err != nil {
		c.check.fail("log", "replica %d: pmem load failed: %v", r.id, err)
		return paxos.Persisted{}, false
	}
	got := map[wire.Slot]wire.Entry{}
	for _, e := range p.Entries {
		got[e.Slot] = e
	}
	for _, want := range r.disk.entries {
		if want.Ballot.IsZero() {
			continue
		}
		e, ok := got[want.Slot]
		if !ok || (e.Ballot != wire.BallotChosen && e.Ballot.Less(want.Ballot) && want.Ballot != wire.BallotChosen) {
			c.check.fail("log", "replica %d: pmem recovery lost synced entry %+v (recovered %+v)", r.id, want, e)
			return paxos.Persisted{}, false
		}
	}
	if p.HardState.Promised.Less(r.disk.hs.Promised) || p.HardState.Commit < r.disk.hs.Commit {
		c.check.fail("log", "replica %d: pmem recovered hard state %+v, synced %+v", r.id, p.HardState, r.disk.hs)
		return paxos.Persisted{}, false
	}
	// What was recovered is durable now, partial syncs included.
	for _, e := range p.Entries {
		c.check.durable(r.idx, e)
		for wire.Slot(len(r.disk.entries)) <= e.Slot {
			r.disk.entries = append(r.disk.entries, wire.Entry{})
		}
		r.disk.entries[e.Slot] = e
	}
	r.disk.hs = p.HardState
	r.plog = l
	return p, true
}

func (c *cluster) apply(r *replica, entries []wire.Entry) {
	for _, e := range entries {
		if e.Slot != r.applied {
			c.check.fail("applied", "replica %d applied slot %d after slot %d: gap or repeat", r.id, e.Slot, r.applied-1)
			return
		}
		r.applied++
		c.check.applied(r.idx, e.Slot, e.Value)
		if e.Value.Kind == wire.ValueConfig {
			c.tracef("r%d applies a membership change in slot %d: now %v", r.id, e.Slot, r.node.Memberships())
		}
		if e.Value.Kind == wire.ValueBatch {
			if !c.applyBatch(r, e) {
				return
			}
		}
		if r.applied%digestEvery == 0 {
			c.check.digest(r.idx, r.applied, r.kv.digest())
		}
		c.serveReads(r)
	}
	c.maybeCheckpoint(r)
}

// serveReads answers the confirmed read-index gets whose index r applied.
func (c *cluster) serveReads(r *replica) {
	k := 0
	for _, pr := range r.readsWait {
		if pr.index > r.applied {
			r.readsWait[k] = pr
			k++
			continue
		}
		if pr.cmd.Read == readLease {
			c.res.LeaseReads++
		} else {
			c.res.ReadIndexReads++
		}
		c.respond(r, pr.client, response{seq: pr.cmd.Seq, res: result{Value: r.kv.data[pr.cmd.Key], OK: true}})
	}
	r.readsWait = r.readsWait[:k]
}

// applyBatch applies one chosen batch to r's state machine and answers the
// clients waiting here for its commands.
func (c *cluster) applyBatch(r *replica, e wire.Entry) bool {
	{
		cmds, err := decodeBatch(e.Value.Data)
		if err != nil {
			c.check.fail("applied", "replica %d: slot %d holds a malformed batch: %v", r.id, e.Slot, err)
			return false
		}
		for _, cmd := range cmds {
			res, _ := r.kv.apply(cmd)
			if cl, ok := r.waiting[cmd.id()]; ok {
				delete(r.waiting, cmd.id())
				c.respond(r, cl, response{seq: cmd.Seq, res: res})
			}
		}
	}
	return true
}

// flushQueue proposes every command the replica's clients sent since the
// last Ready as one batch.
func (c *cluster) flushQueue(r *replica) {
	if len(r.queue) == 0 {
		return
	}
	var data []byte
	for _, cmd := range r.queue {
		data = appendCommand(data, cmd)
	}
	err := r.node.Propose(wire.Value{Kind: wire.ValueBatch, Data: data})
	switch {
	case err == nil:
		r.queue = r.queue[:0]
	case errors.Is(err, paxos.ErrQueueFull):
		// keep them; the window will open
	default:
		for _, cmd := range r.queue {
			c.refuse(r, cmd)
		}
		r.queue = r.queue[:0]
	}
}

// refuse tells the client its command was never proposed here.
func (c *cluster) refuse(r *replica, cmd command) {
	cl, ok := r.waiting[cmd.id()]
	if !ok {
		return
	}
	delete(r.waiting, cmd.id())
	c.respond(r, cl, response{seq: cmd.Seq, notLeader: true, hint: r.node.Status().Leader})
}

func (c *cluster) send(m wire.Message) {
	from, to := int(m.From)-1, int(m.To)-1
	if c.blocked[from][to] {
		return
	}
	if c.faulty && c.rng.Float64() < c.loss {
		return
	}
	copies := 1
	if c.rng.Float64() < c.dup {
		copies = 2
	}
	for range copies {
		c.schedule(c.now+c.netDelay(), &event{kind: evDeliver, node: to, msg: m})
	}
}

func (c *cluster) netDelay() int64 {
	d := c.between(20, 200)
	if c.rng.IntN(10) == 0 {
		d += c.between(0, 800) // stragglers reorder messages
	}
	return d
}

func (c *cluster) crashSome() {
	if !c.faulty {
		return
	}
	defer c.schedule(c.now+c.between(c.crashEvery/2, c.crashEvery*3/2), &event{kind: evCrash})
	var up []*replica
	for _, r := range c.replicas {
		if r.up {
			up = append(up, r)
		}
	}
	if len(up) == 0 {
		return
	}
	c.crash(up[c.rng.IntN(len(up))], c.between(5, 60)*tick, true)
}

// pauseSome stops a replica for a while, most often the leader: a leader
// that wakes up takes in what arrived meanwhile in a random order, so it may
// act as leader on a client's request before it hears that another replica
// leads now.
func (c *cluster) pauseSome() {
	if !c.faulty {
		return
	}
	defer c.schedule(c.now+c.between(c.pauseEvery/2, c.pauseEvery*3/2), &event{kind: evPause})
	var up []*replica
	var leader *replica
	for _, r := range c.replicas {
		if r.up && r.pausedUntil <= c.now {
			up = append(up, r)
			if r.node.Status().Role == paxos.Leader {
				leader = r
			}
		}
	}
	if len(up) == 0 {
		return
	}
	r := up[c.rng.IntN(len(up))]
	if leader != nil && c.rng.IntN(4) > 0 {
		r = leader
	}
	r.pausedUntil = c.now + c.between(15, 40)*tick
	c.tracef("r%d paused until t=%d", r.id, r.pausedUntil/tick)
}

// crash stops replica r as a power failure would and restarts it after
// restartIn time units. Of the sync under way a random prefix reached the
// disk, or nothing unless partial.
func (c *cluster) crash(r *replica, restartIn int64, partial bool) {
	if r.plog != nil {
		// Power fails: of the words stored since the last fence, a random
		// subset reached the device. Recovery, at restart, decides.
		pending, kept := r.dev.Crash(c.rng)
		c.tracef("r%d pmem crash: kept %d of %d unfenced words", r.id, kept, pending)
		r.plog = nil
	} else if r.syncing > 0 && partial {
		// The sync under way is cut short: a random prefix of its records
		// reached the disk; the next one, if any, was torn and is dropped by
		// recovery (its CRC fails). Readys queued behind it are lost.
		total := 0
		for _, rd := range r.pending[:r.syncing] {
			total += len(rd.Entries) + 1
		}
		keep := c.rng.IntN(total + 1)
		for _, rd := range r.pending[:r.syncing] {
			k := min(keep, len(rd.Entries)+1)
			c.persist(r, rd, k)
			keep -= k
		}
	}
	r.up, r.pending, r.syncing, r.node, r.led = false, nil, 0, nil, wire.Ballot{}
	r.pausedUntil, r.missedTicks = 0, 0
	r.gen++
	c.res.Crashes++
	c.tracef("r%d CRASH", r.id)
	c.schedule(c.now+restartIn, &event{kind: evRestart, node: r.idx, gen: r.gen})
}

func (c *cluster) repartition() {
	if !c.faulty {
		return
	}
	defer c.schedule(c.now+c.between(c.partEvery/2, c.partEvery*3/2), &event{kind: evPartition})
	n := len(c.replicas)
	for i := range c.blocked {
		clear(c.blocked[i])
	}
	switch c.rng.IntN(5) {
	case 0:
		c.tracef("partition: healed")
	case 1: // symmetric split
		var side []bool
		for range n {
			side = append(side, c.rng.IntN(2) == 0)
		}
		for i := range n {
			for j := range n {
				c.blocked[i][j] = side[i] != side[j]
			}
		}
		c.tracef("partition: split %v", side)
	case 2: // one replica isolated both ways: often the leader
		x := c.rng.IntN(n)
		if c.rng.IntN(2) == 0 {
			for i, r := range c.replicas {
				if r.up && r.node.Status().Role == paxos.Leader {
					x = i
				}
			}
		}
		for i := range n {
			c.blocked[x][i], c.blocked[i][x] = i != x, i != x
		}
		c.tracef("partition: r%d isolated", x+1)
	case 3: // random one-way links
		for i := range n {
			for j := range n {
				c.blocked[i][j] = i != j && c.rng.IntN(10) < 3
			}
		}
		c.tracef("partition: random one-way links %v", c.blocked)
	case 4: // a replica that can send but not hear, or hear but not send
		x, deaf := c.rng.IntN(n), c.rng.IntN(2) == 0
		for i := range n {
			if i != x {
				if deaf {
					c.blocked[i][x] = true
				} else {
					c.blocked[x][i] = true
				}
			}
		}
		c.tracef("partition: r%d deaf=%v mute=%v", x+1, deaf, !deaf)
	}
}

func (c *cluster) heal() {
	c.faulty = false
	for i := range c.blocked {
		clear(c.blocked[i])
	}
	c.tracef("HEAL: no more loss, partitions or crashes")
	for _, r := range c.replicas {
		if !r.up && !r.removed {
			c.start(r)
		}
	}
}

// Clients.

func (c *cluster) nextOp(cl *client) {
	if cl.stopped || cl.cur != nil {
		return
	}
	cl.seq++
	key := fmt.Sprintf("k%d", c.rng.IntN(c.opts.Keys))
	cmd := command{Client: cl.id, Seq: cl.seq, Key: key}
	op := c.rng.IntN(3)
	if cl.idx == 0 {
		// The first client only reads: it stays with its replica while
		// writers hang on a cut-off leader, so a leader that reads without
		// confirming it still leads is caught serving stale data.
		op = 0
	}
	switch op {
	case 0:
		cmd.Op = opGet
		if !c.opts.NoReadIndex {
			cmd.Read = readMode(c.rng.IntN(3)) // log, index or lease
			if cl.idx == 0 {
				// The reader reads at its leader without the log: under its
				// lease when it holds one.
				cmd.Read = readLease
			}
			if cmd.Read == readLease && c.opts.NoLeaseReads {
				cmd.Read = readIndex
			}
		}
	case 1:
		cmd.Op, cmd.Value = opPut, fmt.Sprintf("c%d.%d", cl.id, cl.seq)
	case 2:
		cmd.Op, cmd.Value = opCAS, fmt.Sprintf("c%d.%d", cl.id, cl.seq)
		cmd.Expect = c.lastValue(key)
	}
	cl.cur, cl.call = &cmd, c.now
	c.sendRequest(cl)
	c.schedule(c.now+clientTimeout, &event{kind: evClientTimeout, client: cl.idx, resp: response{seq: cmd.Seq}})
	c.schedule(c.now+attemptTimeout, &event{kind: evClientRetry, client: cl.idx, resp: response{seq: cmd.Seq}})
}

// lastValue guesses a recent value of key so that some CAS operations succeed.
func (c *cluster) lastValue(key string) string {
	for i := len(c.history) - 1; i >= 0 && i >= len(c.history)-20; i-- {
		in := c.history[i].Input.(kvInput)
		if in.Key == key && in.Op != opGet {
			return in.Value
		}
	}
	return ""
}

func (c *cluster) sendRequest(cl *client) {
	if c.faulty && c.rng.Float64() < c.loss {
		return
	}
	c.schedule(c.now+c.netDelay(), &event{kind: evRequest, node: cl.target, client: cl.idx, cmd: *cl.cur})
}

func (c *cluster) onRequest(r *replica, cl int, cmd command) {
	if !r.up {
		return
	}
	if _, dup := r.waiting[cmd.id()]; dup {
		return
	}
	st := r.node.Status()
	if st.Role != paxos.Leader {
		c.respond(r, cl, response{seq: cmd.Seq, notLeader: true, hint: st.Leader})
		return
	}
	if cmd.Read != readLog {
		for _, pr := range r.reads {
			if pr.cmd.id() == cmd.id() {
				return // asked already
			}
		}
		r.nextRead++
		r.reads[r.nextRead] = pendingRead{client: cl, cmd: cmd}
		ask := r.node.ReadIndex
		if cmd.Read == readLease {
			ask = r.node.LeaseRead
		}
		if !ask(r.nextRead) {
			delete(r.reads, r.nextRead)
			c.respond(r, cl, response{seq: cmd.Seq, notLeader: true, hint: st.Leader})
		}
		c.process(r)
		return
	}
	r.waiting[cmd.id()] = cl
	r.queue = append(r.queue, cmd)
	c.process(r)
}

func (c *cluster) respond(r *replica, cl int, resp response) {
	if c.faulty && c.rng.Float64() < c.loss {
		return
	}
	c.schedule(c.now+c.netDelay(), &event{kind: evResponse, client: cl, resp: resp})
}

func (c *cluster) onResponse(cl *client, resp response) {
	if cl.cur == nil || cl.cur.Seq != resp.seq {
		return // late or duplicate
	}
	if resp.notLeader {
		if resp.hint != 0 && !c.replicas[resp.hint-1].removed {
			cl.target = int(resp.hint) - 1
		} else {
			cl.target = c.otherTarget(-1)
		}
		c.schedule(c.now+retryBackoff, &event{kind: evRequest, node: cl.target, client: cl.idx, cmd: *cl.cur})
		return
	}
	c.record(cl, kvOutput{Result: resp.res}, c.now)
	c.res.OpsOK++
	cl.cur = nil
	c.schedule(c.now+c.between(0, tick/4), &event{kind: evClientNext, client: cl.idx})
}

func (c *cluster) onTimeout(cl *client, seq uint64) {
	if cl.cur == nil || cl.cur.Seq != seq {
		return
	}
	if cl.call >= c.recoveredAt {
		c.check.fail("liveness", "client %d: %v issued at t=%d.%03d, %d ticks after faults healed, got no answer in %d ticks",
			cl.id, *cl.cur, cl.call/tick, cl.call%tick, (cl.call-c.healAt)/tick, clientTimeout/tick)
	}
	c.record(cl, kvOutput{Unknown: true}, -1)
	c.res.OpsUnknown++
	cl.cur = nil
	cl.target = c.otherTarget(-1)
	c.schedule(c.now+c.between(0, tick/4), &event{kind: evClientNext, client: cl.idx})
}

// record adds a finished (or abandoned, ret < 0) operation to the history.
func (c *cluster) record(cl *client, out kvOutput, ret int64) {
	cmd := cl.cur
	c.history = append(c.history, porcupine.Operation{
		ClientId: cl.idx,
		Input:    kvInput{Op: cmd.Op, Key: cmd.Key, Value: cmd.Value, Expect: cmd.Expect, OutsideLog: cmd.Read != readLog},
		Call:     cl.call,
		Output:   out,
		Return:   ret,
	})
}

// finish runs the end-of-run checkers.
func (c *cluster) finish() {
	ch := c.check
	c.res.MembershipsChosen = len(ch.configs) - 1

	for s, v := range ch.learned {
		c.res.Slots = max(c.res.Slots, int(s)+1)
		if v.Kind == wire.ValueBatch {
			cmds, _ := decodeBatch(v.Data)
			c.res.Commands += len(cmds)
		}
	}
	defer func() { c.res.Violations = append(c.res.Violations, ch.violations...) }()
	if len(ch.violations) > 0 {
		return
	}
	// Every replica's applied sequence is a prefix of the longest: each
	// applied slot was checked against the others as it was applied, and
	// slots apply without gaps; here, check that all converged.
	var commits []wire.Slot
	final := c.finalMembership()
	for _, r := range c.replicas {
		if r.removed || !final.IsMember(r.id) {
			continue // removed, or never added
		}
		if !r.up {
			ch.fail("liveness", "replica %d is down at the end of the run", r.id)
			return
		}
		commits = append(commits, r.node.Status().Commit)
	}
	if slices.Min(commits) != slices.Max(commits) {
		ch.fail("liveness", "replicas did not converge %d ticks after faults healed: commit indexes %v", c.opts.HealTicks, commits)
	}
	for _, cl := range c.clients {
		if cl.cur != nil && cl.call >= c.recoveredAt {
			ch.fail("liveness", "client %d: %v issued after recovery never completed", cl.id, *cl.cur)
		}
	}
	// An abandoned operation may still take effect, but only before the same
	// client's next completed operation through the log is applied: the
	// session refuses any command at or below the last sequence number it
	// applied. So it stays open until that operation's return, or to the end
	// of time if there is none. A get served outside the log (read index,
	// lease) applies nothing and bounds nothing. (Open-ended operations make
	// the check exponentially harder.)
	end := c.now + 1
	nextOK := map[int]int64{}
	for i := len(c.history) - 1; i >= 0; i-- {
		op := &c.history[i]
		if op.Return < 0 {
			op.Return = end
			if r, ok := nextOK[op.ClientId]; ok {
				op.Return = r
			}
		} else if !op.Input.(kvInput).OutsideLog {
			nextOK[op.ClientId] = op.Return
		}
	}
	switch porcupine.CheckOperationsTimeout(kvModel, c.history, 20*time.Second) {
	case porcupine.Illegal:
		ch.fail("linearizability", "the client history of %d operations is not linearizable%s", len(c.history), explainIllegal(c.history))
	case porcupine.Unknown:
		ch.fail("linearizability", "the linearizability check of %d operations timed out", len(c.history))
	}
}

// explainIllegal lists the operations on the first key whose history is not
// linearizable, in call order: where to start reading the trace.
func explainIllegal(history []porcupine.Operation) string {
	for _, part := range kvModel.Partition(history) {
		if porcupine.CheckOperations(kvModel, part) {
			continue
		}
		part = slices.Clone(part)
		slices.SortFunc(part, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
		var b strings.Builder
		fmt.Fprintf(&b, "; the operations on key %s (client [call, return] in time units; ? = outcome unknown):", part[0].Input.(kvInput).Key)
		for i, op := range part {
			if i == 200 {
				fmt.Fprintf(&b, "\n    ... %d more", len(part)-i)
				break
			}
			fmt.Fprintf(&b, "\n    client %d [%d, %d] %s", op.ClientId+1, op.Call, op.Return, kvModel.DescribeOperation(op.Input, op.Output))
		}
		return b.String()
	}
	return ""
}
