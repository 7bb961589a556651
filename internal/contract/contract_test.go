package contract

import (
	"errors"
	"testing"
)

func TestChecksPanicWithViolationWhenEnabled(t *testing.T) {
	if !Enabled {
		t.Fatal("tests must run with -tags contracts (see the Makefile)")
	}
	for _, tc := range []struct {
		name string
		kind string
		fn   func()
	}{
		{"Require", "precondition", func() { Require(false, "x") }},
		{"Ensure", "postcondition", func() { Ensure(false, "x") }},
		{"Invariant", "invariant", func() { Invariant(false, "x") }},
		{"Requiref", "precondition", func() { Requiref(false, "x=%d", 1) }},
		{"Ensuref", "postcondition", func() { Ensuref(false, "x=%d", 1) }},
		{"Invariantf", "invariant", func() { Invariantf(false, "x=%d", 1) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				r := recover()
				v, ok := r.(*Violation)
				if !ok {
					t.Fatalf("recovered %v, want *Violation", r)
				}
				if v.Kind != tc.kind {
					t.Fatalf("kind %q, want %q", v.Kind, tc.kind)
				}
				var err error = v
				if !errors.As(err, &v) || v.Error() == "" {
					t.Fatal("Violation must be an error with a message")
				}
			}()
			tc.fn()
		})
	}
}

func TestPassingChecksDoNothing(t *testing.T) {
	Require(true, "x")
	Ensure(true, "x")
	Invariant(true, "x")
	Requiref(true, "%d", 1)
	Ensuref(true, "%d", 1)
	Invariantf(true, "%d", 1)
}
