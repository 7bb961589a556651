package vfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// Operation names passed to a MemFS fault hook.
const (
	OpCreate      = "create"
	OpOpen        = "open"
	OpWrite       = "write"
	OpSync        = "sync"
	OpTruncate    = "truncate"
	OpPreallocate = "preallocate"
	OpRemove      = "remove"
	OpRename      = "rename"
	OpSyncDir     = "syncdir"
	OpList        = "list"
)

// MemFS is a file system in memory that remembers what is durable, so that
// Crash can produce what a machine would find after a power failure. It is
// safe for concurrent use.
//
// The model, per file: the contents as of the last Sync, then the list of
// writes, truncations and preallocations made since, in order. Per
// directory: the names as of the last SyncDir, then the creations, renames
// and removals made since, in order. A crash keeps, for each file and each
// directory independently, the durable state plus a random prefix of the
// operations since; a write cut off by the crash may be torn at any byte
// (the bytes it did not reach keep their old contents). CrashOutOfOrder
// models a kernel that writes dirty pages back in any order instead: each
// sector of a file independently keeps its own random prefix of the writes.
// Directories are implicit: MkdirAll always succeeds and directories are
// always durable.
type MemFS struct {
	mu      sync.Mutex
	live    map[string]*memNode // the namespace the running process sees
	durable map[string]*memNode // the namespace as of each directory's last SyncDir
	pending map[string][]dirOp  // per directory, namespace changes since its last SyncDir
	locks   map[string]bool
	fault   func(op, name string) error
}

type memNode struct {
	data   []byte   // current contents
	synced []byte   // contents as of the last Sync
	ops    []fileOp // changes since the last Sync, in order
}

// fileOp is a write (size < 0) or a change of size (truncate, preallocate).
type fileOp struct {
	off  int64
	data []byte
	size int64
}

type dirOp struct {
	from, to string   // create: to; remove: from; rename: both
	node     *memNode // create and rename
}

// NewMemFS returns an empty in-memory file system.
func NewMemFS() *MemFS {
	return &MemFS{
		live:    map[string]*memNode{},
		durable: map[string]*memNode{},
		pending: map[string][]dirOp{},
		locks:   map[string]bool{},
	}
}

// SetFault installs a hook called before every operation with its name (the
// Op constants) and the file's path; a non-nil error fails the operation
// before it changes anything. Nil removes the hook.
func (m *MemFS) SetFault(f func(op, name string) error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fault = f
}

func (m *MemFS) check(op, name string) error {
	if m.fault == nil {
		return nil
	}
	if err := m.fault(op, name); err != nil {
		return &fs.PathError{Op: op, Path: name, Err: err}
	}
	return nil
}

func clean(name string) string { return filepath.Clean(name) }

func (m *MemFS) logDir(op dirOp, name string) {
	d := filepath.Dir(name)
	m.pending[d] = append(m.pending[d], op)
}

// Create implements FS.
func (m *MemFS) Create(name string) (File, error) {
	name = clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(OpCreate, name); err != nil {
		return nil, err
	}
	n := &memNode{}
	m.live[name] = n
	m.logDir(dirOp{to: name, node: n}, name)
	return &memFile{fs: m, node: n, name: name}, nil
}

// OpenReadWrite implements FS.
func (m *MemFS) OpenReadWrite(name string) (File, error) { return m.open(name, false) }

// Open implements FS.
func (m *MemFS) Open(name string) (File, error) { return m.open(name, true) }

func (m *MemFS) open(name string, readOnly bool) (File, error) {
	name = clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(OpOpen, name); err != nil {
		return nil, err
	}
	n, ok := m.live[name]
	if !ok {
		return nil, &fs.PathError{Op: OpOpen, Path: name, Err: fs.ErrNotExist}
	}
	return &memFile{fs: m, node: n, name: name, readOnly: readOnly}, nil
}

// Remove implements FS.
func (m *MemFS) Remove(name string) error {
	name = clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(OpRemove, name); err != nil {
		return err
	}
	if _, ok := m.live[name]; !ok {
		return &fs.PathError{Op: OpRemove, Path: name, Err: fs.ErrNotExist}
	}
	delete(m.live, name)
	m.logDir(dirOp{from: name}, name)
	return nil
}

// Rename implements FS.
func (m *MemFS) Rename(oldname, newname string) error {
	oldname, newname = clean(oldname), clean(newname)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(OpRename, oldname); err != nil {
		return err
	}
	if filepath.Dir(oldname) != filepath.Dir(newname) {
		return fmt.Errorf("vfs: rename %s to %s: not in one directory", oldname, newname)
	}
	n, ok := m.live[oldname]
	if !ok {
		return &fs.PathError{Op: OpRename, Path: oldname, Err: fs.ErrNotExist}
	}
	delete(m.live, oldname)
	m.live[newname] = n
	m.logDir(dirOp{from: oldname, to: newname, node: n}, newname)
	return nil
}

