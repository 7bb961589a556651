package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vestalabs/vesta/engine/checkpoint"
	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/transport"
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/lograte"
)

// Status is a replica's view, for operators and tests.
type Status struct {
	ID       wire.ReplicaID `json:"id"`
	Role     string         `json:"role"`
	Leader   wire.ReplicaID `json:"leader"`
	Ballot   string         `json:"ballot,omitempty"`
	Promised string         `json:"promised"`
	Commit   uint64         `json:"commit"`
	Applied  uint64         `json:"applied"`
	Queued   int            `json:"queued"`
	// Checkpoint is the slot of the newest checkpoint this replica holds
	// (written here or received), 0 if none; LogBytes is the durable log's
	// size on its medium, where the log reports it.
	Checkpoint uint64 `json:"checkpoint"`
	LogBytes   int64  `json:"log_bytes,omitempty"`
	// Failed is set at once when the replica fails (its log could not
	// persist); Role then says "failed" and Err the cause. Stopped is set
	// once the replica has stopped, after Stop or a failure.
	Failed  bool   `json:"failed,omitempty"`
	Stopped bool   `json:"stopped"`
	Err     string `json:"error,omitempty"`
	// Peers is each peer's health while this replica leads (refreshed
	// every heartbeat interval); nil on a follower.
	Peers []PeerHealth `json:"peers,omitempty"`

	promised wire.Ballot // for checkpoint headers
}

// Completion receives the outcome of a ProposeAsync. A pooled object that
// implements it lets a caller keep many commands in flight without an
// allocation per command; CompletionFunc adapts a plain function.
type Completion interface {
	Complete(result []byte, err error)
}

// CompletionFunc adapts a function to Completion.
type CompletionFunc func(result []byte, err error)

// Complete calls f.
func (f CompletionFunc) Complete(result []byte, err error) { f(result, err) }

// call is one proposal waiting for its outcome: either a blocked Propose
// (done) or a ProposeAsync completion (cb).
type call struct {
	cmd    []byte
	done   chan struct{}
	cb     Completion
	result []byte
	err    error
}

// asyncCalls recycles ProposeAsync's call records: the asynchronous write
// path allocates nothing per command in steady state.
var asyncCalls = sync.Pool{New: func() any { return new(call) }}

// complete delivers the outcome; it is called exactly once per call. An
// asynchronous call is recycled before its callback runs: nothing refers to
// it any more, and the callback may well submit the next command.
func (c *call) complete(result []byte, err error) {
	if cb := c.cb; cb != nil {
		*c = call{}
		asyncCalls.Put(c)
		cb.Complete(result, err)
		return
	}
	c.result, c.err = result, err
	close(c.done)
}

// Replica is one member of a Vesta cluster.
type Replica struct {
	cfg         Config
	log         *slog.Logger
	sm          StateMachine
	node        *paxos.Node // owned by the core loop
	tr          transport.Transport
	store       storage.Log
	m           *metrics
	incarnation uint64

	// Submission queue: Propose appends, the core loop takes all at once.
	subMu     sync.Mutex
	subs      []*call
	subSpare  []*call // core loop only: the other half of the double buffer
	subClosed bool    // set by Stop: nothing more is queued
	subSignal chan struct{}

	// Inbound message batches from the transport.
	inbound chan []wire.Message

	// Batches proposed here and not yet applied, by batch sequence number.
	pendMu   sync.Mutex
	pending  map[uint64][]*call
	batchSeq uint64 // core loop only

	// Readys durable but not yet advanced (written by the log writer).
	durable       atomic.Int64
	durableSignal chan struct{}

	writer  *logWriter
	applier *applier
	// inline: the log's sync is cheap, so the core loop persists Readys
	// itself (group commit still: one sync per loop iteration).
	inline      bool
	inlineBatch []*paxos.Ready

	status   atomic.Pointer[Status]
	stopOnce sync.Once
	stopping chan struct{}
	coreDone chan struct{}
	failErr  atomic.Pointer[error]
	failed   chan struct{} // closed by fail: the core loop returns at once
	done     chan struct{} // closed once stopped (Done)

	refusedLog   lograte.Limiter // refused protocol messages
	slowApplyLog lograte.Limiter
	fullLog      lograte.Limiter // a log nearly full

	reads reads // reads that skip the log (read.go)
	// Leadership control (leadership.go).
	handovers chan handoverReq
	peers     atomic.Pointer[[]PeerHealth]
	// members is the configuration history as applied (membership.go).
	members       atomic.Pointer[[]Membership]
	memberChanges chan memberReq
	healthTicks   int // core loop only
	notify        notifier
	started       time.Time // the protocol's time 0 (syncClock)

	// Checkpoints and state transfer (checkpoints.go, transfer.go).
	newestCheckpoint atomic.Uint64                      // slot of the newest checkpoint held
	checkpointDone   chan checkpointResult              // checkpoints written here
	installs         chan checkpoint.Info               // checkpoints received whole
	senders          map[wire.ReplicaID]*snapshotSender // core loop only
	receiving        *snapshotReceiver                  // core loop only
	waitMu           sync.Mutex
	waiters          []*checkpointWaiter // Checkpoint calls
	// background counts the goroutines that write a checkpoint or send or
	// receive one: Stop waits for them, so none touches the checkpoint
	// directory or the transport after Stop returned.
	background sync.WaitGroup
}

