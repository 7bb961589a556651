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
//	code:    0 ok, 1 session expired, 2 stale, 3 invalid, 4 retry (a get
//	         past the command's MaxReadBytes: see Reads)
//
// Integers are little-endian, str is a uvarint length and the bytes. This
// is the replicated log's format: changing it needs a new version byte.
// NewSession (kind 6) came without one: a log written before it holds no
// such operation (vestad had no request that encoded it), so replaying an
// old log gives the state it gave, but for an OpenSession whose client drew
// an ID in the issued range (probability 2^-24), now refused. Every replica
// must run a store that knows NewSession before clients send it: one that
// does not refuses it, and would not hold the session the others opened.
// The read cap (MaxReadBytes, CodeRetry) came without one too: see Reads.
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
// Sessions are opened explicitly, through the log. A write naming a session
// the store does not know is refused with CodeSessionExpired and not
// applied: never re-executed under a forgotten session. The store keeps at
// most Options.MaxSessions sessions and evicts the least recently used (by
// log order, so every replica evicts the same one); a client whose session
// was evicted learns it from CodeSessionExpired and opens a new one. A
// session holds at most Options.MaxSessionResults unacknowledged results; a
// write beyond that is refused with CodeInvalid.
//
// The sessions are a session.Table (github.com/vestalabs/vesta/session),
// whose results are the writes' codes and flags; its encoding is part of the
// store's image (snapshot.go).
//
// NewSession opens a session under an ID the store issues: the next of
// [IssuedSessionBase, IssuedSessionBase+IssuedSessionSpan), in log order, so
// every replica issues the same one. Its result's value is the ID (8 bytes,
// little-endian). An issued ID is never issued again, so the store knows
// every issued ID it does not hold was evicted, from replicated state alone:
// an OpenSession naming an ID of that range the store does not hold is
// refused with CodeSessionExpired (evicted, or never issued), never opened
// empty. That is what makes a session safe against a duplicate of its open
// applied after its eviction: re-running NewSession issues another ID, and
// a late copy of an old write under the evicted ID stays refused.
//
// OpenSession with an ID the client chose (any other nonzero ID) opens that
// session, or touches it if open. It is kept for clients that choose their
// IDs; it cannot tell a first open from a duplicate applied after the
// session's eviction, which reopens the session empty, so a late copy of a
// write the evicted session had applied would apply again. Clients should
// use NewSession.
//
// Reads (OpGet) ignore the session fields: executing a read twice changes
// nothing. A write with client or seq 0 runs without a session: applied each
// time it is delivered (at-least-once).
//
// # Reads
//
// A get returns the key's value, flagged found if the key exists. The gets
// of one command return at most MaxReadBytes of values together, but for
// the first nonempty value, returned whatever its size: a get whose value
// would bring the values its command returned past MaxReadBytes returns
// CodeRetry and no value instead, and the command's later gets go on (one
// whose value still fits is answered). So a command's result holds at most
// max(MaxReadBytes, its largest value) bytes of values, plus a few bytes an
// operation, however many gets it carries: the store copies every value a
// command reads into its result, and vestad reserves the memory of a
// command's responses before it proposes it (tools/vestad/respbudget.go),
// which without this bound would be a largest value (1 MiB) a get. Every
// replica returns the same code (the same commands, in the same order, on
// the same state), and a get changes nothing, so retrying it is always
// correct; the first value of a command is always returned, so a get sent
// again alone, or first, is answered.
//
// MaxReadBytes is part of the state machine's meaning, and it came without
// a new version byte: it changes what gets return, never the state. Gets
// write nothing, and results are kept nowhere (a session keeps only its
// writes' codes), so replaying a log written before the cap, whose commands
// may hold gets past it, gives the state it gave; only the answers of those
// gets differ, and a replayed command's answer goes to nobody, or is a
// CodeRetry its client retries. For the same reason replicas that differ
// on it (a rolling upgrade) keep the same state: each answers the gets it
// proposed its own way.
package kv

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/vestalabs/vesta/internal/contract"
	"github.com/vestalabs/vesta/session"
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
	NewSession  Kind = 6
)

