package kv

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

const (
	benchKeys   = 100_000
	benchKeyLen = 7 // "k" and six digits: every op of a command has the same layout
	benchValLen = 64
)

type stateMachine interface {
	Apply(cmds [][]byte, results [][]byte)
}

// BenchmarkApply applies commands of uniformly random operations on 100 000
// keys with 64-byte values, as vesta-bench's default load does, to the store
// (new) and to the store before its hash table (old, the reference). One
// iteration is one Apply: of one command of 64 or 1024 operations, or of 64
// commands of 4 (vestad's commands are one connection's read's worth of
// requests). ns/kvop and allocs/kvop are per operation.
//
//	go test -run '^$' -bench Apply -benchtime 2s ./tools/vestad/kv
func BenchmarkApply(b *testing.B) {
	for _, mode := range []string{"put", "session-put", "get"} {
		for _, shape := range []struct{ ops, cmds int }{{64, 1}, {1024, 1}, {4, 64}} {
			for _, impl := range []string{"old", "new"} {
				b.Run(fmt.Sprintf("%s/ops=%dx%d/%s", mode, shape.cmds, shape.ops, impl), func(b *testing.B) {
					var sm stateMachine
					if impl == "old" {
						sm = newRef(Options{})
					} else {
						sm = New(Options{})
					}
					benchApply(b, sm, mode, shape.ops, shape.cmds)
				})
			}
		}
	}
}

func benchKey(dst []byte, k int) { copy(dst, fmt.Sprintf("k%06d", k)) }

func benchApply(b *testing.B, sm stateMachine, mode string, nops, ncmds int) {
	res := make([][]byte, ncmds)
	val := make([]byte, benchValLen)
	// Load every key.
	ops := make([]Op, 1000)
	for k := 0; k < benchKeys; k += len(ops) {
		for i := range ops {
			key := make([]byte, benchKeyLen)
			benchKey(key, k+i)
			ops[i] = Op{Kind: Put, Key: key, Value: val}
		}
		sm.Apply([][]byte{AppendCommand(nil, ops)}, res[:1])
	}
	sm.Apply([][]byte{AppendCommand(nil, []Op{{Kind: OpenSession, Client: 1}})}, res[:1])

	// Command templates; each iteration rewrites their keys (and sequence
	// numbers) in place, so commands cost no encoding and hold no reused keys.
	kind, client := Put, uint64(0)
	switch mode {
	case "session-put":
		client = 1
	case "get":
		kind = Get
	}
	ops = make([]Op, nops)
	for i := range ops {
		ops[i] = Op{Kind: kind, Client: client, Key: []byte("k000000")}
		if kind == Put {
			ops[i].Value = val
		}
	}
	cmds := make([][]byte, ncmds)
	for i := range cmds {
		cmds[i] = AppendCommand(nil, ops)
	}
	opSize := (len(cmds[0]) - headerSize) / nops
	var thousands [1000][3]byte
	for i := range thousands {
		copy(thousands[i][:], fmt.Sprintf("%03d", i))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	seq := uint64(1)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	mallocs := ms.Mallocs
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		for _, cmd := range cmds {
			for i := range nops {
				op := cmd[headerSize+i*opSize:]
				if client != 0 {
					binary.LittleEndian.PutUint64(op[9:], seq)
					binary.LittleEndian.PutUint64(op[17:], max(1, seq-min(seq, 256))) // 256 in flight
					seq++
				}
				// The key's six digits, from a table small enough to stay cached.
				k := rng.IntN(benchKeys)
				copy(op[opFixed+2:opFixed+5], thousands[k/1000][:])
				copy(op[opFixed+5:opFixed+8], thousands[k%1000][:])
			}
		}
		sm.Apply(cmds, res)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	runtime.ReadMemStats(&ms)
	for _, res := range res {
		r, err := DecodeResults(res, nil)
		if err != nil || len(r) != nops || r[0].Code != CodeOK || kind == Get && !r[0].Found {
			b.Fatalf("results %+v %v", r[:min(len(r), 3)], err)
		}
	}
	n := float64(b.N * nops * ncmds)
	b.ReportMetric(float64(elapsed.Nanoseconds())/n, "ns/kvop")
	b.ReportMetric(float64(ms.Mallocs-mallocs)/n, "allocs/kvop")
}
