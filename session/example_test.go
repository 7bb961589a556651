package session_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/vestalabs/vesta/engine"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/transport"
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/session"
)

// counter adds each command's number to its total and returns the total.
// It knows nothing of sessions.
type counter struct{ total int64 }

func (c *counter) Apply(_ wire.Slot, cmds [][]byte, results [][]byte) {
	for i, cmd := range cmds {
		n, _ := strconv.ParseInt(string(cmd), 10, 64)
		c.total += n
		results[i] = []byte(strconv.FormatInt(c.total, 10))
	}
}

func (c *counter) Snapshot(w io.Writer) error {
	_, err := w.Write(binary.LittleEndian.AppendUint64(nil, uint64(c.total)))
	return err
}

func (c *counter) Restore(r io.Reader) error {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	c.total = int64(binary.LittleEndian.Uint64(b[:]))
	return nil
}

// lossy answers its first attempt as a leader that lost its leadership
// right after the command was applied would.
type lossy struct {
	r    *engine.Replica
	lost bool
}

func (l *lossy) Propose(ctx context.Context, cmd []byte) ([]byte, error) {
	res, err := l.r.Propose(ctx, cmd)
	if !l.lost && err == nil && len(cmd) > 0 {
		l.lost = true
		return nil, engine.ErrOutcomeUnknown
	}
	return res, err
}

func Example() {
	// The state machine is wrapped: its commands become session envelopes.
	sm := session.Wrap(&counter{}, session.Options{})
	net := transport.NewNetwork()
	r, err := engine.Start(engine.Config{
		ID: 1, Members: []wire.ReplicaID{1}, Log: storage.NewMemLog(),
		Transport: func(h transport.Handler) (transport.Transport, error) {
			return net.Join(1, h, transport.MemConfig{})
		},
		TickInterval: time.Millisecond, ElectionTicks: 10, HeartbeatTicks: 2,
		Logger: slog.New(slog.DiscardHandler),
	}, sm)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := &lossy{r: r, lost: true}
	c, err := session.Open(ctx, p) // retries until the replica leads
	if err != nil {
		fmt.Println(err)
		return
	}
	p.lost = false
	for _, n := range []string{"5", "10"} {
		// The first attempt of "5" applies, then reports ErrOutcomeUnknown;
		// the client sends it again under the same sequence number and gets
		// the first result: 5 is added once.
		total, err := c.Propose(ctx, []byte(n))
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("added %s: total %s\n", n, total)
	}
	// Output:
	// added 5: total 5
	// added 10: total 15
}