// The range of session IDs NewSession issues: in log order from
// IssuedSessionBase on. No other session opens in it, so the store knows
// the state of each of its IDs (open, evicted, or not issued yet) from its
// own replicated state. A client choosing a random 64-bit ID falls in it
// with probability 2^-24, and then has its OpenSession refused.
// They are the session package's.
const (
	IssuedSessionBase = session.IssuedBase
	IssuedSessionSpan = session.IssuedSpan
)

// IsIssuedSessionID reports whether id lies in the range NewSession issues from.
func IsIssuedSessionID(id uint64) bool { return session.IsIssued(id) }

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
	case NewSession:
		return "new-session"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

func (k Kind) isWrite() bool { return k == Put || k == Delete || k == CAS }

// hasKey reports whether executing k reads or writes a key.
func (k Kind) hasKey() bool { return k >= Get && k <= CAS }

// Code is an operation's outcome.
type Code uint8

// The outcomes.
const (
	// CodeOK: applied; the result's fields hold what it returned.
	CodeOK Code = 0
	// CodeSessionExpired: the session is unknown (never opened, or evicted);
	// not applied. Open a new session (NewSession). Value may say which.
	CodeSessionExpired Code = 1
	// CodeStale: the sequence number is below the session's low mark; not applied.
	CodeStale Code = 2
	// CodeInvalid: a malformed command or an operation refused as wrong;
	// not applied. Value holds the reason.
	CodeInvalid Code = 3
	// CodeRetry: a get whose value would bring the values its command
	// returned past MaxReadBytes (see Reads in the package comment); no
	// value. Send it again, in another command.
	CodeRetry Code = 4
)

// MaxReadBytes bounds the bytes of values the gets of one command return
// together, but for the command's first nonempty value (see Reads in the
// package comment). Part of the replicated semantics: every replica must
// use the same.
const MaxReadBytes = 1 << 20

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
	case CodeRetry:
		return "retry"
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
	var buf [16]rec
	recs, err := parseCommand(cmd, buf[:0])
	ops = ops[:0]
	for i := range recs {
		r := &recs[i]
		ops = append(ops, Op{Kind: r.kind, Client: r.client, Seq: r.seq, Low: r.low,
			Key: r.key.in(cmd), Value: r.value.in(cmd), Expect: r.expect.in(cmd)})
	}
	return ops, err
}

// span is a string's place in a command: cmd[off : off+n].
type span struct{ off, n int }

func (sp span) in(cmd []byte) []byte { return cmd[sp.off : sp.off+sp.n : sp.off+sp.n] }

// rec is an operation as the store decodes it: an Op whose strings are
// spans of the command instead of slices. Decoding into recs writes no
// pointers (no write barriers, nothing kept reachable), which made
// decoding take half the time it took into Ops.
type rec struct {
	kind               Kind
	client, seq, low   uint64
	key, value, expect span
}

// parseCommand appends cmd's operations to recs. On an error, the
// operations before the one in error are appended. The one decoder of
// commands: what it refuses, and its messages, are part of the replicated
// results.
func parseCommand(cmd []byte, recs []rec) ([]rec, error) {
	if len(cmd) == 0 {
		return recs, fmt.Errorf("kv: empty command")
	}
	if cmd[0] != version {
		return recs, fmt.Errorf("kv: command version %d, want %d", cmd[0], version)
	}
	if len(cmd) < headerSize {
		return recs, fmt.Errorf("kv: command: header truncated")
	}
	n := binary.LittleEndian.Uint32(cmd[1:])
	if n == 0 || n > MaxOps {
		return recs, fmt.Errorf("kv: command: %d operations, want 1 to %d", n, MaxOps)
	}
	pos := headerSize
	for i := uint32(0); i < n; i++ {
		if len(cmd)-pos < opFixed {
			return recs, fmt.Errorf("kv: command: operation %d truncated", i)
		}
		b := cmd[pos : pos+opFixed]
		r := rec{
			kind:   Kind(b[0]),
			client: binary.LittleEndian.Uint64(b[1:]),
			seq:    binary.LittleEndian.Uint64(b[9:]),
			low:    binary.LittleEndian.Uint64(b[17:]),
		}
		pos += opFixed
		var strs [3]span // key, value, expect
		for f := range strs {
			// A string under 128 bytes (a one-byte length) inline.
			if pos < len(cmd) {
				if n := int(cmd[pos]); n < 0x80 && n < len(cmd)-pos {
					strs[f] = span{pos + 1, n}
					pos += 1 + n
					continue
				}
			}
			var err error
			if strs[f], pos, err = takeSpan(cmd, pos); err != nil {
				return recs, fmt.Errorf("kv: command: operation %d: %s: %w", i, strNames[f], err)
			}
		}
		r.key, r.value, r.expect = strs[0], strs[1], strs[2]
		recs = append(recs, r)
	}
	if pos != len(cmd) {
		return recs, fmt.Errorf("kv: command: %d bytes after the last operation", len(cmd)-pos)
	}
	return recs, nil
}

