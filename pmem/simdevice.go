package pmem

import (
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/vestalabs/vesta/engine/storage"
)

// SimDevice is persistent memory simulated in process memory, for the
// deterministic cluster simulator: a replica's log lives on it across
// simulated crashes. It applies the failure model the crash explorer checks:
// every store made before the last fence is durable; of the stores made
// since, each aligned 8-byte word may or may not have reached memory.
//
// A SimDevice is used by one goroutine. It never touches real memory
// mappings, files or flush instructions.
type SimDevice struct {
	durable []byte           // what a crash keeps for certain
	id      storage.Identity // the log's, checked at every Open
	rec     *recorder        // stores since the last fence, of the open log
	log     *Log
}

// NewSimDevice returns a device holding a freshly formatted, empty log with
// a data area of dataSize bytes (a multiple of 4096) that records identity
// id (which must pass storage.Identity.Validate): a simulated replica's
// device is formatted when the replica is created, as a bootstrap would.
func NewSimDevice(dataSize int, id storage.Identity) (*SimDevice, error) {
	if dataSize < minDataSize || dataSize%pageSize != 0 {
		return nil, fmt.Errorf("pmem: simulated device data size %d: must be a multiple of 4096, at least 4096", dataSize)
	}
	if err := checkIdentity(id); err != nil {
		return nil, fmt.Errorf("pmem: simulated device: %w", err)
	}
	id.Members = slices.Clone(id.Members)
	return &SimDevice{durable: newMemoryImage(dataSize, id), id: id}, nil
}

// Open recovers a Log from the device, as a restarting process would, and
// checks it is the identity the device was made with (the identity is
// written once, so a crash must never change it). A log already open on
// the device is abandoned (use Crash first to model a crash).
func (d *SimDevice) Open() (*Log, error) {
	d.rec = &recorder{onFence: d.fenced}
	buf := append([]byte(nil), d.durable...)
	l, err := openChecked(media{buf: buf, method: flushNone, rec: d.rec}, "simulated", DurabilityMemory, &d.id)
	if err != nil {
		d.rec = nil
		return nil, err
	}
	d.log = l
	return l, nil
}

// fenced makes every store recorded so far durable and forgets it.
func (d *SimDevice) fenced(r *recorder) {
	for _, e := range r.events {
		if e.kind == evStore {
			copy(d.durable[e.off:e.off+e.n], r.storeData(e))
		}
	}
	r.events, r.arena = r.events[:0], r.arena[:0]
}

// Crash ends the open log as a power failure would: each 8-byte word stored
// since the last fence reaches the durable image or not, as rng decides.
// It returns how many unfenced words there were and how many survived.
func (d *SimDevice) Crash(rng *rand.Rand) (pending, kept int) {
	if d.rec == nil {
		return 0, 0
	}
	for _, e := range d.rec.events {
		if e.kind != evStore {
			continue
		}
		data := d.rec.storeData(e)
		for w := 0; w < e.n; w += 8 {
			pending++
			if rng.IntN(2) == 0 {
				copy(d.durable[e.off+w:e.off+w+8], data[w:w+8])
				kept++
			}
		}
	}
	d.rec, d.log = nil, nil
	return pending, kept
}
