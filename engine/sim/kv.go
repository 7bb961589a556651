package sim

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"

	"github.com/anishathalye/porcupine"
)

// opKind is a key-value operation.
type opKind uint8

const (
	opGet opKind = 1
	opPut opKind = 2
	opCAS opKind = 3
)

// readMode is how a get is served.
type readMode uint8

const (
	readLog   readMode = iota // through the log
	readIndex                 // the leader's read index
	readLease                 // the leader's lease, or a read index without one
)

// command is one client operation, tagged with its client session.
type command struct {
	Client uint32
	Seq    uint64
	Op     opKind
	Key    string
	Value  string // put: new value; cas: new value
	Expect string // cas: expected current value
	// Read: how a get is served, if not through the log (paxos read.go,
	// lease.go). Not encoded: such a get never enters the log.
	Read readMode
}

// result is what the state machine answered.
type result struct {
	Value string // get: current value
	OK    bool   // cas: whether it swapped; always true for get and put
}

// cmdID identifies a command across retries.
type cmdID struct {
	Client uint32
	Seq    uint64
}

func (c command) id() cmdID { return cmdID{c.Client, c.Seq} }

// appendCommand encodes c at the end of buf.
func appendCommand(buf []byte, c command) []byte {
	buf = binary.LittleEndian.AppendUint32(buf, c.Client)
	buf = binary.LittleEndian.AppendUint64(buf, c.Seq)
	buf = append(buf, byte(c.Op))
	for _, s := range []string{c.Key, c.Value, c.Expect} {
		buf = binary.AppendUvarint(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	return buf
}

// decodeBatch decodes a batch of commands; it returns an error on any malformed input.
func decodeBatch(data []byte) ([]command, error) {
	var out []command
	for len(data) > 0 {
		if len(data) < 13 {
			return nil, fmt.Errorf("truncated command header (%d bytes)", len(data))
		}
		c := command{
			Client: binary.LittleEndian.Uint32(data),
			Seq:    binary.LittleEndian.Uint64(data[4:]),
			Op:     opKind(data[12]),
		}
		data = data[13:]
		fields := []*string{&c.Key, &c.Value, &c.Expect}
		for _, f := range fields {
			n, k := binary.Uvarint(data)
			if k <= 0 || uint64(len(data)-k) < n {
				return nil, fmt.Errorf("truncated command field")
			}
			*f = string(data[k : k+int(n)])
			data = data[k+int(n):]
		}
		out = append(out, c)
	}
	return out, nil
}

// kvStore is the simulated application: a key-value map with client
// sessions, so a command delivered twice applies once (exactly-once).
type kvStore struct {
	data     map[string]string
	sessions map[uint32]session
}

type session struct {
	seq uint64
	res result
}

func newKV() *kvStore {
	return &kvStore{data: map[string]string{}, sessions: map[uint32]session{}}
}

// apply executes c unless its session already saw it (or a later command).
// It returns the result and whether it executed now.
func (kv *kvStore) apply(c command) (result, bool) {
	if s, ok := kv.sessions[c.Client]; ok && c.Seq <= s.seq {
		return s.res, false
	}
	var r result
	switch c.Op {
	case opGet:
		r = result{Value: kv.data[c.Key], OK: true}
	case opPut:
		kv.data[c.Key] = c.Value
		r = result{OK: true}
	case opCAS:
		if kv.data[c.Key] == c.Expect {
			kv.data[c.Key] = c.Value
			r = result{OK: true}
		}
	}
	kv.sessions[c.Client] = session{seq: c.Seq, res: r}
	return r, true
}

// kvInput and kvOutput are porcupine's view of an operation.
type kvInput struct {
	Op     opKind
	Key    string
	Value  string
	Expect string
	// OutsideLog: a get served by a read index or a lease, which does not
	// advance the client's session (see cluster.finish).
	OutsideLog bool
}

type kvOutput struct {
	Result  result
	Unknown bool // the client never learned the outcome
}

// kvModel is the sequential specification of one key (histories are
// partitioned by key). It is nondeterministic: a write whose outcome the
// client never learned may or may not have taken effect, so its step yields
// both states. That lets such an operation keep a bounded interval (see
// cluster.finish) instead of staying open to the end of time, which would make
// the check exponentially harder.
var kvModel = (&porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(kvInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() []any { return []any{""} },
	Step: func(state, input, output any) []any {
		st, in, out := state.(string), input.(kvInput), output.(kvOutput)
		switch in.Op {
		case opGet:
			if out.Unknown || out.Result.Value == st {
				return []any{st}
			}
			return nil
		case opPut:
			if out.Unknown && in.Value != st {
				return []any{st, in.Value} // not applied, or applied
			}
			return []any{in.Value}
		case opCAS:
			swapped := st == in.Expect
			switch {
			case out.Unknown && swapped && in.Value != st:
				return []any{st, in.Value}
			case out.Unknown:
				return []any{st}
			case out.Result.OK != swapped:
				return nil
			case swapped:
				return []any{in.Value}
			default:
				return []any{st}
			}
		}
		return nil
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(kvInput), output.(kvOutput)
		res := fmt.Sprintf("%+v", out.Result)
		if out.Unknown {
			res = "?"
		}
		switch in.Op {
		case opGet:
			return fmt.Sprintf("get(%s) -> %s", in.Key, res)
		case opPut:
			return fmt.Sprintf("put(%s,%s) -> %s", in.Key, in.Value, res)
		default:
			return fmt.Sprintf("cas(%s,%s->%s) -> %s", in.Key, in.Expect, in.Value, res)
		}
	},
}).ToModel()

// clone returns a deep copy: a checkpoint's image, which later applies to
// the original do not touch.
func (kv *kvStore) clone() *kvStore {
	return &kvStore{data: maps.Clone(kv.data), sessions: maps.Clone(kv.sessions)}
}

// digest hashes the store's whole logical state (keys and values in key
// order, then sessions in client order), so replicas at equal applied slots
// can be compared whatever their map layouts.
func (kv *kvStore) digest() uint64 {
	h := fnv.New64a()
	var buf []byte
	for _, k := range slices.Sorted(maps.Keys(kv.data)) {
		buf = binary.AppendUvarint(buf[:0], uint64(len(k)))
		buf = append(buf, k...)
		v := kv.data[k]
		buf = binary.AppendUvarint(buf, uint64(len(v)))
		buf = append(buf, v...)
		h.Write(buf)
	}
	h.Write([]byte{0xff})
	for _, id := range slices.Sorted(maps.Keys(kv.sessions)) {
		s := kv.sessions[id]
		buf = binary.LittleEndian.AppendUint32(buf[:0], id)
		buf = binary.LittleEndian.AppendUint64(buf, s.seq)
		buf = binary.AppendUvarint(buf, uint64(len(s.res.Value)))
		buf = append(buf, s.res.Value...)
		if s.res.OK {
			buf = append(buf, 1)
		} else {
			buf = append(buf, 0)
		}
		h.Write(buf)
	}
	return h.Sum64()
}