var strNames = [3]string{"key", "value", "expect"}

// takeSpan locates the str at cmd[pos:] and returns where the next begins.
func takeSpan(cmd []byte, pos int) (span, int, error) {
	val, rest, err := takeStr(cmd[pos:])
	if err != nil {
		return span{}, 0, err
	}
	end := len(cmd) - len(rest)
	return span{end - len(val), len(val)}, end, nil
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
		if r.Code > CodeRetry || res[1]&^(flagFound|flagSwapped) != 0 {
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
const DefaultMaxSessionResults = session.DefaultMaxSessionResults

// Store is the key-value state machine. Apply is called from one goroutine
// (the engine's applier); Keys and Sessions may be called from any.
// Snapshot and Digest are called between applies, Restore with none running
// (snapshot.go).
type Store struct {
	opts    Options
	data    *table
	sess    *session.Table[saved]
	recs    []rec    // decoded operations: see decode
	hashes  []uint64 // their keys' hashes
	ends    []int    // where each decoded command's recs end
	scratch []byte
	sink    uint64 // keeps touchAhead's loads from being optimized away
	// readBytes is the bytes of values the gets of the command being
	// executed returned so far; readCap is MaxReadBytes (a test may lower it).
	readBytes, readCap int
	// evictedBase counts the evictions of session tables a Restore replaced.
	evictedBase uint64

	nkeys, nsessions atomic.Int64
	evicted          atomic.Uint64
	// applied is Machine.Apply's slot plus one, set before it applies: see
	// Applied.
	applied atomic.Uint64
}

// Applied returns the slot after the last one Machine.Apply was given (0:
// none): from the moment a command of slot s starts to apply (so, to its
// proposer's completion, which the engine runs after Apply returns) it is
// at least s+1, and every command of the slots below it has applied. It is
// what vestad sends a client as a write's applied slot. It does not move on
// Restore (which is not told its slot), so a reader of the state after one
// takes the engine's applied index as well (engine.Status.Applied). Safe
// from any goroutine.
func (s *Store) Applied() uint64 { return s.applied.Load() }

// saved is a write's result, as its session keeps it: writes return no value.
type saved struct {
	code  Code
	flags byte
}

// savedCodec encodes a saved result in the session table's encoding: one
// byte, code<<2 | flags (code 0..3, flags found=1 swapped=2).
type savedCodec struct{}

func (savedCodec) AppendResult(dst []byte, r saved) []byte {
	if contract.Enabled {
		contract.Requiref(r.code <= 3 && r.flags <= 3, "kv: saved result code %d flags %#x", r.code, r.flags)
	}
	return append(dst, byte(r.code)<<2|r.flags)
}

func (savedCodec) DecodeResult(b []byte) (saved, error) {
	if len(b) != 1 {
		return saved{}, fmt.Errorf("result of %d bytes, want 1", len(b))
	}
	if b[0] >= 16 {
		return saved{}, fmt.Errorf("byte %#x, want code<<2|flags below 16", b[0])
	}
	return saved{code: Code(b[0] >> 2), flags: b[0] & 3}, nil
}

// sessionOptions returns the session table's options for the store's.
func (o Options) sessionOptions() session.Options {
	return session.Options{MaxSessions: o.MaxSessions, MaxSessionResults: o.MaxSessionResults}
}

// New returns an empty store.
func New(opts Options) *Store {
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = 100_000
	}
	if opts.MaxSessionResults <= 0 {
		opts.MaxSessionResults = DefaultMaxSessionResults
	}
	return &Store{opts: opts, data: newTable(), sess: session.NewTable(opts.sessionOptions(), savedCodec{}), readCap: MaxReadBytes}
}

// Keys returns the number of keys stored (as of the last Apply).
func (s *Store) Keys() int { return int(s.nkeys.Load()) }

// Sessions returns the number of sessions kept (as of the last Apply).
func (s *Store) Sessions() int { return int(s.nsessions.Load()) }

// Evicted returns how many sessions were evicted so far.
func (s *Store) Evicted() uint64 { return s.evicted.Load() }

// Apply implements engine.StateMachine.
//
// A random key's slot and entry are each a cache miss, and taken one
// operation at a time they add up. So Apply works through cmds a stretch at a
// time: it decodes commands (hashing their keys) until it holds chunkOps
// operations, then executes them in order, touching the memory of each
// touchGroup operations just before executing them, across command
// boundaries (vestad's commands often hold a few operations), so that their
// misses overlap. Touching only reads: the results are those of executing
// every operation in order.
func (s *Store) Apply(cmds [][]byte, results [][]byte) {
	for len(cmds) > 0 {
		k := s.decode(cmds, results)
		s.execute(cmds[:k], results[:k])
		cmds, results = cmds[k:], results[k:]
	}
	if cap(s.recs) > 4*chunkOps {
		s.recs, s.hashes = nil, nil // a huge command's
	}
	if cap(s.scratch) > 1<<20 {
		s.scratch = nil
	}
	s.publish()
}

// publish stores the counts that other goroutines read.
func (s *Store) publish() {
	s.nkeys.Store(int64(s.data.Len()))
	s.nsessions.Store(int64(s.sess.Len()))
	s.evicted.Store(s.evictedBase + s.sess.Evicted())
}

const (
	// chunkOps is how many operations Apply decodes before executing them.
	chunkOps = 256
	// touchGroup is how many operations' memory is touched at once.
	touchGroup = 32
)

// decode decodes the first commands of cmds into s.recs, their key hashes
// into s.hashes and where each command's operations end into s.ends, until
// it holds chunkOps operations, and returns how many commands it decoded. It
// sets the result of each command it refuses.
func (s *Store) decode(cmds [][]byte, results [][]byte) int {
	recs, hashes, ends := s.recs[:0], s.hashes[:0], s.ends[:0]
	k := 0
	for ; k < len(cmds) && len(recs) < chunkOps; k++ {
		base := len(recs)
		var err error
		if recs, err = parseCommand(cmds[k], recs); err != nil {
			recs = recs[:base]
			// Every replica decodes the same bytes and refuses them alike.
			results[k] = appendResult(nil, CodeInvalid, 0, []byte(err.Error()))
		}
		for i := base; i < len(recs); i++ {
			var h uint64
			if recs[i].kind.hasKey() {
				h = s.data.hash(recs[i].key.in(cmds[k]))
			}
			hashes = append(hashes, h)
		}
		ends = append(ends, len(recs))
	}
	s.recs, s.hashes, s.ends = recs, hashes, ends
	return k
}

// execute executes the commands decode decoded and sets their results.
func (s *Store) execute(cmds [][]byte, results [][]byte) {
	recs, hashes := s.recs, s.hashes
	touched, begin := 0, 0
	for k, cmd := range cmds {
		end := s.ends[k]
		if begin == end {
			continue // refused: a decoded command holds operations
		}
		out := s.scratch[:0]
		s.readBytes = 0
		for i := begin; i < end; i++ {
			if i == touched {
				touched = min(i+touchGroup, len(recs))
				s.touchAhead(hashes[i:touched])
			}
			out = s.apply(out, cmd, &recs[i], hashes[i])
		}
		// The engine owns the result: a copy, out is reused.
		results[k] = append([]byte(nil), out...)
		s.scratch = out
		begin = end
	}
}

// touchAhead loads, without changing anything, the home slots of the keys
// with hashes hs and the entries they point to: the memory that executing
// their operations reads first. Separate tight loops (few instructions per
// load) keep many loads in flight before the processor's reorder window
// fills. A key-less operation's hash is 0: touching slot 0 is harmless.
func (s *Store) touchAhead(hs []uint64) {
	t := s.data
	var sink uint64
	for _, h := range hs {
		sink |= t.touchSlot(h)
	}
	for _, h := range hs {
		sink |= t.touchEntry(h)
	}
	s.sink += sink
}

// apply executes one operation of cmd, whose key hashes to h, and appends
// its result to out.
func (s *Store) apply(out, cmd []byte, r *rec, h uint64) []byte {
	switch {
	case r.kind == Get:
		v, ok := s.data.Get(r.key.in(cmd), h)
		if len(v) > 0 {
			if s.readBytes > 0 && len(v) > s.readCap-s.readBytes {
				return appendResult(out, CodeRetry, 0, nil)
			}
			s.readBytes += len(v)
		}
		var flags byte
		if ok {
			flags = flagFound
		}
		return appendResult(out, CodeOK, flags, v)
	case r.kind == OpenSession:
		if r.client == 0 {
			return appendResult(out, CodeInvalid, 0, []byte("open-session: client ID 0"))
		}
		if !s.sess.Open(r.client) {
			return appendResult(out, CodeSessionExpired, 0, []byte(refusedReopen(r.client, s.sess.NextIssued())))
		}
		return appendResult(out, CodeOK, 0, nil)
	case r.kind == NewSession:
		id, ok := s.sess.New()
		if !ok {
			return appendResult(out, CodeInvalid, 0, []byte("new-session: every session ID of the issued range was issued"))
		}
		return appendResult(out, CodeOK, 0, binary.LittleEndian.AppendUint64(nil, id))
	case !r.kind.isWrite():
		return appendResult(out, CodeInvalid, 0, []byte("unknown operation "+r.kind.String()))
	case r.client == 0 || r.seq == 0:
		code, flags := s.write(cmd, r, h)
		return appendResult(out, code, flags, nil)
	}
	switch st, sv := s.sess.Begin(r.client, r.seq, r.low); st {
	case session.Fresh:
	case session.Duplicate:
		return appendResult(out, sv.code, sv.flags, nil)
	case session.Expired:
		return appendResult(out, CodeSessionExpired, 0, nil)
	case session.Stale:
		return appendResult(out, CodeStale, 0, nil)
	case session.Full:
		return appendResult(out, CodeInvalid, 0, []byte(fmt.Sprintf(
			"session holds %d unacknowledged writes, the limit", s.opts.MaxSessionResults)))
	default: // InFlight: cannot be, each write's Record follows its Begin
		if contract.Enabled {
			contract.Invariantf(false, "kv: write %d of session %#x in flight across operations", r.seq, r.client)
		}
		return appendResult(out, CodeInvalid, 0, []byte("write in flight"))
	}
	code, flags := s.write(cmd, r, h)
	s.sess.Record(r.client, r.seq, saved{code, flags})
	return appendResult(out, code, flags, nil)
}

// refusedReopen is the reason an OpenSession of the issued ID id, which the
// store does not hold, is refused; next is the ID NewSession issues next.
// Part of the replicated results.
func refusedReopen(id, next uint64) string {
	if id < next {
		return fmt.Sprintf("session %#x was evicted; open a new session", id)
	}
	return fmt.Sprintf("session %#x was never issued; open a new session", id)
}

// write executes a put, delete or cas of a key that hashes to h.
func (s *Store) write(cmd []byte, r *rec, h uint64) (Code, byte) {
	key := r.key.in(cmd)
	switch r.kind {
	case Put:
		s.data.Put(key, r.value.in(cmd), h)
		return CodeOK, 0
	case Delete:
		if s.data.Delete(key, h) {
			return CodeOK, flagFound
		}
		return CodeOK, 0
	default: // CAS
		// A missing key's value is empty: a cas expecting empty creates it.
		if cur, _ := s.data.Get(key, h); string(cur) == string(r.expect.in(cmd)) {
			s.data.Put(key, r.value.in(cmd), h)
			return CodeOK, flagSwapped
		}
		return CodeOK, 0
	}
}
