package checkpoint

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vestalabs/vesta/engine/storage/vfs"
	"github.com/vestalabs/vesta/engine/wire"
)

// sourceCheckpoint writes a checkpoint of slot 42 (cluster 7) on a fresh
// MemFS and opens it for sending.
func sourceCheckpoint(t *testing.T, size int) (*Source, []byte) {
	t.Helper()
	fsys := vfs.NewMemFS()
	meta := testMeta(42)
	meta.BlockSize = 128
	info := mustWrite(t, fsys, "/src", meta, randImage(uint64(size), size))
	src, err := OpenSource(fsys, info.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src, fileBytes(t, fsys, info.Path)
}

// send sends src's bytes from r.Offset() up to stop in chunks of n, as a
// sender reading from its Source does.
func send(r *Receiver, src *Source, n int, stop int64) error {
	buf := make([]byte, n)
	for r.Offset() < stop {
		off := r.Offset()
		k, err := src.ReadAt(buf[:min(int64(n), stop-off)], off)
		if err != nil && err != io.EOF {
			return err
		}
		if err := r.Write(off, buf[:k]); err != nil {
			return err
		}
	}
	return nil
}

func want42() Meta { return Meta{ClusterID: 7, Slot: 42} }

func dirNames(t *testing.T, fsys vfs.FS) []string {
	names, err := fsys.List(testDir)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestReceiverInOrder(t *testing.T) {
	src, file := sourceCheckpoint(t, 5000)
	for _, chunk := range []int{1, 100, 4096, len(file)} {
		dst := vfs.NewMemFS()
		r, err := NewReceiver(dst, testDir, want42(), src.Size())
		if err != nil {
			t.Fatal(err)
		}
		if err := send(r, src, chunk, src.Size()); err != nil {
			t.Fatal(err)
		}
		info, err := r.Finish()
		if err != nil {
			t.Fatal(err)
		}
		if info.Path != filepath.Join(testDir, FileName(42)) || info.Meta.Replica != 2 || info.FileSize != int64(len(file)) {
			t.Fatalf("Info %+v", info)
		}
		if !bytes.Equal(fileBytes(t, dst, info.Path), file) {
			t.Fatal("received file differs")
		}
		// Durable: a crash keeping only synced state still has it whole.
		if err := Verify(dst.CrashSyncedOnly(), info.Path); err != nil {
			t.Fatal(err)
		}
		if names := dirNames(t, dst); len(names) != 1 {
			t.Fatalf("left %v", names)
		}
		if err := r.Abort(); err != nil {
			t.Fatalf("Abort after Finish: %v", err)
		}
	}
}

func TestReceiverResumesAfterDrop(t *testing.T) {
	src, file := sourceCheckpoint(t, 5000)
	dst := vfs.NewMemFS()
	r, err := NewReceiver(dst, testDir, want42(), src.Size())
	if err != nil {
		t.Fatal(err)
	}
	// The first connection delivers up to 2000 bytes, then drops a chunk
	// in flight (never delivered).
	if err := send(r, src, 300, 2000); err != nil {
		t.Fatal(err)
	}
	if r.Offset() != 2000 {
		t.Fatalf("Offset %d", r.Offset())
	}
	// A new connection: the sender reopens the file and resumes at Offset.
	fsrc := vfs.NewMemFS()
	putFile(t, fsrc, "/src2/"+FileName(42), file)
	src2, err := OpenSource(fsrc, "/src2/"+FileName(42))
	if err != nil {
		t.Fatal(err)
	}
	defer src2.Close()
	if err := send(r, src2, 777, src2.Size()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Finish(); err != nil {
		t.Fatal(err)
	}
}

func TestReceiverRefusesWrongOffset(t *testing.T) {
	src, file := sourceCheckpoint(t, 1000)
	r, err := NewReceiver(vfs.NewMemFS(), testDir, want42(), src.Size())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Abort()
	if err := send(r, src, 100, 500); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 499, 501, 10000} {
		err := r.Write(off, file[:1])
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("chunk at offset %d, expected offset 500", off)) {
			t.Fatalf("Write at %d: %v", off, err)
		}
	}
	if err := r.Write(500, make([]byte, len(file))); err == nil || !strings.Contains(err.Error(), "runs past") {
		t.Fatalf("overlong chunk: %v", err)
	}
	if _, err := r.Finish(); err == nil || !strings.Contains(err.Error(), "finish at offset 500") {
		t.Fatalf("early Finish: %v", err)
	}
	if r.Offset() != 500 {
		t.Fatalf("refused chunks moved Offset to %d", r.Offset())
	}
	// Still usable after the refusals and the early Finish.
	if err := send(r, src, 100, src.Size()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Finish(); err != nil {
		t.Fatal(err)
	}
}

func TestReceiverRefusesForeign(t *testing.T) {
	src, _ := sourceCheckpoint(t, 1000)
	for _, tc := range []struct {
		name  string
		want  Meta
		size  int64
		field string
		msg   string
	}{
		{"cluster", Meta{ClusterID: 8, Slot: 42}, src.Size(), "cluster", "its cluster is 7, expected 8"},
		{"slot", Meta{ClusterID: 7, Slot: 41}, src.Size(), "slot", "its slot is 42, expected 41"},
		{"size", want42(), src.Size() + 1, "size", fmt.Sprintf("its size is %d, expected %d", src.Size(), src.Size()+1)},
	} {
		for _, chunk := range []int{1, 1000} {
			dst := vfs.NewMemFS()
			r, err := NewReceiver(dst, testDir, tc.want, tc.size)
			if err != nil {
				t.Fatal(err)
			}
			err = send(r, src, chunk, src.Size())
			var me *MismatchError
			if !errors.As(err, &me) || me.Field != tc.field || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("%s: %v, want a mismatch saying %q", tc.name, err, tc.msg)
			}
			if chunk == 1 && r.Offset() != int64(headerLen(3, 0)) {
				t.Fatalf("%s: refused at offset %d, not as soon as the header was in", tc.name, r.Offset())
			}
			if err2 := r.Write(r.Offset(), []byte{0}); err2 != err {
				t.Fatalf("%s: refusal not sticky: %v", tc.name, err2)
			}
			if _, err2 := r.Finish(); err2 != err {
				t.Fatalf("%s: Finish: %v", tc.name, err2)
			}
			if err := r.Abort(); err != nil {
				t.Fatal(err)
			}
			if names := dirNames(t, dst); len(names) != 0 {
				t.Fatalf("%s: left %v", tc.name, names)
			}
			if err := r.Write(0, nil); err != ErrReceiverDone {
				t.Fatalf("Write after Abort: %v", err)
			}
		}
	}
	if _, err := NewReceiver(vfs.NewMemFS(), testDir, want42(), 10); err == nil {
		t.Fatal("NewReceiver accepted a size below any checkpoint's")
	}
	if _, err := NewReceiver(vfs.NewMemFS(), testDir, Meta{Slot: 42}, src.Size()); err == nil {
		t.Fatal("NewReceiver accepted cluster 0")
	}
}

func TestReceiverDetectsCorruptChunk(t *testing.T) {
	src, file := sourceCheckpoint(t, 1000)
	hlen := headerLen(3, 0)
	for _, at := range []int{hlen, hlen + 500, len(file) - 1} {
		dst := vfs.NewMemFS()
		mustWrite(t, dst, testDir, testMeta(10), []byte("older"))
		r, err := NewReceiver(dst, testDir, want42(), src.Size())
		if err != nil {
			t.Fatal(err)
		}
		bad := bytes.Clone(file)
		bad[at] ^= 0x04
		for off := 0; off < len(bad); off += 64 {
			if err := r.Write(int64(off), bad[off:min(off+64, len(bad))]); err != nil {
				t.Fatalf("body damage refused early: %v", err)
			}
		}
		_, err = r.Finish()
		var ce *CorruptionError
		if !errors.As(err, &ce) || !strings.Contains(ce.Reason, "checksum mismatch") {
			t.Fatalf("damage at %d: Finish %v, want a checksum mismatch", at, err)
		}
		if names := dirNames(t, dst); len(names) != 1 || names[0] != FileName(10) {
			t.Fatalf("after a refused transfer the dir holds %v", names)
		}
	}
	// Damage in the header is refused as soon as the header is in.
	r, _ := NewReceiver(vfs.NewMemFS(), testDir, want42(), src.Size())
	bad := bytes.Clone(file)
	bad[20] ^= 1
	var ce *CorruptionError
	if err := r.Write(0, bad[:200]); !errors.As(err, &ce) || !strings.Contains(ce.Reason, "header checksum") {
		t.Fatalf("header damage: %v", err)
	}
	r.Abort()
}

// TestReceiverHybridRefused: resuming against another file of the same
// slot (rewritten by the sender in between) is caught by the file ID.
func TestReceiverHybridRefused(t *testing.T) {
	src, _ := sourceCheckpoint(t, 1000)
	other, _ := sourceCheckpoint(t, 1000) // same meta and image, another file ID
	r, _ := NewReceiver(vfs.NewMemFS(), testDir, want42(), src.Size())
	if err := send(r, src, 100, 600); err != nil {
		t.Fatal(err)
	}
	if err := send(r, other, 100, other.Size()); err != nil {
		t.Fatal(err)
	}
	var ce *CorruptionError
	if _, err := r.Finish(); !errors.As(err, &ce) {
		t.Fatalf("hybrid file: %v", err)
	}
}

func TestReceiverOnOS(t *testing.T) {
	src, file := sourceCheckpoint(t, 3000)
	dir := filepath.Join(t.TempDir(), "recv")
	r, err := NewReceiver(vfs.Default, dir, Meta{ClusterID: 7, Slot: wire.Slot(42)}, src.Size())
	if err != nil {
		t.Fatal(err)
	}
	if err := send(r, src, 1000, src.Size()); err != nil {
		t.Fatal(err)
	}
	info, err := r.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fileBytes(t, vfs.Default, info.Path), file) {
		t.Fatal("received file differs")
	}
	infos, err := List(vfs.Default, dir)
	if err != nil || len(infos) != 1 || infos[0].Err != nil {
		t.Fatalf("List %+v %v", infos, err)
	}
}
