package kv

// The store as it was before the hash table, the session rings and the
// decoding without allocations: the reference the property test compares the
// store with, and the baseline of the benchmarks. Kept verbatim but for names,
// for store-issued sessions (NewSession, and OpenSession's refusal of an
// issued ID it does not hold), and for the read cap of a command (a get past
// MaxReadBytes answers CodeRetry), written here as plainly as the rest.

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
)

// refDecodeCommand decodes cmd into ops[:0], aliasing cmd.
func refDecodeCommand(cmd []byte, ops []Op) ([]Op, error) {
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

// Store is the key-value state machine. Apply is called from one goroutine
// (the engine's applier); Keys and Sessions may be called from any.
type refStore struct {
	opts     Options
	data     map[string]string
	sessions map[uint64]*refSession
	lru      refSession // sentinel of the list of sessions, most recently used first
	ops      []Op
	scratch  []byte
	issued   uint64 // IDs NewSession issued: IssuedSessionBase up to IssuedSessionBase+issued
	readCap  int    // MaxReadBytes, or what a test sets
	read     int    // value bytes the current command's gets returned

	nkeys, nsessions atomic.Int64
	evicted          atomic.Uint64
}

type refSession struct {
	id         uint64
	low        uint64              // results below were acknowledged and are forgotten
	results    map[uint64]refSaved // by sequence number, all >= low
	prev, next *refSession
}

// refSaved is a write's result: writes return no value.
type refSaved struct {
	code  Code
	flags byte
}

// New returns an empty store.
func newRef(opts Options) *refStore {
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = 100_000
	}
	if opts.MaxSessionResults <= 0 {
		opts.MaxSessionResults = DefaultMaxSessionResults
	}
	s := &refStore{opts: opts, data: map[string]string{}, sessions: map[uint64]*refSession{}, readCap: MaxReadBytes}
	s.lru.next, s.lru.prev = &s.lru, &s.lru
	return s
}

// Keys returns the number of keys stored (as of the last Apply).
func (s *refStore) Keys() int { return int(s.nkeys.Load()) }

// Sessions returns the number of sessions kept (as of the last Apply).
func (s *refStore) Sessions() int { return int(s.nsessions.Load()) }

// Evicted returns how many sessions were evicted so far.
func (s *refStore) Evicted() uint64 { return s.evicted.Load() }

// Apply implements engine.StateMachine.
func (s *refStore) Apply(cmds [][]byte, results [][]byte) {
	for i, cmd := range cmds {
		results[i] = s.applyCommand(cmd)
	}
	s.nkeys.Store(int64(len(s.data)))
	s.nsessions.Store(int64(len(s.sessions)))
}

func (s *refStore) applyCommand(cmd []byte) []byte {
	ops, err := refDecodeCommand(cmd, s.ops)
	s.ops = ops[:0]
	if err != nil {
		// Every replica decodes the same bytes and refuses them alike.
		return appendResult(nil, CodeInvalid, 0, []byte(err.Error()))
	}
	out := s.scratch[:0]
	s.read = 0
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
func (s *refStore) apply(out []byte, op *Op) []byte {
	switch {
	case op.Kind == Get:
		v, ok := s.data[string(op.Key)]
		if s.read > 0 && s.read+len(v) > s.readCap && len(v) > 0 {
			return appendResult(out, CodeRetry, 0, nil)
		}
		s.read += len(v)
		var flags byte
		if ok {
			flags = flagFound
		}
		return appendResult(out, CodeOK, flags, []byte(v))
	case op.Kind == OpenSession:
		if op.Client == 0 {
			return appendResult(out, CodeInvalid, 0, []byte("open-session: client ID 0"))
		}
		if op.Client >= IssuedSessionBase && op.Client-IssuedSessionBase < IssuedSessionSpan && s.sessions[op.Client] == nil {
			what := "never issued"
			if op.Client-IssuedSessionBase < s.issued {
				what = "evicted"
			}
			return appendResult(out, CodeSessionExpired, 0, []byte(fmt.Sprintf("session %#x was %s; open a new session", op.Client, what)))
		}
		s.openSession(op.Client)
		return appendResult(out, CodeOK, 0, nil)
	case op.Kind == NewSession:
		if s.issued == IssuedSessionSpan {
			return appendResult(out, CodeInvalid, 0, []byte("new-session: every session ID of the issued range was issued"))
		}
		id := IssuedSessionBase + s.issued
		s.issued++
		s.openSession(id)
		return appendResult(out, CodeOK, 0, binary.LittleEndian.AppendUint64(nil, id))
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
	ss.results[op.Seq] = refSaved{code, flags}
	return appendResult(out, code, flags, nil)
}

// write executes a put, delete or cas.
func (s *refStore) write(op *Op) (Code, byte) {
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
func (ss *refSession) advance(low uint64) {
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

func (s *refStore) openSession(id uint64) {
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
	ss := &refSession{id: id, low: 1, results: map[uint64]refSaved{}}
	s.sessions[id] = ss
	s.pushFront(ss)
}

func (s *refStore) touch(ss *refSession) {
	if s.lru.next != ss {
		s.unlink(ss)
		s.pushFront(ss)
	}
}

func (s *refStore) unlink(ss *refSession) {
	ss.prev.next, ss.next.prev = ss.next, ss.prev
	ss.prev, ss.next = nil, nil
}

func (s *refStore) pushFront(ss *refSession) {
	ss.prev, ss.next = &s.lru, s.lru.next
	s.lru.next.prev = ss
	s.lru.next = ss
}
