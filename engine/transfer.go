package engine

import (
	"time"

	"github.com/vestalabs/vesta/engine/checkpoint"
	"github.com/vestalabs/vesta/engine/wire"
)

// State transfer: a replica that asks for chosen values below its peer's log
// (paxos.Ready.SendSnapshot) is sent the peer's newest checkpoint file, in
// chunks over the same transport as the protocol (MsgSnapshotChunk), and
// installs it without a restart.
//
//   - Flow control and priority: at most transferWindow chunks are
//     unacknowledged, and chunks are bulk messages (wire.MsgType.Bulk): the
//     transport keeps them apart from the protocol's queue and sends one only
//     when no protocol message waits, so a transfer neither fills the queue
//     Accepts use nor delays one by more than a chunk's write. The receiver
//     acknowledges each chunk with the offset it wants next (MsgSnapshotAck).
//   - Loss and resumption: a chunk that arrives at another offset than the
//     receiver wants is dropped and answered with the offset it wants; a
//     sender that hears the same offset again, or nothing for
//     transferResend, goes back to the last offset acknowledged. A dropped
//     connection therefore costs at most a window's worth of chunks.
//   - Integrity: the file's own block checksums are verified before it is
//     used (checkpoint.Receiver.Finish); a damaged transfer is dropped, and
//     the replica, still behind, asks again.
//   - Install: the receiver's core loop checks that the checkpoint still
//     brings it forward, queues the state machine's restore on the applier
//     after every apply handed out before it, and tells the protocol core
//     (paxos.Node.InstallSnapshot), whose next applies continue from the
//     checkpoint's slot. The file is durable before any of that, so a crash
//     at any point restarts from it or from what was there before.
//
// One transfer per peer is sent at a time, and one is received at a time (a
// checkpoint of a higher slot replaces one being received).

const (
	transferWindow = 8                // chunks in flight per transfer
	transferResend = 1 * time.Second  // no ack for this long: go back
	transferGiveUp = 15 * time.Second // no progress for this long: stop (the peer asks again)
)

// snapshotSender is one outbound transfer; the core loop feeds it acks.
type snapshotSender struct {
	to   wire.ReplicaID
	slot wire.Slot
	acks chan int64
	done chan struct{}
}

// snapshotReceiver is the inbound transfer; the core loop feeds it chunks.
type snapshotReceiver struct {
	from   wire.ReplicaID
	slot   wire.Slot
	chunks chan wire.Message
	quit   chan struct{}
	done   chan struct{}
}

// sendSnapshots starts a transfer of the newest checkpoint to each peer
// that asked for values below this replica's log, unless one to it is under
// way. Core loop only.
func (r *Replica) sendSnapshots(peers []wire.ReplicaID) {
	ck := &r.cfg.Checkpoints
	if ck.Dir == "" {
		return
	}
	if released := r.node.Status().Released; wire.Slot(r.newestCheckpoint.Load()) < released {
		// The peer needs values released because every member held them
		// (it joined since): no checkpoint here covers them yet. Take one;
		// the peer asks again while it stays behind.
		r.applier.forced.Store(true)
		r.applier.poke()
		return
	}
	for _, p := range peers {
		if s := r.senders[p]; s != nil {
			select {
			case <-s.done:
			default:
				continue // under way
			}
		}
		info, ok := r.newestCheckpointInfo()
		if !ok {
			continue
		}
		s := &snapshotSender{to: p, slot: info.Meta.Slot, acks: make(chan int64, 16), done: make(chan struct{})}
		r.senders[p] = s
		r.m.transfersSent.Inc()
		r.background.Add(1)
		go r.sendCheckpoint(s, info)
	}
}

// newestCheckpointInfo finds the newest checkpoint file with a good header.
func (r *Replica) newestCheckpointInfo() (checkpoint.Info, bool) {
	infos, err := checkpoint.List(r.cfg.Checkpoints.FS, r.cfg.Checkpoints.Dir)
	if err != nil {
		r.log.Warn("could not list checkpoints to send one", "err", err)
		return checkpoint.Info{}, false
	}
	for _, in := range infos {
		if in.Err == nil {
			return in, true
		}
	}
	return checkpoint.Info{}, false
}

