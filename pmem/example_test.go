//go:build linux

package pmem_test

import (
	"errors"
	"log"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/pmem"
)

// A replica opens its log once, loads the recovered state, then appends and
// syncs per Ready; a full log is compacted after a snapshot.
func ExampleOpen() {
	l, err := pmem.Open("/mnt/pmem0/replica-1.log", pmem.Options{
		Identity: storage.Identity{ClusterID: 42, ReplicaID: 1, Members: []wire.ReplicaID{1, 2, 3}},
		Create:   storage.MustExist, // storage.MustCreate when bootstrapping the replica
		Size:     1 << 30,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	if s := l.Status(); s.Durability != pmem.DurabilityDAX {
		log.Printf("pmem log is %s, not dax: %s", s.Durability, s.DurabilityReason)
	}
	state, err := l.Load()
	if err != nil {
		log.Fatal(err)
	}
	_ = state // restore the replica from it

	entries := []wire.Entry{{Slot: 0, Ballot: wire.Ballot{Round: 1, Replica: 1}, Value: wire.Value{Kind: wire.ValueBatch, Data: []byte("cmd")}}}
	hs := paxos.HardState{Promised: wire.Ballot{Round: 1, Replica: 1}}
	if err := l.Append(entries, hs, true); errors.Is(err, pmem.ErrFull) {
		// Take a snapshot covering slots below s, then l.Compact(s) and retry.
	} else if err != nil {
		log.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		log.Fatal(err)
	}
}
