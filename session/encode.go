package session

// # Table encoding, version 1
//
// Integers are little-endian; uvarint is encoding/binary's. A table is
//
//	header:  magic "VSESSION" | version u32 (=1) | flags u32 (=0) | length u64
//	body:    maxSessions u64 | maxSessionResults u64 | nextIssued u64
//	         | sessions u64 | sessions × session
//	session: id u64 | low u64 | n uvarint | n × (gap uvarint | rlen uvarint | result)
//
// length is the body's size in bytes, so a reader takes exactly the table's
// bytes from a stream and leaves what follows (the inner machine's image,
// the key-value store's keys) to its owner. Sessions come most recently
// used first (the order that decides which is evicted next). A session's n
// results are its recorded results in increasing sequence order: the first
// at sequence number low+gap, each next one gap above the sequence number
// after the previous one; result is the rlen bytes the table's Codec made.
// maxSessions and maxSessionResults are the table's Options (defaults
// applied): a table reads only an encoding written with the same.
//
// The encoding is canonical: it holds the logical state only (not a ring's
// size or a map's order), so two tables that saw the same calls encode to
// the same bytes. It carries no checksum: the checkpoint files holding it
// have their own. A change of this format needs a new version.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/vestalabs/vesta/internal/contract"
)

// A Codec encodes a write's result for a table's checkpoint encoding. The
// encoding must be deterministic (the same result, the same bytes), and
// DecodeResult must refuse, with an error, any bytes AppendResult cannot
// make: they come from a file or a peer.
type Codec[R any] interface {
	// AppendResult appends r's encoding to dst.
	AppendResult(dst []byte, r R) []byte
	// DecodeResult decodes a result from b, which is valid only during the
	// call (copy what is kept).
	DecodeResult(b []byte) (R, error)
}

// Bytes is the Codec of []byte results: a result is its bytes.
type Bytes struct{}

// AppendResult implements Codec.
func (Bytes) AppendResult(dst []byte, r []byte) []byte { return append(dst, r...) }

// DecodeResult implements Codec: a copy of b.
func (Bytes) DecodeResult(b []byte) ([]byte, error) { return append([]byte{}, b...), nil }

const (
	tableMagic   = "VSESSION"
	tableVersion = 1
	headerSize   = 8 + 4 + 4 + 8
	bodyFixed    = 4 * 8
	// presize bounds the sessions a read sizes its map for before reading
	// them: a count read is not trusted with memory.
	presize = 1 << 16
	// readBuf is the longest result ReadTable reads at once: a longer one
	// grows as its bytes arrive.
	readBuf = 64 << 10
)

// AppendBinary appends the table's encoding (see the format above) to dst;
// it implements encoding.BinaryAppender. The bytes are a frozen copy of
// the table: call it between applies, then write them from any goroutine.
// It costs a pass over the sessions and their results. It fails only when
// a write is in flight (Begin without its Record), which must not happen
// between applies.
func (t *Table[R]) AppendBinary(dst []byte) ([]byte, error) {
	start := len(dst)
	dst = append(dst, tableMagic...)
	dst = binary.LittleEndian.AppendUint32(dst, tableVersion)
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	dst = binary.LittleEndian.AppendUint64(dst, 0) // length, set below
	for _, v := range [...]uint64{uint64(t.opts.MaxSessions), uint64(t.opts.MaxSessionResults), t.nextIssued, uint64(len(t.sessions))} {
		dst = binary.LittleEndian.AppendUint64(dst, v)
	}
	var far []uint64
	var err error
	count := 0
	for ss := t.lru.next; ss != &t.lru; ss = ss.next {
		dst = binary.LittleEndian.AppendUint64(dst, ss.id)
		dst = binary.LittleEndian.AppendUint64(dst, ss.low)
		dst = binary.AppendUvarint(dst, uint64(ss.n))
		next, wrote := ss.low, 0 // next: the least sequence number the next result may have
		far = ss.each(far, func(seq uint64, e entry[R]) {
			if e.st != recorded && err == nil {
				err = fmt.Errorf("session: encoding a table while write %d of session %#x is in flight (Begin without Record)", seq, ss.id)
			}
			dst = binary.AppendUvarint(dst, seq-next)
			lenAt := len(dst)
			dst = append(dst, 0) // the length, one byte if it fits
			dst = t.codec.AppendResult(dst, e.r)
			if n := len(dst) - lenAt - 1; n < 0x80 {
				dst[lenAt] = byte(n)
			} else {
				var lb [binary.MaxVarintLen64]byte
				k := binary.PutUvarint(lb[:], uint64(n))
				dst = slices.Insert(dst, lenAt, lb[:k-1]...)
				copy(dst[lenAt:], lb[:k])
			}
			next = seq + 1
			wrote++
		})
		if contract.Enabled {
			contract.Invariantf(wrote == ss.n, "session: session %#x counts %d results, encoded %d", ss.id, ss.n, wrote)
		}
		count++
	}
	if contract.Enabled {
		contract.Invariantf(count == len(t.sessions), "session: %d sessions in the LRU list, %d in the map", count, len(t.sessions))
	}
	if err != nil {
		return dst[:start], err
	}
	binary.LittleEndian.PutUint64(dst[start+16:], uint64(len(dst)-start-headerSize))
	return dst, nil
}