// MkdirAll implements FS; directories are implicit.
func (m *MemFS) MkdirAll(string) error { return nil }

// List implements FS.
func (m *MemFS) List(dir string) ([]string, error) {
	dir = clean(dir)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(OpList, dir); err != nil {
		return nil, err
	}
	var names []string
	for p := range m.live {
		if filepath.Dir(p) == dir {
			names = append(names, filepath.Base(p))
		}
	}
	slices.Sort(names)
	return names, nil
}

// SyncDir implements FS.
func (m *MemFS) SyncDir(dir string) error {
	dir = clean(dir)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(OpSyncDir, dir); err != nil {
		return err
	}
	applyDirOps(m.durable, m.pending[dir])
	delete(m.pending, dir)
	return nil
}

func applyDirOps(ns map[string]*memNode, ops []dirOp) {
	for _, op := range ops {
		if op.from != "" {
			delete(ns, op.from)
		}
		if op.to != "" {
			ns[op.to] = op.node
		}
	}
}

type memLock struct {
	m    *MemFS
	name string
}

func (l memLock) Close() error {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	delete(l.m.locks, l.name)
	return nil
}

// Lock implements FS. Locks are not files here and do not survive a crash.
func (m *MemFS) Lock(name string) (io.Closer, error) {
	name = clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.locks[name] {
		return nil, fmt.Errorf("vfs: %s is locked by another user", name)
	}
	m.locks[name] = true
	return memLock{m, name}, nil
}

// Crash returns the file system a machine would find after losing power
// now: per file and per directory, the durable state plus a random prefix
// of what happened since (see MemFS). Everything in the result is durable.
// m is left as it was; files open on m stay open on m only.
func (m *MemFS) Crash(rng *rand.Rand) *MemFS { return m.crash(rng, 0) }

// CrashOutOfOrder returns the file system a machine would find after losing
// power now, with the kernel having written the dirty pages of each file
// back in no particular order: directories as in Crash; each file's size is
// its size after a random prefix of the operations since its last Sync, and
// each sector (sector bytes, aligned) of it independently holds its
// contents after another random prefix of those operations, the synced
// contents for the empty prefix (bytes beyond the file's size at that point
// read as zero). A sector is written whole or not at all. So the unsynced
// part of a file may read as new sectors, then old ones, then new ones;
// what was synced is always kept. m is left as it was.
func (m *MemFS) CrashOutOfOrder(rng *rand.Rand, sector int) *MemFS {
	if sector <= 0 || rng == nil {
		panic("vfs: CrashOutOfOrder needs a random source and a positive sector size")
	}
	return m.crash(rng, sector)
}

// CrashSyncedOnly is the harshest crash: it keeps only what was synced.
func (m *MemFS) CrashSyncedOnly() *MemFS { return m.crash(nil, 0) }

// crash keeps, per file, a prefix of the unsynced operations (sector 0) or
// per sector prefixes of them (sector > 0); a nil rng keeps none.
func (m *MemFS) crash(rng *rand.Rand, sector int) *MemFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	ns := make(map[string]*memNode, len(m.durable))
	for p, n := range m.durable {
		ns[p] = n
	}
	// Sorted iteration keeps a crash from a given rng reproducible.
	dirs := make([]string, 0, len(m.pending))
	for d := range m.pending {
		dirs = append(dirs, d)
	}
	slices.Sort(dirs)
	for _, d := range dirs {
		ops := m.pending[d]
		k := 0
		if rng != nil {
			k = rng.IntN(len(ops) + 1)
		}
		applyDirOps(ns, ops[:k])
	}
	paths := make([]string, 0, len(ns))
	for p := range ns {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	out := NewMemFS()
	done := map[*memNode]*memNode{}
	for _, p := range paths {
		old := ns[p]
		n, ok := done[old]
		if !ok {
			var data []byte
			if sector > 0 {
				data = old.afterOutOfOrderCrash(rng, sector)
			} else {
				data = old.afterCrash(rng)
			}
			n = &memNode{data: data, synced: slices.Clone(data)}
			done[old] = n
		}
		out.live[p] = n
		out.durable[p] = n
	}
	return out
}

// afterCrash is the contents a crash leaves: the synced contents plus a
// random prefix of the later operations, the first one left out possibly
// torn at a random byte.
func (n *memNode) afterCrash(rng *rand.Rand) []byte {
	data := slices.Clone(n.synced)
	k := 0
	if rng != nil {
		k = rng.IntN(len(n.ops) + 1)
	}
	for _, op := range n.ops[:k] {
		data = op.apply(data)
	}
	if rng != nil && k < len(n.ops) && n.ops[k].size < 0 && len(n.ops[k].data) > 0 && rng.IntN(2) == 0 {
		torn := n.ops[k]
		torn.data = torn.data[:rng.IntN(len(torn.data))]
		data = torn.apply(data)
	}
	return data
}

