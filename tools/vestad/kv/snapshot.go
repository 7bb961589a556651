package kv

// # Snapshots
//
// Snapshot takes a frozen copy of the store's state between applies; the
// Image it returns is written (WriteTo) by any goroutine while applies go on,
// and Restore replaces a store's state with one read back. Checkpoints and
// state transfer are built on them; Digest compares replicas.
//
// Snapshot holds the apply goroutine for one large copy (the used part of
// the table's arena, which holds no pointers: one memmove), one pass over
// the slot array that collects the live entries' offsets, and one pass over
// the sessions that encodes them, already in their final form, into one
// byte slice (session.Table.AppendBinary). Everything else (ordering the
// keys, encoding them, checksumming) happens in WriteTo, on the writer's
// goroutine. Apply is untouched: it does no work for snapshots.
//
// # Image format, version 2
//
// Integers are little-endian; uvarint is encoding/binary's. An image is
//
//	header:   magic "VESTAKV\x00" | version u32 (=2) | flags u32 | keys u64
//	sessions: the session table, in the session package's encoding
//	          (session.ReadTable: its options, the next issued ID, the
//	          sessions most recently used first, each with its kept results),
//	          a result being one byte code<<2 | flags (code 0..3, flags
//	          found=1 swapped=2)
//	keys:     keys × (klen uvarint | key | vlen uvarint | value), in strictly
//	          increasing bytewise key order; with flag 1 (arena order) in
//	          any order, each key once
//	trailer:  crc u32: CRC-32C (Castagnoli) of every byte before it
//
// The session table records the store's MaxSessions and MaxSessionResults
// (with defaults applied): they decide evictions and refusals, so a store
// restores only an image written with the same options. Version 1 (before
// the sessions moved to the session package) held the same state with the
// options and session count in the header; it is not read any more.
//
// WriteTo writes the canonical image (flags 0): it holds the logical state
// only (not the hash table's seed or layout, a value's spare capacity, or a
// session's ring size), in an order that depends on that state alone. So two
// stores that applied the same commands write byte-identical images, and
// Digest is the SHA-256 of the image. Checkpoints need no canonical order,
// only the state: Machine writes its images with WriteArenaOrder (flag 1),
// keys in the order they lie in the table's arena, which spares the sort
// and reads the arena front to back instead of at random (a third of the
// image's cost was the sort, another third the cache misses of reading in
// key order). Restore reads both.
//
// What the image holds is everything a future Apply's results depend on: the
// keys and values, each session's ID, low mark and kept results, the LRU
// order of the sessions, the next issued session ID (which, with the
// sessions held, says which issued IDs were evicted), and the two Options.
// It does not hold what only counts or caches: Evicted (a metric; Restore
// leaves the store's counter as it was, so it stays monotonic), the
// last-session cache, decoding scratch, and the read cap (MaxReadBytes, a
// constant outside tests; Restore keeps the store's).
//
// A change of this format needs a new version: Restore refuses versions it
// does not know. A change also changes Digest, so replicas compared by
// Digest must write the same version.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/bits"
	"slices"
	"sync"

	"github.com/vestalabs/vesta/internal/contract"
	"github.com/vestalabs/vesta/session"
)

