package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/vestalabs/vesta/client/proto"
)

// ErrCallTimeout matches (errors.Is) the error of a call that ran past
// Options.CallTimeout; that error matches context.DeadlineExceeded too.
var ErrCallTimeout = errors.New("vesta client: no success within the call timeout")

// CallError is the error of a call that ran out of time: its context ended,
// or Options.CallTimeout passed. It says what the client last saw go wrong
// at each server, so that a cluster that stopped (replicas failed, a quorum
// gone) explains itself instead of looking merely slow.
type CallError struct {
	Op string // the operation: "put", "get", "delete", "cas", "status", "open-session"
	// Err is why the call ended: its context's error, or past CallTimeout an
	// error that matches ErrCallTimeout and context.DeadlineExceeded.
	Err error
	// Unknown is set for a write that was sent: it may or may not apply
	// (the error then matches ErrOutcomeUnknown).
	Unknown bool
	// Behind is set for a read at any replica that servers answered had
	// not applied its min slot yet (the error then matches
	// ErrReplicaBehind).
	Behind bool
	// Servers holds, per server, the last failure the client saw there
	// since that server last succeeded: the client's addresses in order,
	// then any others it was sent to. Empty when none failed.
	Servers []ServerFailure
}

// ServerFailure is the last failure the client saw at one server.
type ServerFailure struct {
	Addr string
	// What went wrong, in words: "connecting: connect: connection refused",
	// "unavailable: replica failed: ...", "no answer for 2s",
	// "not the leader, and it knows of none".
	What string
	Ago  time.Duration // how long before the call ended it was seen
	// Said is the message of the server's last unavailable answer, when
	// What is something else that came after it: a failed replica answers
	// "replica failed: <cause>" and exits, and its connections are refused
	// from then on. SaidAgo is how long before the call ended it came.
	Said    string
	SaidAgo time.Duration
}

func (e *CallError) Error() string {
	var b strings.Builder
	b.WriteString("vesta client: ")
	b.WriteString(e.Op)
	b.WriteString(": ")
	if e.Unknown {
		b.WriteString("the write may or may not have applied: ")
	}
	b.WriteString(e.Err.Error())
	if e.Behind {
		b.WriteString(" (the replicas asked had not applied the read's min slot: retry later, read by index at the leader, or allow a stale answer)")
	}
	if len(e.Servers) == 0 {
		b.WriteString("; no server reported a failure")
		return b.String()
	}
	b.WriteString("; last failure per server: ")
	for i, f := range e.Servers {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %s (%v ago)", f.Addr, f.What, f.Ago.Round(time.Millisecond))
		if f.Said != "" {
			fmt.Fprintf(&b, ", after it answered unavailable: %s (%v ago)", f.Said, f.SaidAgo.Round(time.Millisecond))
		}
	}
	return b.String()
}

// Unwrap returns Err, ErrOutcomeUnknown for a write that may have applied,
// and ErrReplicaBehind for a read whose replicas were behind.
func (e *CallError) Unwrap() []error {
	errs := []error{e.Err}
	if e.Unknown {
		errs = append(errs, ErrOutcomeUnknown)
	}
	if e.Behind {
		errs = append(errs, ErrReplicaBehind)
	}
	return errs
}

// callTimeoutError is CallError.Err past Options.CallTimeout.
type callTimeoutError struct{ d time.Duration }

func (e callTimeoutError) Error() string {
	return fmt.Sprintf("no success within the call timeout (%v): %v", e.d, context.DeadlineExceeded)
}

func (e callTimeoutError) Is(target error) bool {
	return target == ErrCallTimeout || target == context.DeadlineExceeded
}

// Timeout reports true, as net.Error's does.
func (e callTimeoutError) Timeout() bool { return true }

// serverNote is what the client last saw go wrong at one server. Guarded by
// Client.mu; written on failure paths only.
type serverNote struct {
	kind   noteKind
	text   string // see noteKind
	at     int64  // coarse time of the note
	said   string // the server's own words in its last unavailable answer
	saidAt int64
	okAt   int64 // a success on a connection that failed since; live ones keep theirs
}

