package checkpoint

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"slices"

	"github.com/vestalabs/vesta/engine/storage/vfs"
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/contract"
)

// Meta is what a checkpoint's header records.
type Meta struct {
	ClusterID uint64         // non-zero
	Replica   wire.ReplicaID // who wrote it (informational; a transferred copy keeps the writer's)
	Slot      wire.Slot      // everything below Slot is in the image
	Ballot    wire.Ballot    // the highest ballot the writer had promised when it wrote it (informational)
	// Members is the membership in effect at Slot: 1 to MaxMembers IDs,
	// ascending, non-zero, without repeats.
	Members []wire.ReplicaID
	// Memberships is the membership history from Slot on, in the
	// protocol's encoding (paxos.EncodeMemberships), at most
	// MaxMembershipBytes; empty in a version 1 file, whose cluster's
	// members never changed.
	Memberships []byte
	Size        int64 // bytes of the image (filled in by Write)
	// BlockSize is the image's block size: 0 asks Write for
	// DefaultBlockSize; at most MaxBlockSize. Filled in by Write.
	BlockSize uint32
}

// validate says why m cannot be written, or nil. Size is not checked: Write
// fills it in.
func (m *Meta) validate() error {
	switch {
	case m.ClusterID == 0:
		return errors.New("checkpoint: cluster ID 0 (cluster IDs start at 1)")
	case m.Replica == 0:
		return errors.New("checkpoint: writer replica ID 0")
	case len(m.Members) < 1 || len(m.Members) > MaxMembers:
		return fmt.Errorf("checkpoint: %d members, want 1 to %d", len(m.Members), MaxMembers)
	case m.BlockSize < 1 || m.BlockSize > MaxBlockSize:
		return fmt.Errorf("checkpoint: block size %d outside [1, %d]", m.BlockSize, MaxBlockSize)
	case len(m.Memberships) > MaxMembershipBytes:
		return fmt.Errorf("checkpoint: membership section of %d bytes, at most %d", len(m.Memberships), MaxMembershipBytes)
	}
	for i, id := range m.Members {
		if id == 0 || (i > 0 && id <= m.Members[i-1]) {
			return fmt.Errorf("checkpoint: members %v: must be non-zero, ascending, without repeats", m.Members)
		}
	}
	return nil
}

// Info describes a checkpoint file.
type Info struct {
	Path     string
	Meta     Meta  // as its header records it (only Slot, from the name, when Err is set)
	FileSize int64 // the whole file's size, header and checksums included
	// Err, from List only, is why the file's header could not be read or
	// is bad (usually a *CorruptionError); Meta is then not trustworthy.
	Err error
}

// tempPath returns a fresh temporary name beside the final path. The random
// part keeps two writers of one slot (a Write and a Receiver) apart.
func tempPath(final string) string {
	return fmt.Sprintf("%s.%016x%s", final, rand.Uint64(), tempSuffix)
}