const (
	imageMagic   = "VESTAKV\x00"
	imageVersion = 2
	// imageHeaderSize is the header's size: magic, version, flags and keys.
	imageHeaderSize = 8 + 4 + 4 + 8
	// imageBufSize is the size of WriteTo's and Restore's buffers.
	imageBufSize = 256 << 10
	// restorePresize bounds the keys a restore sizes its table for before
	// reading them: the header's count is not trusted with memory.
	restorePresize = 1 << 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Image is a frozen, consistent copy of a Store's state, taken by Snapshot.
// It shares nothing with the store, so it may be written while the store
// applies commands. An Image may be written any number of times, from any
// goroutines.
type Image struct {
	nkeys    int
	refs     []uint64 // the live entries' offsets in arena, in slot order
	arena    []byte   // the table's arena, up to its length
	sessions []byte   // the sessions section, encoded

	sortOnce sync.Once
	order    []imageEntry // the live entries in key order, made by sorted
}

// imageEntry is a live entry of an Image's arena: its first eight key bytes
// (big-endian, zero-padded), which decide most comparisons without a load
// from the arena, and its offset.
type imageEntry struct{ prefix, ref uint64 }

// Snapshot returns a frozen, consistent copy of the store's state as of the
// last Apply. Call it from the goroutine that calls Apply, between applies;
// the Image may then be written from any goroutine while applies continue.
// It costs a copy of the table's arena and a pass over its slots and over
// the sessions: for 100 000 keys of 64-byte values, about a millisecond
// (BenchmarkSnapshot).
func (s *Store) Snapshot() *Image { return s.image(true) }

// image returns the store's image. Without copy it aliases the table, and is
// valid only until the next Apply (for Digest, which writes it at once).
func (s *Store) image(copied bool) *Image {
	t := s.data
	im := &Image{nkeys: t.n, arena: t.arena}
	if copied {
		im.arena = slices.Clone(t.arena)
	}
	// The live entries' offsets. Every slot's offset is stored and only a
	// full slot's kept (j advances): whether a slot is full is random, and
	// a store under that condition would mispredict half the time.
	refs := make([]uint64, t.n+1)
	j := 0
	for i := range t.slots {
		ref := t.slots[i].ref
		refs[j] = ref
		if ref != 0 {
			j++
		}
	}
	if contract.Enabled {
		contract.Invariantf(j == t.n, "kv: table of %d keys has %d full slots", t.n, j)
	}
	im.refs = refs[:j]
	sessions, err := s.sess.AppendBinary(nil)
	if err != nil { // a write in flight between applies: cannot be
		panic(fmt.Sprintf("kv: encoding the sessions: %v", err))
	}
	im.sessions = sessions
	return im
}

// Digest returns the SHA-256 of the store's image (as WriteTo writes it):
// a hash of its logical state, independent of the table's layout and seed,
// so replicas that applied the same commands have the same Digest. Call it
// between applies; it costs a sort of the keys and a pass over the data.
func (s *Store) Digest() [32]byte {
	h := sha256.New()
	if _, err := s.image(false).WriteTo(h); err != nil {
		panic(fmt.Sprintf("kv: hashing the image: %v", err)) // a hash.Hash never fails
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// flagArenaOrder marks an image whose keys are in arena order, not sorted.
const flagArenaOrder = 1

// sorted returns the image's live entries in key order.
func (im *Image) sorted() []imageEntry {
	im.sortOnce.Do(func() {
		order := make([]imageEntry, len(im.refs))
		for i, ref := range im.refs {
			var p [8]byte
			copy(p[:], im.key(ref))
			order[i] = imageEntry{binary.BigEndian.Uint64(p[:]), ref}
		}
		im.order = sortEntries(order, make([]imageEntry, len(order)), im.key)
	})
	return im.order
}

// sortEntries sorts es (tmp is as long) by key and returns them sorted, in
// es or tmp: a radix sort on the keys' first eight bytes (one pass per byte
// that differs between keys), then each run of keys that share them by
// comparison. Keys differ in their first eight bytes more often than not,
// and this took a tenth of the time slices.SortFunc on whole keys did.
func sortEntries(es, tmp []imageEntry, key func(ref uint64) []byte) []imageEntry {
	if len(es) < 2 {
		return es
	}
	var counts [8][256]int
	for _, e := range es {
		for b := range 8 {
			counts[b][byte(e.prefix>>(8*b))]++
		}
	}
	src, dst := es, tmp
	for b := range 8 {
		c := &counts[b]
		if c[byte(es[0].prefix>>(8*b))] == len(es) {
			continue // the same byte in every key
		}
		var off [256]int
		sum := 0
		for v := range c {
			off[v] = sum
			sum += c[v]
		}
		for _, e := range src {
			v := byte(e.prefix >> (8 * b))
			dst[off[v]] = e
			off[v]++
		}
		src, dst = dst, src
	}
	for i := 0; i < len(src); {
		j := i + 1
		for j < len(src) && src[j].prefix == src[i].prefix {
			j++
		}
		if j-i > 1 {
			slices.SortFunc(src[i:j], func(a, b imageEntry) int { return bytes.Compare(key(a.ref), key(b.ref)) })
		}
		i = j
	}
	return src
}

func (im *Image) key(ref uint64) []byte {
	klen := uint64(binary.LittleEndian.Uint32(im.arena[ref:]))
	return im.arena[ref+entryHeader : ref+entryHeader+klen]
}

// WriteTo writes the canonical image (see the format above) to w and
// returns the bytes written. It implements io.WriterTo.
func (im *Image) WriteTo(w io.Writer) (int64, error) {
	order := im.sorted()
	refs := make([]uint64, len(order))
	for i, e := range order {
		refs[i] = e.ref
	}
	return im.write(w, refs, 0)
}

// WriteArenaOrder writes the image with its keys in arena order (flag 1):
// the same state as WriteTo's, not canonical, and cheaper to write.
func (im *Image) WriteArenaOrder(w io.Writer) (int64, error) {
	refs := slices.Clone(im.refs)
	sortRefs(refs)
	return im.write(w, refs, flagArenaOrder)
}

// ArenaOrder is the image as an io.WriterTo that writes WriteArenaOrder.
func (im *Image) ArenaOrder() io.WriterTo { return arenaOrder{im} }

type arenaOrder struct{ im *Image }

func (a arenaOrder) WriteTo(w io.Writer) (int64, error) { return a.im.WriteArenaOrder(w) }

// sortRefs sorts arena offsets: a least-significant-digit radix sort, one
// pass per byte the largest offset has.
func sortRefs(refs []uint64) {
	if len(refs) < 2 {
		return
	}
	top := bits.Len64(slices.Max(refs))
	tmp := make([]uint64, len(refs))
	src, dst := refs, tmp
	for shift := 0; shift < top; shift += 8 {
		var count [257]int
		for _, r := range src {
			count[int(byte(r>>shift))+1]++
		}
		for i := 1; i < 257; i++ {
			count[i] += count[i-1]
		}
		for _, r := range src {
			d := byte(r >> shift)
			dst[count[d]] = r
			count[d]++
		}
		src, dst = dst, src
	}
	if &src[0] != &refs[0] {
		copy(refs, src)
	}
}

// write writes the image with its keys in the order of refs.
func (im *Image) write(w io.Writer, refs []uint64, flags uint32) (int64, error) {
	if contract.Enabled {
		contract.Invariantf(len(refs) == im.nkeys, "kv: image of %d keys holds %d entries", im.nkeys, len(refs))
	}
	iw := &imageWriter{w: w, buf: make([]byte, 0, imageBufSize)}
	iw.buf = append(iw.buf, imageMagic...)
	iw.buf = binary.LittleEndian.AppendUint32(iw.buf, imageVersion)
	iw.buf = binary.LittleEndian.AppendUint32(iw.buf, flags)
	iw.buf = binary.LittleEndian.AppendUint64(iw.buf, uint64(im.nkeys))
	iw.write(im.sessions)
	for _, ref := range refs {
		ent := im.arena[ref:]
		klen := uint64(binary.LittleEndian.Uint32(ent))
		vlen := uint64(binary.LittleEndian.Uint32(ent[4:]))
		key := ent[entryHeader : entryHeader+klen]
		val := ent[entryHeader+klen : entryHeader+klen+vlen]
		if need := 2*binary.MaxVarintLen32 + klen + vlen; need > uint64(cap(iw.buf)-len(iw.buf)) {
			if iw.flush(); iw.err != nil {
				return iw.n, iw.err
			}
			if need > uint64(cap(iw.buf)) { // a large value: written from the arena
				iw.buf = binary.AppendUvarint(iw.buf, klen)
				iw.write(key)
				iw.buf = binary.AppendUvarint(iw.buf, vlen)
				iw.write(val)
				continue
			}
		}
		iw.buf = binary.AppendUvarint(iw.buf, klen)
		iw.buf = append(iw.buf, key...)
		iw.buf = binary.AppendUvarint(iw.buf, vlen)
		iw.buf = append(iw.buf, val...)
	}
	iw.flush()
	iw.buf = binary.LittleEndian.AppendUint32(iw.buf, iw.crc)
	iw.flush()
	return iw.n, iw.err
}

// imageWriter buffers an image's bytes on their way to w and checksums them.
type imageWriter struct {
	w   io.Writer
	buf []byte
	n   int64
	crc uint32
	err error
}

func (iw *imageWriter) flush() {
	b := iw.buf
	iw.buf = iw.buf[:0]
	iw.writeOut(b)
}

// write appends b, or writes it directly when it is large.
func (iw *imageWriter) write(b []byte) {
	if len(b) <= cap(iw.buf)-len(iw.buf) {
		iw.buf = append(iw.buf, b...)
		return
	}
	iw.flush()
	if len(b) <= cap(iw.buf)/2 {
		iw.buf = append(iw.buf, b...)
		return
	}
	iw.writeOut(b)
}

func (iw *imageWriter) writeOut(b []byte) {
	if iw.err != nil || len(b) == 0 {
		return
	}
	iw.crc = crc32.Update(iw.crc, castagnoli, b)
	m, err := iw.w.Write(b)
	iw.n += int64(m)
	if err == nil && m < len(b) {
		err = io.ErrShortWrite
	}
	iw.err = err
}

// Restore replaces the store's whole state with the image read from r,
// which must end where the image ends. Call it with no Apply running. An
// image that is malformed, truncated, fails its checksum, or was written
// with other Options is refused with an error that says why, and the store
// is left as it was: the image is decoded into a new state, which replaces
// the store's only once all of it was read and checked. Memory grows with
// the bytes actually read, not with the counts and lengths the image claims.
func (s *Store) Restore(r io.Reader) error {
	d := &imageReader{r: r, buf: make([]byte, imageBufSize)}
	st, err := d.decode(s.opts)
	if err != nil {
		return err
	}
	s.data = st.data
	s.evictedBase += s.sess.Evicted()
	s.sess = st.sess
	s.publish()
	return nil
}

// restored is a state decoded from an image.
type restored struct {
	data *table
	sess *session.Table[saved]
}

// imageReader reads an image through its buffer and checksums what it
// consumed.
type imageReader struct {
	r        io.Reader
	buf      []byte
	pos, end int    // buf[pos:end] is read and not yet consumed
	crcFrom  int    // buf[crcFrom:pos] is consumed and not yet in crc
	crc      uint32 // of the bytes consumed before buf[crcFrom]
	off      int64  // the image offset of buf[0]
	eof      bool
	err      error // a read error other than io.EOF
}

// errTruncated is what a read past the image's end returns.
var errTruncated = errors.New("truncated")

// fill tries to make n (at most len(buf)) bytes available at pos and
// returns how many are: fewer only at the end of the input or on an error.
func (d *imageReader) fill(n int) int {
	if d.end-d.pos >= n {
		return d.end - d.pos
	}
	if len(d.buf)-d.pos < n {
		d.crc = crc32.Update(d.crc, castagnoli, d.buf[d.crcFrom:d.pos])
		d.off += int64(d.pos)
		d.end = copy(d.buf, d.buf[d.pos:d.end])
		d.pos, d.crcFrom = 0, 0
	}
	for empty := 0; d.end-d.pos < n && !d.eof && d.err == nil; {
		m, err := d.r.Read(d.buf[d.end:])
		d.end += m
		switch {
		case err == io.EOF:
			d.eof = true
		case err != nil:
			d.err = err
		case m == 0:
			if empty++; empty >= 100 {
				d.err = io.ErrNoProgress
			}
		}
	}
	return d.end - d.pos
}

// offset returns the image offset of the next byte to consume.
func (d *imageReader) offset() int64 { return d.off + int64(d.pos) }

// fail returns the error of a failed read, or errTruncated.
func (d *imageReader) fail() error {
	if d.err != nil {
		return d.err
	}
	return errTruncated
}

// take consumes n (at most len(buf)) bytes and returns them; they stay
// valid until the next read.
func (d *imageReader) take(n int) ([]byte, error) {
	if d.fill(n) < n {
		return nil, d.fail()
	}
	b := d.buf[d.pos : d.pos+n : d.pos+n]
	d.pos += n
	return b, nil
}

func (d *imageReader) uvarint() (uint64, error) {
	avail := d.fill(binary.MaxVarintLen64)
	v, k := binary.Uvarint(d.buf[d.pos : d.pos+avail])
	switch {
	case k > 0:
		d.pos += k
		return v, nil
	case k < 0:
		return 0, errors.New("uvarint overflows 64 bits")
	}
	return 0, d.fail()
}

// Read implements io.Reader over the image's bytes, consumed (and
// checksummed) as they are read: the session table is read through it.
func (d *imageReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	avail := d.fill(1)
	if avail == 0 {
		if d.err != nil {
			return 0, d.err
		}
		return 0, io.EOF
	}
	n := copy(p, d.buf[d.pos:d.end])
	d.pos += n
	return n, nil
}

// bytes consumes n bytes and returns them, in dst[:0] when they are more
// than the buffer holds (then valid until dst is reused), else in the
// buffer (valid until the next read). A long string is copied as it
// arrives, so the memory taken is twice the bytes read at most, whatever n.
func (d *imageReader) bytes(dst []byte, n uint64) ([]byte, error) {
	if n <= uint64(len(d.buf)) {
		return d.take(int(n))
	}
	dst = dst[:0]
	for left := n; left > 0; {
		avail := d.fill(1)
		if avail == 0 {
			return nil, d.fail()
		}
		c := int(min(uint64(avail), left))
		dst = append(dst, d.buf[d.pos:d.pos+c]...)
		d.pos += c
		left -= uint64(c)
	}
	return dst, nil
}

// errorf describes a refused image, and where the reading stopped.
func (d *imageReader) errorf(format string, args ...any) error {
	return fmt.Errorf("kv: image: %s (at byte %d)", fmt.Sprintf(format, args...), d.offset())
}

// decode reads a whole image, for a store with options opts.
func (d *imageReader) decode(opts Options) (*restored, error) {
	hdr, err := d.take(imageHeaderSize)
	if err != nil {
		return nil, d.errorf("header: %v", err)
	}
	if string(hdr[:8]) != imageMagic {
		return nil, fmt.Errorf("kv: image: magic %q, want %q: not a key-value store image", hdr[:8], imageMagic)
	}
	if v := binary.LittleEndian.Uint32(hdr[8:]); v != imageVersion {
		return nil, fmt.Errorf("kv: image: version %d, this store reads %d", v, imageVersion)
	}
	flags := binary.LittleEndian.Uint32(hdr[12:])
	if flags&^flagArenaOrder != 0 {
		return nil, fmt.Errorf("kv: image: flags %#x, this store knows only %#x (keys in arena order)", flags, flagArenaOrder)
	}
	nkeys := binary.LittleEndian.Uint64(hdr[16:])
	st := &restored{}
	if st.sess, err = session.ReadTable(d, opts.sessionOptions(), savedCodec{}); err != nil {
		return nil, fmt.Errorf("kv: image: sessions: %w", err)
	}
	if st.data, err = d.keys(nkeys, flags&flagArenaOrder == 0); err != nil {
		return nil, err
	}
	d.crc = crc32.Update(d.crc, castagnoli, d.buf[d.crcFrom:d.pos])
	d.crcFrom = d.pos
	sum := d.crc
	b, err := d.take(4)
	if err != nil {
		return nil, d.errorf("checksum: %v", err)
	}
	if got := binary.LittleEndian.Uint32(b); got != sum {
		return nil, fmt.Errorf("kv: image: checksum %#08x, the bytes before it sum to %#08x: corrupt", got, sum)
	}
	if d.fill(1) > 0 {
		return nil, d.errorf("bytes after the image's end")
	}
	if d.err != nil {
		return nil, d.errorf("after the image's end: %v", d.err)
	}
	if contract.Enabled {
		err := st.data.check(st.data.hash)
		contract.Ensuref(err == nil, "kv: restored table: %v", err)
		err = st.sess.Check()
		contract.Ensuref(err == nil, "kv: restored sessions: %v", err)
	}
	return st, nil
}

// keys reads the keys section of n keys into a new table: sorted, or in
// any order, each key once.
func (d *imageReader) keys(n uint64, sorted bool) (*table, error) {
	t := newTable()
	if want := min(n, restorePresize); want > minSlots*3/4 {
		t.rebuild(1 << bits.Len64(want*4/3)) // the least power of two holding want
	}
	var prev, cur, long []byte
	for i := uint64(0); i < n; i++ {
		klen, err := d.uvarint()
		if err != nil {
			return nil, d.errorf("key %d of %d: length: %v", i, n, err)
		}
		if klen > maxLen {
			return nil, d.errorf("key %d of %d: length %d, the store keeps at most %d", i, n, klen, uint64(maxLen))
		}
		key, err := d.bytes(long, klen)
		if err != nil {
			return nil, d.errorf("key %d of %d: %v", i, n, err)
		}
		if klen > uint64(len(d.buf)) {
			long = key[:0] // grown: reuse it
		}
		cur = append(cur[:0], key...) // reading the value may move the buffer
		if sorted && i > 0 && bytes.Compare(prev, cur) >= 0 {
			return nil, d.errorf("key %d of %d: not above the key before it (keys must be sorted and unique)", i, n)
		}
		vlen, err := d.uvarint()
		if err != nil {
			return nil, d.errorf("key %d of %d: value length: %v", i, n, err)
		}
		if vlen > maxLen {
			return nil, d.errorf("key %d of %d: value length %d, the store keeps at most %d", i, n, vlen, uint64(maxLen))
		}
		val, err := d.bytes(long, vlen)
		if err != nil {
			return nil, d.errorf("key %d of %d: value: %v", i, n, err)
		}
		if vlen > uint64(len(d.buf)) {
			long = val[:0]
		}
		h := t.hash(cur)
		if !sorted {
			if _, dup := t.find(cur, h); dup {
				return nil, d.errorf("key %d of %d: appears twice", i, n)
			}
		}
		t.Put(cur, val, h)
		prev, cur = cur, prev
	}
	return t, nil
}
