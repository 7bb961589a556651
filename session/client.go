package session

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/vestalabs/vesta/engine"
)

// Proposer proposes a command to a replicated state machine and returns its
// result: *engine.Replica is one. Errors follow Replica.Propose's:
// engine.ErrOutcomeUnknown (proposed, then leadership was lost),
// engine.ErrNotLeader (not proposed: try another replica), engine.ErrBusy
// (not proposed: try later), others final. The proposer may read cmd until
// the command's outcome is known, even after Propose returned.
type Proposer interface {
	Propose(ctx context.Context, cmd []byte) ([]byte, error)
}

// Client is a session's proposer side: it numbers each command and retries
// it under the same number until its result arrives, so a command that a
// Machine applies is applied once, however often a lost leadership makes
// the client retry it. Make one with Open. A Client is safe for concurrent
// use: several commands may be in flight at once.
type Client struct {
	p  Proposer
	id uint64

	mu      sync.Mutex
	next    uint64              // the sequence number the next command gets
	low     uint64              // the least sequence number not completed
	done    map[uint64]struct{} // completed sequence numbers above low
	expired bool
}

// Retry pacing: after an attempt that a retryable error ended, the client
// waits retryMin, doubling up to retryMax, before the next.
const (
	retryMin = 2 * time.Millisecond
	retryMax = 100 * time.Millisecond
)

// retryable reports whether err means "not applied, or outcome unknown:
// send the same command again" (possibly to another replica).
func retryable(err error) bool {
	return errors.Is(err, engine.ErrOutcomeUnknown) || errors.Is(err, engine.ErrNotLeader) || errors.Is(err, engine.ErrBusy)
}

// Open opens a new session through p (a Machine's NewSession, through the
// log) and returns its client. A retryable error (see Client.Propose) is
// retried until ctx ends; an open whose outcome was unknown may have opened
// a session nobody uses, which the table evicts in time.
func Open(ctx context.Context, p Proposer) (*Client, error) {
	var res []byte
	err := retry(ctx, func() error {
		var err error
		res, err = p.Propose(ctx, AppendNewSession(nil))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("session: opening a session: %w", err)
	}
	id, err := ParseNewSession(res)
	if err != nil {
		return nil, fmt.Errorf("session: opening a session: %w", err)
	}
	return &Client{p: p, id: id, next: 1, low: 1, done: map[uint64]struct{}{}}, nil
}

// ID returns the session's ID.
func (c *Client) ID() uint64 { return c.id }

// retry calls attempt until it succeeds, fails with an error that is not
// retryable, or ctx ends (then ctx's error, joined with the last attempt's).
func retry(ctx context.Context, attempt func() error) error {
	wait := retryMin
	for {
		err := attempt()
		if err == nil || !retryable(err) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, retryMax)
	}
}

// Propose has the wrapped machine apply cmd once and returns its result. It
// stamps cmd with the session and the next sequence number, and sends it
// again, unchanged, after engine.ErrOutcomeUnknown, engine.ErrNotLeader or
// engine.ErrBusy, until a result arrives or ctx ends: the machine applies
// it at most once and answers a retry with the first result. The proposer
// may read cmd until the outcome is known (see Proposer): do not modify it.
//
// Errors: ErrExpired when the session was evicted (open a new session; the
// client stays expired); ErrFull (not applied; retry once other commands
// complete); *InvalidError; a final error of the proposer; or ctx's error.
// When ctx ends after an attempt was made, the command may or may not be
// applied: the error then wraps engine.ErrOutcomeUnknown too. Either way the
// client gives the command up: its later commands tell the machine so, and
// a copy of it that reaches the machine after that is refused as stale.
func (c *Client) Propose(ctx context.Context, cmd []byte) ([]byte, error) {
	c.mu.Lock()
	if c.expired {
		c.mu.Unlock()
		return nil, fmt.Errorf("session %#x: %w", c.id, ErrExpired)
	}
	seq := c.next
	c.next++
	c.mu.Unlock()

	attempts := 0
	var res []byte
	err := retry(ctx, func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		c.mu.Lock()
		low := c.low
		c.mu.Unlock()
		attempts++
		// A new envelope each attempt: the last one may still be read.
		var err error
		res, err = c.p.Propose(ctx, AppendWrite(nil, c.id, seq, low, cmd))
		return err
	})
	c.complete(seq)
	if err != nil {
		if attempts > 0 && ctx.Err() != nil {
			err = errors.Join(err, engine.ErrOutcomeUnknown)
		}
		return nil, fmt.Errorf("session %#x: command %d: %w", c.id, seq, err)
	}
	body, err := ParseResult(res)
	if err != nil {
		if errors.Is(err, ErrExpired) {
			c.mu.Lock()
			c.expired = true
			c.mu.Unlock()
			if attempts > 1 {
				err = fmt.Errorf("%w (an earlier attempt's outcome is unknown)", err)
			}
		}
		return nil, fmt.Errorf("session %#x: command %d: %w", c.id, seq, err)
	}
	return body, nil
}

// complete marks seq completed (answered or given up) and moves the low
// mark past the completed prefix.
func (c *Client) complete(seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if seq != c.low {
		c.done[seq] = struct{}{}
		return
	}
	c.low++
	for {
		if _, ok := c.done[c.low]; !ok {
			return
		}
		delete(c.done, c.low)
		c.low++
	}
}

// Failover returns a Proposer that sends each command to one of ps: the one
// that last took a command, and on engine.ErrNotLeader or engine.ErrStopped
// the next, in turn, until one takes it or all refused (then the last
// error, engine.ErrNotLeader if any replica said so, so that a Client waits
// and tries again). Other errors, engine.ErrOutcomeUnknown among them, are
// returned as they are. Safe for concurrent use.
func Failover(ps ...Proposer) Proposer { return &failover{ps: ps} }

type failover struct {
	ps  []Proposer
	mu  sync.Mutex
	cur int
}

func (f *failover) Propose(ctx context.Context, cmd []byte) ([]byte, error) {
	if len(f.ps) == 0 {
		return nil, errors.New("session: Failover of no proposers")
	}
	f.mu.Lock()
	start := f.cur
	f.mu.Unlock()
	var notLeader error
	var last error
	for k := range f.ps {
		i := (start + k) % len(f.ps)
		res, err := f.ps[i].Propose(ctx, cmd)
		if err == nil || !(errors.Is(err, engine.ErrNotLeader) || errors.Is(err, engine.ErrStopped)) {
			if err == nil || errors.Is(err, engine.ErrOutcomeUnknown) {
				f.mu.Lock()
				f.cur = i
				f.mu.Unlock()
			}
			return res, err
		}
		if errors.Is(err, engine.ErrNotLeader) {
			notLeader = err
		}
		last = err
	}
	if notLeader != nil {
		return nil, notLeader
	}
	return nil, last
}
