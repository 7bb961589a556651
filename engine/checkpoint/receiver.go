package checkpoint

import (
	"fmt"
	"path/filepath"

	"github.com/vestalabs/vesta/engine/storage/vfs"
	"github.com/vestalabs/vesta/internal/contract"
)

// Receiver assembles a checkpoint file sent in chunks by a peer (the raw
// bytes of the peer's file, from a Source) into a temporary file in dir.
// Chunks must arrive in order: Offset tells where the next one starts, and
// where the sender resumes after a dropped connection (the same Receiver
// takes the resumed chunks). The file's own checksums protect it end to end:
// the header is checked (checksum, cluster, slot, size) as soon as its bytes
// have arrived, every block at Finish. A Receiver is not safe for
// concurrent use; it lives until Finish or Abort, one of which the caller
// must call.
type Receiver struct {
	fsys  vfs.FS
	dir   string
	path  string // final
	tmp   string
	f     vfs.File
	want  Meta
	total int64
	off   int64
	hdr   [maxHeaderLen]byte // the file's first bytes, until the header is checked
	hdrOK bool
	err   error // sticky: the header was refused
	done  bool
}

// NewReceiver creates a temporary file in dir (created if missing) for a
// checkpoint of totalSize bytes (the sender's Source.Size). Of want only
// ClusterID and Slot are used: a file whose header names another cluster or
// slot, or implies another size, is refused with a *MismatchError.
func NewReceiver(fsys vfs.FS, dir string, want Meta, totalSize int64) (*Receiver, error) {
	if want.ClusterID == 0 {
		return nil, fmt.Errorf("checkpoint: receiver: cluster ID 0 (cluster IDs start at 1)")
	}
	if maxSize := fileSizeFor(maxHeaderLen, MaxImageSize, 1); totalSize < minFileSize || totalSize > maxSize {
		return nil, fmt.Errorf("checkpoint: receiver: size %d outside [%d, %d]", totalSize, minFileSize, maxSize)
	}
	if err := fsys.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("checkpoint: receiver in %s: %w", dir, err)
	}
	path := filepath.Join(dir, FileName(want.Slot))
	tmp := tempPath(path)
	f, err := fsys.Create(tmp)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: receive %s: %w", path, err)
	}
	return &Receiver{fsys: fsys, dir: dir, path: path, tmp: tmp, f: f, want: want, total: totalSize}, nil
}

// Offset is the offset of the next chunk expected: the number of bytes
// received so far.
func (r *Receiver) Offset() int64 { return r.off }

// Size is the file's size as given to NewReceiver.
func (r *Receiver) Size() int64 { return r.total }

// Write writes chunk, which must start at Offset and not run past the
// file's size; anything else is refused (with an error naming both offsets)
// and changes nothing. chunk is the caller's again when Write returns. A
// failed file write leaves Offset where it was, so the sender may resend
// from there. Once the header has arrived it is checked; a bad or foreign
// header fails this Write and every later call but Abort.
func (r *Receiver) Write(offset int64, chunk []byte) error {
	if r.done {
		return ErrReceiverDone
	}
	if r.err != nil {
		return r.err
	}
	if offset != r.off {
		return fmt.Errorf("checkpoint: receive %s: chunk at offset %d, expected offset %d", r.path, offset, r.off)
	}
	if int64(len(chunk)) > r.total-r.off {
		return fmt.Errorf("checkpoint: receive %s: chunk of %d bytes at offset %d runs past the file's size %d",
			r.path, len(chunk), offset, r.total)
	}
	if _, err := r.f.WriteAt(chunk, offset); err != nil {
		return fmt.Errorf("checkpoint: receive %s: %w", r.path, err)
	}
	if offset < maxHeaderLen {
		copy(r.hdr[offset:], chunk)
	}
	r.off += int64(len(chunk))
	if !r.hdrOK && r.off >= fixedHeaderLen && r.off >= int64(min(headerNeed(r.hdr[:], int(r.off)), int(r.total))) {
		if err := r.checkHeader(); err != nil {
			r.err = err
			return err
		}
		r.hdrOK = true
	}
	return nil
}

