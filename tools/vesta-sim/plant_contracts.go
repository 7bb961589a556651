//go:build contracts

package main

import (
	"fmt"
	"strings"

	"github.com/vestalabs/vesta/engine/paxos"
)

// plantHook returns a hook that plants the named bug in every replica: a
// contracts build only, where paxos.(*Node).PlantBug exists.
func plantHook(name string) (func(*paxos.Node), error) {
	var names []string
	for _, b := range paxos.AllBugs {
		if b.Name == name {
			bug := b.Bug
			return func(n *paxos.Node) { n.PlantBug(bug) }, nil
		}
		names = append(names, b.Name)
	}
	return nil, fmt.Errorf("-plant %q: no such bug; the bugs are %s", name, strings.Join(names, ", "))
}
