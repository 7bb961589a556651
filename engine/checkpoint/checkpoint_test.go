package checkpoint

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vestalabs/vesta/engine/storage/vfs"
	"github.com/vestalabs/vesta/engine/wire"
)

const testDir = "/ckpt"

func testMeta(slot wire.Slot) Meta {
	return Meta{
		ClusterID: 7,
		Replica:   2,
		Slot:      slot,
		Ballot:    wire.Ballot{Round: 3, Replica: 1},
		Members:   []wire.ReplicaID{1, 2, 3},
	}
}

func randImage(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// fillWith returns a fill that writes img in pieces of step bytes.
func fillWith(img []byte, step int) func(io.Writer) error {
	return func(w io.Writer) error {
		for p := img; len(p) > 0; {
			n := min(step, len(p))
			if _, err := w.Write(p[:n]); err != nil {
				return err
			}
			p = p[n:]
		}
		return nil
	}
}

func mustWrite(t *testing.T, fsys vfs.FS, dir string, meta Meta, img []byte) Info {
	t.Helper()
	info, err := Write(fsys, dir, meta, fillWith(img, 1000))
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	return info
}

func readAll(t *testing.T, fsys vfs.FS, path string) (Meta, []byte) {
	t.Helper()
	r, err := Open(fsys, path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return r.Meta(), b
}

type fataler interface {
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

func fileBytes(t fataler, fsys vfs.FS, path string) []byte {
	f, err := fsys.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, size)
	if _, err := f.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return b
}

func putFile(t fataler, fsys vfs.FS, path string, b []byte) {
	f, err := fsys.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func roundTrip(t *testing.T, fsys vfs.FS, dir string) {
	for _, tc := range []struct {
		size int
		bs   uint32
	}{{0, 0}, {1, 0}, {200 << 10, 0}, {DefaultBlockSize, 0}, {1000, 7}, {1000, 1000}, {1001, 1000}} {
		meta := testMeta(wire.Slot(100 + tc.size + int(tc.bs)))
		meta.BlockSize = tc.bs
		img := randImage(uint64(tc.size), tc.size)
		info := mustWrite(t, fsys, dir, meta, img)
		bs := cmpOr(tc.bs, DefaultBlockSize)
		if info.Meta.Size != int64(tc.size) || info.Meta.BlockSize != bs {
			t.Fatalf("Info.Meta size %d block %d, want %d %d", info.Meta.Size, info.Meta.BlockSize, tc.size, bs)
		}
		if want := filepath.Join(dir, FileName(meta.Slot)); info.Path != want {
			t.Fatalf("path %s, want %s", info.Path, want)
		}
		if got := int64(len(fileBytes(t, fsys, info.Path))); got != info.FileSize {
			t.Fatalf("file is %d bytes, Info says %d", got, info.FileSize)
		}
		got, b := readAll(t, fsys, info.Path)
		if !bytes.Equal(b, img) {
			t.Fatalf("size %d block %d: image differs", tc.size, bs)
		}
		meta.Size, meta.BlockSize = int64(tc.size), bs
		if !metaEqual(got, meta) || !metaEqual(info.Meta, meta) {
			t.Fatalf("meta %+v, Info %+v, want %+v", got, info.Meta, meta)
		}
		if err := Verify(fsys, info.Path); err != nil {
			t.Fatal(err)
		}
	}
	infos, err := List(fsys, dir)
	if err != nil || len(infos) != 7 {
		t.Fatalf("List: %d infos, %v", len(infos), err)
	}
	for i, in := range infos {
		if in.Err != nil || (i > 0 && in.Meta.Slot >= infos[i-1].Meta.Slot) {
			t.Fatalf("List[%d] = %+v: not valid newest first", i, in)
		}
	}
}

func cmpOr(a, b uint32) uint32 {
	if a != 0 {
		return a
	}
	return b
}

func metaEqual(a, b Meta) bool {
	return a.ClusterID == b.ClusterID && a.Replica == b.Replica && a.Slot == b.Slot && a.Ballot == b.Ballot &&
		slices.Equal(a.Members, b.Members) && a.Size == b.Size && a.BlockSize == b.BlockSize
}

func TestRoundTripMemFS(t *testing.T) { roundTrip(t, vfs.NewMemFS(), testDir) }

func TestRoundTripOS(t *testing.T) { roundTrip(t, vfs.Default, filepath.Join(t.TempDir(), "ckpt")) }

func TestWriteDoesNotKeepCallerSlices(t *testing.T) {
	fsys := vfs.NewMemFS()
	meta := testMeta(5)
	info := mustWrite(t, fsys, testDir, meta, []byte("x"))
	meta.Members[0] = 99
	if info.Meta.Members[0] != 1 {
		t.Fatal("Info shares the caller's member slice")
	}
}

func TestWriteRefusesBadMeta(t *testing.T) {
	many := make([]wire.ReplicaID, MaxMembers+1)
	for i := range many {
		many[i] = wire.ReplicaID(i + 1)
	}
	for name, mut := range map[string]func(*Meta){
		"cluster 0":     func(m *Meta) { m.ClusterID = 0 },
		"replica 0":     func(m *Meta) { m.Replica = 0 },
		"no members":    func(m *Meta) { m.Members = nil },
		"65 members":    func(m *Meta) { m.Members = many },
		"member 0":      func(m *Meta) { m.Members = []wire.ReplicaID{0, 1} },
		"unsorted":      func(m *Meta) { m.Members = []wire.ReplicaID{2, 1} },
		"repeat":        func(m *Meta) { m.Members = []wire.ReplicaID{1, 1} },
		"block too big": func(m *Meta) { m.BlockSize = MaxBlockSize + 1 },
	} {
		fsys := vfs.NewMemFS()
		m := testMeta(1)
		mut(&m)
		if _, err := Write(fsys, testDir, m, fillWith(nil, 1)); err == nil {
			t.Errorf("%s: Write succeeded", name)
		}
		if names, _ := fsys.List(testDir); len(names) != 0 {
			t.Errorf("%s: left %v", name, names)
		}
	}
}

func TestWriteFillErrorLeavesNothing(t *testing.T) {
	fsys := vfs.NewMemFS()
	boom := errors.New("boom")
	_, err := Write(fsys, testDir, testMeta(1), func(w io.Writer) error {
		w.Write([]byte("partial"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err %v, want boom", err)
	}
	if names, _ := fsys.List(testDir); len(names) != 0 {
		t.Fatalf("left %v", names)
	}
	// A write error that fill swallows still fails Write.
	injected := errors.New("injected")
	fsys.SetFault(func(op, name string) error {
		if op == vfs.OpWrite {
			return injected
		}
		return nil
	})
	meta := testMeta(2)
	meta.BlockSize = 4
	_, err = Write(fsys, testDir, meta, func(w io.Writer) error {
		w.Write([]byte("12345678"))
		return nil
	})
	if !errors.Is(err, injected) {
		t.Fatalf("err %v, want injected", err)
	}
}

// smallCheckpoint writes a checkpoint small enough to corrupt byte by byte:
// 3 members, 50 bytes in blocks of 16 (4 blocks, the last short).
func smallCheckpoint(t *testing.T, fsys vfs.FS) (Info, []byte) {
	meta := testMeta(42)
	meta.BlockSize = 16
	info := mustWrite(t, fsys, testDir, meta, randImage(9, 50))
	b := fileBytes(t, fsys, info.Path)
	if want := int64(headerLen(3, 0) + 50 + 4*4); int64(len(b)) != want || info.FileSize != want {
		t.Fatalf("file %d bytes, Info %d, want %d", len(b), info.FileSize, want)
	}
	return info, b
}

// detect opens and reads the file whole in both ways and returns the
// *CorruptionError each found.
func detect(t *testing.T, fsys vfs.FS, path string) (verify, read *CorruptionError) {
	t.Helper()
	if err := Verify(fsys, path); !errors.As(err, &verify) {
		t.Fatalf("Verify: %v, want a *CorruptionError", err)
	}
	r, err := Open(fsys, path)
	if err == nil {
		_, err = io.ReadAll(r)
		r.Close()
	}
	if !errors.As(err, &read) {
		t.Fatalf("Open/Read: %v, want a *CorruptionError", err)
	}
	return verify, read
}

func TestEveryByteCorruptionDetected(t *testing.T) {
	fsys := vfs.NewMemFS()
	info, good := smallCheckpoint(t, fsys)
	hlen := headerLen(3, 0)
	for i := range good {
		for _, flip := range []byte{0x01, 0x80, 0xff} {
			bad := slices.Clone(good)
			bad[i] ^= flip
			putFile(t, fsys, info.Path, bad)
			v, r := detect(t, fsys, info.Path)
			for _, e := range []*CorruptionError{v, r} {
				if e.File != info.Path || e.Offset > int64(i) {
					t.Fatalf("byte %d ^%#x: %v: wrong file or offset after the damage", i, flip, e)
				}
			}
			infos, err := List(fsys, testDir)
			if err != nil || len(infos) != 1 {
				t.Fatalf("List: %v %v", infos, err)
			}
			if (infos[0].Err != nil) != (i < hlen) {
				t.Fatalf("byte %d: List Err %v (header is %d bytes)", i, infos[0].Err, hlen)
			}
		}
	}
	putFile(t, fsys, info.Path, good)
	if err := Verify(fsys, info.Path); err != nil {
		t.Fatal(err)
	}
}

func TestTruncationDetected(t *testing.T) {
	fsys := vfs.NewMemFS()
	info, good := smallCheckpoint(t, fsys)
	for n := range len(good) {
		putFile(t, fsys, info.Path, good[:n])
		v, _ := detect(t, fsys, info.Path)
		if !strings.Contains(v.Reason, "bytes") {
			t.Fatalf("cut at %d: reason %q does not say the size", n, v.Reason)
		}
	}
	putFile(t, fsys, info.Path, append(slices.Clone(good), 0))
	detect(t, fsys, info.Path)
}

// TestReaderShortFile cuts the file after Open: Read reports it.
func TestReaderShortFile(t *testing.T) {
	fsys := vfs.NewMemFS()
	info, good := smallCheckpoint(t, fsys)
	r, err := Open(fsys, info.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f, _ := fsys.OpenReadWrite(info.Path)
	f.Truncate(int64(len(good) - 10))
	f.Close()
	_, err = io.ReadAll(r)
	var ce *CorruptionError
	if !errors.As(err, &ce) || !strings.Contains(ce.Reason, "ends inside block 2") {
		t.Fatalf("err %v, want a short last block", err)
	}
	if _, err2 := r.Read(make([]byte, 1)); err2 != err {
		t.Fatalf("error not sticky: %v", err2)
	}
}

// forge builds a header with a valid checksum around whatever fields mut
// sets, so that the value checks (not the checksum) must refuse it.
func forge(t *testing.T, good []byte, mut func(b []byte) []byte) []byte {
	t.Helper()
	b := mut(slices.Clone(good))
	if len(b) < fixedHeaderLen {
		return b
	}
	m := int(binary.LittleEndian.Uint32(b[60:64]))
	if m >= 1 && m <= MaxMembers && len(b) >= headerLen(m, 0) {
		h := headerLen(m, 0)
		binary.LittleEndian.PutUint32(b[h-4:h], crc32.Checksum(b[:h-4], castagnoli))
	}
	return b
}

func TestHostileHeadersRefused(t *testing.T) {
	fsys := vfs.NewMemFS()
	info, good := smallCheckpoint(t, fsys)
	le := binary.LittleEndian
	for _, tc := range []struct {
		name, reason string
		mut          func(b []byte) []byte
	}{
		{"65 members", "member count 65", func(b []byte) []byte { le.PutUint32(b[60:], 65); return b }},
		{"huge member count", "member count 4294967295", func(b []byte) []byte { le.PutUint32(b[60:], 1<<32-1); return b }},
		{"0 members", "member count 0", func(b []byte) []byte { le.PutUint32(b[60:], 0); return b }},
		{"block size 0", "block size 0", func(b []byte) []byte { le.PutUint32(b[56:], 0); return b }},
		{"block size huge", "block size 4294967295", func(b []byte) []byte { le.PutUint32(b[56:], 1<<32-1); return b }},
		{"size mismatch", "its header implies", func(b []byte) []byte { le.PutUint64(b[32:], 51); return b }},
		{"size huge", "exceeds the maximum", func(b []byte) []byte { le.PutUint64(b[32:], 1<<63); return b }},
		{"cluster 0", "cluster ID 0", func(b []byte) []byte { le.PutUint64(b[8:], 0); return b }},
		{"replica 0", "writer replica ID 0", func(b []byte) []byte { le.PutUint32(b[48:], 0); return b }},
		{"file ID 0", "file ID 0", func(b []byte) []byte { le.PutUint64(b[40:], 0); return b }},
		{"member 0", "member 1 is 0", func(b []byte) []byte { le.PutUint32(b[68:], 0); return b }},
		{"members repeat", "member 2 is 2", func(b []byte) []byte { le.PutUint32(b[72:], 2); return b }},
		{"version 3", "format version 3", func(b []byte) []byte { le.PutUint16(b[4:], 3); return b }},
		{"membership section huge", "membership section of 4294967295 bytes", func(b []byte) []byte { le.PutUint32(b[76:], 1<<32-1); return b }},
		{"reserved", "reserved", func(b []byte) []byte { b[7] = 1; return b }},
		{"magic", "bad magic", func(b []byte) []byte { copy(b, "VSTA"); return b }},
		{"slot not the name's", "file name slot", func(b []byte) []byte { le.PutUint64(b[16:], 43); return b }},
	} {
		putFile(t, fsys, info.Path, forge(t, good, tc.mut))
		infos, _ := List(fsys, testDir)
		var ce *CorruptionError
		if len(infos) != 1 || !errors.As(infos[0].Err, &ce) || !strings.Contains(ce.Reason, tc.reason) {
			t.Errorf("%s: List gave %+v, want a *CorruptionError saying %q", tc.name, infos, tc.reason)
		}
		v, _ := detect(t, fsys, info.Path)
		if !strings.Contains(v.Reason, tc.reason) {
			t.Errorf("%s: Verify said %q, want %q", tc.name, v.Reason, tc.reason)
		}
	}
}

// FuzzOpen: no file makes Open, Read or List panic.
func FuzzOpen(f *testing.F) {
	fsys := vfs.NewMemFS()
	meta := testMeta(1)
	meta.BlockSize = 8
	info, err := Write(fsys, testDir, meta, fillWith(randImage(1, 30), 7))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(fileBytesF(fsys, info.Path))
	f.Add([]byte("VCKP"))
	f.Fuzz(func(t *testing.T, b []byte) {
		fsys := vfs.NewMemFS()
		path := filepath.Join(testDir, FileName(1))
		putFile(t, fsys, path, b)
		List(fsys, testDir)
		if r, err := Open(fsys, path); err == nil {
			io.Copy(io.Discard, r)
			r.Close()
		}
	})
}

func fileBytesF(fsys vfs.FS, path string) []byte {
	f, _ := fsys.Open(path)
	defer f.Close()
	n, _ := f.Size()
	b := make([]byte, n)
	f.ReadAt(b, 0)
	return b
}

func TestRandomGarbageNeverPanics(t *testing.T) {
	fsys := vfs.NewMemFS()
	_, good := smallCheckpoint(t, fsys)
	path := filepath.Join(testDir, FileName(42))
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		b := slices.Clone(good[:rng.IntN(len(good)+1)])
		for range 1 + rng.IntN(4) {
			if len(b) > 0 {
				b[rng.IntN(len(b))] = byte(rng.Uint32())
			}
		}
		if rng.IntN(2) == 0 { // give the damage a valid header checksum half the time
			b = forge(t, b, func(b []byte) []byte { return b })
		}
		putFile(t, fsys, path, b)
		// A forged header may verify (it is a valid header of other meta),
		// but then the blocks must be untouched and the file ID kept.
		hlen := headerLen(3, 0)
		if err := Verify(fsys, path); err == nil && (len(b) != len(good) || !bytes.Equal(b[hlen:], good[hlen:]) ||
			!bytes.Equal(b[40:48], good[40:48])) {
			t.Fatalf("damaged file %x verified", b)
		}
	}
}

func TestOpenNewestValidFallsBack(t *testing.T) {
	fsys := vfs.NewMemFS()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	if _, err := OpenNewestValid(fsys, testDir, log); !errors.Is(err, ErrNoCheckpoint) {
		t.Fatalf("empty dir: %v, want ErrNoCheckpoint", err)
	}
	imgs := map[wire.Slot][]byte{}
	for _, s := range []wire.Slot{10, 20, 30} {
		meta := testMeta(s)
		meta.BlockSize = 64
		imgs[s] = randImage(uint64(s), 1000)
		mustWrite(t, fsys, testDir, meta, imgs[s])
	}
	corruptAt := func(s wire.Slot, off int) {
		p := filepath.Join(testDir, FileName(s))
		b := fileBytes(t, fsys, p)
		b[off] ^= 0x10
		putFile(t, fsys, p, b)
	}
	corruptAt(30, 500) // a block: only a full verify finds it
	corruptAt(20, 3)   // the header
	r, err := OpenNewestValid(fsys, testDir, log)
	if err != nil {
		t.Fatal(err)
	}
	if r.Meta().Slot != 10 {
		t.Fatalf("opened slot %d, want 10", r.Meta().Slot)
	}
	b, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(b, imgs[10]) {
		t.Fatalf("image of slot 10 differs: %v", err)
	}
	out := logs.String()
	for _, want := range []string{FileName(30), "block 6 checksum mismatch", FileName(20), "bad magic"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	corruptAt(10, len(fileBytes(t, fsys, filepath.Join(testDir, FileName(10))))-1)
	if _, err := OpenNewestValid(fsys, testDir, log); !errors.Is(err, ErrNoCheckpoint) || !strings.Contains(err.Error(), "3 checkpoints") {
		t.Fatalf("all damaged: %v", err)
	}
}

func TestPrune(t *testing.T) {
	fsys := vfs.NewMemFS()
	for s := wire.Slot(1); s <= 5; s++ {
		mustWrite(t, fsys, testDir, testMeta(s*10), []byte("image"))
	}
	temps := []string{FileName(60) + ".0123456789abcdef.tmp", FileName(5) + ".x.tmp"}
	for _, n := range append(slices.Clone(temps), "unrelated") {
		putFile(t, fsys, filepath.Join(testDir, n), []byte("junk"))
	}
	if err := Prune(fsys, testDir, -1); err == nil {
		t.Fatal("Prune(-1) succeeded")
	}
	if err := Prune(fsys, testDir, 0); err != nil { // DefaultKeep
		t.Fatal(err)
	}
	want := []string{FileName(40), FileName(50), "unrelated"}
	// What Prune removed is durable: a crash keeping only synced state agrees.
	for _, f := range []vfs.FS{fsys, fsys.CrashSyncedOnly()} {
		if names, _ := f.List(testDir); !slices.Equal(names, want) {
			t.Fatalf("after Prune: %v, want %v", names, want)
		}
	}
	// A newer damaged checkpoint does not count toward keep, and is left.
	putFile(t, fsys, filepath.Join(testDir, FileName(70)), []byte("not a checkpoint"))
	mustWrite(t, fsys, testDir, testMeta(60), []byte("image"))
	if err := Prune(fsys, testDir, 2); err != nil {
		t.Fatal(err)
	}
	want = []string{FileName(50), FileName(60), FileName(70), "unrelated"}
	if names, _ := fsys.List(testDir); !slices.Equal(names, want) {
		t.Fatalf("after Prune: %v, want %v", names, want)
	}
	if err := Prune(fsys, testDir, 1); err != nil {
		t.Fatal(err)
	}
	want = []string{FileName(60), FileName(70), "unrelated"}
	if names, _ := fsys.List(testDir); !slices.Equal(names, want) {
		t.Fatalf("after Prune(1): %v, want %v", names, want)
	}
	if err := Prune(vfs.Default, filepath.Join(t.TempDir(), "missing"), 2); err != nil {
		t.Fatalf("Prune of a missing dir: %v", err)
	}
}

func TestFileNames(t *testing.T) {
	for _, s := range []wire.Slot{0, 1, 42, 1<<64 - 1} {
		if got, ok := ParseFileName(FileName(s)); !ok || got != s {
			t.Fatalf("ParseFileName(FileName(%d)) = %d, %v", s, got, ok)
		}
	}
	for _, n := range []string{"checkpoint-1.vcp", "checkpoint-99999999999999999999.vcp", FileName(3) + ".1.tmp",
		"checkpoint-0000000000000000000a.vcp", "x" + FileName(3)} {
		if _, ok := ParseFileName(n); ok {
			t.Fatalf("ParseFileName(%q) accepted", n)
		}
	}
	if FileName(12) >= FileName(100) {
		t.Fatal("names do not sort by slot")
	}
}