// WriteTo writes the table's encoding to w; it implements io.WriterTo.
// Call it between applies.
func (t *Table[R]) WriteTo(w io.Writer) (int64, error) {
	b, err := t.AppendBinary(nil)
	if err != nil {
		return 0, err
	}
	n, err := w.Write(b)
	return int64(n), err
}

// ReadTable reads a table's encoding from r, for a table with options opts
// and results decoded by codec, and returns the table. It reads exactly the
// encoding's bytes from r (its header says how many), so what follows in r
// is left to be read. Malformed or truncated bytes, and bytes written with
// other Options, are refused with an error that says what is wrong; the
// memory taken grows with the bytes actually read, never with the counts
// and lengths the bytes claim. The table's Evicted counter starts at 0.
func ReadTable[R any](r io.Reader, opts Options, codec Codec[R]) (*Table[R], error) {
	opts = opts.resolved()
	var hdr [headerSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("session: table: header: %w", truncated(err))
	}
	if string(hdr[:8]) != tableMagic {
		return nil, fmt.Errorf("session: table: magic %q, want %q: not a session table", hdr[:8], tableMagic)
	}
	if v := binary.LittleEndian.Uint32(hdr[8:]); v != tableVersion {
		return nil, fmt.Errorf("session: table: version %d, this package reads %d", v, tableVersion)
	}
	if f := binary.LittleEndian.Uint32(hdr[12:]); f != 0 {
		return nil, fmt.Errorf("session: table: flags %#x, want 0", f)
	}
	length := binary.LittleEndian.Uint64(hdr[16:])
	if length < bodyFixed || length > math.MaxInt64 {
		return nil, fmt.Errorf("session: table: length %d, want %d to 2^63-1", length, bodyFixed)
	}
	lr := &io.LimitedReader{R: r, N: int64(length)}
	d := &tableReader{r: bufio.NewReaderSize(lr, 4096)}
	t, err := readBody(d, opts, codec)
	if err != nil {
		return nil, fmt.Errorf("session: table: %w (at byte %d)", err, headerSize+d.off)
	}
	if left := lr.N + int64(d.r.Buffered()); left > 0 {
		if _, err := d.r.Peek(1); err != nil {
			return nil, fmt.Errorf("session: table: %v: its length says %d more bytes (at byte %d)", truncated(err), left, headerSize+d.off)
		}
		return nil, fmt.Errorf("session: table: %d bytes after the last session (at byte %d)", left, headerSize+d.off)
	}
	if contract.Enabled {
		err := t.Check()
		contract.Ensuref(err == nil, "session: table read: %v", err)
	}
	return t, nil
}

func readBody[R any](d *tableReader, opts Options, codec Codec[R]) (*Table[R], error) {
	var fixed [bodyFixed]byte
	if err := d.full(fixed[:]); err != nil {
		return nil, err
	}
	maxSessions := binary.LittleEndian.Uint64(fixed[0:])
	maxResults := binary.LittleEndian.Uint64(fixed[8:])
	nextIssued := binary.LittleEndian.Uint64(fixed[16:])
	nsessions := binary.LittleEndian.Uint64(fixed[24:])
	if maxSessions != uint64(opts.MaxSessions) || maxResults != uint64(opts.MaxSessionResults) {
		return nil, fmt.Errorf("written with MaxSessions %d and MaxSessionResults %d, this table has %d and %d (every replica must use the same)",
			maxSessions, maxResults, opts.MaxSessions, opts.MaxSessionResults)
	}
	if nextIssued-IssuedBase > IssuedSpan {
		return nil, fmt.Errorf("next issued session ID %#x outside [%#x, %#x]", nextIssued, IssuedBase, IssuedBase+IssuedSpan)
	}
	if nsessions > maxSessions {
		return nil, fmt.Errorf("%d sessions, the table keeps at most %d", nsessions, maxSessions)
	}
	t := NewTable(opts, codec)
	t.nextIssued = nextIssued
	t.sessions = make(map[uint64]*sess[R], min(nsessions, presize))
	for i := uint64(0); i < nsessions; i++ {
		ss, err := readSession(d, t, maxResults)
		if err != nil {
			return nil, fmt.Errorf("session %d of %d: %w", i, nsessions, err)
		}
		if t.sessions[ss.id] != nil {
			return nil, fmt.Errorf("session %d of %d: ID %#x appears twice", i, nsessions, ss.id)
		}
		t.sessions[ss.id] = ss
		// Most recently used first: each goes last.
		ss.prev, ss.next = t.lru.prev, &t.lru
		t.lru.prev.next = ss
		t.lru.prev = ss
	}
	return t, nil
}

