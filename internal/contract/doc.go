// Package contract states preconditions, postconditions and invariants.
//
// Checks are active only in builds with the `contracts` build tag (every test
// run uses it, see the Makefile). Without the tag, Enabled is the constant
// false and every function here has an empty body, so
//
//	if contract.Enabled { ...expensive check... }
//
// is removed by the compiler, and a direct call such as
// contract.Require(b.Less(n.promised), "...") costs at most the evaluation of
// its (cheap) condition. Put anything that loops or allocates behind Enabled.
//
// A failed check panics with a *Violation, which names its kind and message.
// Panicking is deliberate: a broken contract means the replica's memory can no
// longer be trusted, and the simulator turns the panic into a reported
// violation that replays from its seed.
package contract

import "fmt"

// Violation is the panic value of a failed check.
type Violation struct {
	Kind string // "precondition", "postcondition" or "invariant"
	Msg  string
}

func (v *Violation) Error() string { return fmt.Sprintf("contract %s violated: %s", v.Kind, v.Msg) }
