// Package kv is vestad's replicated state machine: a key-value map with
// exactly-once client sessions. It implements engine.StateMachine.
//
// # Commands
//
// One engine command carries a group of operations (vestad packs the
// requests that one read from a client connection brought into one command):
//
//	command: version u8 (=1) | count u32 (1..MaxOps) | count × op
//	op:      kind u8 | client u64 | seq u64 | low u64 | key str | value str | expect str
//	result:  count × (code u8 | flags u8 | value str)
//
// Integers are little-endian, str is a uvarint length and the bytes. This
// is the replicated log's format: changing it needs a new version byte.
//
// # Sessions (exactly-once writes)
//
// A write carries (client, seq, low): the client's ID, the write's sequence
// number, and the lowest sequence number the client has not yet seen
// acknowledged. A session keeps the result of every write it applied whose
// sequence number is at or above its low mark, and forgets the rest as the
// mark advances. So a write retried with its sequence number applies once
// and the retry gets the first result, even when the client's later writes
// applied before it (pipelining). A write below the mark was acknowledged to
// the client already, or abandoned by it; it is refused with CodeStale and
// not applied (nobody waits for it).
//
// Sessions are opened explicitly (OpOpenSession, through the log). A write
// naming a session the store does not know is refused with
// CodeSessionExpired and not applied: never re-executed under a forgotten
// session. The store keeps at most Options.MaxSessions sessions and evicts
// the least recently used (by log order, so every replica evicts the same
// one); a client whose session was evicted learns it from CodeSessionExpired
// and opens a new one. A session holds at most Options.MaxSessionResults
// unacknowledged results; a write beyond that is refused with CodeInvalid.
//
// Reads (OpGet) ignore the session fields: executing a read twice changes
// nothing. A write with client or seq 0 runs without a session: applied each
// time it is delivered (at-least-once).
package kv

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
)

// Kind is an operation's kind.
type Kind uint8

// The operations.
const (
	Get         Kind = 1
	Put         Kind = 2
	Delete      Kind = 3
	CAS         Kind = 4
	OpenSession Kind = 5
)

