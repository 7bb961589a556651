package engine

import (
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/vestalabs/vesta/engine/checkpoint"
	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/transport"
	"github.com/vestalabs/vesta/engine/wire"
)

// Fetching a checkpoint at start. A replica whose log was compacted below
// every checkpoint it still holds (its checkpoint directory lost or damaged,
// the log kept) cannot rebuild its state from its own disk: its commit index
// covers slots whose values it no longer has. Before anything else starts,
// it asks its peers for a checkpoint that reaches its log
// (MsgSnapshotRequest), receives one exactly as a live transfer does, and
// then recovers from it and its log as from its own. The transport it
// fetches over is the replica's, built once, whose handler is switched over
// to the replica when it starts.
//
// Why this is safe: while it fetches, the replica has no protocol core. It
// casts no vote, answers no Prepare and proposes nothing, and not taking
// part is always safe. Its durable promises and votes stay in its log,
// untouched, and bind it again once it starts: nothing it promised is
// forgotten. A checkpoint holds only chosen values (taken at an applied
// slot), so restoring any peer's is restoring the cluster's state at that
// slot.

const fetchAskEvery = time.Second // how often the peers are asked while nothing arrives

// coveredFrom returns the lowest slot from which the log holds an entry for
// every slot up to the commit index: a checkpoint at that slot or above
// lets the replica start.
func coveredFrom(p *paxos.Persisted) wire.Slot {
	have := make(map[wire.Slot]bool, len(p.Entries))
	for _, e := range p.Entries {
		have[e.Slot] = true
	}
	s := p.HardState.Commit
	for s > 0 && have[s-1] {
		s--
	}
	return s
}

// handlerSwitch is the transport's handler while Start fetches a
// checkpoint: the transport is built once (Config.Transport is called
// once), first delivering to the fetch, then to the replica.
type handlerSwitch struct {
	h atomic.Pointer[transport.Handler]
}

func (s *handlerSwitch) set(h transport.Handler) { s.h.Store(&h) }
func (s *handlerSwitch) handle(b []wire.Message) { (*s.h.Load())(b) }

// dropAll is the handler between the fetch and the replica: what arrives is
// dropped, and the protocol sends again.
func dropAll([]wire.Message) {}

// fetchCheckpoint receives from a peer a checkpoint of slot need or above
// into the checkpoint directory, durable and verified, within
// Checkpoints.FetchTimeout. It runs before the replica starts, over tr,
// whose handler sw it points at itself, and at dropAll when it returns.
func fetchCheckpoint(cfg *Config, tr transport.Transport, sw *handlerSwitch, need wire.Slot) error {
	ck := &cfg.Checkpoints
	log := cfg.Logger.With("replica", cfg.ID)
	in := make(chan []wire.Message, 64)
	quit := make(chan struct{})
	sw.set(func(b []wire.Message) {
		select {
		case in <- b:
		case <-quit:
		}
	})
	defer func() {
		sw.set(dropAll)
		close(quit)
	}()
	peers := slices.DeleteFunc(slices.Clone(cfg.Members), func(id wire.ReplicaID) bool { return id == cfg.ID })
	ask := func() {
		msgs := make([]wire.Message, 0, len(peers))
		for _, p := range peers {
			msgs = append(msgs, wire.Message{Type: wire.MsgSnapshotRequest, From: cfg.ID, To: p, Slot: need})
		}
		tr.Send(msgs)
	}
	log.Warn("no checkpoint here reaches back to where the log starts: fetching one from a peer",
		"dir", ck.Dir, "need_slot", uint64(need), "timeout", ck.FetchTimeout)
	start := time.Now()
	deadline := time.NewTimer(ck.FetchTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(fetchAskEvery)
	defer tick.Stop()
	ask()

	var (
		recv     *checkpoint.Receiver
		from     wire.ReplicaID
		slot     wire.Slot
		progress time.Time
		lastErr  error
	)
	abort := func() {
		if recv != nil {
			_ = recv.Abort()
			recv = nil
		}
	}
	defer abort()
	ack := func(to wire.ReplicaID, s wire.Slot, next int64) {
		tr.Send([]wire.Message{{Type: wire.MsgSnapshotAck, From: cfg.ID, To: to, Slot: s, Commit: wire.Slot(next)}})
	}
	for {
		var batch []wire.Message
		select {
		case batch = <-in:
		case <-tick.C:
			if recv == nil || time.Since(progress) > transferGiveUp {
				abort()
				ask()
			}
			continue
		case <-deadline.C:
			err := fmt.Errorf("no peer sent a checkpoint at or above slot %d within %v (peers %v): are they up, and do they keep checkpoints (Checkpoints.Dir)?",
				need, ck.FetchTimeout, peers)
			if lastErr != nil {
				err = fmt.Errorf("%w; the last transfer failed: %w", err, lastErr)
			}
			return err
		}
		for _, m := range batch {
			if m.Type != wire.MsgSnapshotChunk {
				continue // the protocol waits until this replica has a state
			}
			size := int64(m.Ballot.Round)
			if len(m.Entries) != 1 || size <= 0 || m.Slot < need || (recv != nil && (m.From != from || m.Slot != slot) && m.Slot <= slot) {
				ack(m.From, m.Slot, max(size, 0)) // not wanted: the sender stops
				continue
			}
			if recv == nil || m.Slot != slot || m.From != from {
				abort()
				r, err := checkpoint.NewReceiver(ck.FS, ck.Dir, checkpoint.Meta{ClusterID: cfg.ClusterID, Slot: m.Slot}, size)
				if err != nil {
					lastErr = err
					log.Warn("cannot receive a checkpoint", "from", m.From, "slot", uint64(m.Slot), "err", err)
					continue
				}
				recv, from, slot, progress = r, m.From, m.Slot, time.Now()
				log.Info("receiving a checkpoint", "from", from, "slot", uint64(slot), "bytes", size)
			}
			if int64(m.Commit) == recv.Offset() {
				if err := recv.Write(recv.Offset(), m.Entries[0].Value.Data); err != nil {
					lastErr = err
					log.Warn("checkpoint transfer refused; asking again", "from", from, "slot", uint64(slot), "err", err)
					abort()
					continue
				}
				progress = time.Now()
			}
			ack(from, slot, recv.Offset())
			if recv.Offset() < recv.Size() {
				continue
			}
			info, err := recv.Finish()
			recv = nil
			if err != nil {
				lastErr = err
				log.Warn("a checkpoint received could not be stored or verified; asking again", "from", from, "slot", uint64(slot), "err", err)
				continue
			}
			log.Info("checkpoint fetched", "from", from, "slot", uint64(slot), "bytes", size, "file", info.Path, "took", time.Since(start))
			return nil
		}
	}
}
