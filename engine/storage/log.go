// Package storage holds the acceptor's durable memory: the Log contract and
// its implementations (in memory here, the segmented file WAL beside it; the
// persistent-memory log lives in package pmem).
package storage

import (
	"sync/atomic"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/wire"
)

// Log is the acceptor's durable memory: the promised ballot and commit index
// (paxos.HardState) and the accepted entries.
//
// The runtime calls Append once per paxos.Ready that has something to persist,
// for every Ready that arrived while the previous Sync ran, and then Sync once:
// that is group commit. Implementations must keep these guarantees:
//
//   - Order: records become durable in the order appended; a crash keeps a
//     prefix of them (possibly with a torn last record, which recovery drops).
//   - Durability: every record appended before a Sync that returned nil
//     survives any crash.
//   - Ownership: Append copies what it needs of the entries slice before
//     returning; the caller may reuse that slice afterwards. The bytes of each
//     Value.Data are immutable (the wire.Value contract), so a Log may keep
//     references to them instead of copying.
//   - Recovery: Load returns the state the durable records describe: the last
//     hard state, and the entries in append order (a later entry for a slot
//     replaces an earlier one, which the caller resolves). Corruption before
//     the tail is an error naming the file and offset, never silently skipped.
//
// A Log is used by one goroutine at a time.
type Log interface {
	// Append adds entries, then the hard state when saveHS is set.
	Append(entries []wire.Entry, hs paxos.HardState, saveHS bool) error
	// Sync makes every record appended so far durable.
	Sync() error
	// Load returns the durable state found when the log was opened.
	Load() (paxos.Persisted, error)
	// Close releases the log; unsynced records may be lost.
	Close() error
}

// CheapSyncer is implemented by a Log whose Sync costs about as much as a
// function call (memory, or persistent memory flushed with CPU
// instructions). The replica runtime then persists inline in its core loop
// instead of handing each Ready to a log-writer goroutine: the hand-off would
// cost more than the sync.
type CheapSyncer interface {
	CheapSync() bool
}

// MemLog is a Log in memory: nothing survives the process. It is for tests,
// and for a durability-off mode that must say so loudly.
type MemLog struct {
	hs      paxos.HardState
	entries []wire.Entry
	bytes   atomic.Int64 // value bytes in entries (Size, which any goroutine may call)
}

// NewMemLog returns an empty in-memory log.
func NewMemLog() *MemLog { return &MemLog{} }

// Append implements Log. It keeps references to the values' bytes, which are
// immutable, rather than copies: a durability-off replica pays no copy.
func (l *MemLog) Append(entries []wire.Entry, hs paxos.HardState, saveHS bool) error {
	l.entries = append(l.entries, entries...)
	for i := range entries {
		l.bytes.Add(int64(len(entries[i].Value.Data)))
	}
	if saveHS {
		l.hs = hs
	}
	return nil
}

// Sync implements Log; memory needs no sync.
func (l *MemLog) Sync() error { return nil }

// CheapSync implements CheapSyncer.
func (l *MemLog) CheapSync() bool { return true }

// Load implements Log.
func (l *MemLog) Load() (paxos.Persisted, error) {
	return paxos.Persisted{HardState: l.hs, Entries: append([]wire.Entry(nil), l.entries...)}, nil
}

// Close implements Log.
func (l *MemLog) Close() error { return nil }
