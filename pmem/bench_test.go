//go:build linux

package pmem

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/wire"
	"golang.org/x/sys/unix"
)

// Benchmarks measure; run them without the contracts tag (contract checks
// re-read every record written):
//
//	go test -run '^$' -bench . ./pmem/
//
// They use a file under /dev/shm (or $VESTA_PMEM_DIR), created and removed
// by each benchmark.
func benchDir(b *testing.B) string {
	if d := os.Getenv("VESTA_PMEM_DIR"); d != "" {
		return d
	}
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return "/dev/shm"
	}
	b.Skip("no /dev/shm and no VESTA_PMEM_DIR")
	return ""
}

func benchFile(b *testing.B) string {
	f, err := os.CreateTemp(benchDir(b), "vesta-pmem-bench-*.log")
	if err != nil {
		b.Fatal(err)
	}
	f.Close()
	os.Remove(f.Name()) // Open creates it; the name is unique
	b.Cleanup(func() { os.Remove(f.Name()) })
	return f.Name()
}

// BenchmarkFlush measures dirtying and writing back one line, and 4 KiB (64
// lines), then one SFENCE, with each flush instruction the CPU has, on a
// mapped file.
func BenchmarkFlush(b *testing.B) {
	path := benchFile(b)
	const region = 1 << 20
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(region); err != nil {
		b.Fatal(err)
	}
	buf, err := unix.Mmap(int(f.Fd()), 0, region, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Munmap(buf)
	for i := range buf { // fault every page in
		buf[i] = 1
	}
	for _, m := range []FlushMethod{FlushCLWB, FlushCLFLUSHOPT, FlushCLFLUSH} {
		if !cpuHas(m) {
			continue
		}
		for _, size := range []int{lineSize, 4096} {
			b.Run(fmt.Sprintf("%v/%s", m, sizeName(size)), func(b *testing.B) {
				b.SetBytes(int64(size))
				off := 0
				for b.Loop() {
					for i := off; i < off+size; i += lineSize {
						buf[i]++
					}
					flushLines(m, unsafe.Pointer(&buf[off]), uintptr(size/lineSize))
					storeFence()
					if off += size; off+size > region {
						off = 0
					}
				}
			})
		}
	}
}

func sizeName(n int) string {
	if n%1024 == 0 {
		return fmt.Sprintf("%dKiB", n/1024)
	}
	return fmt.Sprintf("%dB", n)
}

// BenchmarkAppendSync measures one Append of one entry with a value of 64 B,
// 1 KiB or 4 KiB followed by Sync: the latency of an acknowledged write (the
// record is 48 bytes larger: record and entry headers). ns/op is the mean;
// p50/p99 come from per-operation clock reads (which add some tens of ns).
// The log is compacted, off the clock, whenever it is half full.
func BenchmarkAppendSync(b *testing.B) {
	for _, size := range []int{64, 1024, 4096} {
		b.Run("file/"+sizeName(size), func(b *testing.B) {
			l, err := Open(benchFile(b), newOpts(Options{Size: 64 << 20}))
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			s := l.Status()
			b.Logf("%s, flush %s", s.Durability, s.Flush)
			benchAppendSync(b, l, size, 1)
		})
	}
	for _, size := range []int{64, 1024, 4096} {
		// The same work with no flush and no fence: encoding, CRC32C and the
		// copy alone, to separate them from the cost of persistence.
		b.Run("memory-noflush/"+sizeName(size), func(b *testing.B) {
			l, err := OpenMemory(64<<20, testID)
			if err != nil {
				b.Fatal(err)
			}
			benchAppendSync(b, l, size, 1)
		})
	}
}

// BenchmarkGroupCommit measures 16 Appends of 64 B covered by one Sync.
func BenchmarkGroupCommit(b *testing.B) {
	l, err := Open(benchFile(b), newOpts(Options{Size: 64 << 20}))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	benchAppendSync(b, l, 64, 16)
}

func benchAppendSync(b *testing.B, l *Log, size, perSync int) {
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i)
	}
	es := []wire.Entry{{Ballot: wire.Ballot{Round: 1, Replica: 1}, Value: wire.Value{Kind: wire.ValueBatch, Data: data}}}
	hs := paxos.HardState{Promised: wire.Ballot{Round: 1, Replica: 1}}
	half := l.Status().Capacity / 2
	lat := make([]time.Duration, 0, 1<<20)
	slot := wire.Slot(0)
	b.SetBytes(int64(size * perSync))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%1024 == 0 {
			if st := l.Status(); st.Used > half {
				b.StopTimer()
				if err := l.Compact(slot); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		}
		t0 := time.Now()
		for range perSync {
			es[0].Slot = slot
			slot++
			hs.Commit = slot
			if err := l.Append(es, hs, true); err != nil {
				if errors.Is(err, ErrFull) {
					b.Fatalf("log full: %v", err)
				}
				b.Fatal(err)
			}
		}
		if err := l.Sync(); err != nil {
			b.Fatal(err)
		}
		if len(lat) < cap(lat) {
			lat = append(lat, time.Since(t0))
		}
	}
	b.StopTimer()
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
		b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
	}
}