// sendCheckpoint streams one checkpoint file to a peer (its own goroutine).
func (r *Replica) sendCheckpoint(s *snapshotSender, info checkpoint.Info) {
	defer r.background.Done()
	defer close(s.done)
	src, err := checkpoint.OpenSource(r.cfg.Checkpoints.FS, info.Path)
	if err != nil {
		r.log.Warn("could not open a checkpoint to send", "to", s.to, "file", info.Path, "err", err)
		return
	}
	defer src.Close()
	start := time.Now()
	size, chunk := src.Size(), int64(r.cfg.Checkpoints.ChunkBytes)
	r.log.Info("sending a checkpoint to a replica behind this one's log", "to", s.to, "slot", uint64(s.slot), "bytes", size)
	var sent, acked int64
	lastProgress := time.Now()
	resend := time.NewTimer(transferResend)
	defer resend.Stop()
	for acked < size {
		for sent < size && sent-acked < transferWindow*chunk {
			buf := make([]byte, min(chunk, size-sent)) // the transport keeps it until written
			if _, err := src.ReadAt(buf, sent); err != nil {
				r.log.Warn("could not read a checkpoint to send", "to", s.to, "file", info.Path, "err", err)
				return
			}
			r.tr.Send([]wire.Message{{
				Type: wire.MsgSnapshotChunk, From: r.cfg.ID, To: s.to, Slot: s.slot, Commit: wire.Slot(sent),
				Ballot: wire.Ballot{Round: uint64(size)}, Entries: []wire.Entry{{Value: wire.Value{Kind: wire.ValueBatch, Data: buf}}},
			}})
			r.m.transferBytesSent.Add(float64(len(buf)))
			sent += int64(len(buf))
		}
		select {
		case off := <-s.acks:
			switch {
			case off > acked:
				acked, lastProgress = min(off, size), time.Now()
				sent = max(sent, acked)
			case off == acked && off < sent:
				sent = off // the receiver wants this again: a chunk was lost
			}
			if !resend.Stop() {
				select {
				case <-resend.C:
				default:
				}
			}
			resend.Reset(transferResend)
		case <-resend.C:
			if time.Since(lastProgress) > transferGiveUp {
				r.log.Warn("checkpoint transfer stalled; stopped (the replica asks again while it is behind)", "to", s.to,
					"slot", uint64(s.slot), "acked", acked, "bytes", size)
				return
			}
			sent = acked
			resend.Reset(transferResend)
		case <-r.stopping:
			return
		}
	}
	r.log.Info("checkpoint sent", "to", s.to, "slot", uint64(s.slot), "bytes", size, "took", time.Since(start))
}

// onSnapshotMessage takes a state-transfer message off the core loop's
// input. Core loop only.
func (r *Replica) onSnapshotMessage(m wire.Message) {
	switch m.Type {
	case wire.MsgSnapshotAck:
		if s := r.senders[m.From]; s != nil && s.slot == m.Slot {
			select {
			case s.acks <- int64(m.Commit):
			default: // a later ack says as much
			}
		}
	case wire.MsgSnapshotChunk:
		r.onSnapshotChunk(m)
	case wire.MsgSnapshotRequest:
		// A peer starting without a state it can rebuild (fetch.go): send
		// the newest checkpoint if it reaches where the peer's log starts.
		if !r.knows(m.From) || m.From == r.cfg.ID {
			return
		}
		if wire.Slot(r.newestCheckpoint.Load()) >= m.Slot {
			r.sendSnapshots([]wire.ReplicaID{m.From})
		} else if wire.Slot(r.applier.applied.Load()) >= m.Slot && r.cfg.Checkpoints.Dir != "" {
			// None reaches that far yet (a replica joining a young
			// cluster): take one; the peer asks again every second.
			r.applier.forced.Store(true)
			r.applier.poke()
		}
	}
}

func (r *Replica) onSnapshotChunk(m wire.Message) {
	size := int64(m.Ballot.Round)
	if r.cfg.Checkpoints.Dir == "" || len(m.Entries) != 1 || size <= 0 || !r.node.NeedsSnapshot(m.Slot) {
		// Not wanted (any more): tell the sender it is done.
		r.tr.Send([]wire.Message{{Type: wire.MsgSnapshotAck, From: r.cfg.ID, To: m.From, Slot: m.Slot, Commit: wire.Slot(max(size, 0))}})
		return
	}
	if rc := r.receiving; rc != nil {
		select {
		case <-rc.done:
			r.receiving = nil
		default:
			if rc.slot == m.Slot && rc.from == m.From {
				break
			}
			if m.Slot <= rc.slot {
				r.tr.Send([]wire.Message{{Type: wire.MsgSnapshotAck, From: r.cfg.ID, To: m.From, Slot: m.Slot, Commit: wire.Slot(size)}})
				return
			}
			close(rc.quit) // a newer checkpoint replaces it
			r.receiving = nil
		}
	}
	if r.receiving == nil {
		rc := &snapshotReceiver{from: m.From, slot: m.Slot, chunks: make(chan wire.Message, 2*transferWindow),
			quit: make(chan struct{}), done: make(chan struct{})}
		r.receiving = rc
		r.m.transfersReceived.Inc()
		r.background.Add(1)
		go r.receiveCheckpoint(rc, size)
	}
	select {
	case r.receiving.chunks <- m:
	default: // full: dropped, and sent again
	}
}

