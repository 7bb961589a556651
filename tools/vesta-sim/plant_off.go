//go:build !contracts

package main

import (
	"fmt"

	"github.com/vestalabs/vesta/engine/paxos"
)

// plantHook refuses: planted bugs exist only in contracts builds.
func plantHook(name string) (func(*paxos.Node), error) {
	return nil, fmt.Errorf("-plant %q needs a contracts build: go run -tags contracts ./tools/vesta-sim -plant %s ...", name, name)
}
