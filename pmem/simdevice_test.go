package pmem

import (
	"math/rand/v2"
	"testing"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/wire"
)

// Whatever a crash keeps, recovery returns every synced entry and a prefix
// of the rest, on the simulated device the cluster simulator uses.
func TestSimDeviceCrashKeepsSyncedAndAPrefix(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for round := range 300 {
		dev, err := NewSimDevice(64<<10, testID)
		if err != nil {
			t.Fatal(err)
		}
		l, err := dev.Open()
		if err != nil {
			t.Fatal(err)
		}
		var synced, appended []wire.Entry
		slot := wire.Slot(0)
		for range rng.IntN(20) + 1 {
			var batch []wire.Entry
			for range rng.IntN(4) + 1 {
				batch = append(batch, wire.Entry{Slot: slot, Ballot: wire.Ballot{Round: 1, Replica: 1},
					Value: wire.Value{Kind: wire.ValueBatch, Data: []byte{byte(slot), byte(round)}}})
				slot++
			}
			if err := l.Append(batch, paxos.HardState{Promised: wire.Ballot{Round: 1, Replica: 1}}, true); err != nil {
				t.Fatal(err)
			}
			appended = append(appended, batch...)
			if rng.IntN(3) > 0 {
				if err := l.Sync(); err != nil {
					t.Fatal(err)
				}
				synced = append(synced[:0], appended...)
			}
		}
		dev.Crash(rng)
		l2, err := dev.Open()
		if err != nil {
			t.Fatalf("round %d: recovery failed: %v", round, err)
		}
		if !l2.Identity().Equal(testID) {
			t.Fatalf("round %d: recovered identity %v, want %v", round, l2.Identity(), testID)
		}
		p, _ := l2.Load()
		if len(p.Entries) < len(synced) || len(p.Entries) > len(appended) {
			t.Fatalf("round %d: recovered %d entries, synced %d, appended %d", round, len(p.Entries), len(synced), len(appended))
		}
		for i, e := range p.Entries {
			if e.Slot != appended[i].Slot || !e.Value.Equal(appended[i].Value) {
				t.Fatalf("round %d: entry %d is %+v, appended %+v", round, i, e, appended[i])
			}
		}
	}
}
