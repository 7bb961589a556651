package engine

import (
	"sync"
	"time"
)

// rateLimiter lets one log line through per interval and counts the ones it
// held back, so that input from outside (refused messages) or a slow state
// machine cannot flood the log.
type rateLimiter struct {
	every time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// allow reports whether a line may be logged now and, if so, how many were
// held back since the last one.
func (l *rateLimiter) allow(now time.Time) (suppressed int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < l.every {
		l.suppressed++
		return 0, false
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return n, true
}