type noteKind uint8

const (
	noteFailed      noteKind = iota + 1 // text says what failed
	noteUnavailable                     // text is the server's message
	noteNotLeader                       // text is the leader it named ("": none)
)

// maxNotes bounds the servers noted: addresses come from the client's list
// and from servers' hints, so a handful in practice.
const maxNotes = 64

// note records a failure at addr. okAt is a success seen on a connection
// that is now gone (0: none).
func (c *Client) note(addr string, kind noteKind, text string, okAt int64) {
	c.mu.Lock()
	c.noteLocked(addr, kind, text, okAt)
	c.mu.Unlock()
}

func (c *Client) noteLocked(addr string, kind noteKind, text string, okAt int64) {
	n := c.notes[addr]
	if n == nil {
		if len(c.notes) >= maxNotes {
			return
		}
		n = &serverNote{}
		c.notes[addr] = n
	}
	n.kind, n.text, n.at = kind, text, c.now.Load()
	n.okAt = max(n.okAt, okAt)
	if kind == noteUnavailable {
		n.said, n.saidAt = text, n.at
	}
}

// noteUnavailable records an unavailable answer, msg being the server's
// message. It allocates only when the words change: under overload many
// answers repeat them.
func (c *Client) noteUnavailable(addr string, msg []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.notes[addr]; n != nil && n.kind == noteUnavailable && n.text == string(msg) {
		n.at = c.now.Load()
		n.saidAt = n.at
		return
	}
	c.noteLocked(addr, noteUnavailable, string(msg), 0)
}

// noteNotLeader records a not-leader answer naming leader ("": none).
func (c *Client) noteNotLeader(addr, leader string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.notes[addr]; n != nil && n.kind == noteNotLeader && n.text == leader {
		n.at = c.now.Load()
		return
	}
	c.noteLocked(addr, noteNotLeader, leader, 0)
}

// connFailure describes a failed connection's error for a note.
func connFailure(what string, err error) string {
	if errors.Is(err, io.EOF) {
		return "the server closed the connection"
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return what + ": " + oe.Err.Error()
	}
	return what + ": " + err.Error()
}

// callError builds the error of a call of op that ran out of time for
// cause; only, when set, limits it to one server (a Status call).
func (c *Client) callError(op proto.Op, only string, cause error, unknown bool) *CallError {
	e := &CallError{Op: op.String(), Err: cause, Unknown: unknown}
	now := int64(time.Since(c.epoch))
	c.mu.Lock()
	addrs := make([]string, 0, len(c.notes))
	for a := range c.notes {
		if only == "" || a == only {
			addrs = append(addrs, a)
		}
	}
	slices.SortFunc(addrs, func(a, b string) int {
		ia, ib := slices.Index(c.addrs, a), slices.Index(c.addrs, b)
		if ia < 0 {
			ia = len(c.addrs)
		}
		if ib < 0 {
			ib = len(c.addrs)
		}
		if ia != ib {
			return ia - ib
		}
		return strings.Compare(a, b)
	})
	for _, a := range addrs {
		n := c.notes[a]
		okAt := n.okAt
		if cn := c.conns[a]; cn != nil {
			okAt = max(okAt, cn.lastOK.Load())
		}
		if n.at <= okAt {
			continue // it has answered since
		}
		f := ServerFailure{Addr: a, Ago: time.Duration(now - n.at)}
		switch n.kind {
		case noteFailed:
			f.What = n.text
		case noteUnavailable:
			f.What = "unavailable: " + n.text
		case noteNotLeader:
			if n.text == "" {
				f.What = "not the leader, and it knows of none"
			} else {
				f.What = "not the leader (it names " + n.text + ")"
			}
		}
		if n.kind != noteUnavailable && n.said != "" && n.saidAt > okAt {
			f.Said, f.SaidAgo = n.said, time.Duration(now-n.saidAt)
		}
		e.Servers = append(e.Servers, f)
	}
	c.mu.Unlock()
	return e
}
