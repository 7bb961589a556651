package sim

import (
	"slices"

	"github.com/vestalabs/vesta/engine/wire"
)

// Checkpoints, compaction and state transfer in the simulated cluster.
//
// A replica checkpoints its state machine every Options.CheckpointEvery
// applied slots: the image is taken at once (a frozen copy) and becomes
// durable after a delay, unless the replica crashes first. Once durable it
// tells its protocol core (Compact) and compacts its log below it. A replica
// asked for slots below its log's start sends its newest checkpoint; the
// transfer takes a while, may be cut (loss, partition) and the receiver may
// crash in the middle. The receiver stores the checkpoint durably, restores
// its state machine from it and tells its core (InstallSnapshot). On restart
// a replica restores its newest checkpoint, then its log.

func (r *replica) newestCheckpoint() *checkpoint {
	if len(r.ckpts) == 0 {
		return nil
	}
	return r.ckpts[len(r.ckpts)-1]
}

// compactedBelow is the slot below which r's durable log was compacted: its
// newest checkpoint's.
func (r *replica) compactedBelow() wire.Slot {
	if ck := r.newestCheckpoint(); ck != nil {
		return ck.slot
	}
	return 0
}

// maybeCheckpoint starts writing a checkpoint of r's state machine when
// enough slots were applied since its newest one.
func (c *cluster) maybeCheckpoint(r *replica) {
	if r.applied < r.compactedBelow()+wire.Slot(c.opts.CheckpointEvery) {
		return
	}
	c.checkpointNow(r)
}

// checkpointNow starts writing a checkpoint of r's state machine, unless
// one is being written (or checkpoints are off).
func (c *cluster) checkpointNow(r *replica) {
	if c.opts.NoCheckpoints || r.writing != nil || r.applied <= r.compactedBelow() {
		return
	}
	r.writing = &checkpoint{slot: r.applied, kv: r.kv.clone(), members: r.node.MembershipsAt(r.applied)}
	c.schedule(c.now+c.between(tick/10, 2*tick), &event{kind: evCheckpointed, node: r.idx, gen: r.gen, ckpt: r.writing})
}

// addCheckpoint records a durable checkpoint of r, keeping the newest
// keepCheckpoints in slot order.
func (c *cluster) addCheckpoint(r *replica, ck *checkpoint) {
	if old := r.newestCheckpoint(); old != nil && old.slot >= ck.slot {
		return
	}
	r.ckpts = append(r.ckpts, ck)
	if len(r.ckpts) > keepCheckpoints {
		r.ckpts = slices.Delete(r.ckpts, 0, len(r.ckpts)-keepCheckpoints)
	}
}

// compactDisk releases r's log below its newest checkpoint: the disk
// model's entries, or the pmem log's records.
func (c *cluster) compactDisk(r *replica) {
	below := r.compactedBelow()
	for s := range min(below, wire.Slot(len(r.disk.entries))) {
		r.disk.entries[s] = wire.Entry{}
	}
	if r.plog != nil {
		if err := r.plog.Compact(below); err != nil {
			c.check.fail("log", "replica %d: pmem compact below %d: %v", r.id, below, err)
		}
	}
}

// sendSnapshot starts sending r's newest checkpoint to a peer that asked for
// slots below r's log, unless a transfer to it is under way.
func (c *cluster) sendSnapshot(r *replica, to wire.ReplicaID) {
	ck := r.newestCheckpoint()
	p := int(to) - 1
	if ck == nil || ck.slot < r.node.Status().Released {
		// The values were released because every member held them, and
		// the asker joined since: take a checkpoint; it asks again.
		c.checkpointNow(r)
		return
	}
	if r.sending[p] > c.now {
		return
	}
	d := c.between(tick, 5*tick)
	r.sending[p] = c.now + d
	if c.blocked[r.idx][p] || (c.faulty && c.rng.Float64() < c.loss) {
		c.tracef("r%d -> r%d checkpoint %d: transfer cut", r.id, to, ck.slot)
		return
	}
	c.tracef("r%d -> r%d checkpoint %d: transfer started", r.id, to, ck.slot)
	if c.faulty && c.crashEvery > 0 && c.rng.IntN(4) == 0 {
		// The receiver crashes in the middle of the transfer.
		c.schedule(c.now+d/2, &event{kind: evCrashNode, node: p, gen: c.replicas[p].gen})
	}
	c.schedule(c.now+d, &event{kind: evSnapshot, node: p, msg: wire.Message{From: r.id, To: to}, ckpt: ck})
}

// receiveSnapshot installs a checkpoint that arrived whole, if it brings r
// forward: it is stored durably first, then the state machine is restored
// from it, then the protocol core learns of it.
func (c *cluster) receiveSnapshot(r *replica, from wire.ReplicaID, ck *checkpoint) {
	if !r.up {
		return // the transfer died with the connection
	}
	if !r.node.NeedsSnapshot(ck.slot) {
		c.tracef("r%d <- r%d checkpoint %d: not needed (commit %d)", r.id, from, ck.slot, r.node.Status().Commit)
		return
	}
	c.addCheckpoint(r, ck)
	r.kv = ck.kv.clone()
	if !r.node.InstallSnapshot(ck.slot, ck.members) {
		c.check.fail("applied", "replica %d refused checkpoint %d it needed", r.id, ck.slot)
		return
	}
	// The core's applied index, not the image's slot: a core that is off
	// by one here must be caught by the checkers, not hidden by the sim.
	r.applied = r.node.Status().Applied
	c.res.Transfers++
	c.tracef("r%d <- r%d checkpoint %d installed", r.id, from, ck.slot)
	c.check.digest(r.idx, ck.slot, r.kv.digest())
	c.compactDisk(r)
	c.process(r)
}
