package transport

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Lifecycle is how a connection-oriented transport (TCP here, the RDMA
// transport in package rdma) starts its goroutines, keeps its connections
// and stops: Close closes the listener and every tracked connection,
// cancels the context its goroutines and dials watch, and returns once every
// goroutine started with Go has returned. Close is idempotent; a later call
// waits for the goroutines and returns nil. Its zero value is not usable:
// call Init first.
type Lifecycle struct {
	ctx      context.Context
	cancel   context.CancelFunc
	stopping atomic.Bool // Close began (cheaper to poll than ctx.Err)
	wg       sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{} // every open connection, for Close
}

// Init readies l.
func (l *Lifecycle) Init() {
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.conns = make(map[net.Conn]struct{})
}

// Context is cancelled when Close begins.
func (l *Lifecycle) Context() context.Context { return l.ctx }

// Done is Context().Done().
func (l *Lifecycle) Done() <-chan struct{} { return l.ctx.Done() }

// Closing reports whether Close began.
func (l *Lifecycle) Closing() bool { return l.stopping.Load() }

// Go runs f on a goroutine that Close waits for. Call it before Close, or
// from a goroutine that Go started.
func (l *Lifecycle) Go(f func()) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		f()
	}()
}

// Sleep waits d or until Close; false if Close came first.
func (l *Lifecycle) Sleep(d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-l.ctx.Done():
		return false
	}
}

// Track registers c so that Close closes it; false (and c closed) if Close
// began.
func (l *Lifecycle) Track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

// Untrack forgets c and closes it.
func (l *Lifecycle) Untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	c.Close()
}

// AcceptLoop accepts connections on ln until Close or until ln is closed,
// tracks each and serves it on a goroutine of its own (started with Go).
// Other accept errors (out of descriptors and the like) are logged and
// retried after a growing wait, as net/http does. Run it with Go.
func (l *Lifecycle) AcceptLoop(ln net.Listener, log *slog.Logger, serve func(net.Conn)) {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if l.Closing() || errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			log.Warn("transport: accept failed", "err", err, "retry_in", delay)
			if !l.Sleep(delay) {
				return
			}
			continue
		}
		delay = 0
		if !l.Track(c) {
			return
		}
		l.Go(func() { serve(c) })
	}
}

// Close stops everything (see Lifecycle) and closes ln (if not nil); first
// says whether this call did (a later call only waits). A listener that
// was closed already is not an error.
func (l *Lifecycle) Close(ln net.Listener) (first bool, err error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		l.wg.Wait()
		return false, nil
	}
	l.closed = true
	conns := make([]net.Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	l.stopping.Store(true)
	l.cancel()
	if ln != nil {
		if err = ln.Close(); errors.Is(err, net.ErrClosed) {
			err = nil
		}
	}
	for _, c := range conns {
		c.Close()
	}
	l.wg.Wait()
	return true, err
}
