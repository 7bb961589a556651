package vfs

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
)

func readAll(t *testing.T, fs FS, name string) []byte {
	t.Helper()
	f, err := fs.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, size)
	if n, err := f.ReadAt(b, 0); err != nil && !(err == io.EOF && int64(n) == size) {
		t.Fatal(err)
	}
	return b
}

// exercise runs the same operations on any FS and checks what it reads back.
func exercise(t *testing.T, fs FS, dir string) {
	if err := fs.MkdirAll(dir); err != nil {
		t.Fatal(err)
	}
	a := filepath.Join(dir, "a")
	f, err := fs.Create(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("hello"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("world"), 8); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Preallocate(64); err != nil {
		t.Fatal(err)
	}
	if err := f.Preallocate(16); err != nil { // never shrinks
		t.Fatal(err)
	}
	if size, _ := f.Size(); size != 64 {
		t.Fatalf("size after preallocate %d, want 64", size)
	}
	if err := f.Truncate(10); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := readAll(t, fs, a), []byte("hello\x00\x00\x00wo"); !bytes.Equal(got, want) {
		t.Fatalf("read %q, want %q", got, want)
	}
	if err := fs.Rename(a, filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	if err := fs.SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	names, err := fs.List(dir)
	if err != nil || !slices.Equal(names, []string{"b"}) {
		t.Fatalf("List = %v, %v", names, err)
	}
	if _, err := fs.Open(a); err == nil {
		t.Fatal("renamed file still opens under its old name")
	}
	l, err := fs.Lock(filepath.Join(dir, "LOCK"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Lock(filepath.Join(dir, "LOCK")); err == nil {
		t.Fatal("second lock succeeded")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = fs.Lock(filepath.Join(dir, "LOCK"))
	if err != nil {
		t.Fatal("lock after release:", err)
	}
	l.Close()
	if err := fs.Remove(filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
}

func TestOSFS(t *testing.T) { exercise(t, Default, filepath.Join(t.TempDir(), "d")) }

func TestMemFS(t *testing.T) { exercise(t, NewMemFS(), "/d") }

func TestMemFSCrashKeepsSyncedAndAPrefixOfTheRest(t *testing.T) {
	fs := NewMemFS()
	f, _ := fs.Create("/d/f")
	f.WriteAt([]byte("synced.."), 0)
	f.Sync()
	fs.SyncDir("/d")
	f.WriteAt([]byte("AAAA"), 8)
	f.WriteAt([]byte("BBBB"), 12)
	full := []byte("synced..AAAABBBB")
	seen := map[string]bool{}
	for seed := range uint64(200) {
		got := readAll(t, fs.Crash(rand.New(rand.NewPCG(seed, 1))), "/d/f")
		if !bytes.HasPrefix(full, got) || len(got) < 8 {
			t.Fatalf("seed %d: crash left %q, not synced contents plus a prefix of %q", seed, got, full)
		}
		seen[string(got)] = true
	}
	if len(seen) < 5 {
		t.Fatalf("crashes produced only %d distinct outcomes: torn writes are not modelled", len(seen))
	}
	if got := readAll(t, fs.CrashSyncedOnly(), "/d/f"); string(got) != "synced.." {
		t.Fatalf("synced-only crash left %q", got)
	}
	// The original is untouched, and the crashed copy is all durable.
	if got := readAll(t, fs, "/d/f"); !bytes.Equal(got, full) {
		t.Fatalf("crash changed the original: %q", got)
	}
	c := fs.Crash(rand.New(rand.NewPCG(7, 7)))
	before := readAll(t, c, "/d/f")
	if got := readAll(t, c.CrashSyncedOnly(), "/d/f"); !bytes.Equal(got, before) {
		t.Fatalf("a crashed file system lost %q -> %q in a second crash", before, got)
	}
}

func TestMemFSNamesNeedSyncDir(t *testing.T) {
	fs := NewMemFS()
	f, _ := fs.Create("/d/tmp")
	f.WriteAt([]byte("x"), 0)
	f.Sync()
	if names, _ := fs.CrashSyncedOnly().List("/d"); len(names) != 0 {
		t.Fatalf("a name never dir-synced survived: %v", names)
	}
	fs.SyncDir("/d")
	fs.Rename("/d/tmp", "/d/final")
	if names, _ := fs.CrashSyncedOnly().List("/d"); !slices.Equal(names, []string{"tmp"}) {
		t.Fatalf("rename not dir-synced: crash left %v, want [tmp]", names)
	}
	outcomes := map[string]bool{}
	for seed := range uint64(50) {
		names, _ := fs.Crash(rand.New(rand.NewPCG(seed, 2))).List("/d")
		if len(names) != 1 {
			t.Fatalf("rename is not atomic across a crash: %v", names)
		}
		outcomes[names[0]] = true
	}
	if !outcomes["tmp"] || !outcomes["final"] {
		t.Fatalf("crash outcomes %v: want both sides of an unsynced rename", outcomes)
	}
	fs.SyncDir("/d")
	if got := readAll(t, fs.CrashSyncedOnly(), "/d/final"); string(got) != "x" {
		t.Fatalf("after SyncDir read %q", got)
	}
}

func TestMemFSFault(t *testing.T) {
	fs := NewMemFS()
	boom := errors.New("boom")
	fs.SetFault(func(op, name string) error {
		if op == OpSync {
			return boom
		}
		return nil
	})
	f, _ := fs.Create("/f")
	f.WriteAt([]byte("x"), 0)
	if err := f.Sync(); !errors.Is(err, boom) {
		t.Fatalf("Sync = %v, want the injected fault", err)
	}
	fs.SetFault(nil)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	ro, _ := fs.Open("/f")
	if _, err := ro.WriteAt([]byte("y"), 0); err == nil {
		t.Fatal("write through a read-only handle succeeded")
	}
}

func TestMemFSCrashOutOfOrder(t *testing.T) {
	const sector = 4
	fs := NewMemFS()
	f, _ := fs.Create("/d/f")
	f.WriteAt([]byte("synced.."), 0)
	f.Sync()
	fs.SyncDir("/d")
	f.WriteAt([]byte("AAAA"), 8)
	f.WriteAt([]byte("BBBBCCCC"), 12)
	f.WriteAt([]byte("aa"), 8) // a sector written twice: it may keep either version
	full := []byte("synced..aaAABBBBCCCC")
	seen := map[string]bool{}
	for seed := range uint64(500) {
		got := readAll(t, fs.CrashOutOfOrder(rand.New(rand.NewPCG(seed, 3)), sector), "/d/f")
		if len(got) < 8 || string(got[:8]) != "synced.." || len(got) > len(full) {
			t.Fatalf("seed %d: crash left %q: synced contents lost or size wrong", seed, got)
		}
		for s := 8; s < len(got); s += sector {
			sec := string(got[s:min(s+sector, len(got))])
			var ok bool
			switch s {
			case 8:
				ok = sec == "\x00\x00\x00\x00" || sec == "AAAA" || sec == "aaAA"
			default:
				ok = sec == "\x00\x00\x00\x00"[:len(sec)] || sec == string(full[s:s+len(sec)])
			}
			if !ok {
				t.Fatalf("seed %d: sector at %d is %q in %q: neither old nor written whole", seed, s, sec, got)
			}
		}
		seen[string(got)] = true
	}
	for _, want := range []string{
		"synced..\x00\x00\x00\x00BBBBCCCC", // later sectors without an earlier one
		"synced..AAAA\x00\x00\x00\x00CCCC", // a hole between written sectors
		"synced..aaAABBBBCCCC",
		"synced..",
	} {
		if !seen[want] {
			t.Fatalf("out-of-order crashes never left %q (%d outcomes)", want, len(seen))
		}
	}
	if got := readAll(t, fs, "/d/f"); !bytes.Equal(got, full) {
		t.Fatalf("crash changed the original: %q", got)
	}
}
