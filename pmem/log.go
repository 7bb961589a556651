package pmem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/contract"
)

var (
	_ storage.Log        = (*Log)(nil)
	_ storage.Identified = (*Log)(nil)
)

// Durability is what the log's acknowledged writes actually survive.
type Durability uint8

const (
	// DurabilityMemory: nothing survives the process (test logs in memory).
	DurabilityMemory Durability = iota
	// DurabilityDAX: MAP_SYNC is in force; flushed and fenced stores survive
	// power loss without any system call.
	DurabilityDAX
	// DurabilityPageCacheSync: an ordinary file system; fences msync the
	// flushed pages, so acknowledged writes survive power loss, slowly.
	DurabilityPageCacheSync
	// DurabilityProcessCrashOnly: tmpfs (or ramfs); acknowledged writes
	// survive the process crashing, not the machine.
	DurabilityProcessCrashOnly
)

func (d Durability) String() string {
	switch d {
	case DurabilityMemory:
		return "memory"
	case DurabilityDAX:
		return "dax"
	case DurabilityPageCacheSync:
		return "page-cache+sync"
	case DurabilityProcessCrashOnly:
		return "process-crash-only"
	}
	return "Durability(" + utoa(uint64(d)) + ")"
}

// Log is a storage.Log on persistent memory: a circular log of CRC32C
// records in a mapped file, with the hard state committed atomically with
// the tail in a double-buffered metadata slot.
//
// Append encodes its entries straight into the mapping; Sync writes back
// every line appended since the last Sync, fences, and commits one new tail
// covering all those Appends (group commit), with the latest hard state. A
// Log is used by one goroutine at a time, except Status,
// which any goroutine may call at any time.
type Log struct {
	r          ring
	m          media
	path       string
	durability Durability
	why        string // why the durability is not DAX
	fileSize   int64
	id         storage.Identity // recorded at creation; never changes
	close      func() error

	hs     paxos.HardState // the hard state the next commit writes
	loaded paxos.Persisted
	closed bool
	// index lists the records between head and the write position, oldest
	// first: where each ends and the highest slot it holds. Compact finds
	// what it frees here instead of reading and decoding the records (a
	// walk over a few hundred MiB of records stalled the core loop for tens
	// of ms at every checkpoint).
	index []recordMark

	c     counts
	pubMu sync.Mutex
	pub   published
}

// counts are the owner's counters; publish copies them, with the positions,
// under pubMu for Status, so that a metrics goroutine reads one moment's
// values. (A mutex costs the owner two locked instructions per call, fewer
// than an atomic per field.)
type recordMark struct {
	end     uint64 // logical position after the record
	maxSlot wire.Slot
}

type counts struct {
	appends, records, recordBytes, syncs, commits, fullRejects, compactions uint64
}

type published struct {
	counts
	head, tail, wtail, seq uint64
}

// Status is a snapshot of the log for metrics and operators.
type Status struct {
	Path string
	// Identity is whose the log is, as recorded when it was created.
	Identity storage.Identity
	// Durability is what acknowledged appends survive; DurabilityReason says
	// why it is not DAX (the MAP_SYNC error and the file system).
	Durability       Durability
	DurabilityReason string
	Flush            FlushMethod
	FileSize         int64
	Capacity         int64  // bytes in the data area
	Used             int64  // bytes between head and the write position
	Pending          int64  // bytes appended but not yet committed by Sync
	Head, Tail       uint64 // committed logical positions
	Seq              uint64 // metadata sequence number (commits since creation + 1)

	// Counters since Open.
	Appends     uint64 // Append calls
	Records     uint64 // records written (one per Append with entries)
	RecordBytes uint64 // bytes of records written, headers and padding included
	Syncs       uint64 // Sync calls
	Commits     uint64 // metadata commits (Syncs that had something to commit, and Compacts)
	FullRejects uint64 // Appends refused with ErrFull
	Compactions uint64
}

// Status returns the log's state; safe to call from any goroutine.
func (l *Log) Status() Status {
	l.pubMu.Lock()
	p := l.pub
	l.pubMu.Unlock()
	return Status{
		Path:             l.path,
		Identity:         l.Identity(),
		Durability:       l.durability,
		DurabilityReason: l.why,
		Flush:            l.m.method,
		FileSize:         l.fileSize,
		Capacity:         int64(l.r.dataSize),
		Used:             int64(p.wtail - p.head),
		Pending:          int64(p.wtail - p.tail),
		Head:             p.head,
		Tail:             p.tail,
		Seq:              p.seq,
		Appends:          p.appends,
		Records:          p.records,
		RecordBytes:      p.recordBytes,
		Syncs:            p.syncs,
		Commits:          p.commits,
		FullRejects:      p.fullRejects,
		Compactions:      p.compactions,
	}
}

