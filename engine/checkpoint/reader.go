package checkpoint

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/vestalabs/vesta/engine/storage/vfs"
	"github.com/vestalabs/vesta/internal/contract"
)

// readHeader reads and checks the header of the open checkpoint file f
// (path names it in errors), and checks the file's size against it and,
// where path's last element is a checkpoint name, the slot against the name.
func readHeader(f vfs.File, path string) (h header, hlen int, size int64, err error) {
	if size, err = f.Size(); err != nil {
		return header{}, 0, 0, fmt.Errorf("checkpoint: %s: %w", path, err)
	}
	var b [maxHeaderLen]byte
	want := int(min(size, maxHeaderLen))
	n, err := f.ReadAt(b[:want], 0)
	if n < want {
		if err == nil || errors.Is(err, io.EOF) { // shrank since Size
			return header{}, 0, 0, corrupt(path, int64(n), "file ends at %d while reading its header", n)
		}
		return header{}, 0, 0, fmt.Errorf("checkpoint: read %s: %w", path, err)
	}
	if h, hlen, err = decodeHeader(b[:want], path); err != nil {
		return header{}, 0, 0, err
	}
	if err := checkSize(path, &h, hlen, size); err != nil {
		return header{}, 0, 0, err
	}
	if slot, ok := ParseFileName(filepath.Base(path)); ok && slot != h.meta.Slot {
		return header{}, 0, 0, corrupt(path, 16, "header records slot %d, the file name slot %d", h.meta.Slot, slot)
	}
	return h, hlen, size, nil
}

// Reader reads a checkpoint's image, verifying each block's checksum before
// handing out any of its bytes. It is not safe for concurrent use.
type Reader struct {
	f     vfs.File
	owns  bool // Close closes f
	info  Info
	seed  uint32
	bs    int64
	buf   []byte // one block and its checksum
	blk   []byte // the verified, unread rest of the current block
	next  int64  // file offset of the next block
	idx   uint64 // index of the next block
	left  int64  // image bytes in blocks not yet loaded
	err   error  // sticky
	close bool
}

// Open opens the checkpoint file at path for reading. The header and the
// file's size are verified now; each block is verified as Read reaches it,
// and a mismatch or a short file makes Read return a *CorruptionError
// naming the file and the block's offset (and every later Read the same).
// The caller closes the Reader.
func Open(fsys vfs.FS, path string) (*Reader, error) {
	f, err := fsys.Open(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: open %s: %w", path, err)
	}
	r, err := newReader(f, path, true)
	if err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

func newReader(f vfs.File, path string, owns bool) (*Reader, error) {
	h, hlen, size, err := readHeader(f, path)
	if err != nil {
		return nil, err
	}
	bs := int64(h.meta.BlockSize)
	return &Reader{
		f:    f,
		owns: owns,
		info: Info{Path: path, Meta: h.meta, FileSize: size},
		seed: blockSeed(h.fileID),
		bs:   bs,
		buf:  make([]byte, min(bs, h.meta.Size)+crcLen),
		next: int64(hlen),
		left: h.meta.Size,
	}, nil
}

// Meta returns the checkpoint's header. Members is the Reader's; do not modify it.
func (r *Reader) Meta() Meta { return r.info.Meta }

// Info returns the checkpoint's path, header and file size.
func (r *Reader) Info() Info { return r.info }

// Read implements io.Reader over the image: it returns only verified bytes,
// io.EOF after the last one.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if len(r.blk) == 0 {
		if r.left == 0 {
			r.err = io.EOF
			return 0, io.EOF
		}
		if err := r.load(); err != nil {
			r.err = err
			return 0, err
		}
	}
	n := copy(p, r.blk)
	r.blk = r.blk[n:]
	return n, nil
}

// load reads and verifies the next block.
func (r *Reader) load() error {
	if r.close {
		return errors.New("checkpoint: read after Close")
	}
	n := min(r.bs, r.left)
	b := r.buf[:n+crcLen]
	k, err := r.f.ReadAt(b, r.next)
	if k < len(b) {
		if err == nil || errors.Is(err, io.EOF) {
			return corrupt(r.info.Path, r.next+int64(k), "file ends inside block %d (%d of its %d bytes with checksum)", r.idx, k, len(b))
		}
		return fmt.Errorf("checkpoint: read %s at offset %d: %w", r.info.Path, r.next, err)
	}
	stored := binary.LittleEndian.Uint32(b[n:])
	if computed := blockCRC(r.seed, r.idx, b[:n]); stored != computed {
		return corrupt(r.info.Path, r.next, "block %d checksum mismatch: stored %08x, computed %08x", r.idx, stored, computed)
	}
	r.blk = b[:n]
	r.next += int64(len(b))
	r.left -= n
	r.idx++
	contract.Invariant(r.left > 0 || r.next == r.info.FileSize, "checkpoint: last block does not end the file")
	return nil
}

