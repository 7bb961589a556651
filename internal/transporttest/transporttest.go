// Package transporttest holds what the transports' tests share (the TCP
// and in-memory transports in engine/transport, the RDMA transport in
// package rdma): a handler that keeps what it is given, and numbered
// messages whose content and order a receiver can check.
package transporttest

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/vestalabs/vesta/engine/wire"
)

// Collector is a Handler (Handle) that keeps everything it is given.
type Collector struct {
	mu      sync.Mutex
	msgs    []wire.Message
	batches int
}

// Handle keeps batch.
func (c *Collector) Handle(batch []wire.Message) {
	c.mu.Lock()
	c.msgs = append(c.msgs, batch...)
	c.batches++
	c.mu.Unlock()
}

// Count is how many messages it was given.
func (c *Collector) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}

// Batches is how many calls it had.
func (c *Collector) Batches() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.batches
}

// Snapshot is a copy of the messages so far, in the order given.
func (c *Collector) Snapshot() []wire.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]wire.Message(nil), c.msgs...)
}

// Msg is an Accept from -> to whose Slot is seq and whose one entry's data
// says who sent it and which it is (seq%100 bytes more), so receivers can
// check content and order. With bigEvery > 0, every bigEvery-th message
// carries 100 KiB instead (larger than a transport's buffers or slots).
func Msg(from, to wire.ReplicaID, seq, bigEvery int) wire.Message {
	data := fmt.Appendf(nil, "%d->%d #%d ", from, to, seq)
	n := seq % 100
	if bigEvery > 0 && seq%bigEvery == 0 {
		n = 100 << 10
	}
	data = append(data, bytes.Repeat([]byte{byte(seq)}, n)...)
	b := wire.Ballot{Round: 1, Replica: from}
	return wire.Message{
		Type: wire.MsgAccept, From: from, To: to, Ballot: b, Slot: wire.Slot(seq), Commit: wire.Slot(seq),
		Entries: []wire.Entry{{Slot: wire.Slot(seq), Ballot: b, Value: wire.Value{Kind: wire.ValueBatch, Data: data}}},
	}
}

// CheckStreams checks that got holds, from each sender, exactly the
// messages Msg(sender, self, 0..n-1, bigEvery) in order with intact content.
func CheckStreams(t testing.TB, self wire.ReplicaID, got []wire.Message, senders []wire.ReplicaID, n, bigEvery int) {
	t.Helper()
	next := map[wire.ReplicaID]int{}
	for _, m := range got {
		want := Msg(m.From, self, next[m.From], bigEvery)
		if m.To != self || m.Slot != want.Slot || len(m.Entries) != 1 || !m.Entries[0].Value.Equal(want.Entries[0].Value) {
			t.Fatalf("replica %d got %v, want %v", self, m, want)
		}
		next[m.From]++
	}
	for _, s := range senders {
		if next[s] != n {
			t.Fatalf("replica %d got %d messages from %d, want %d", self, next[s], s, n)
		}
	}
}

// WaitFor polls cond until it holds, failing t after patience (tests bound
// every wait, and never assert a speed).
func WaitFor(t testing.TB, patience time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
