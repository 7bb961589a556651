package main

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progress prints what the lab is doing with the time elapsed since it
// started, so that a CI log shows where the minutes go.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
	quiet bool // guest console lines are not echoed
}

func newProgress(w io.Writer) *progress { return &progress{w: w, start: time.Now()} }

func (p *progress) elapsed() time.Duration { return time.Since(p.start) }

// stepf prints one line of the lab's own progress.
func (p *progress) stepf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "vmlab [%6.1fs] %s\n", p.elapsed().Seconds(), fmt.Sprintf(format, args...))
}

// guest echoes one line of the guest's console (or QEMU's stderr, with
// another tag).
func (p *progress) guest(tag, line string) {
	if p.quiet {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "%s| %s\n", tag, line)
}

// raw prints a line as is (the final verdict, SKIP lines).
func (p *progress) raw(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format+"\n", args...)
}
