// Package lograte keeps log lines caused by input from outside (refused
// messages, misbehaving clients) or by a slow component from flooding the
// log: one line per interval, with a count of the ones held back.
package lograte

import (
	"sync"
	"time"
)

// Limiter lets one line through per Every and counts the ones it holds
// back. The zero value with Every set is ready; it is safe for concurrent
// use.
type Limiter struct {
	Every time.Duration

	mu   sync.Mutex
	last time.Time
	held int
}

// Allow reports whether a line may be logged now and, if so, how many were
// held back since the last one.
func (l *Limiter) Allow(now time.Time) (held int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < l.Every {
		l.held++
		return 0, false
	}
	n := l.held
	l.last, l.held = now, 0
	return n, true
}

// Flush reports the lines held back once the last line let through is at
// least Every old (ok, with their count and that line's time), and starts
// the count again; a caller's sweeper says them in one summary line.
func (l *Limiter) Flush(now time.Time) (held int, since time.Time, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held == 0 || now.Sub(l.last) < l.Every {
		return 0, time.Time{}, false
	}
	held, since = l.held, l.last
	l.last, l.held = now, 0
	return held, since, true
}
