package transport

import (
	"fmt"
	"sync"

	"github.com/vestalabs/vesta/engine/wire"
)

// Network connects Mem transports inside one process. A replica joins under
// its ID; messages to an ID with no live transport are dropped, so a replica
// that closes its transport and joins again has "restarted".
type Network struct {
	mu    sync.RWMutex
	nodes map[wire.ReplicaID]*Mem
}

// NewNetwork returns an empty network.
func NewNetwork() *Network { return &Network{nodes: make(map[wire.ReplicaID]*Mem)} }

// MemConfig configures a Mem transport.
type MemConfig struct {
	// QueueLen bounds the messages waiting for this transport's handler, from
	// all senders together; a Send that finds it full drops and counts (in
	// the sender's Stats). Zero means 8192.
	QueueLen int
}

// Mem is an in-process Transport. Send copies each message and its Entries
// and Ranges (sharing Value.Data, which nobody modifies) into the
// recipient's inbox; one goroutine per Mem hands the inbox to its handler in
// batches. It does no encoding, so Stats' byte counts are the sizes the
// frames would have on the wire.
type Mem struct {
	net     *Network
	id      wire.ReplicaID
	handler Handler
	max     int
	stats   Counters

	mu      sync.Mutex
	pending []wire.Message
	closed  bool
	wake    chan struct{}
	done    chan struct{}
	exited  chan struct{}
}

var _ Transport = (*Mem)(nil)

// Join attaches a new transport for replica id to the network. It fails if
// id is zero or a live transport already holds it.
func (n *Network) Join(id wire.ReplicaID, h Handler, cfg MemConfig) (*Mem, error) {
	if id == 0 {
		return nil, fmt.Errorf("transport: replica ID 0 is not valid")
	}
	if h == nil {
		return nil, fmt.Errorf("transport: nil handler")
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 8192
	}
	m := &Mem{
		net: n, id: id, handler: h, max: cfg.QueueLen,
		wake: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{}),
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.nodes[id]; ok {
		return nil, fmt.Errorf("transport: replica %d already joined this network", id)
	}
	n.nodes[id] = m
	go m.deliver()
	return m, nil
}

// Send implements Transport.
func (m *Mem) Send(msgs []wire.Message) {
	// One allocation for every message's Entries and Ranges copies.
	var ne, nr int
	for i := range msgs {
		ne += len(msgs[i].Entries)
		nr += len(msgs[i].Ranges)
	}
	entries := make([]wire.Entry, 0, ne)
	ranges := make([]wire.SlotRange, 0, nr)

	m.net.mu.RLock()
	defer m.net.mu.RUnlock()
	for i := range msgs {
		msg := msgs[i]
		to := m.net.nodes[msg.To]
		if to == nil || msg.To == m.id {
			m.stats.DroppedNoPeer.Add(1)
			continue
		}
		if len(msg.Entries) > 0 {
			l := len(entries)
			entries = append(entries, msg.Entries...)
			msg.Entries = entries[l:len(entries):len(entries)]
		}
		if len(msg.Ranges) > 0 {
			l := len(ranges)
			ranges = append(ranges, msg.Ranges...)
			msg.Ranges = ranges[l:len(ranges):len(ranges)]
		}
		if !to.put(msg) {
			m.stats.DroppedQueueFull.Add(1)
			continue
		}
		m.stats.FramesSent.Add(1)
		m.stats.BytesSent.Add(uint64(wire.FrameSize(&msg)))
	}
}

// put appends msg to m's inbox; false if it is full or m is closed.
func (m *Mem) put(msg wire.Message) bool {
	m.mu.Lock()
	if m.closed || len(m.pending) >= m.max {
		m.mu.Unlock()
		return false
	}
	m.pending = append(m.pending, msg)
	first := len(m.pending) == 1
	m.mu.Unlock()
	if first {
		select {
		case m.wake <- struct{}{}:
		default:
		}
	}
	return true
}

func (m *Mem) deliver() {
	defer close(m.exited)
	for {
		select {
		case <-m.wake:
		case <-m.done:
			return
		}
		m.mu.Lock()
		batch := m.pending
		m.pending = nil // the batch is the handler's now
		m.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		var bytes uint64
		for i := range batch {
			bytes += uint64(wire.FrameSize(&batch[i]))
		}
		m.stats.FramesReceived.Add(uint64(len(batch)))
		m.stats.BytesReceived.Add(bytes)
		m.stats.Deliveries.Add(1)
		m.handler(batch)
	}
}

// Stats implements Transport.
func (m *Mem) Stats() Stats { return m.stats.Snapshot() }

// Close implements Transport: the replica leaves the network, its inbox is
// discarded, and its delivery goroutine has exited when Close returns.
func (m *Mem) Close() error {
	m.net.mu.Lock()
	if m.net.nodes[m.id] == m {
		delete(m.net.nodes, m.id)
	}
	m.net.mu.Unlock()
	m.mu.Lock()
	already := m.closed
	m.closed = true
	m.pending = nil
	m.mu.Unlock()
	if !already {
		close(m.done)
	}
	<-m.exited
	return nil
}
