package storage

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/storage/vfs"
	"github.com/vestalabs/vesta/engine/wire"
)

// Benchmarks run on real files with real fdatasync in a temporary directory
// (the machine's disk), or under $VESTA_WAL_BENCH_DIR when it is set (say
// /dev/shm, to see the cost without the device). Run them without the
// contracts tag: contract builds check every record twice.
//
//	go test -run '^$' -bench . -benchtime 2s ./engine/storage/

func benchDir(b *testing.B) string {
	if d := os.Getenv("VESTA_WAL_BENCH_DIR"); d != "" {
		dir, err := os.MkdirTemp(d, "walbench")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return b.TempDir()
}

func benchEntries(n, size int) []wire.Entry {
	rng := rand.New(rand.NewPCG(uint64(n), uint64(size)))
	es := make([]wire.Entry, n)
	for i := range es {
		es[i] = entry(wire.Slot(i), size, rng)
	}
	return es
}

// BenchmarkAppendSync: one entry, then one Sync (one write, one fdatasync)
// per operation: the latency of an unbatched durable append.
func BenchmarkAppendSync(b *testing.B) {
	for _, size := range []int{64, 1024, 4096} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			w := openWAL(b, benchDir(b), WALOptions{})
			defer w.Close()
			es := benchEntries(1, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				es[0].Slot = wire.Slot(i)
				if err := w.Append(es, paxos.HardState{}, false); err != nil {
					b.Fatal(err)
				}
				if err := w.Sync(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGroupCommit: many Append calls (one per Ready, each with a few
// entries and a hard state) and one Sync per operation, which is how the
// runtime uses the log under load. entries/s is the durable throughput.
func BenchmarkGroupCommit(b *testing.B) {
	for _, c := range []struct{ appends, perAppend, size int }{
		{16, 4, 64}, {64, 16, 64}, {256, 4, 64}, {64, 4, 1024}, {16, 1, 4096},
	} {
		b.Run(fmt.Sprintf("%dx%dx%dB", c.appends, c.perAppend, c.size), func(b *testing.B) {
			w := openWAL(b, benchDir(b), WALOptions{})
			defer w.Close()
			es := benchEntries(c.perAppend, c.size)
			hs := paxos.HardState{Promised: wire.Ballot{Round: 1, Replica: 1}}
			perSync := c.appends * c.perAppend
			b.SetBytes(int64(perSync * c.size))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				for range c.appends {
					hs.Commit++
					if err := w.Append(es, hs, true); err != nil {
						b.Fatal(err)
					}
				}
				if err := w.Sync(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*perSync)/b.Elapsed().Seconds(), "entries/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perSync), "ns/entry")
		})
	}
}

// BenchmarkAppendEncode: Append alone, on a file system that discards
// writes: the CPU cost per entry (copy and CRC32C into the buffer), without
// the page cache and the device, which BenchmarkGroupCommit includes.
func BenchmarkAppendEncode(b *testing.B) {
	for _, size := range []int{64, 1024, 4096} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			w := openWAL(b, "/wal", WALOptions{FS: discardFS{vfs.NewMemFS()}})
			defer w.Close()
			es := benchEntries(64, size)
			b.SetBytes(int64(len(es) * size))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := w.Append(es, paxos.HardState{}, false); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(es)), "ns/entry")
		})
	}
}

// discardFS is a MemFS whose created files drop what is written to them.
type discardFS struct{ *vfs.MemFS }

func (d discardFS) Create(name string) (vfs.File, error) {
	f, err := d.MemFS.Create(name)
	return discardFile{f}, err
}

type discardFile struct{ vfs.File }

func (discardFile) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }
func (discardFile) Preallocate(int64) error                { return nil }
