package storage

import (
	"github.com/vestalabs/vesta/engine/wire"
)

// Compactor is implemented by a Log that can release records below a checkpoint.
// Compact(below) may drop every entry with Slot < below (a durable checkpoint covers them);
// it must keep the latest hard state (promise and commit) and every entry at or above below,
// and it makes everything appended so far durable (it is also a Sync). After Compact returns,
// Load on a reopened log returns the hard state and the entries at or above below (it may
// still return some below). The caller guarantees below <= the durable commit index.
//
// Implementations: MemLog, WAL (which releases whole segments) and pmem.Log
// (which releases a prefix of its records).
type Compactor interface {
	Compact(below wire.Slot) error
}

var (
	_ Compactor = (*MemLog)(nil)
	_ Compactor = (*WAL)(nil)
)

// Compact implements Compactor: it drops every entry below below, into a
// new slice so that the old one, and the values only it referenced, become
// garbage. The hard state stays. Load afterwards returns what is left.
func (l *MemLog) Compact(below wire.Slot) error {
	n := 0
	for i := range l.entries {
		if l.entries[i].Slot >= below {
			n++
		}
	}
	if n == len(l.entries) {
		return nil
	}
	kept := make([]wire.Entry, 0, n)
	var bytes int64
	for _, e := range l.entries {
		if e.Slot >= below {
			kept = append(kept, e)
			bytes += int64(len(e.Value.Data))
		}
	}
	l.entries = kept
	l.bytes.Store(bytes)
	return nil
}

// Size returns the bytes of value data the log holds (entries' fixed fields
// not counted). Unlike the other MemLog methods it is safe from any
// goroutine (Replica.Status calls it).
func (l *MemLog) Size() int64 { return l.bytes.Load() }

// Len returns the number of entries the log holds; see Size.
func (l *MemLog) Len() int { return len(l.entries) }
