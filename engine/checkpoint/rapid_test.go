package checkpoint

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"

	"pgregory.net/rapid"

	"github.com/vestalabs/vesta/engine/storage/vfs"
	"github.com/vestalabs/vesta/engine/wire"
)

// TestRapidRoundTrip: for any image size and block size (sizes drawn often
// at and around block boundaries), any way fill cuts its writes and any way
// a reader cuts its reads, the image comes back, the file has the size the
// format says, and a transfer in any chunking (with a resume) yields the
// same bytes.
func TestRapidRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		bs := rapid.Uint32Range(1, 300).Draw(t, "blockSize")
		size := rapid.IntRange(0, 2000).Draw(t, "size")
		if rapid.Bool().Draw(t, "atBoundary") {
			size = max(0, rapid.IntRange(0, 6).Draw(t, "blocks")*int(bs)+rapid.IntRange(-1, 1).Draw(t, "delta"))
		}
		nMembers := rapid.IntRange(1, MaxMembers).Draw(t, "members")
		seed := rapid.Uint64().Draw(t, "seed")
		rng := rand.New(rand.NewPCG(seed, 2))
		members := make([]wire.ReplicaID, nMembers)
		for i := range members {
			members[i] = wire.ReplicaID(i*3 + 1)
		}
		meta := Meta{ClusterID: rng.Uint64() | 1, Replica: members[0], Slot: wire.Slot(rng.Uint64()),
			Ballot: wire.Ballot{Round: rng.Uint64(), Replica: members[nMembers-1]}, Members: members, BlockSize: bs}
		img := randImage(seed, size)

		fsys := vfs.NewMemFS()
		info, err := Write(fsys, testDir, meta, func(w io.Writer) error {
			for p := img; len(p) > 0; {
				n := min(len(p), rng.IntN(3*int(bs))+1)
				if _, err := w.Write(p[:n]); err != nil {
					return err
				}
				p = p[n:]
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		blocks := (int64(size) + int64(bs) - 1) / int64(bs)
		file := fileBytes(t, fsys, info.Path)
		if want := int64(72+4*nMembers) + int64(size) + 4*blocks; int64(len(file)) != want || info.FileSize != want {
			t.Fatalf("file %d bytes, Info %d, format says %d", len(file), info.FileSize, want)
		}

		r, err := Open(fsys, info.Path)
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		buf := make([]byte, 3*bs+1)
		for {
			n, err := r.Read(buf[:rng.IntN(len(buf))+1])
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		r.Close()
		if !bytes.Equal(got, img) {
			t.Fatal("image differs")
		}
		meta.Size = int64(size)
		if !metaEqual(r.Meta(), meta) {
			t.Fatalf("meta %+v, want %+v", r.Meta(), meta)
		}

		src, err := OpenSource(fsys, info.Path)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		dst := vfs.NewMemFS()
		rc, err := NewReceiver(dst, testDir, Meta{ClusterID: meta.ClusterID, Slot: meta.Slot}, src.Size())
		if err != nil {
			t.Fatal(err)
		}
		drop := rng.Int64N(src.Size() + 1) // the first connection stops here
		chunk := rapid.IntRange(1, 500).Draw(t, "chunk")
		for _, stop := range []int64{drop, src.Size()} {
			if err := send(rc, src, chunk, stop); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := rc.Finish(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fileBytes(t, dst, info.Path), file) {
			t.Fatal("transferred file differs")
		}
	})
}