// verifyRest verifies every block not yet read, discarding the bytes.
func (r *Reader) verifyRest() error {
	if r.err != nil && r.err != io.EOF {
		return r.err
	}
	for r.left > 0 {
		if err := r.load(); err != nil {
			r.err = err
			return err
		}
	}
	r.blk = nil
	return nil
}

// Close closes the file (unless the Reader was made over a file it does not
// own). Read fails afterwards.
func (r *Reader) Close() error {
	if r.close {
		return nil
	}
	r.close = true
	r.blk = nil
	if r.err == nil {
		r.err = errors.New("checkpoint: read after Close")
	}
	if r.owns {
		return r.f.Close()
	}
	return nil
}

// Verify reads the whole checkpoint file at path and checks its header,
// size and every block, returning a *CorruptionError for damage.
func Verify(fsys vfs.FS, path string) error {
	r, err := Open(fsys, path)
	if err != nil {
		return err
	}
	defer r.Close()
	return r.verifyRest()
}

// OpenNewestValid opens the newest checkpoint in dir that verifies whole
// (every block is read once here, and checked again as the caller reads).
// Each newer checkpoint it skips is logged at Warn on log (slog.Default()
// when nil) with its path and the reason. When none verifies it returns an
// error that errors.Is ErrNoCheckpoint. The caller checks that the returned
// checkpoint is of its cluster (Meta().ClusterID) and closes it.
func OpenNewestValid(fsys vfs.FS, dir string, log *slog.Logger) (*Reader, error) {
	if log == nil {
		log = slog.Default()
	}
	infos, err := List(fsys, dir)
	if err != nil {
		return nil, err
	}
	skipped := 0
	for _, info := range infos {
		err := info.Err
		if err == nil {
			var r *Reader
			if r, err = Open(fsys, info.Path); err == nil {
				if err = r.verifyRest(); err == nil {
					r.Close()
					r, err = Open(fsys, info.Path)
					if err == nil {
						return r, nil
					}
				} else {
					r.Close()
				}
			}
		}
		skipped++
		log.Warn("checkpoint: skipping damaged checkpoint", "file", info.Path, "slot", uint64(info.Meta.Slot), "reason", err.Error())
	}
	if skipped > 0 {
		return nil, fmt.Errorf("%w in %s: all %d checkpoints are damaged", ErrNoCheckpoint, dir, skipped)
	}
	return nil, fmt.Errorf("%w in %s", ErrNoCheckpoint, dir)
}

// Source gives a sender a checkpoint file's raw bytes for transfer. Its
// header is verified when it is opened; its blocks are not (the receiver
// verifies them). It is safe for concurrent use.
type Source struct {
	f    vfs.File
	info Info
}

// OpenSource opens the checkpoint at path for sending. The caller closes it.
func OpenSource(fsys vfs.FS, path string) (*Source, error) {
	f, err := fsys.Open(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: open %s: %w", path, err)
	}
	h, _, size, err := readHeader(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Source{f: f, info: Info{Path: path, Meta: h.meta, FileSize: size}}, nil
}

// Info returns the checkpoint's path, header and file size.
func (s *Source) Info() Info { return s.info }

// Size is the file's size: what the receiver's NewReceiver is given.
func (s *Source) Size() int64 { return s.info.FileSize }

// ReadAt reads the file's raw bytes at off into p (io.ReaderAt: io.EOF at
// the end). p is the caller's.
func (s *Source) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.info.FileSize {
		return 0, io.EOF
	}
	if rest := s.info.FileSize - off; int64(len(p)) > rest {
		n, err := s.f.ReadAt(p[:rest], off)
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	return s.f.ReadAt(p, off)
}

// Close closes the file.
func (s *Source) Close() error { return s.f.Close() }
