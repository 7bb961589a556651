package kv

import (
	"io"

	"github.com/vestalabs/vesta/engine"
	"github.com/vestalabs/vesta/engine/wire"
)

// Machine is a Store as an engine.StateMachine with checkpoints: its image
// is the Store's (sessions included, so exactly-once holds across a
// restore), frozen between applies and written while applies go on
// (engine.Freezer).
type Machine struct{ *Store }

var (
	_ engine.StateMachine = Machine{}
	_ engine.Freezer      = Machine{}
)

// Apply implements engine.StateMachine; it records slot for Store.Applied
// before it applies.
func (m Machine) Apply(slot wire.Slot, cmds [][]byte, results [][]byte) {
	if next := uint64(slot) + 1; next > m.Store.applied.Load() {
		m.Store.applied.Store(next)
	}
	m.Store.Apply(cmds, results)
}

// Snapshot implements engine.StateMachine: the image as of now, its keys
// in arena order (Image.WriteArenaOrder: a checkpoint needs the state, not
// the canonical order, and sorting was a third of its cost).
func (m Machine) Snapshot(w io.Writer) error {
	_, err := m.Store.Snapshot().WriteArenaOrder(w)
	return err
}

// Restore implements engine.StateMachine.
func (m Machine) Restore(r io.Reader) error { return m.Store.Restore(r) }

// Freeze implements engine.Freezer: a frozen copy of the store, written
// from another goroutine in arena order, as Snapshot writes it.
func (m Machine) Freeze() io.WriterTo { return m.Store.Snapshot().ArenaOrder() }