// Write writes an image produced by fill into dir (created if missing) as
// the checkpoint of meta.Slot, and returns its Info (whose Meta has Size and
// BlockSize filled in and its own copy of Members; meta itself is not
// modified or kept).
//
// fill writes the image to w and returns nil, or an error that makes Write
// fail. w copies what it is given, so fill may reuse its buffers once
// w.Write returns; w is valid only until fill returns. An error from
// w.Write (an I/O error, an image above MaxImageSize) is sticky, and Write
// fails with it even if fill swallows it.
//
// Order of effects: the blocks and then the header go to a temporary file,
// the file is synced and closed, renamed to FileName(meta.Slot) (replacing
// any checkpoint of the same slot) and the directory synced. A crash at any
// point leaves either no new checkpoint or a complete, valid one, plus
// perhaps a temporary file (ignored by List and Open, removed by Prune).
// When Write returns nil, the checkpoint is durable. When it returns an
// error, the temporary file has been removed where possible; only a failed
// directory sync leaves the (complete, valid) file under its final name,
// which may then not survive a crash.
func Write(fsys vfs.FS, dir string, meta Meta, fill func(w io.Writer) error) (Info, error) {
	if meta.BlockSize == 0 {
		meta.BlockSize = DefaultBlockSize
	}
	if err := meta.validate(); err != nil {
		return Info{}, err
	}
	meta.Members, meta.Memberships = slices.Clone(meta.Members), slices.Clone(meta.Memberships)
	if err := fsys.MkdirAll(dir); err != nil {
		return Info{}, fmt.Errorf("checkpoint: write in %s: %w", dir, err)
	}
	path := filepath.Join(dir, FileName(meta.Slot))
	tmp := tempPath(path)
	f, err := fsys.Create(tmp)
	if err != nil {
		return Info{}, fmt.Errorf("checkpoint: write %s: %w", path, err)
	}
	h := header{meta: meta, fileID: newFileID()}
	hlen := headerLen(len(meta.Members), len(meta.Memberships))
	w := &blockWriter{
		f:    f,
		bs:   int(meta.BlockSize),
		buf:  make([]byte, 0, int(meta.BlockSize)+crcLen),
		seed: blockSeed(h.fileID),
		next: int64(hlen),
	}
	fail := func(op string, err error, closed bool) (Info, error) {
		if !closed {
			f.Close()
		}
		fsys.Remove(tmp) // best effort: Prune removes what is left
		return Info{}, fmt.Errorf("checkpoint: write %s: %s: %w", path, op, err)
	}
	err = fill(w)
	if err == nil {
		err = w.err
	}
	if err == nil {
		err = w.flush()
	}
	w.done = true
	if err != nil {
		return fail("fill", err, false)
	}
	h.meta.Size = w.size
	size := fileSizeFor(hlen, w.size, meta.BlockSize)
	contract.Ensuref(w.next == size, "checkpoint: wrote %d bytes of blocks, format says %d", w.next, size)
	var hb [maxHeaderLen]byte
	encodeHeader(hb[:], &h)
	if _, err := f.WriteAt(hb[:hlen], 0); err != nil {
		return fail("write header", err, false)
	}
	if err := f.Sync(); err != nil {
		return fail("sync", err, false)
	}
	if err := f.Close(); err != nil {
		return fail("close", err, true)
	}
	if err := fsys.Rename(tmp, path); err != nil {
		return fail("rename", err, true)
	}
	if err := fsys.SyncDir(dir); err != nil {
		return Info{}, fmt.Errorf("checkpoint: write %s: sync directory (the checkpoint is complete but may not survive a crash): %w", path, err)
	}
	return Info{Path: path, Meta: h.meta, FileSize: size}, nil
}

func newFileID() uint64 {
	for {
		if id := rand.Uint64(); id != 0 {
			return id
		}
	}
}

var errWriterDone = errors.New("checkpoint: image writer used after fill returned")

// blockWriter is the io.Writer fill writes the image to: it cuts the image
// into blocks and writes each with its checksum after the header's place.
type blockWriter struct {
	f    vfs.File
	bs   int
	buf  []byte // the current block's bytes so far; capacity bs+crcLen
	seed uint32
	idx  uint64 // index of the current block
	next int64  // file offset of the current block
	size int64  // image bytes so far
	err  error
	done bool
}

func (w *blockWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, errWriterDone
	}
	if w.err != nil {
		return 0, w.err
	}
	if int64(len(p)) > MaxImageSize-w.size {
		w.err = fmt.Errorf("checkpoint: image larger than the maximum %d bytes", int64(MaxImageSize))
		return 0, w.err
	}
	written := 0
	for len(p) > 0 {
		k := copy(w.buf[len(w.buf):w.bs], p)
		w.buf = w.buf[:len(w.buf)+k]
		p, written, w.size = p[k:], written+k, w.size+int64(k)
		if len(w.buf) == w.bs {
			if err := w.flush(); err != nil {
				w.err = err
				return written, err
			}
		}
	}
	return written, nil
}

// flush writes the current block, if it has any bytes, with its checksum.
func (w *blockWriter) flush() error {
	contract.Invariant(len(w.buf) <= w.bs, "checkpoint: block buffer over the block size")
	if len(w.buf) == 0 {
		return nil
	}
	n := len(w.buf)
	w.buf = w.buf[:n+crcLen]
	binary.LittleEndian.PutUint32(w.buf[n:], blockCRC(w.seed, w.idx, w.buf[:n]))
	if _, err := w.f.WriteAt(w.buf, w.next); err != nil {
		w.buf = w.buf[:n]
		return err
	}
	w.next += int64(len(w.buf))
	w.idx++
	w.buf = w.buf[:0]
	return nil
}