func (l *Log) publish() {
	l.pubMu.Lock()
	l.pub = published{counts: l.c, head: l.r.head, tail: l.r.tail, wtail: l.r.wtail, seq: l.r.seq}
	l.pubMu.Unlock()
}

// Payload encoding of one record: a count, then per entry a fixed header and
// the value's bytes.
//
//	[0:4) entry count
//	per entry: slot u64 | ballot round u64 | ballot replica u32 | kind u8 | 3 zero | len u32 | data
const (
	payloadHdr  = 4
	entryHdr    = 28
	hsUserBytes = 20
)

func encodedSize(entries []wire.Entry) uint64 {
	n := uint64(payloadHdr)
	for i := range entries {
		n += entryHdr + uint64(len(entries[i].Value.Data))
	}
	return n
}

func encodeEntries(dst []byte, entries []wire.Entry) {
	binary.LittleEndian.PutUint32(dst[0:], uint32(len(entries)))
	p := payloadHdr
	for i := range entries {
		e := &entries[i]
		h := dst[p : p+entryHdr]
		binary.LittleEndian.PutUint64(h[0:], uint64(e.Slot))
		binary.LittleEndian.PutUint64(h[8:], e.Ballot.Round)
		binary.LittleEndian.PutUint32(h[16:], uint32(e.Ballot.Replica))
		h[20], h[21], h[22], h[23] = byte(e.Value.Kind), 0, 0, 0
		binary.LittleEndian.PutUint32(h[24:], uint32(len(e.Value.Data)))
		p += entryHdr
		p += copy(dst[p:], e.Value.Data)
	}
	contract.Ensuref(p == len(dst), "pmem: encoded %d bytes into a payload of %d", p, len(dst))
}

// decodeEntries calls fn for each entry of a payload; data aliases payload.
// It returns false when the payload is not a well-formed entry list.
func decodeEntries(payload []byte, fn func(e wire.Entry)) bool {
	if len(payload) < payloadHdr {
		return false
	}
	count := binary.LittleEndian.Uint32(payload[0:])
	p := payloadHdr
	for range count {
		if len(payload)-p < entryHdr {
			return false
		}
		h := payload[p : p+entryHdr]
		if h[21]|h[22]|h[23] != 0 {
			return false
		}
		n := int(binary.LittleEndian.Uint32(h[24:]))
		p += entryHdr
		if len(payload)-p < n {
			return false
		}
		e := wire.Entry{
			Slot:   wire.Slot(binary.LittleEndian.Uint64(h[0:])),
			Ballot: wire.Ballot{Round: binary.LittleEndian.Uint64(h[8:]), Replica: wire.ReplicaID(binary.LittleEndian.Uint32(h[16:]))},
			Value:  wire.Value{Kind: wire.ValueKind(h[20])},
		}
		if n > 0 {
			e.Value.Data = payload[p : p+n : p+n]
		}
		if fn != nil {
			fn(e)
		}
		p += n
	}
	return p == len(payload) && count > 0
}

func encodeHS(hs paxos.HardState) (u [userSize]byte) {
	binary.LittleEndian.PutUint64(u[0:], hs.Promised.Round)
	binary.LittleEndian.PutUint64(u[8:], uint64(hs.Commit))
	binary.LittleEndian.PutUint32(u[16:], uint32(hs.Promised.Replica))
	return u
}

func decodeHS(u *[userSize]byte) (paxos.HardState, bool) {
	for _, b := range u[hsUserBytes:] {
		if b != 0 {
			return paxos.HardState{}, false
		}
	}
	return paxos.HardState{
		Promised: wire.Ballot{Round: binary.LittleEndian.Uint64(u[0:]), Replica: wire.ReplicaID(binary.LittleEndian.Uint32(u[16:]))},
		Commit:   wire.Slot(binary.LittleEndian.Uint64(u[8:])),
	}, true
}

// openOn recovers a Log from media m: the committed metadata, the identity,
// then every record up to the committed tail, each checked. It does not
// write to m.
func openOn(m media, name string, d Durability) (*Log, error) {
	return openChecked(m, name, d, nil)
}