// Start validates cfg, recovers the replica's state from cfg.Log, and starts
// its goroutines. The replica owns cfg.Log once Start returns successfully
// (Stop closes it); if Start fails, cfg.Log is untouched and still the
// caller's to close.
func Start(cfg Config, sm StateMachine) (*Replica, error) {
	cfg.setDefaults()
	if sm == nil {
		return nil, &ConfigError{"StateMachine", "required"}
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	persisted, err := cfg.Log.Load()
	if err != nil {
		return nil, fmt.Errorf("vesta: loading the log: %w", err)
	}
	if err := checkIdentity(&cfg); err != nil {
		return nil, err
	}
	if persisted.Snapshot, persisted.Memberships, err = recoverCheckpoint(&cfg, sm); err != nil {
		return nil, err
	}
	joining := cfg.Join && persisted.Snapshot == 0 && len(persisted.Entries) == 0 && persisted.HardState == (paxos.HardState{})
	var node *paxos.Node
	if joining {
		// A new member: nothing here yet, not even the configuration.
		// It starts from a peer's checkpoint (fetch.go), which records it.
		err = &paxos.RestoreError{Reason: "a joining replica has no state yet"}
	} else {
		node, err = paxos.New(cfg.paxosConfig(rand.Uint64()), persisted)
	}
	var (
		re          *paxos.RestoreError
		fetched     transport.Transport // the transport a fetch built, if one ran
		fetchSwitch *handlerSwitch
	)
	if errors.As(err, &re) && cfg.Checkpoints.Dir != "" {
		need := coveredFrom(&persisted)
		if joining {
			need = 1
		}
		if persisted.Snapshot >= need || cfg.Checkpoints.FetchTimeout < 0 {
			return nil, fmt.Errorf("%w: the log was compacted below a checkpoint, and no valid checkpoint in %s reaches back to where it starts (slot %d; fetching one from a peer is off: copy one from a peer's checkpoint directory)",
				err, cfg.Checkpoints.Dir, need)
		}
		// Nothing has run yet: ask the peers for a checkpoint, then recover
		// from it as from one of our own (fetch.go says why that is safe).
		sw := &handlerSwitch{}
		sw.set(dropAll)
		tr, terr := cfg.Transport(sw.handle)
		if terr != nil {
			return nil, fmt.Errorf("vesta: starting the transport: %w", terr)
		}
		if ferr := fetchCheckpoint(&cfg, tr, sw, need); ferr != nil {
			tr.Close()
			if joining {
				return nil, fmt.Errorf("vesta: joining the cluster: fetching a checkpoint from %v failed: %w", cfg.Members, ferr)
			}
			return nil, fmt.Errorf("vesta: the log was compacted below every valid checkpoint in %s, and fetching one from a peer failed: %w", cfg.Checkpoints.Dir, ferr)
		}
		if persisted.Snapshot, persisted.Memberships, err = recoverCheckpoint(&cfg, sm); err == nil {
			node, err = paxos.New(cfg.paxosConfig(rand.Uint64()), persisted)
		}
		if err != nil {
			tr.Close()
			return nil, err
		}
		fetched, fetchSwitch = tr, sw
	}
	if err != nil {
		return nil, err
	}
	r := &Replica{
		cfg:            cfg,
		log:            cfg.Logger.With("replica", cfg.ID),
		sm:             sm,
		node:           node,
		store:          cfg.Log,
		incarnation:    rand.Uint64(),
		subSignal:      make(chan struct{}, 1),
		inbound:        make(chan []wire.Message, 256),
		pending:        map[uint64][]*call{},
		durableSignal:  make(chan struct{}, 1),
		stopping:       make(chan struct{}),
		coreDone:       make(chan struct{}),
		failed:         make(chan struct{}),
		done:           make(chan struct{}),
		refusedLog:     lograte.Limiter{Every: time.Second},
		slowApplyLog:   lograte.Limiter{Every: time.Second},
		fullLog:        lograte.Limiter{Every: time.Second},
		checkpointDone: make(chan checkpointResult, 1),
		installs:       make(chan checkpoint.Info, 1),
		senders:        map[wire.ReplicaID]*snapshotSender{},
		handovers:      make(chan handoverReq),
		memberChanges:  make(chan memberReq),
		notify:         notifier{wake: make(chan struct{}, 1)},
	}
	r.newestCheckpoint.Store(uint64(persisted.Snapshot))
	r.started = time.Now()
	r.writer = newLogWriter(r)
	r.applier = newApplier(r)
	r.applier.applied.Store(uint64(persisted.Snapshot))
	r.applier.members = membershipTracker{published: &r.members}
	r.applier.members.set(paxos.MembershipsAt(node.Memberships(), persisted.Snapshot))
	r.applier.firstCheckpointLate = checkpointPhase(&cfg)
	r.m, err = newMetrics(cfg.Registerer, cfg.ClusterID, uint64(cfg.ID), func() float64 { return float64(r.applier.backlog.Load()) })
	if err != nil {
		if fetched != nil {
			fetched.Close()
		}
		return nil, err
	}
	if fetched != nil {
		r.tr = fetched
		fetchSwitch.set(r.receive)
	} else if r.tr, err = cfg.Transport(r.receive); err != nil {
		r.m.unregister()
		return nil, fmt.Errorf("vesta: starting the transport: %w", err)
	}
	if cs, ok := cfg.Log.(storage.CheapSyncer); ok && cs.CheapSync() {
		r.inline = true
	}
	r.publishStatus()
	r.log.Info("replica started", "members", cfg.Members, "promised", persisted.HardState.Promised.String(),
		"checkpoint", persisted.Snapshot, "commit", persisted.HardState.Commit, "entries", len(persisted.Entries))
	r.background.Add(1)
	go r.runNotifier()
	go r.writer.run()
	go r.applier.run()
	go r.coreLoop()
	return r, nil
}

// syncClock tells the protocol about the ticks the monotonic clock says
// passed and it was not given (the ticker drops ticks while the core loop is
// busy or the process stopped), so a lease never looks longer than it is,
// nor a grant shorter (paxos lease.go); timers do not count them. It runs
// before messages are stepped and before reads are taken. Core loop only.
func (r *Replica) syncClock() {
	real := uint64(time.Since(r.started) / r.cfg.TickInterval)
	if c := r.node.Clock(); real > c {
		r.node.AdvanceClock(real - c)
	}
}

// receive is the transport's handler: it hands the batch to the core loop.
func (r *Replica) receive(batch []wire.Message) {
	select {
	case r.inbound <- batch:
	case <-r.stopping:
	}
}

// Propose submits cmd and waits until it is applied, returning the state
// machine's result. It fails with a *NotLeaderError on a replica that does not
// lead, ErrOutcomeUnknown if leadership is lost after proposing, ErrBusy,
// ErrTooLarge (cmd is over MaxCommandBytes), ErrStopped, or the context's
// error (the command may still apply then).
// The replica may read cmd until the command's outcome is known — even after
// Propose returned because ctx ended — so the caller must not modify it.
func (r *Replica) Propose(ctx context.Context, cmd []byte) ([]byte, error) {
	c := &call{cmd: cmd, done: make(chan struct{})}
	if err := r.submit(c); err != nil {
		return nil, err
	}
	select {
	case <-c.done:
		return c.result, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-r.stopping:
		select {
		case <-c.done:
			return c.result, c.err
		default:
			return nil, r.stoppedErr()
		}
	}
}

// ProposeAsync submits cmd and returns at once; done is called exactly once
// with the state machine's result or an error (the same errors as Propose).
// It runs on one of the replica's own goroutines (usually the applier's), or
// on the caller's before ProposeAsync returns if the command is refused at
// once (ErrStopped, ErrBusy, ErrTooLarge): it must return quickly and must
// not block. The replica keeps cmd until done is called. This is the path
// for callers that keep many commands in flight without a goroutine each;
// ProposeWith is the same without even a closure per command.
func (r *Replica) ProposeAsync(cmd []byte, done func(result []byte, err error)) {
	r.ProposeWith(cmd, CompletionFunc(done))
}

// ProposeWith is ProposeAsync with a Completion: a pooled object that
// implements it makes a proposal allocate nothing at all.
func (r *Replica) ProposeWith(cmd []byte, done Completion) {
	c := asyncCalls.Get().(*call)
	c.cmd, c.cb = cmd, done
	if err := r.submit(c); err != nil {
		*c = call{}
		asyncCalls.Put(c)
		done.Complete(nil, err)
	}
}

// submit queues a call for the core loop.
func (r *Replica) submit(c *call) error {
	if len(c.cmd) > MaxCommandBytes {
		return ErrTooLarge
	}
	r.subMu.Lock()
	if r.subClosed {
		r.subMu.Unlock()
		return r.stoppedErr()
	}
	if len(r.subs) >= r.cfg.MaxQueued {
		r.subMu.Unlock()
		return ErrBusy
	}
	r.subs = append(r.subs, c)
	first := len(r.subs) == 1
	r.subMu.Unlock()
	// Only the submission that found the queue empty wakes the core loop:
	// the others know a wake-up is already on its way (the core loop takes
	// the whole queue at once), so no channel operation per command.
	if first {
		select {
		case r.subSignal <- struct{}{}:
		default:
		}
	}
	return nil
}

// Leader returns the replica this one believes leads, 0 if it knows none
// (or if this replica failed).
func (r *Replica) Leader() wire.ReplicaID {
	if r.failErr.Load() != nil {
		return 0
	}
	return r.status.Load().Leader
}

// Status returns the replica's current view. A replica that failed says so
// at once: Role "failed", Failed set, Err the cause, no leader.
func (r *Replica) Status() Status {
	st := *r.status.Load()
	if p := r.failErr.Load(); p != nil {
		st.Role, st.Leader, st.Ballot, st.Failed, st.Err = "failed", 0, "", true, (*p).Error()
	}
	st.Applied = r.applier.applied.Load()
	if p := r.peers.Load(); p != nil {
		st.Peers = *p
	}
	st.Checkpoint = r.newestCheckpoint.Load()
	if sz, ok := r.store.(interface{ Size() int64 }); ok {
		st.LogBytes = sz.Size()
	}
	r.subMu.Lock()
	st.Queued = len(r.subs)
	r.subMu.Unlock()
	return st
}

// Stop stops the replica's goroutines, fails every waiting Propose with
// ErrStopped (a *FailedError if the replica failed), closes the transport and
// the log, and unregisters the metrics. It is idempotent; every call returns
// once the replica has stopped.
func (r *Replica) Stop() error {
	var err error
	r.stopOnce.Do(func() {
		close(r.stopping)
		<-r.coreDone
		err = errors.Join(r.writer.stop(), r.applier.stop())
		r.failReads(r.stoppedErr())
		for _, c := range r.applier.readsWait {
			c.complete(nil, r.stoppedErr())
		}
		r.applier.readsWait = nil
		r.background.Wait()
		err = errors.Join(r.tr.Close(), err)
		r.failAll(r.stoppedErr())
		err = errors.Join(err, r.store.Close())
		st := *r.status.Load()
		st.Stopped = true
		r.status.Store(&st)
		r.m.unregister()
		r.log.Info("replica stopped")
		close(r.done)
	})
	<-r.done
	return err
}

// Done is closed once the replica has stopped: after Stop, or after it
// failed (then Err says why). An embedding program waits on it to learn that
// its replica is gone.
func (r *Replica) Done() <-chan struct{} { return r.done }

// Err returns why the replica failed (a *FailedError naming the cause), or
// nil while it runs and after a clean Stop.
func (r *Replica) Err() error {
	if p := r.failErr.Load(); p != nil {
		return &FailedError{Cause: *p}
	}
	return nil
}

// stoppedErr is the error calls get once the replica stops.
func (r *Replica) stoppedErr() error {
	if err := r.Err(); err != nil {
		return err
	}
	return ErrStopped
}

// fail stops the replica after an error it cannot continue from (a log that
// cannot persist): continuing could reveal votes that are not durable. The
// core loop returns at once, before anything else leaves it; Status says
// "failed" at once; Stop runs in the background, and Done is closed when
// it is over.
func (r *Replica) fail(err error) {
	if r.failErr.CompareAndSwap(nil, &err) {
		r.log.Error("replica failed; stopping", "err", err)
		close(r.failed)
		r.m.failed.Set(1)
		r.m.isLeader.Set(0)
		go r.Stop()
	}
}

// wakeCore makes the core loop look at its queues again.
func (r *Replica) wakeCore() {
	select {
	case r.subSignal <- struct{}{}:
	default:
	}
}

// slowApply reports an Apply that took longer than a heartbeat interval.
func (r *Replica) slowApply(slot wire.Slot, cmds int, d time.Duration) {
	r.m.slowApplies.Inc()
	if n, ok := r.slowApplyLog.Allow(time.Now()); ok {
		r.log.Warn("slow state machine: Apply took longer than a heartbeat interval; commands wait behind it, heartbeats and votes do not",
			"slot", slot, "commands", cmds, "took", d, "suppressed", n)
	}
}

func (r *Replica) failAll(err error) {
	r.subMu.Lock()
	subs := r.subs
	r.subs = nil
	r.subClosed = true
	r.subMu.Unlock()
	for _, c := range subs {
		c.complete(nil, err)
	}
	r.failPending(err)
}

// failPending completes the callers of every batch proposed and not yet
// applied with err.
func (r *Replica) failPending(err error) {
	r.pendMu.Lock()
	pend := r.pending
	r.pending = map[uint64][]*call{}
	r.pendMu.Unlock()
	for _, calls := range pend {
		for _, c := range calls {
			c.complete(nil, err)
		}
	}
}

// queuedBatch is a batch built from callers' commands, waiting for room in
// the protocol's queue.
type queuedBatch struct {
	seq   uint64
	value wire.Value
	calls []*call
}

// coreLoop owns the protocol: it is the only goroutine that touches r.node.
func (r *Replica) coreLoop() {
	defer close(r.coreDone)
	ticker := time.NewTicker(r.cfg.TickInterval)
	defer ticker.Stop()
	var backlog []queuedBatch // batches the protocol's queue had no room for, in order
	wasLeader := false
	for {
		select {
		case <-r.stopping:
			return
		case <-r.failed:
			return
		case <-ticker.C:
			r.node.Tick()
			r.onTick()
		case req := <-r.handovers:
			r.startHandover(req)
		case req := <-r.memberChanges:
			r.proposeMembership(req)
		case batch := <-r.inbound:
			r.step(batch)
		case <-r.durableSignal:
		case <-r.subSignal:
		case res := <-r.checkpointDone:
			r.checkpointed(res)
		case info := <-r.installs:
			r.install(info)
		}
		// Take whatever else is ready without blocking: batches, not items.
		for more := true; more; {
			select {
			case batch := <-r.inbound:
				r.step(batch)
			default:
				more = false
			}
		}
		for n := r.durable.Swap(0); n > 0; n-- {
			r.node.Advance()
		}
		backlog = r.propose(backlog)
		r.syncClock()
		r.takeReads()
		if !r.handleReadys() {
			return // failed: nothing more may leave this replica
		}
		st := r.node.Status()
		if isLeader := st.Role == paxos.Leader; isLeader != wasLeader {
			wasLeader = isLeader
			if !isLeader {
				for _, b := range backlog {
					r.refuse(b.seq, b.calls, paxos.ErrNotLeader) // never proposed
				}
				backlog = nil
			}
			r.leadershipChanged(isLeader, st)
		}
		r.publishStatus()
	}
}

func (r *Replica) step(batch []wire.Message) {
	// Time first: a message is stepped at the tick it arrives in, never at
	// one the core loop has not caught up yet (a lease granted at a stale
	// tick would end early in real time).
	r.syncClock()
	for _, m := range batch {
		if m.Type.Transfer() {
			r.onSnapshotMessage(m)
			continue
		}
		if r.refusesVotes(m) {
			continue
		}
		if err := r.node.Step(m); err != nil {
			var me *paxos.MessageError
			if errors.As(err, &me) && me.Kind == paxos.RefusedSlotTooFar {
				r.m.tooFar.Inc()
			} else {
				r.m.badMessages.Inc()
			}
			if n, ok := r.refusedLog.Allow(time.Now()); ok {
				r.log.Warn("refused a protocol message", "from", m.From, "type", m.Type.String(), "err", err, "suppressed", n)
			}
		}
	}
}

// propose drains the submission queue into batches and proposes them. A
// batch the protocol has no room for waits in the backlog, in order.
func (r *Replica) propose(backlog []queuedBatch) []queuedBatch {
	for len(backlog) > 0 {
		if err := r.node.Propose(backlog[0].value); err != nil {
			if errors.Is(err, paxos.ErrQueueFull) {
				break
			}
			r.refuse(backlog[0].seq, backlog[0].calls, err)
		}
		backlog[0] = queuedBatch{}
		backlog = backlog[1:]
	}
	leader := r.node.Status().Role == paxos.Leader
	if leader && (r.applier.backlog.Load() >= int64(r.cfg.MaxApplyBacklog) || r.throttled()) {
		// The state machine is behind, or the log nearly full: leave the
		// commands queued (callers get ErrBusy past MaxQueued) until the
		// applier catches up and wakes this loop, or a checkpoint frees
		// the log (the ticker wakes it).
		return backlog
	}
	// Swap the queue with an empty buffer of the same capacity: no
	// allocation on either side in steady state.
	r.subMu.Lock()
	subs := r.subs
	r.subs = r.subSpare[:0]
	r.subMu.Unlock()
	taken := subs
	defer func() { clear(taken); r.subSpare = taken[:0] }()
	if len(subs) == 0 {
		return backlog
	}
	if !leader {
		r.refuse(0, subs, paxos.ErrNotLeader)
		return backlog
	}
	for len(subs) > 0 {
		n, size := 0, batchHeaderSize
		for n < len(subs) && n < r.cfg.MaxBatchCommands && (n == 0 || size+len(subs[n].cmd)+10 <= r.cfg.MaxBatchBytes) {
			size += len(subs[n].cmd) + 10
			n++
		}
		// The batch's own copy of its calls: subs' array is reused.
		b := queuedBatch{calls: append([]*call(nil), subs[:n]...)}
		subs = subs[n:]
		r.batchSeq++
		b.seq = r.batchSeq
		buf := make([]byte, 0, size)
		buf = appendBatchHeader(buf, batchHeader{origin: r.cfg.ID, incarnation: r.incarnation, seq: b.seq, count: uint32(n)})
		for _, c := range b.calls {
			buf = appendBatchCommand(buf, c.cmd)
		}
		b.value = wire.Value{Kind: wire.ValueBatch, Data: buf}
		r.pendMu.Lock()
		r.pending[b.seq] = b.calls
		r.pendMu.Unlock()
		r.m.proposals.Add(float64(n))
		r.m.batches.Inc()
		r.m.batchCommands.Observe(float64(n))
		if len(backlog) > 0 {
			backlog = append(backlog, b)
			continue
		}
		if err := r.node.Propose(b.value); err != nil {
			if errors.Is(err, paxos.ErrQueueFull) {
				backlog = append(backlog, b)
				continue
			}
			r.refuse(b.seq, b.calls, err)
		}
	}
	return backlog
}

// refuse fails calls that were never proposed (seq 0: never registered).
func (r *Replica) refuse(seq uint64, calls []*call, err error) {
	if errors.Is(err, paxos.ErrNotLeader) {
		err = &NotLeaderError{Leader: r.node.Status().Leader}
	}
	if seq != 0 {
		r.pendMu.Lock()
		_, ok := r.pending[seq]
		delete(r.pending, seq)
		r.pendMu.Unlock()
		if !ok {
			return // already completed elsewhere
		}
	}
	for _, c := range calls {
		c.complete(nil, err)
	}
}

// handleReadys hands every Ready on: Send to the transport now, the Ready to
// the log writer (or, with a cheap log, persists them here), chosen entries
// to the applier. It returns false if the replica failed: then the core
// loop must return before anything else leaves it (a failed persist is
// never retried: the next attempt could succeed and reveal votes whose
// earlier records were lost).
func (r *Replica) handleReadys() bool {
	for {
		if r.failErr.Load() != nil {
			return false
		}
		r.takeReadys()
		if !r.inline || len(r.inlineBatch) == 0 {
			return r.failErr.Load() == nil
		}
		// One append per Ready, one sync for all, then their messages
		// and Advance; Advance may make more work (a leader's own durable
		// votes choose slots), hence the loop.
		batch := r.inlineBatch
		if err := r.writer.persist(batch); err != nil {
			r.fail(err)
			return false
		}
		for _, rd := range batch {
			if len(rd.SendAfterPersist) > 0 {
				r.tr.Send(rd.SendAfterPersist)
			}
			r.node.Advance()
		}
		clear(batch)
		r.inlineBatch = batch[:0]
	}
}

func (r *Replica) takeReadys() {
	for r.node.HasReady() && r.failErr.Load() == nil {
		rd := r.node.Ready()
		if len(rd.Send) > 0 {
			r.tr.Send(rd.Send)
		}
		if len(rd.Apply) > 0 {
			r.applier.enqueue(rd.Apply)
		}
		for _, v := range rd.Dropped {
			r.dropped(v)
		}
		if len(rd.SendSnapshot) > 0 {
			r.sendSnapshots(rd.SendSnapshot)
		}
		if len(rd.Reads) > 0 || len(rd.ReadsFailed) > 0 {
			r.readsReady(rd.Reads, rd.ReadsFailed)
		}
		if r.inline {
			r.inlineBatch = append(r.inlineBatch, &rd)
			continue
		}
		r.writer.enqueue(&rd)
	}
}

// dropped fails the callers of a batch the protocol never proposed.
func (r *Replica) dropped(v wire.Value) {
	h, _, err := decodeBatch(v.Data, nil)
	if err != nil || h.origin != r.cfg.ID || h.incarnation != r.incarnation {
		return
	}
	r.pendMu.Lock()
	calls := r.pending[h.seq]
	r.pendMu.Unlock()
	r.refuse(h.seq, calls, paxos.ErrNotLeader)
}

// leadershipChanged reports the change and, on losing leadership, fails the
// callers of every batch still in flight: their outcome is unknown.
func (r *Replica) leadershipChanged(isLeader bool, st paxos.Status) {
	if isLeader {
		r.m.elections.Inc()
		r.m.isLeader.Set(1)
		r.log.Info("became leader", "ballot", st.Ballot.String(), "commit", st.Commit)
		return
	}
	r.m.isLeader.Set(0)
	r.log.Info("no longer leader", "leader", st.Leader)
	r.failPending(ErrOutcomeUnknown)
}

// completeBatch hands a batch's results to its callers, if it was proposed
// by this process.
func (r *Replica) completeBatch(h batchHeader, results [][]byte) {
	if h.origin != r.cfg.ID || h.incarnation != r.incarnation {
		return
	}
	r.pendMu.Lock()
	calls, ok := r.pending[h.seq]
	delete(r.pending, h.seq)
	r.pendMu.Unlock()
	if !ok {
		return
	}
	for i, c := range calls {
		c.complete(results[i], nil)
	}
}

// publishStatus publishes the core's status (core loop only; Status
// overlays a failure).
func (r *Replica) publishStatus() {
	st := r.node.Status()
	s := &Status{
		ID: st.ID, Role: st.Role.String(), Leader: st.Leader, Promised: st.Promised.String(),
		Commit: uint64(st.Commit), promised: st.Promised,
	}
	if st.Role != paxos.Follower {
		s.Ballot = st.Ballot.String()
	}
	if old := r.status.Load(); old != nil && old.ID == s.ID && old.Role == s.Role && old.Leader == s.Leader &&
		old.Ballot == s.Ballot && old.Promised == s.Promised && old.Commit == s.Commit {
		return
	}
	if old := r.status.Load(); old == nil || old.Leader != s.Leader {
		r.notifyLeader(s.Leader)
	}
	r.status.Store(s)
	r.m.commitIndex.Set(float64(st.Commit))
	r.m.leader.Set(float64(st.Leader))
}
