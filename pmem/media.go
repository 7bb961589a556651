package pmem

import (
	"sync/atomic"
	"unsafe"

	"github.com/vestalabs/vesta/internal/contract"
)

// FlushMethod is how stores to the mapping are made durable.
type FlushMethod uint8

const (
	// FlushAuto (in Options) picks the best method for the mapping: the
	// cheapest CPU flush instruction on a DAX or tmpfs mapping, msync on an
	// ordinary file system.
	FlushAuto FlushMethod = iota
	// FlushCLWB writes lines back without evicting them; SFENCE orders them.
	FlushCLWB
	// FlushCLFLUSHOPT writes back and evicts; SFENCE orders them.
	FlushCLFLUSHOPT
	// FlushCLFLUSH writes back and evicts, serialized; the oldest and slowest.
	FlushCLFLUSH
	// FlushMsync records flushed ranges and msyncs them at each fence: the
	// only correct choice where stores go to the page cache.
	FlushMsync
	// flushNone does nothing: memory logs in tests, where a recorder stands
	// in for the hardware.
	flushNone
)

func (f FlushMethod) String() string {
	switch f {
	case FlushAuto:
		return "auto"
	case FlushCLWB:
		return "clwb"
	case FlushCLFLUSHOPT:
		return "clflushopt"
	case FlushCLFLUSH:
		return "clflush"
	case FlushMsync:
		return "msync"
	case flushNone:
		return "none"
	}
	return "FlushMethod(" + utoa(uint64(f)) + ")"
}

func (f FlushMethod) isCPU() bool { return f == FlushCLWB || f == FlushCLFLUSHOPT || f == FlushCLFLUSH }

// media is the log's only way to write its mapped bytes. Every write to buf
// is announced with wrote (or made with store64), every range that must
// become durable is passed to flush, and fence makes all flushed ranges
// durable. In production rec is nil and each hook costs one predictable
// branch; in crash-exploration tests rec records the exact sequence of
// stores, flushes and fences, from which the explorer builds crash images.
type media struct {
	buf    []byte
	method FlushMethod
	rec    *recorder

	// FlushMsync only: page ranges flushed since the last fence, and the
	// msync that makes one durable.
	dirty []span
	msync func(b []byte) error
}

type span struct{ lo, hi int }

const pageSize = 4096

// wrote announces that buf[off:off+n] was just written with plain stores.
// Writes are word-aligned so the recorder can model 8-byte failure atomicity.
func (m *media) wrote(off, n int) {
	contract.Requiref(off%8 == 0 && n%8 == 0 && off >= 0 && off+n <= len(m.buf),
		"media: write [%d,+%d) is not word-aligned or out of range", off, n)
	if m.rec != nil {
		m.rec.store(off, m.buf[off:off+n])
	}
}

// store64 writes one aligned word with a single store: it reaches memory
// entirely or not at all.
func (m *media) store64(off int, v uint64) {
	contract.Requiref(off%8 == 0 && off+8 <= len(m.buf), "media: store64 at %d not aligned", off)
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&m.buf[off])), toLE64(v))
	if m.rec != nil {
		m.rec.store(off, m.buf[off:off+8])
	}
}

// flush starts writing back every cache line that overlaps buf[off:off+n].
// It is durable only after the next fence.
func (m *media) flush(off, n int) {
	contract.Requiref(n > 0 && off >= 0 && off+n <= len(m.buf), "media: flush [%d,+%d) out of range", off, n)
	if m.rec != nil {
		m.rec.flush(off, n)
	}
	lo := off &^ (lineSize - 1)
	hi := (off + n + lineSize - 1) &^ (lineSize - 1)
	switch m.method {
	case FlushCLWB, FlushCLFLUSHOPT, FlushCLFLUSH:
		contract.Require(uintptr(unsafe.Pointer(&m.buf[0]))%lineSize == 0, "media: CPU flush needs a line-aligned mapping")
		flushLines(m.method, unsafe.Pointer(&m.buf[lo]), uintptr((hi-lo)/lineSize))
	case FlushMsync:
		m.addDirty(off&^(pageSize-1), min((off+n+pageSize-1)&^(pageSize-1), len(m.buf)))
	}
}

func (m *media) addDirty(lo, hi int) {
	for i := range m.dirty {
		d := &m.dirty[i]
		if lo <= d.hi && hi >= d.lo { // overlapping or adjacent: merge
			d.lo, d.hi = min(d.lo, lo), max(d.hi, hi)
			return
		}
	}
	m.dirty = append(m.dirty, span{lo, hi})
}

// fence makes every range flushed so far durable (in the persistence domain
// for CPU flushes; written back by the kernel for msync).
func (m *media) fence() error {
	if m.rec != nil {
		m.rec.fence()
	}
	switch m.method {
	case FlushCLWB, FlushCLFLUSHOPT, FlushCLFLUSH:
		storeFence()
	case FlushMsync:
		for _, d := range m.dirty {
			if err := m.msync(m.buf[d.lo:d.hi]); err != nil {
				m.dirty = m.dirty[:0]
				return err
			}
		}
		m.dirty = m.dirty[:0]
	}
	return nil
}