// afterOutOfOrderCrash is the contents an out-of-order crash leaves (see
// CrashOutOfOrder).
func (n *memNode) afterOutOfOrderCrash(rng *rand.Rand, sector int) []byte {
	if len(n.ops) == 0 {
		return slices.Clone(n.synced)
	}
	// The size after each prefix of the operations.
	sizes := make([]int64, len(n.ops)+1)
	sizes[0] = int64(len(n.synced))
	for i, op := range n.ops {
		if op.size >= 0 {
			sizes[i+1] = op.size
		} else {
			sizes[i+1] = max(sizes[i], op.off+int64(len(op.data)))
		}
	}
	size := sizes[rng.IntN(len(sizes))]
	out := make([]byte, size)
	sectors := (size + int64(sector) - 1) / int64(sector)
	// Which prefix each sector keeps; then replay the operations once,
	// copying each sector out when its prefix has been applied.
	keep := make([][]int64, len(n.ops)+1)
	for s := range sectors {
		k := rng.IntN(len(n.ops) + 1)
		keep[k] = append(keep[k], s)
	}
	data := slices.Clone(n.synced)
	for k := range keep {
		if k > 0 {
			data = n.ops[k-1].apply(data)
		}
		for _, s := range keep[k] {
			lo, hi := s*int64(sector), min((s+1)*int64(sector), size)
			if lo < int64(len(data)) {
				copy(out[lo:hi], data[lo:min(hi, int64(len(data)))])
			}
		}
	}
	return out
}

func (op fileOp) apply(data []byte) []byte {
	if op.size >= 0 {
		return resize(data, op.size)
	}
	end := op.off + int64(len(op.data))
	if end > int64(len(data)) {
		data = resize(data, end)
	}
	copy(data[op.off:], op.data)
	return data
}

func resize(data []byte, size int64) []byte {
	if size <= int64(len(data)) {
		return data[:size]
	}
	return append(data, make([]byte, size-int64(len(data)))...)
}

// memFile is an open file of a MemFS. It refers to the file itself, not its
// name: it keeps working after the name is removed or renamed.
type memFile struct {
	fs       *MemFS
	node     *memNode
	name     string
	readOnly bool
	closed   bool
}

var errClosed = errors.New("vfs: file already closed")

func (f *memFile) usable(op string, write bool) error {
	if f.closed {
		return &fs.PathError{Op: op, Path: f.name, Err: errClosed}
	}
	if write && f.readOnly {
		return &fs.PathError{Op: op, Path: f.name, Err: fs.ErrPermission}
	}
	return f.fs.check(op, f.name)
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.usable("read", false); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: fs.ErrInvalid}
	}
	if off >= int64(len(f.node.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.node.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.usable(OpWrite, true); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, &fs.PathError{Op: OpWrite, Path: f.name, Err: fs.ErrInvalid}
	}
	op := fileOp{off: off, data: slices.Clone(p), size: -1}
	f.node.data = op.apply(f.node.data)
	f.node.ops = append(f.node.ops, op)
	return len(p), nil
}

func (f *memFile) Size() (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.usable("stat", false); err != nil {
		return 0, err
	}
	return int64(len(f.node.data)), nil
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.usable(OpSync, false); err != nil {
		return err
	}
	for _, op := range f.node.ops {
		f.node.synced = op.apply(f.node.synced)
	}
	f.node.ops = nil
	return nil
}

func (f *memFile) resize(op string, size int64, grow bool) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.usable(op, true); err != nil {
		return err
	}
	if size < 0 {
		return &fs.PathError{Op: op, Path: f.name, Err: fs.ErrInvalid}
	}
	if grow && size <= int64(len(f.node.data)) {
		return nil
	}
	rop := fileOp{size: size}
	f.node.data = rop.apply(f.node.data)
	f.node.ops = append(f.node.ops, rop)
	return nil
}

func (f *memFile) Truncate(size int64) error    { return f.resize(OpTruncate, size, false) }
func (f *memFile) Preallocate(size int64) error { return f.resize(OpPreallocate, size, true) }

func (f *memFile) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return &fs.PathError{Op: "close", Path: f.name, Err: errClosed}
	}
	f.closed = true
	return nil
}

// String describes the file system's files and what is unsynced, for
// test failure messages.
func (m *MemFS) String() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	paths := make([]string, 0, len(m.live))
	for p := range m.live {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	var b strings.Builder
	for _, p := range paths {
		n := m.live[p]
		_, durable := m.durable[p]
		fmt.Fprintf(&b, "%s: %d bytes, %d synced, %d unsynced ops, name durable=%v\n",
			p, len(n.data), len(n.synced), len(n.ops), durable && m.durable[p] == n)
	}
	return b.String()
}
