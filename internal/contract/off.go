//go:build !contracts

package contract

// Enabled reports whether checks run in this build.
const Enabled = false

// Require states a precondition; without the contracts tag it does nothing.
func Require(bool, string) {}

// Ensure states a postcondition; without the contracts tag it does nothing.
func Ensure(bool, string) {}

// Invariant states an invariant; without the contracts tag it does nothing.
func Invariant(bool, string) {}

// Requiref is Require with a formatted message; without the tag it does nothing.
func Requiref(bool, string, ...any) {}

// Ensuref is Ensure with a formatted message; without the tag it does nothing.
func Ensuref(bool, string, ...any) {}

// Invariantf is Invariant with a formatted message; without the tag it does nothing.
func Invariantf(bool, string, ...any) {}