func (k Kind) String() string {
	switch k {
	case Get:
		return "get"
	case Put:
		return "put"
	case Delete:
		return "delete"
	case CAS:
		return "cas"
	case OpenSession:
		return "open-session"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

func (k Kind) isWrite() bool { return k == Put || k == Delete || k == CAS }

// Code is an operation's outcome.
type Code uint8

// The outcomes.
const (
	// CodeOK: applied; the result's fields hold what it returned.
	CodeOK Code = 0
	// CodeSessionExpired: the session is unknown (never opened, or evicted); not applied.
	CodeSessionExpired Code = 1
	// CodeStale: the sequence number is below the session's low mark; not applied.
	CodeStale Code = 2
	// CodeInvalid: a malformed command or an operation refused as wrong;
	// not applied. Value holds the reason.
	CodeInvalid Code = 3
)

func (c Code) String() string {
	switch c {
	case CodeOK:
		return "ok"
	case CodeSessionExpired:
		return "session-expired"
	case CodeStale:
		return "stale"
	case CodeInvalid:
		return "invalid"
	}
	return fmt.Sprintf("code(%d)", uint8(c))
}

const (
	version = 1
	// MaxOps bounds the operations in one command.
	MaxOps = 1 << 16
	// opFixed is an op's size without its three strings.
	opFixed = 1 + 8 + 8 + 8
	// headerSize is a command's size without its operations.
	headerSize = 1 + 4

	flagFound   = 1 << 0
	flagSwapped = 1 << 1
)

// Op is one operation of a command. Decoded Ops alias the command's bytes.
type Op struct {
	Kind   Kind
	Client uint64
	Seq    uint64
	Low    uint64
	Key    []byte
	Value  []byte
	Expect []byte
}

// Result is one operation's outcome. A decoded Result's Value aliases the
// result bytes.
type Result struct {
	Code    Code
	Found   bool   // get: the key exists; delete: it existed
	Swapped bool   // cas: the value was replaced
	Value   []byte // get: the value; CodeInvalid: the reason
}

// AppendCommand appends the command holding ops to dst.
func AppendCommand(dst []byte, ops []Op) []byte {
	start := len(dst)
	dst = BeginCommand(dst)
	for i := range ops {
		dst = AppendOp(dst, &ops[i])
	}
	EndCommand(dst[start:], len(ops))
	return dst
}

// BeginCommand appends a command's header to dst; append its operations
// with AppendOp, then call EndCommand. This builds a command one operation
// at a time, without keeping the operations.
func BeginCommand(dst []byte) []byte { return append(dst, version, 0, 0, 0, 0) }

// AppendOp appends op to a command begun with BeginCommand.
func AppendOp(dst []byte, op *Op) []byte {
	dst = append(dst, byte(op.Kind))
	dst = binary.LittleEndian.AppendUint64(dst, op.Client)
	dst = binary.LittleEndian.AppendUint64(dst, op.Seq)
	dst = binary.LittleEndian.AppendUint64(dst, op.Low)
	dst = appendStr(dst, op.Key)
	dst = appendStr(dst, op.Value)
	return appendStr(dst, op.Expect)
}

// EndCommand records in cmd (which starts with BeginCommand's header) that
// it holds n operations.
func EndCommand(cmd []byte, n int) { binary.LittleEndian.PutUint32(cmd[1:], uint32(n)) }

func appendStr(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// DecodeCommand decodes cmd into ops[:0], aliasing cmd.
func DecodeCommand(cmd []byte, ops []Op) ([]Op, error) {
	ops = ops[:0]
	if len(cmd) == 0 {
		return ops, fmt.Errorf("kv: empty command")
	}
	if cmd[0] != version {
		return ops, fmt.Errorf("kv: command version %d, want %d", cmd[0], version)
	}
	if len(cmd) < headerSize {
		return ops, fmt.Errorf("kv: command: header truncated")
	}
	n := binary.LittleEndian.Uint32(cmd[1:])
	if n == 0 || n > MaxOps {
		return ops, fmt.Errorf("kv: command: %d operations, want 1 to %d", n, MaxOps)
	}
	rest := cmd[headerSize:]
	for i := uint32(0); i < n; i++ {
		if len(rest) < opFixed {
			return ops, fmt.Errorf("kv: command: operation %d truncated", i)
		}
		op := Op{
			Kind:   Kind(rest[0]),
			Client: binary.LittleEndian.Uint64(rest[1:]),
			Seq:    binary.LittleEndian.Uint64(rest[9:]),
			Low:    binary.LittleEndian.Uint64(rest[17:]),
		}
		rest = rest[opFixed:]
		var err error
		for _, f := range []struct {
			name string
			p    *[]byte
		}{{"key", &op.Key}, {"value", &op.Value}, {"expect", &op.Expect}} {
			if *f.p, rest, err = takeStr(rest); err != nil {
				return ops, fmt.Errorf("kv: command: operation %d: %s: %w", i, f.name, err)
			}
		}
		ops = append(ops, op)
	}
	if len(rest) != 0 {
		return ops, fmt.Errorf("kv: command: %d bytes after the last operation", len(rest))
	}
	return ops, nil
}

func takeStr(b []byte) (val, rest []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return nil, nil, fmt.Errorf("bad length")
	}
	if n > uint64(len(b)-k) {
		return nil, nil, fmt.Errorf("length %d but %d bytes left", n, len(b)-k)
	}
	end := k + int(n)
	return b[k:end:end], b[end:], nil
}

// DecodeResults decodes a command's result bytes into out[:0], aliasing res.
func DecodeResults(res []byte, out []Result) ([]Result, error) {
	out = out[:0]
	for len(res) > 0 {
		if len(res) < 2 {
			return out, fmt.Errorf("kv: result %d truncated", len(out))
		}
		r := Result{Code: Code(res[0]), Found: res[1]&flagFound != 0, Swapped: res[1]&flagSwapped != 0}
		if r.Code > CodeInvalid || res[1]&^(flagFound|flagSwapped) != 0 {
			return out, fmt.Errorf("kv: result %d: unknown code %d or flags %#x", len(out), res[0], res[1])
		}
		var err error
		if r.Value, res, err = takeStr(res[2:]); err != nil {
			return out, fmt.Errorf("kv: result %d: value: %w", len(out), err)
		}
		out = append(out, r)
	}
	return out, nil
}

func appendResult(dst []byte, code Code, flags byte, val []byte) []byte {
	dst = append(dst, byte(code), flags)
	return appendStr(dst, val)
}

// Options bound the store's memory. Zero values take the defaults.
type Options struct {
	// MaxSessions bounds the sessions kept (100 000); beyond it the least
	// recently used is evicted.
	MaxSessions int
	// MaxSessionResults bounds the unacknowledged results one session keeps
	// (65 536); a write beyond it is refused.
	MaxSessionResults int
}

// DefaultMaxSessionResults is Options.MaxSessionResults's default.
const DefaultMaxSessionResults = 1 << 16

// Store is the key-value state machine. Apply is called from one goroutine
// (the engine's applier); Keys and Sessions may be called from any.
type Store struct {
	opts     Options
	data     map[string]string
	sessions map[uint64]*session
	lru      session // sentinel of the list of sessions, most recently used first
	ops      []Op
	scratch  []byte

	nkeys, nsessions atomic.Int64
	evicted          atomic.Uint64
}

type session struct {
	id         uint64
	low        uint64           // results below were acknowledged and are forgotten
	results    map[uint64]saved // by sequence number, all >= low
	prev, next *session
}

// saved is a write's result: writes return no value.
type saved struct {
	code  Code
	flags byte
}

// New returns an empty store.
func New(opts Options) *Store {
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = 100_000
	}
	if opts.MaxSessionResults <= 0 {
		opts.MaxSessionResults = DefaultMaxSessionResults
	}
	s := &Store{opts: opts, data: map[string]string{}, sessions: map[uint64]*session{}}
	s.lru.next, s.lru.prev = &s.lru, &s.lru
	return s
}

// Keys returns the number of keys stored (as of the last Apply).
func (s *Store) Keys() int { return int(s.nkeys.Load()) }

// Sessions returns the number of sessions kept (as of the last Apply).
func (s *Store) Sessions() int { return int(s.nsessions.Load()) }

// Evicted returns how many sessions were evicted so far.
func (s *Store) Evicted() uint64 { return s.evicted.Load() }

// Apply implements engine.StateMachine.
func (s *Store) Apply(cmds [][]byte, results [][]byte) {
	for i, cmd := range cmds {
		results[i] = s.applyCommand(cmd)
	}
	s.nkeys.Store(int64(len(s.data)))
	s.nsessions.Store(int64(len(s.sessions)))
}

func (s *Store) applyCommand(cmd []byte) []byte {
	ops, err := DecodeCommand(cmd, s.ops)
	s.ops = ops[:0]
	if err != nil {
		// Every replica decodes the same bytes and refuses them alike.
		return appendResult(nil, CodeInvalid, 0, []byte(err.Error()))
	}
	out := s.scratch[:0]
	for i := range ops {
		out = s.apply(out, &ops[i])
	}
	clear(ops) // do not keep the command's bytes reachable
	s.scratch = out
	if cap(s.scratch) > 1<<20 {
		s.scratch = nil
	}
	return append([]byte(nil), out...)
}

// apply executes one operation and appends its result to out.
func (s *Store) apply(out []byte, op *Op) []byte {
	switch {
	case op.Kind == Get:
		v, ok := s.data[string(op.Key)]
		var flags byte
		if ok {
			flags = flagFound
		}
		return appendResult(out, CodeOK, flags, []byte(v))
	case op.Kind == OpenSession:
		if op.Client == 0 {
			return appendResult(out, CodeInvalid, 0, []byte("open-session: client ID 0"))
		}
		s.openSession(op.Client)
		return appendResult(out, CodeOK, 0, nil)
	case !op.Kind.isWrite():
		return appendResult(out, CodeInvalid, 0, []byte("unknown operation "+op.Kind.String()))
	case op.Client == 0 || op.Seq == 0:
		code, flags := s.write(op)
		return appendResult(out, code, flags, nil)
	}
	ss := s.sessions[op.Client]
	if ss == nil {
		return appendResult(out, CodeSessionExpired, 0, nil)
	}
	s.touch(ss)
	if op.Low > ss.low {
		ss.advance(op.Low)
	}
	if op.Seq < ss.low {
		return appendResult(out, CodeStale, 0, nil)
	}
	if r, ok := ss.results[op.Seq]; ok {
		return appendResult(out, r.code, r.flags, nil)
	}
	if len(ss.results) >= s.opts.MaxSessionResults {
		return appendResult(out, CodeInvalid, 0, []byte(fmt.Sprintf(
			"session holds %d unacknowledged writes, the limit", len(ss.results))))
	}
	code, flags := s.write(op)
	ss.results[op.Seq] = saved{code, flags}
	return appendResult(out, code, flags, nil)
}

// write executes a put, delete or cas.
func (s *Store) write(op *Op) (Code, byte) {
	switch op.Kind {
	case Put:
		s.data[string(op.Key)] = string(op.Value)
		return CodeOK, 0
	case Delete:
		if _, ok := s.data[string(op.Key)]; ok {
			delete(s.data, string(op.Key))
			return CodeOK, flagFound
		}
		return CodeOK, 0
	default: // CAS
		if cur := s.data[string(op.Key)]; cur == string(op.Expect) {
			s.data[string(op.Key)] = string(op.Value)
			return CodeOK, flagSwapped
		}
		return CodeOK, 0
	}
}

// advance forgets the results below low.
func (ss *session) advance(low uint64) {
	if low-ss.low <= uint64(len(ss.results)) {
		for q := ss.low; q < low; q++ {
			delete(ss.results, q)
		}
	} else {
		for q := range ss.results {
			if q < low {
				delete(ss.results, q)
			}
		}
	}
	ss.low = low
}

func (s *Store) openSession(id uint64) {
	if ss := s.sessions[id]; ss != nil {
		s.touch(ss)
		return
	}
	if len(s.sessions) >= s.opts.MaxSessions {
		old := s.lru.prev
		s.unlink(old)
		delete(s.sessions, old.id)
		s.evicted.Add(1)
	}
	ss := &session{id: id, low: 1, results: map[uint64]saved{}}
	s.sessions[id] = ss
	s.pushFront(ss)
}

func (s *Store) touch(ss *session) {
	if s.lru.next != ss {
		s.unlink(ss)
		s.pushFront(ss)
	}
}

func (s *Store) unlink(ss *session) {
	ss.prev.next, ss.next.prev = ss.next, ss.prev
	ss.prev, ss.next = nil, nil
}

func (s *Store) pushFront(ss *session) {
	ss.prev, ss.next = &s.lru, s.lru.next
	s.lru.next.prev = ss
	s.lru.next = ss
}
