//go:build contracts

package paxos

// PlantBug plants protocol defects in this replica. It exists only in
// contract (test) builds, so production code cannot reach it.
func (n *Node) PlantBug(b Bug) { n.bugs |= b }
