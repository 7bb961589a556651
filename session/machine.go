package session

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/vestalabs/vesta/engine"
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/contract"
)

// Machine is an engine.StateMachine that gives the state machine it wraps
// exactly-once writes. Make one with Wrap.
//
// Its commands are envelopes (AppendWrite, AppendNewSession; the Client
// makes them). Apply decodes the commands of a slot, answers each
// duplicate with the result recorded for it, and hands the fresh writes'
// payloads to the inner machine in one Apply, in their order, then records
// their results. Each result is an envelope result (ParseResult): a code,
// then the inner machine's result. A command that is not a well-formed
// envelope gets an invalid result and nothing applies (never a panic),
// unless Options.ApplyPlain is set and its first byte is not Magic: then
// it is handed to the inner machine as it is, applied each time it is
// delivered, and answered with the inner machine's result unchanged.
//
// The inner machine sees only payloads; its slots are the wrapper's (a
// slot whose commands were all duplicates is skipped). The results it
// returns are kept by the session table, so it must not modify them after
// its Apply returned.
//
// Concurrency: the engine calls Apply, Snapshot, Restore and Freeze from
// its applier goroutine, never concurrently, and so must anyone else who
// drives a Machine; the WriterTo Freeze returns may be written from any
// goroutine, while applies go on. Sessions and Evicted may be called from
// any goroutine.
type Machine struct {
	inner engine.StateMachine
	opts  Options
	t     *Table[[]byte]

	// Scratch, reused between applies.
	fresh    []freshCmd
	payloads [][]byte
	innerRes [][]byte
	copies   [][2]int // (copy, first): InFlight copies of a fresh write of the batch

	evictedBase uint64 // evictions counted by tables replaced by Restore
	nsessions   atomic.Int64
	evicted     atomic.Uint64
	freezer     engine.Freezer
}

// freshCmd is a command of the batch handed to the inner machine.
type freshCmd struct {
	i           int // its index in the batch
	client, seq uint64
	plain       bool
}

// FreezingMachine is the Machine that Wrap returns for an inner machine that
// is an engine.Freezer: it is one too.
type FreezingMachine struct{ *Machine }

var (
	_ engine.StateMachine = (*Machine)(nil)
	_ engine.Freezer      = FreezingMachine{}
)

// Wrap returns a state machine that gives inner exactly-once writes (see
// Machine), with sessions bounded by opts. It is a *Machine, or, when inner
// is an engine.Freezer, a FreezingMachine (so checkpoints do not stall
// applies while images are written).
func Wrap(inner engine.StateMachine, opts Options) engine.StateMachine {
	m := &Machine{inner: inner, opts: opts.resolved()}
	m.t = NewTable[[]byte](m.opts, Bytes{})
	if f, ok := inner.(engine.Freezer); ok {
		m.freezer = f
		return FreezingMachine{m}
	}
	return m
}

// Unwrap returns the Machine of a state machine Wrap returned, or nil.
func Unwrap(sm engine.StateMachine) *Machine {
	switch m := sm.(type) {
	case *Machine:
		return m
	case FreezingMachine:
		return m.Machine
	}
	return nil
}

// Sessions returns the number of sessions held, as of the last Apply.
func (m *Machine) Sessions() int { return int(m.nsessions.Load()) }

// Evicted returns how many sessions were evicted so far (a metric: a
// restore does not reset it).
func (m *Machine) Evicted() uint64 { return m.evicted.Load() }

