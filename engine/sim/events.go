package sim

import (
	"container/heap"

	"github.com/vestalabs/vesta/engine/wire"
)

type eventKind uint8

const (
	evDeliver    eventKind = iota // a protocol message reaches a replica
	evTick                        // a replica's clock ticks
	evPersisted                   // a replica's in-flight Ready is durable
	evRequest                     // a client request reaches a replica
	evResponse                    // a replica's answer reaches a client
	evClientNext                  // a client issues its next operation
	evClientTimeout
	evCrash     // crash some replica (fault phase)
	evCrashNode // crash this replica (fault phase: crash-on-win)
	evRestart   // a crashed replica comes back
	evPartition // the partition shape changes (fault phase)
	evHeal      // faults end
	evStopClients
	evCheckpointed // a replica's checkpoint is durable
	evSnapshot     // a checkpoint sent by a peer has arrived whole
	evPause        // pause some replica: a stopped process, a long GC (fault phase)
	evClientRetry  // a client's attempt went unanswered: try another replica
)

// event is one scheduled happening. gen ties replica events to one
// incarnation, so a crashed replica's timers and persists die with it.
type event struct {
	at     int64
	seq    uint64 // ties broken by scheduling order: determinism
	kind   eventKind
	node   int
	gen    int
	client int
	msg    wire.Message
	cmd    command
	resp   response
	ckpt   *checkpoint
}

type response struct {
	seq       uint64
	notLeader bool
	hint      wire.ReplicaID
	res       result
}

type eventHeap []*event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(*event)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

var _ heap.Interface = (*eventHeap)(nil)