// checkHeader checks the header received (r.hdr holds it whole, or the
// whole file when the file is shorter).
func (r *Receiver) checkHeader() error {
	h, hlen, err := decodeHeader(r.hdr[:min(int64(maxHeaderLen), r.off)], r.tmp)
	if err != nil {
		return err
	}
	switch {
	case h.meta.ClusterID != r.want.ClusterID:
		return &MismatchError{File: r.path, Field: "cluster", Want: r.want.ClusterID, Found: h.meta.ClusterID}
	case h.meta.Slot != r.want.Slot:
		return &MismatchError{File: r.path, Field: "slot", Want: uint64(r.want.Slot), Found: uint64(h.meta.Slot)}
	}
	if size := fileSizeFor(hlen, h.meta.Size, h.meta.BlockSize); size != r.total {
		return &MismatchError{File: r.path, Field: "size", Want: uint64(r.total), Found: uint64(size)}
	}
	return nil
}

// Finish completes the transfer: Offset must equal the size (otherwise
// Finish fails and the Receiver stays usable). It syncs the file, reads it
// back and verifies the header and every block, closes it, renames it to
// its final name (replacing any checkpoint of the same slot) and syncs the
// directory; the checkpoint is durable when Finish returns nil. On any other
// failure the temporary file is removed. Either way the Receiver is done.
func (r *Receiver) Finish() (Info, error) {
	if r.done {
		return Info{}, ErrReceiverDone
	}
	if r.err != nil {
		return Info{}, r.err
	}
	if r.off != r.total {
		return Info{}, fmt.Errorf("checkpoint: receive %s: finish at offset %d of %d", r.path, r.off, r.total)
	}
	contract.Invariant(r.hdrOK, "checkpoint: receiver complete without a checked header")
	r.done = true
	fail := func(err error, closed bool) (Info, error) {
		if !closed {
			r.f.Close()
		}
		r.fsys.Remove(r.tmp) // best effort: Prune removes what is left
		return Info{}, err
	}
	if err := r.f.Sync(); err != nil {
		return fail(fmt.Errorf("checkpoint: receive %s: sync: %w", r.path, err), false)
	}
	rd, err := newReader(r.f, r.tmp, false)
	if err == nil {
		err = r.checkHeaderAgain(rd)
	}
	if err == nil {
		err = rd.verifyRest()
	}
	if err != nil {
		return fail(err, false)
	}
	info := rd.Info()
	info.Path = r.path
	if err := r.f.Close(); err != nil {
		return fail(fmt.Errorf("checkpoint: receive %s: close: %w", r.path, err), true)
	}
	if err := r.fsys.Rename(r.tmp, r.path); err != nil {
		return fail(fmt.Errorf("checkpoint: receive %s: rename: %w", r.path, err), true)
	}
	if err := r.fsys.SyncDir(r.dir); err != nil {
		return Info{}, fmt.Errorf("checkpoint: receive %s: sync directory (the checkpoint is complete but may not survive a crash): %w", r.path, err)
	}
	return info, nil
}

// checkHeaderAgain compares the header read back from the file with the
// expectation (the file, not the chunks' copy, is what is kept).
func (r *Receiver) checkHeaderAgain(rd *Reader) error {
	m := rd.Meta()
	switch {
	case m.ClusterID != r.want.ClusterID:
		return &MismatchError{File: r.path, Field: "cluster", Want: r.want.ClusterID, Found: m.ClusterID}
	case m.Slot != r.want.Slot:
		return &MismatchError{File: r.path, Field: "slot", Want: uint64(r.want.Slot), Found: uint64(m.Slot)}
	}
	return nil
}

// Abort gives the transfer up and removes the temporary file. It may be
// called at any time; after Finish it does nothing.
func (r *Receiver) Abort() error {
	if r.done {
		return nil
	}
	r.done = true
	r.f.Close()
	if err := r.fsys.Remove(r.tmp); err != nil {
		return fmt.Errorf("checkpoint: abort receive %s: %w", r.path, err)
	}
	return nil
}