// Apply implements engine.StateMachine.
func (m *Machine) Apply(slot wire.Slot, cmds [][]byte, results [][]byte) {
	fresh, payloads, copies := m.fresh[:0], m.payloads[:0], m.copies[:0]
	for i, cmd := range cmds {
		if m.opts.ApplyPlain && (len(cmd) == 0 || cmd[0] != Magic) {
			fresh = append(fresh, freshCmd{i: i, plain: true})
			payloads = append(payloads, cmd)
			continue
		}
		e, err := DecodeEnvelope(cmd)
		switch {
		case err != nil:
			results[i] = invalidResult(err.Error())
			continue
		case e.NewSession:
			id, ok := m.t.New()
			if !ok {
				results[i] = invalidResult("new session: every session ID of the issued range was issued")
				continue
			}
			results[i] = binary.LittleEndian.AppendUint64([]byte{codeOK}, id)
			continue
		case e.Client == 0:
			fresh = append(fresh, freshCmd{i: i})
			payloads = append(payloads, e.Payload)
			continue
		}
		st, r := m.t.Begin(e.Client, e.Seq, e.Low)
		switch st {
		case Fresh:
			fresh = append(fresh, freshCmd{i: i, client: e.Client, seq: e.Seq})
			payloads = append(payloads, e.Payload)
		case Duplicate:
			results[i] = okResult(r)
		case InFlight:
			first := -1
			for k := len(fresh) - 1; k >= 0; k-- {
				if f := fresh[k]; f.client == e.Client && f.seq == e.Seq {
					first = f.i
					break
				}
			}
			if first < 0 { // cannot be: a write in flight began in this batch
				if contract.Enabled {
					contract.Invariantf(false, "session: write %d of session %#x in flight, not begun in this batch", e.Seq, e.Client)
				}
				results[i] = invalidResult(fmt.Sprintf("write %d of session %#x in flight", e.Seq, e.Client))
				continue
			}
			copies = append(copies, [2]int{i, first})
		case Stale:
			results[i] = codeResult(codeStale)
		case Expired:
			results[i] = codeResult(codeExpired)
		case Full:
			results[i] = codeResult(codeFull)
		}
	}
	if len(payloads) > 0 {
		innerRes := m.innerRes[:0]
		for range payloads {
			innerRes = append(innerRes, nil)
		}
		m.inner.Apply(slot, payloads, innerRes)
		for k, f := range fresh {
			r := innerRes[k]
			if f.plain {
				results[f.i] = r
				continue
			}
			if f.client != 0 {
				m.t.Record(f.client, f.seq, r)
			}
			results[f.i] = okResult(r) // a copy: the proposer may write it, the table keeps r
		}
		clear(innerRes)
		m.innerRes = innerRes
	}
	for _, c := range copies {
		results[c[0]] = append([]byte(nil), results[c[1]]...)
	}
	clear(payloads)
	m.fresh, m.payloads, m.copies = fresh, payloads, copies
	m.publish()
}

func (m *Machine) publish() {
	m.nsessions.Store(int64(m.t.Len()))
	m.evicted.Store(m.evictedBase + m.t.Evicted())
}

// Snapshot implements engine.StateMachine: the session table (ReadTable's
// encoding), then the inner machine's image.
func (m *Machine) Snapshot(w io.Writer) error {
	if _, err := m.t.WriteTo(w); err != nil {
		return err
	}
	return m.inner.Snapshot(w)
}

// Restore implements engine.StateMachine: it reads the session table, then
// has the inner machine restore from the rest of r. The table is replaced
// only if both succeed; the inner machine's state after an error of its
// Restore is its own business (the engine fails the replica).
func (m *Machine) Restore(r io.Reader) error {
	t, err := ReadTable(r, m.opts, Bytes{})
	if err != nil {
		return err
	}
	if err := m.inner.Restore(r); err != nil {
		return err
	}
	m.evictedBase += m.t.Evicted()
	m.t = t
	m.publish()
	return nil
}

// Freeze implements engine.Freezer: the table encoded, and the inner
// machine's frozen view.
func (m FreezingMachine) Freeze() io.WriterTo {
	b, err := m.t.AppendBinary(nil)
	return &frozen{table: b, err: err, inner: m.freezer.Freeze()}
}

type frozen struct {
	table []byte
	err   error
	inner io.WriterTo
}

func (f *frozen) WriteTo(w io.Writer) (int64, error) {
	if f.err != nil {
		return 0, f.err
	}
	n, err := w.Write(f.table)
	if err != nil {
		return int64(n), err
	}
	m, err := f.inner.WriteTo(w)
	return int64(n) + m, err
}
