package checkpoint

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vestalabs/vesta/engine/storage/vfs"
	"github.com/vestalabs/vesta/engine/wire"
)

var errInjected = errors.New("injected fault")

// failAfter makes every file-system operation after the first n fail.
func failAfter(fsys *vfs.MemFS, n int) *int {
	calls := new(int)
	fsys.SetFault(func(op, name string) error { // called under fsys's lock
		if *calls++; *calls > n {
			return errInjected
		}
		return nil
	})
	return calls
}

// crashes returns what fsys may hold after a power failure now, in every
// crash model, with several seeds.
func crashes(fsys *vfs.MemFS, salt uint64) map[string]*vfs.MemFS {
	out := map[string]*vfs.MemFS{"synced-only": fsys.CrashSyncedOnly()}
	for seed := range uint64(6) {
		out["in-order/"+string(rune('0'+seed))] = fsys.Crash(rand.New(rand.NewPCG(seed, salt)))
		out["out-of-order/"+string(rune('0'+seed))] = fsys.CrashOutOfOrder(rand.New(rand.NewPCG(seed, salt)), 16)
	}
	return out
}

// checkAfterCrash: every listed checkpoint verifies, the old one survives,
// the new one is there if its writer returned nil, and Prune then leaves no
// temporary file.
func checkAfterCrash(t *testing.T, what string, fsys *vfs.MemFS, old, img []byte, newSlot wire.Slot, mustHaveNew bool) {
	t.Helper()
	infos, err := List(fsys, testDir)
	if err != nil {
		t.Fatalf("%s: List: %v", what, err)
	}
	haveOld, haveNew := false, false
	for _, in := range infos {
		if in.Err != nil {
			t.Fatalf("%s: listed a damaged checkpoint: %v\n%s", what, in.Err, fsys)
		}
		_, b := readAll(t, fsys, in.Path)
		switch in.Meta.Slot {
		case 10:
			haveOld = bytes.Equal(b, old)
		case newSlot:
			haveNew = true
			if !bytes.Equal(b, img) {
				t.Fatalf("%s: new checkpoint's image differs", what)
			}
		default:
			t.Fatalf("%s: unexpected checkpoint %s", what, in.Path)
		}
	}
	if !haveOld {
		t.Fatalf("%s: the old checkpoint was lost\n%s", what, fsys)
	}
	if mustHaveNew && !haveNew {
		t.Fatalf("%s: a checkpoint whose writer returned nil was lost\n%s", what, fsys)
	}
	if err := Prune(fsys, testDir, 5); err != nil {
		t.Fatal(err)
	}
	names, _ := fsys.List(testDir)
	for _, n := range names {
		if strings.HasSuffix(n, ".tmp") {
			t.Fatalf("%s: Prune left %s", what, n)
		}
	}
}

// crashLoop runs op on a fresh MemFS holding one old checkpoint, failing
// every operation after the first n for each n up to a clean run, then
// crashes it in every model and checks what is left.
func crashLoop(t *testing.T, newSlot wire.Slot, img []byte, op func(fsys *vfs.MemFS) error) {
	old := randImage(1, 100)
	clean := -1
	for n := 0; clean < 0 || n <= clean; n++ {
		fsys := vfs.NewMemFS()
		mustWrite(t, fsys, testDir, testMeta(10), old)
		calls := failAfter(fsys, n)
		err := op(fsys)
		fsys.SetFault(nil)
		if err != nil && !errors.Is(err, errInjected) {
			t.Fatalf("n=%d: %v", n, err)
		}
		if err == nil && clean < 0 {
			clean = *calls
		}
		if n > 100 {
			t.Fatal("never succeeded")
		}
		for name, c := range crashes(fsys, uint64(n)) {
			checkAfterCrash(t, name, c, old, img, newSlot, err == nil)
		}
	}
}

func TestCrashDuringWrite(t *testing.T) {
	img := randImage(5, 300)
	meta := testMeta(20)
	meta.BlockSize = 64 // 5 blocks
	crashLoop(t, 20, img, func(fsys *vfs.MemFS) error {
		_, err := Write(fsys, testDir, meta, fillWith(img, 50))
		return err
	})
}

func TestCrashDuringReceive(t *testing.T) {
	src := vfs.NewMemFS()
	img := randImage(6, 300)
	meta := testMeta(20)
	meta.BlockSize = 64
	info := mustWrite(t, src, "/src", meta, img)
	file := fileBytes(t, src, info.Path)
	crashLoop(t, 20, img, func(fsys *vfs.MemFS) error {
		r, err := NewReceiver(fsys, testDir, Meta{ClusterID: 7, Slot: 20}, int64(len(file)))
		if err != nil {
			return err
		}
		for off := 0; off < len(file); off += 100 {
			if err := r.Write(int64(off), file[off:min(off+100, len(file))]); err != nil {
				r.Abort()
				return err
			}
		}
		_, err = r.Finish()
		return err
	})
}

// TestCrashAfterWriteKeepsIt: once Write returned, any crash keeps it.
func TestCrashAfterWriteKeepsIt(t *testing.T) {
	fsys := vfs.NewMemFS()
	info := mustWrite(t, fsys, testDir, testMeta(10), []byte("state"))
	for name, c := range crashes(fsys, 99) {
		if err := Verify(c, info.Path); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		r, err := Open(c, filepath.Join(testDir, FileName(10)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r)
		r.Close()
		if string(b) != "state" {
			t.Fatalf("%s: image %q", name, b)
		}
	}
}
