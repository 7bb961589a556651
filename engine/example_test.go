package engine_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/vestalabs/vesta/engine"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/transport"
	"github.com/vestalabs/vesta/engine/wire"
)

// total is a state machine that adds each command's number to its total.
// Its Read makes it an engine.Reader: reads skip the log.
type total struct{ n int64 }

func (t *total) Apply(_ wire.Slot, cmds [][]byte, results [][]byte) {
	for i, cmd := range cmds {
		d, _ := strconv.ParseInt(string(cmd), 10, 64)
		t.n += d
		results[i] = []byte(strconv.FormatInt(t.n, 10))
	}
}

func (t *total) Snapshot(w io.Writer) error {
	_, err := w.Write(binary.LittleEndian.AppendUint64(nil, uint64(t.n)))
	return err
}

func (t *total) Restore(r io.Reader) error {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	t.n = int64(binary.LittleEndian.Uint64(b[:]))
	return nil
}

// Read answers "total". The engine calls it between applies.
func (t *total) Read(query []byte) ([]byte, error) {
	if string(query) != "total" {
		return nil, errors.New("total: unknown query")
	}
	return []byte(strconv.FormatInt(t.n, 10)), nil
}

// A replica (of one, to keep the example short) applies commands through
// the log and answers reads without it: by its read index, or under its
// lease.
func ExampleReplica_Read() {
	net := transport.NewNetwork()
	r, err := engine.Start(engine.Config{
		ID: 1, Members: []wire.ReplicaID{1}, Log: storage.NewMemLog(),
		Transport: func(h transport.Handler) (transport.Transport, error) {
			return net.Join(1, h, transport.MemConfig{})
		},
		TickInterval: time.Millisecond, ElectionTicks: 10, HeartbeatTicks: 2,
		Logger: slog.New(slog.DiscardHandler),
	}, &total{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, d := range []string{"5", "10", "27"} {
		for {
			_, err := r.Propose(ctx, []byte(d))
			if errors.Is(err, engine.ErrNotLeader) {
				time.Sleep(time.Millisecond) // not elected yet
				continue
			}
			if err != nil {
				fmt.Println(err)
				return
			}
			break
		}
	}
	for _, mode := range []engine.ReadMode{engine.ReadIndex, engine.ReadLease} {
		v, err := r.Read(ctx, []byte("total"), mode)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%v: total %s\n", mode, v)
	}
	// Output:
	// read-index: total 42
	// lease: total 42
}

// A cluster of one grows to two: replica 2 starts from an empty log with
// Join (it fetches a checkpoint from replica 1, which records the
// configuration), and AddMember lets it in as a learner, waits until it
// has caught up, then makes it a voter.
func ExampleReplica_AddMember() {
	dir, err := os.MkdirTemp("", "vesta-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	net := transport.NewNetwork()
	start := func(id wire.ReplicaID, join bool) (*engine.Replica, error) {
		return engine.Start(engine.Config{
			ClusterID: 7, ID: id, Members: []wire.ReplicaID{1}, Join: join, Log: storage.NewMemLog(),
			Transport: func(h transport.Handler) (transport.Transport, error) {
				return net.Join(id, h, transport.MemConfig{})
			},
			Checkpoints:  engine.CheckpointConfig{Dir: filepath.Join(dir, strconv.Itoa(int(id)))},
			TickInterval: time.Millisecond, ElectionTicks: 10, HeartbeatTicks: 2,
			Logger: slog.New(slog.DiscardHandler),
		}, &total{})
	}
	r1, err := start(1, false)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r1.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		if _, err := r1.Propose(ctx, []byte("42")); !errors.Is(err, engine.ErrNotLeader) {
			break
		}
		time.Sleep(time.Millisecond) // not elected yet
	}
	joined := make(chan *engine.Replica, 1)
	go func() {
		r2, err := start(2, true) // returns once it has a checkpoint
		if err != nil {
			fmt.Println(err)
		}
		joined <- r2
	}()
	m, err := r1.AddMember(ctx, 2, true)
	if err != nil {
		fmt.Println(err)
		return
	}
	if r2 := <-joined; r2 != nil {
		defer r2.Stop()
	}
	fmt.Printf("epoch %d: voters %v, learners %v\n", m.Epoch, m.Voters, m.Learners)
	// Output:
	// epoch 3: voters [1 2], learners []
}
