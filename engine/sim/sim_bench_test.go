package sim

import "testing"

// BenchmarkRun measures one simulated seed end to end (the simulator's cost,
// not the protocol's speed).
func BenchmarkRun(b *testing.B) {
	for i := range b.N {
		r := Run(Options{Seed: uint64(i % 16)})
		if len(r.Violations) > 0 {
			b.Fatalf("seed %d: %v", r.Seed, r.Violations)
		}
	}
}
