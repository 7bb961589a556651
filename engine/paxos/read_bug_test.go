//go:build contracts

package paxos

import (
	"testing"

	"github.com/vestalabs/vesta/engine/wire"
)

// The planted bug confirms reads without asking anybody.
func TestReadWithoutQuorumBugSkipsTheRound(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1)
	c.nodes[1].PlantBug(BugReadWithoutQuorum)
	c.drop = func(m wire.Message) bool { return m.From == 1 || m.To == 1 }
	c.nodes[1].ReadIndex(3)
	c.settle()
	if len(c.reads[1]) != 1 {
		t.Fatalf("planted bug: reads %v", c.reads[1])
	}
}