func readSession[R any](d *tableReader, t *Table[R], maxResults uint64) (*sess[R], error) {
	var fixed [16]byte
	if err := d.full(fixed[:]); err != nil {
		return nil, err
	}
	id := binary.LittleEndian.Uint64(fixed[0:])
	low := binary.LittleEndian.Uint64(fixed[8:])
	if id == 0 {
		return nil, errors.New("ID 0")
	}
	if IsIssued(id) && id >= t.nextIssued {
		return nil, fmt.Errorf("ID %#x, which is not issued yet (the next is %#x)", id, t.nextIssued)
	}
	if low == 0 {
		return nil, fmt.Errorf("ID %#x: low mark 0", id)
	}
	n, err := d.uvarint()
	if err != nil {
		return nil, fmt.Errorf("ID %#x: result count: %w", id, err)
	}
	if n > maxResults {
		return nil, fmt.Errorf("ID %#x: %d results, a session keeps at most %d", id, n, maxResults)
	}
	ss := &sess[R]{id: id, low: low}
	next, full := low, false // the least sequence number the next result may have; full: none may
	for j := uint64(0); j < n; j++ {
		gap, err := d.uvarint()
		if err != nil {
			return nil, fmt.Errorf("ID %#x: result %d: %w", id, j, err)
		}
		if full || gap > math.MaxUint64-next {
			return nil, fmt.Errorf("ID %#x: result %d: sequence number past 2^64", id, j)
		}
		rlen, err := d.uvarint()
		if err != nil {
			return nil, fmt.Errorf("ID %#x: result %d: length: %w", id, j, err)
		}
		b, err := d.bytes(rlen)
		if err != nil {
			return nil, fmt.Errorf("ID %#x: result %d: %w", id, j, err)
		}
		r, err := t.codec.DecodeResult(b)
		if err != nil {
			return nil, fmt.Errorf("ID %#x: result %d: %w", id, j, err)
		}
		seq := next + gap
		ss.save(seq, entry[R]{recorded, r})
		next, full = seq+1, seq == math.MaxUint64
	}
	return ss, nil
}

// tableReader reads a table's body and counts the bytes it consumed.
type tableReader struct {
	r     *bufio.Reader
	off   int64
	long  []byte // a result longer than the buffer, reused
	short []byte
}

// truncated names an early end of the input.
func truncated(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return errors.New("truncated")
	}
	return err
}

func (d *tableReader) full(b []byte) error {
	n, err := io.ReadFull(d.r, b)
	d.off += int64(n)
	if err != nil {
		return truncated(err)
	}
	return nil
}

func (d *tableReader) uvarint() (uint64, error) {
	var v uint64
	for i := range binary.MaxVarintLen64 {
		b, err := d.r.ReadByte()
		if err != nil {
			return 0, truncated(err)
		}
		d.off++
		if i == binary.MaxVarintLen64-1 && b > 1 {
			return 0, errors.New("uvarint overflows 64 bits")
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			return v, nil
		}
	}
	return 0, errors.New("uvarint overflows 64 bits")
}

// bytes reads n bytes, valid until the next call. A long string grows as
// its bytes arrive, so the memory taken is twice the bytes read at most,
// whatever n claims.
func (d *tableReader) bytes(n uint64) ([]byte, error) {
	if n <= readBuf {
		if uint64(cap(d.short)) < n {
			d.short = make([]byte, max(n, 64))
		}
		b := d.short[:n]
		return b, d.full(b)
	}
	dst := d.long[:0]
	var chunk [4096]byte
	for left := n; left > 0; {
		c := min(uint64(len(chunk)), left)
		if err := d.full(chunk[:c]); err != nil {
			return nil, err
		}
		dst = append(dst, chunk[:c]...)
		left -= c
	}
	d.long = dst[:0]
	return dst, nil
}

func sortU64(s []uint64) { slices.Sort(s) }