// openChecked is openOn that, with want set, refuses a log of another
// identity (a *storage.IdentityError) before reading its records.
func openChecked(m media, name string, d Durability, want *storage.Identity) (*Log, error) {
	l := &Log{m: m, path: name, durability: d, fileSize: int64(len(m.buf))}
	if err := l.r.recover(&l.m, name); err != nil {
		return nil, err
	}
	id, why := decodeIdentity(m.buf[identOff : identOff+identSize])
	if why != "" {
		return nil, l.r.corrupt(identOff, why)
	}
	if want != nil {
		if err := id.Check(name, *want); err != nil {
			return nil, err
		}
	}
	l.id = id
	hs, ok := decodeHS(&l.r.user)
	if !ok {
		return nil, l.r.corrupt(slotOff(l.r.seq), "hard state in metadata malformed")
	}
	l.hs = hs
	l.loaded.HardState = hs
	err := l.r.walk(l.r.head, l.r.tail, func(pos uint64, payload []byte) error {
		// One copy per record: the entries' data slices share it.
		own := append([]byte(nil), payload...)
		var maxSlot wire.Slot
		if !decodeEntries(own, func(e wire.Entry) { l.loaded.Entries = append(l.loaded.Entries, e); maxSlot = max(maxSlot, e.Slot) }) {
			return l.r.corrupt(l.r.phys(pos), "record at log position "+utoa(pos)+" has a valid checksum but malformed entries")
		}
		l.index = append(l.index, recordMark{end: pos + recordSize(len(payload)), maxSlot: maxSlot})
		return nil
	})
	if err != nil {
		return nil, err
	}
	l.publish()
	return l, nil
}

// Append implements storage.Log: it writes one record holding all entries
// (copied into the mapping), then notes hs as the hard state the next Sync
// commits when saveHS is set. On error nothing of the call is applied;
// ErrFull means the caller must Compact first.
func (l *Log) Append(entries []wire.Entry, hs paxos.HardState, saveHS bool) error {
	if l.closed {
		return ErrClosed
	}
	l.c.appends++
	if len(entries) > 0 {
		n := encodedSize(entries)
		if n > math.MaxInt32 {
			return errTooLarge(int(n), l.r.maxPayload())
		}
		dst, err := l.r.begin(int(n))
		if err != nil {
			if errors.Is(err, ErrFull) {
				l.c.fullRejects++
				l.publish()
			}
			return err
		}
		encodeEntries(dst, entries)
		l.r.end()
		var maxSlot wire.Slot
		for i := range entries {
			maxSlot = max(maxSlot, entries[i].Slot)
		}
		l.index = append(l.index, recordMark{end: l.r.wtail, maxSlot: maxSlot})
		l.c.records++
		l.c.recordBytes += recordSize(int(n))
	}
	if saveHS {
		l.hs = hs
	}
	l.publish()
	return nil
}

// CheapSync implements storage.CheapSyncer: true unless every fence is an
// msync (a page-cache mapping), which costs milliseconds.
func (l *Log) CheapSync() bool { return l.m.method != FlushMsync }

// Sync implements storage.Log: it writes back the records appended since the
// last Sync and the next metadata slot, fences (they are durable), then flips
// the current slot to it and fences again (they are live, with the latest
// hard state). With nothing new it does nothing.
func (l *Log) Sync() error {
	if l.closed {
		return ErrClosed
	}
	l.c.syncs++
	user := encodeHS(l.hs)
	seq := l.r.seq
	if err := l.r.commit(l.r.head, &user); err != nil {
		return err
	}
	if l.r.seq != seq {
		l.c.commits++
	}
	l.publish()
	return nil
}

// Compact frees the space of the longest prefix of records whose entries all
// lie below slot below (a snapshot covers them) and commits that, together
// with everything appended so far: it is also a Sync. Records after the first
// one holding an entry at or above below stay, whatever they hold.
func (l *Log) Compact(below wire.Slot) error {
	if l.closed {
		return ErrClosed
	}
	newHead, k := l.r.head, 0
	for k < len(l.index) && l.index[k].maxSlot < below {
		newHead = l.index[k].end
		k++
	}
	if contract.Enabled {
		l.checkCompactHead(below, newHead)
	}
	l.index = l.index[k:]
	user := encodeHS(l.hs)
	seq := l.r.seq
	if err := l.r.commit(newHead, &user); err != nil {
		return err
	}
	if l.r.seq != seq {
		l.c.commits++
	}
	l.c.compactions++
	l.publish()
	// What recovery found below the checkpoint is no longer needed either.
	l.loaded.Entries = slices.DeleteFunc(l.loaded.Entries, func(e wire.Entry) bool { return e.Slot < below })
	return nil
}

