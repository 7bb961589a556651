package ringbuf

import (
	"sync/atomic"

	"github.com/vestalabs/vesta/internal/contract"
)

// solo checks, in contracts builds only, that a role that must be played by
// one goroutine at a time (the consumer of any ring, the producer of an
// SPSC) is not entered by two at once. Without the tag it is an unused word:
// both methods compile to nothing.
type solo struct{ busy atomic.Int32 }

func (s *solo) enter(role string) {
	// Not Requiref(cond, …, role): its arguments would allocate on every call.
	if contract.Enabled && !s.busy.CompareAndSwap(0, 1) {
		contract.Requiref(false, "ringbuf: two goroutines act as the %s at once", role)
	}
}

func (s *solo) exit() {
	if contract.Enabled {
		s.busy.Store(0)
	}
}
