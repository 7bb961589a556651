//go:build contracts

package contract

import "fmt"

// Enabled reports whether checks run in this build.
const Enabled = true

// Require states a precondition: what the caller must guarantee.
func Require(cond bool, msg string) {
	if !cond {
		panic(&Violation{Kind: "precondition", Msg: msg})
	}
}

// Ensure states a postcondition: what the function guarantees on return.
func Ensure(cond bool, msg string) {
	if !cond {
		panic(&Violation{Kind: "postcondition", Msg: msg})
	}
}

// Invariant states something that holds at every step.
func Invariant(cond bool, msg string) {
	if !cond {
		panic(&Violation{Kind: "invariant", Msg: msg})
	}
}

// Requiref is Require with a formatted message; the message is built only on failure.
func Requiref(cond bool, format string, args ...any) {
	if !cond {
		panic(&Violation{Kind: "precondition", Msg: fmt.Sprintf(format, args...)})
	}
}

// Ensuref is Ensure with a formatted message; the message is built only on failure.
func Ensuref(cond bool, format string, args ...any) {
	if !cond {
		panic(&Violation{Kind: "postcondition", Msg: fmt.Sprintf(format, args...)})
	}
}

// Invariantf is Invariant with a formatted message; the message is built only on failure.
func Invariantf(cond bool, format string, args ...any) {
	if !cond {
		panic(&Violation{Kind: "invariant", Msg: fmt.Sprintf(format, args...)})
	}
}