// checkCompactHead checks the index against the records themselves: the
// longest prefix of records whose entries all lie below below ends at
// newHead. Contract builds only: it reads every record.
func (l *Log) checkCompactHead(below wire.Slot, newHead uint64) {
	want := l.r.head
	err := l.r.walk(l.r.head, l.r.wtail, func(pos uint64, payload []byte) error {
		keep := false
		ok := decodeEntries(payload, func(e wire.Entry) { keep = keep || e.Slot >= below })
		contract.Invariantf(ok, "pmem: record at %d written by this log is malformed", pos)
		if keep {
			return errStopWalk
		}
		want = pos + recordSize(len(payload))
		return nil
	})
	contract.Invariantf(err == nil || err == errStopWalk, "pmem: walking its own records: %v", err)
	contract.Invariantf(want == newHead, "pmem: compact below %d: the index frees up to %d, the records up to %d", below, newHead, want)
}

// Size is the bytes of records the log holds (between its head and its
// write position); safe to call from any goroutine. The file keeps its
// size: Compact makes room inside it.
func (l *Log) Size() int64 { return l.Status().Used }

// Fill reports the bytes of records the log holds and its capacity, from
// any goroutine: the runtime checkpoints early and slows down as it fills.
func (l *Log) Fill() (used, capacity int64) {
	l.pubMu.Lock()
	p := l.pub
	l.pubMu.Unlock()
	return int64(p.wtail - p.head), int64(l.r.dataSize)
}

// Load implements storage.Log: the state recovered when the log was opened.
// The entries' data belong to the caller.
func (l *Log) Load() (paxos.Persisted, error) {
	if l.closed {
		return paxos.Persisted{}, ErrClosed
	}
	return paxos.Persisted{HardState: l.loaded.HardState, Entries: append([]wire.Entry(nil), l.loaded.Entries...)}, nil
}

// Close implements storage.Log: it unmaps and closes the file; records
// appended since the last Sync may be lost.
func (l *Log) Close() error {
	if l.closed {
		return ErrClosed
	}
	l.closed = true
	l.loaded = paxos.Persisted{}
	var err error
	if l.close != nil {
		err = l.close()
	}
	l.m.buf = nil
	return err
}

// MaxRecord is the largest encoded record payload this log accepts.
func (l *Log) MaxRecord() int { return l.r.maxPayload() }

// EncodedSize is the payload bytes Append needs for entries; with MaxRecord
// and Status it lets a caller split batches or compact ahead of ErrFull.
func EncodedSize(entries []wire.Entry) int { return int(encodedSize(entries)) }

// Path is the log file's name.
func (l *Log) Path() string { return l.path }

// Identity implements storage.Identified: whose the log is, as recorded
// when it was created (Open has checked it against Options.Identity). Safe
// to call from any goroutine; the caller owns the result.
func (l *Log) Identity() storage.Identity {
	id := l.id
	id.Members = slices.Clone(id.Members)
	return id
}

// newMemoryImage returns the bytes of a freshly formatted log with a data area
// of dataSize bytes and identity id, for memory logs and tests.
func newMemoryImage(dataSize int, id storage.Identity) []byte {
	contract.Requiref(dataSize >= minDataSize && dataSize%pageSize == 0, "pmem: data size %d", dataSize)
	buf := make([]byte, headerSize+dataSize)
	copy(buf, initialHeader(superblock{
		fileSize: uint64(len(buf)), dataOff: headerSize, dataSize: uint64(dataSize), logID: 1,
	}, id))
	return buf
}

// OpenMemory returns a new, empty Log in process memory with a data area of
// dataSize bytes (a multiple of 4096) that records identity id (which must
// pass storage.Identity.Validate): nothing survives the process. It exists
// for tests of code that uses the Log, and reports DurabilityMemory.
func OpenMemory(dataSize int, id storage.Identity) (*Log, error) {
	if dataSize < minDataSize || dataSize%pageSize != 0 {
		return nil, fmt.Errorf("pmem: memory log data size %d: must be a multiple of 4096, at least 4096", dataSize)
	}
	if err := checkIdentity(id); err != nil {
		return nil, fmt.Errorf("pmem: memory log: %w", err)
	}
	return openOn(media{buf: newMemoryImage(dataSize, id), method: flushNone}, "memory", DurabilityMemory)
}
