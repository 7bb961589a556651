package zerocopy

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"testing"
)

var sink []byte

func BenchmarkGetRelease(b *testing.B) {
	for _, n := range []int{64, 4096, 64 << 10} {
		b.Run(fmt.Sprintf("pool/%d", n), func(b *testing.B) {
			var p Pool
			b.ReportAllocs()
			for b.Loop() {
				p.Get(n).Release()
			}
		})
		b.Run(fmt.Sprintf("pool-parallel/%d", n), func(b *testing.B) {
			var p Pool
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					p.Get(n).Release()
				}
			})
		})
		// Baselines: a bare sync.Pool of *[]byte, and no pool at all.
		b.Run(fmt.Sprintf("syncpool/%d", n), func(b *testing.B) {
			sp := sync.Pool{New: func() any { s := make([]byte, n); return &s }}
			b.ReportAllocs()
			for b.Loop() {
				sp.Put(sp.Get())
			}
		})
		b.Run(fmt.Sprintf("make/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sink = make([]byte, n)
			}
		})
	}
}

// BenchmarkFrame: per reader, one Ref and one Release of a shared frame.
func BenchmarkFrame(b *testing.B) {
	var p Pool
	b.Run("ref-release", func(b *testing.B) {
		f := p.Get(4096).Share()
		b.ReportAllocs()
		for b.Loop() {
			f.Ref().Release()
		}
		f.Release()
	})
	b.Run("get-share-4refs-release", func(b *testing.B) {
		b.ReportAllocs()
		var refs [4]Frame
		for b.Loop() {
			f := p.Get(4096).Share()
			for i := range refs {
				refs[i] = f.Ref()
			}
			f.Release()
			for _, r := range refs {
				r.Release()
			}
		}
	})
}

// BenchmarkWriter gathers 64-byte items (ns/op is per item) and writes them
// to io.Discard every 256 items, so the cost includes chunk recycling.
func BenchmarkWriter(b *testing.B) {
	item := make([]byte, 64)
	b.Run("copy64", func(b *testing.B) {
		var p Pool
		w := NewWriter(&p, 0, -1)
		b.ReportAllocs()
		b.SetBytes(64)
		i := 0
		for b.Loop() {
			w.Write(item)
			if i++; i == 256 {
				w.WriteTo(io.Discard)
				i = 0
			}
		}
		w.Reset()
	})
	b.Run("ref4k", func(b *testing.B) {
		var p Pool
		w := NewWriter(&p, 0, -1)
		big := make([]byte, 4096)
		b.ReportAllocs()
		b.SetBytes(4096)
		i := 0
		for b.Loop() {
			w.Write(item[:24]) // a header, copied
			w.WriteRef(big)    // a payload, referenced
			if i++; i == 256 {
				w.WriteTo(io.Discard)
				i = 0
			}
		}
		w.Reset()
	})
	b.Run("bytes.Buffer-copy64", func(b *testing.B) { // baseline
		var buf bytes.Buffer
		b.ReportAllocs()
		b.SetBytes(64)
		i := 0
		for b.Loop() {
			buf.Write(item)
			if i++; i == 256 {
				buf.WriteTo(io.Discard)
				i = 0
			}
		}
	})
}