// receiveCheckpoint assembles a checkpoint sent by a peer (its own
// goroutine) and hands it to the core loop once it is durable and verified.
func (r *Replica) receiveCheckpoint(rc *snapshotReceiver, size int64) {
	defer r.background.Done()
	defer close(rc.done)
	ck := &r.cfg.Checkpoints
	recv, err := checkpoint.NewReceiver(ck.FS, ck.Dir, checkpoint.Meta{ClusterID: r.cfg.ClusterID, Slot: rc.slot}, size)
	if err != nil {
		r.log.Warn("cannot receive a checkpoint", "from", rc.from, "slot", uint64(rc.slot), "err", err)
		return
	}
	finished := false
	defer func() {
		if !finished {
			_ = recv.Abort()
		}
	}()
	start := time.Now()
	r.log.Info("receiving a checkpoint: this replica is behind its peers' logs", "from", rc.from, "slot", uint64(rc.slot), "bytes", size)
	idle := time.NewTimer(transferGiveUp)
	defer idle.Stop()
	for {
		var m wire.Message
		select {
		case m = <-rc.chunks:
		case <-idle.C:
			r.log.Warn("checkpoint transfer stalled; dropped", "from", rc.from, "slot", uint64(rc.slot), "received", recv.Offset(), "bytes", size)
			return
		case <-rc.quit:
			return
		case <-r.stopping:
			return
		}
		if int64(m.Commit) == recv.Offset() {
			if err := recv.Write(recv.Offset(), m.Entries[0].Value.Data); err != nil {
				r.log.Warn("checkpoint transfer refused", "from", rc.from, "slot", uint64(rc.slot), "err", err)
				return
			}
			r.m.transferBytesReceived.Add(float64(len(m.Entries[0].Value.Data)))
			if !idle.Stop() {
				select {
				case <-idle.C:
				default:
				}
			}
			idle.Reset(transferGiveUp)
		}
		r.tr.Send([]wire.Message{{Type: wire.MsgSnapshotAck, From: r.cfg.ID, To: rc.from, Slot: rc.slot, Commit: wire.Slot(recv.Offset())}})
		if recv.Offset() < recv.Size() {
			continue
		}
		info, err := recv.Finish()
		finished = true
		if err != nil {
			r.log.Warn("a checkpoint received is damaged; dropped (the replica asks again while it is behind)", "from", rc.from,
				"slot", uint64(rc.slot), "err", err)
			return
		}
		r.log.Info("checkpoint received", "from", rc.from, "slot", uint64(rc.slot), "bytes", size, "took", time.Since(start))
		select {
		case r.installs <- info:
		case <-rc.quit:
		case <-r.stopping:
		}
		return
	}
}

// install takes a checkpoint received whole and durable. Core loop only.
func (r *Replica) install(info checkpoint.Info) {
	if rc := r.receiving; rc != nil && rc.slot == info.Meta.Slot {
		r.receiving = nil
	}
	slot := info.Meta.Slot
	if !r.node.NeedsSnapshot(slot) {
		return // caught up meanwhile; the file is an extra checkpoint
	}
	// The restore is queued before InstallSnapshot so that it precedes
	// every apply the core hands out from the checkpoint's slot on.
	history, err := historyOf(&r.cfg, info.Meta)
	if err != nil {
		r.log.Warn("a checkpoint received has a bad membership section; dropped", "slot", uint64(slot), "err", err)
		return
	}
	r.applier.enqueueRestore(info)
	if !r.node.InstallSnapshot(slot, history) {
		return
	}
	r.m.transfersInstalled.Inc()
	r.log.Info("checkpoint installed: continuing from its slot", "slot", uint64(slot))
	r.compactTo(info)
}
