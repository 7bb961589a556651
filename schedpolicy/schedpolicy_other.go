//go:build !linux

package schedpolicy

import (
	"fmt"
	"runtime"
)

// Set gives every thread of the calling process policy p; only Normal,
// which changes nothing, is possible outside Linux.
func Set(p Policy) error {
	if p == Normal {
		return nil
	}
	return fmt.Errorf("schedpolicy: %s scheduling is Linux's; this is %s", p, runtime.GOOS)
}

// Current reports the calling thread's policy: Normal outside Linux.
func Current() (string, error) { return string(Normal), nil }