// List returns the checkpoints in dir, newest slot first. Every file named
// as FileName makes it is listed; its header is read and checked (and the
// file's size against it, and its slot against the name) but not its blocks
// (Verify does that). A file that fails those checks is listed with Err set,
// never left out. Temporary files and other names are ignored. A directory
// that does not exist holds no checkpoints.
func List(fsys vfs.FS, dir string) ([]Info, error) {
	names, err := fsys.List(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint: list %s: %w", dir, err)
	}
	var out []Info
	for _, name := range names {
		slot, ok := ParseFileName(name)
		if !ok {
			continue
		}
		out = append(out, stat(fsys, filepath.Join(dir, name), slot))
	}
	slices.SortFunc(out, func(a, b Info) int { return cmp.Compare(b.Meta.Slot, a.Meta.Slot) })
	return out, nil
}

// stat reads the header of the checkpoint at path, named after slot.
func stat(fsys vfs.FS, path string, slot wire.Slot) Info {
	bad := func(err error) Info { return Info{Path: path, Meta: Meta{Slot: slot}, Err: err} }
	f, err := fsys.Open(path)
	if err != nil {
		return bad(err)
	}
	defer f.Close()
	h, _, size, err := readHeader(f, path) // checks the slot against the name
	if err != nil {
		return bad(err)
	}
	contract.Invariant(h.meta.Slot == slot, "checkpoint: readHeader let a slot unlike the name's pass")
	return Info{Path: path, Meta: h.meta, FileSize: size}
}

// DefaultKeep is how many checkpoints Prune keeps when asked for 0.
const DefaultKeep = 2

// Prune keeps the newest keep checkpoints in dir whose headers read (0
// means DefaultKeep) and removes every checkpoint file older than the
// oldest of them, damaged or not, and every temporary file; then it syncs
// the directory if it removed anything. Files with damaged headers newer
// than the oldest kept one are left for an operator (OpenNewestValid logs
// them). With fewer than keep readable checkpoints, only temporary files
// are removed. Prune reads headers, not blocks: to keep only checkpoints
// known whole, Verify them first. It must not run while a Write or a
// Receiver is in progress in dir (it would remove their temporary files):
// PruneCheckpoints may.
func Prune(fsys vfs.FS, dir string, keep int) error { return prune(fsys, dir, keep, true) }

// PruneCheckpoints is Prune without the temporary files: it may run while
// a Write or a Receiver is in progress in dir (a replica prunes after each
// checkpoint while the next is written or one arrives from a peer; Prune
// at start removes what a crash left).
func PruneCheckpoints(fsys vfs.FS, dir string, keep int) error { return prune(fsys, dir, keep, false) }

func prune(fsys vfs.FS, dir string, keep int, temps bool) error {
	if keep < 0 {
		return fmt.Errorf("checkpoint: prune %s: keep %d is negative", dir, keep)
	}
	if keep == 0 {
		keep = DefaultKeep
	}
	names, err := fsys.List(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checkpoint: prune %s: %w", dir, err)
	}
	var remove []string
	for _, name := range names {
		if temps && isTempName(name) {
			remove = append(remove, filepath.Join(dir, name))
		}
	}
	infos, err := List(fsys, dir)
	if err != nil {
		return err
	}
	good := 0
	for i, info := range infos {
		if info.Err != nil {
			continue
		}
		if good++; good == keep {
			for _, old := range infos[i+1:] {
				contract.Invariant(old.Meta.Slot < info.Meta.Slot, "checkpoint: List not newest first")
				remove = append(remove, old.Path)
			}
			break
		}
	}
	for _, p := range remove {
		if err := fsys.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("checkpoint: prune %s: %w", dir, err)
		}
	}
	if len(remove) > 0 {
		if err := fsys.SyncDir(dir); err != nil {
			return fmt.Errorf("checkpoint: prune %s: %w", dir, err)
		}
	}
	return nil
}
