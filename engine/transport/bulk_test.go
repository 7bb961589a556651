package transport

import (
	"bytes"

	"testing"

	"github.com/vestalabs/vesta/engine/wire"
)

// chunkMsg is a state-transfer chunk (a bulk message) of n bytes at offset off.
func chunkMsg(from, to wire.ReplicaID, off, n int) wire.Message {
	return wire.Message{
		Type: wire.MsgSnapshotChunk, From: from, To: to, Slot: 7, Commit: wire.Slot(off),
		Ballot:  wire.Ballot{Round: 1 << 20},
		Entries: []wire.Entry{{Value: wire.Value{Kind: wire.ValueBatch, Data: bytes.Repeat([]byte{byte(off)}, n)}}},
	}
}

// TestTCPProtocolMessagesOvertakeBulk queues state-transfer chunks, then
// Accepts, while the peer is not yet up: once it is, the Accepts arrive
// first, and each lane keeps its own order.
func TestTCPProtocolMessagesOvertakeBulk(t *testing.T) {
	checkNoLeak(t)
	ln2 := listen(t) // accepts the dial; nobody answers the hello until tr2 starts
	logs := &logBuf{}
	tr1, err := NewTCP(testConfig(1, listen(t), map[wire.ReplicaID]string{2: ln2.Addr().String()}, logs), func([]wire.Message) {})
	if err != nil {
		t.Fatal(err)
	}
	defer tr1.Close()
	const chunks, accepts = 4, 5
	for i := range chunks {
		tr1.Send([]wire.Message{chunkMsg(1, 2, i*32<<10, 32<<10)})
	}
	for i := range accepts {
		tr1.Send([]wire.Message{testMsg(1, 2, i)})
	}
	col := &collector{}
	tr2, err := NewTCP(testConfig(2, ln2, map[wire.ReplicaID]string{1: "127.0.0.1:1"}, &logBuf{}), col.Handle)
	if err != nil {
		t.Fatal(err)
	}
	defer tr2.Close()
	waitFor(t, "every message", func() bool { return col.Count() == chunks+accepts })
	got := col.Snapshot()
	for i, m := range got {
		if i < accepts {
			if m.Type != wire.MsgAccept || m.Slot != wire.Slot(i) {
				t.Fatalf("message %d is a %v (slot %d); want Accept %d before any chunk: %v", i, m.Type, m.Slot, i, types(got))
			}
			continue
		}
		if off := wire.Slot((i - accepts) * 32 << 10); m.Type != wire.MsgSnapshotChunk || m.Commit != off {
			t.Fatalf("message %d is a %v at %d; want the chunk at %d: %v", i, m.Type, m.Commit, off, types(got))
		}
	}
}

func types(ms []wire.Message) []wire.MsgType {
	var out []wire.MsgType
	for _, m := range ms {
		out = append(out, m.Type)
	}
	return out
}

// TestTCPBulkLaneIsBoundedApart fills the bulk lane of an unreachable peer:
// chunks beyond MaxBulkBytes are dropped, and protocol messages still find
// room in their own queue.
func TestTCPBulkLaneIsBoundedApart(t *testing.T) {
	checkNoLeak(t)
	dead := listen(t)
	deadAddr := dead.Addr().String()
	dead.Close()
	cfg := testConfig(1, listen(t), map[wire.ReplicaID]string{2: deadAddr}, &logBuf{})
	cfg.MaxQueueBytes, cfg.MaxBulkBytes = 64<<10, 128<<10
	tr, err := NewTCP(cfg, func([]wire.Message) {})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for i := range 8 {
		tr.Send([]wire.Message{chunkMsg(1, 2, i*32<<10, 32<<10)})
	}
	s := tr.Stats()
	if s.DroppedQueueFull < 3 || s.DroppedQueueFull > 5 {
		t.Fatalf("8 chunks of 32 KiB into a 128 KiB bulk lane: %d dropped, want 3 to 5", s.DroppedQueueFull)
	}
	before := s.DroppedQueueFull
	for i := range 10 {
		tr.Send([]wire.Message{testMsg(1, 2, i)})
	}
	if s := tr.Stats(); s.DroppedQueueFull != before {
		t.Fatalf("protocol messages dropped behind a full bulk lane: %d", s.DroppedQueueFull-before)
	}
}
