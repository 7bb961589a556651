package bench

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func TestBucketsCoverEveryValueInOrder(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		v := rapid.Int64Range(0, 1<<62).Draw(t, "v")
		b := bucketOf(v)
		if lowerBound(b) > v || (b+1 < histBuckets && lowerBound(b+1) <= v) {
			t.Fatalf("value %d in bucket %d [%d,%d)", v, b, lowerBound(b), lowerBound(b+1))
		}
	})
}

// Quantiles are within the histogram's precision of the exact ones.
func TestQuantilesMatchExactWithinPrecision(t *testing.T) {
	var h Histogram
	rng := rand.New(rand.NewPCG(1, 2))
	var vals []int64
	for range 100000 {
		v := int64(rng.ExpFloat64() * 50000) // ~50 µs mean
		vals = append(vals, v)
		h.Record(time.Duration(v))
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := int64(h.Quantile(q))
		if d := got - exact; d > exact/50+2 || -d > exact/50+2 {
			t.Errorf("q%.3f: got %d, exact %d", q, got, exact)
		}
	}
	if h.Max() != time.Duration(vals[len(vals)-1]) || h.Count() != uint64(len(vals)) {
		t.Fatalf("max %v count %d", h.Max(), h.Count())
	}
	var m Histogram
	m.Merge(&h)
	m.Merge(&h)
	if m.Count() != 2*h.Count() || m.Quantile(0.5) != h.Quantile(0.5) {
		t.Fatal("merge")
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	for i := range b.N {
		h.Record(time.Duration(i & 0xfffff))
	}
}
