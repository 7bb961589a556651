package engine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/transport"
	"github.com/vestalabs/vesta/engine/wire"
)

// memberCluster extends a checkpoint cluster with replicas that join
// later (IDs above 3), each on a file WAL of its own.
func memberCluster(t *testing.T) *testCluster {
	root := t.TempDir()
	c := checkpointCluster(t, root, false)
	base := c.configure
	c.configure = func(id wire.ReplicaID, cfg *Config) {
		base(id, cfg)
		if id > 3 {
			cfg.Join = true
		}
	}
	for id := wire.ReplicaID(4); id <= 8; id++ {
		dir := filepath.Join(root, fmt.Sprint(id), "wal")
		ident := storage.Identity{ClusterID: 1, ReplicaID: id, Members: append(slices.Clone(c.members), id)}
		c.logs[id] = func() storage.Log {
			w, err := storage.OpenWAL(dir, storage.WALOptions{Create: storage.CreateIfMissing, SegmentSize: 16 << 10, Identity: ident})
			if err != nil {
				t.Fatal(err)
			}
			return w
		}
	}
	return c
}

// change asks whichever replica leads to change the member set, until one
// takes it.
func (c *testCluster) change(voters, learners []wire.ReplicaID) Membership {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		l := c.leader()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		m, err := c.replicas[l].ChangeMembership(ctx, voters, learners)
		cancel()
		if err == nil {
			return m
		}
		c.t.Logf("change to voters %v learners %v at %d: %v (retrying)", voters, learners, l, err)
		if errors.Is(err, ErrChangeNotChosen) {
			continue
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("membership change to voters %v learners %v never went through", voters, learners)
	return Membership{}
}

// waitRemoved waits until replica id stops because it was removed, and
// forgets it; lock guards c.replicas against the load.
func (c *testCluster) waitRemoved(id wire.ReplicaID, lock *sync.Mutex) {
	c.t.Helper()
	lock.Lock()
	r := c.replicas[id]
	lock.Unlock()
	select {
	case <-r.Done():
	case <-time.After(20 * time.Second):
		lock.Lock()
		defer lock.Unlock()
		for x, o := range c.replicas {
			ms := o.Memberships()
			c.t.Logf("replica %d: commit %d role %s newest %v", x, o.Status().Commit, o.Status().Role, ms[len(ms)-1])
		}
		c.t.Fatalf("replica %d was removed but did not stop: %+v", id, r.Status())
	}
	if err := r.Err(); !errors.Is(err, ErrRemoved) || !errors.Is(err, ErrStopped) {
		c.t.Fatalf("replica %d stopped with %v, want ErrRemoved", id, err)
	}
	lock.Lock()
	delete(c.replicas, id)
	delete(c.sms, id)
	lock.Unlock()
}

// TestMembershipGrowShrinkAndReplaceEveryMember grows a cluster from 3 to
// 5 voters and back, then replaces every original member one by one with
// a replica that joins from an empty directory, under a steady load;
// nothing acknowledged is lost, and the last three replicas hold it all.
func TestMembershipGrowShrinkAndReplaceEveryMember(t *testing.T) {
	c := memberCluster(t)
	c.proposeN("before", 50)

	var (
		mu    sync.Mutex
		acked []string
		stop  = make(chan struct{})
		done  = make(chan struct{})
	)
	go func() { // the load: one command at a time, to whoever leads
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			var r *Replica
			for _, x := range c.replicas {
				if x.Status().Role == "leader" {
					r = x
				}
			}
			mu.Unlock()
			if r == nil {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			cmd := fmt.Sprintf("load-%05d", i)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := r.Propose(ctx, []byte(cmd))
			cancel()
			if err == nil {
				mu.Lock()
				acked = append(acked, cmd)
				mu.Unlock()
			}
		}
	}()
	locked := func(f func()) { mu.Lock(); defer mu.Unlock(); f() }
	join := func(id wire.ReplicaID) {
		// Start blocks while the joiner fetches a checkpoint: not under
		// the load's lock.
		sm := &counterSM{}
		cfg := Config{
			ID: id, Members: c.members, Log: c.logs[id](),
			Transport: func(h transport.Handler) (transport.Transport, error) {
				return c.net.Join(id, h, transport.MemConfig{})
			},
			TickInterval: 2 * time.Millisecond, ElectionTicks: 15, HeartbeatTicks: 2,
		}
		c.configure(id, &cfg)
		r, err := Start(cfg, sm)
		if err != nil {
			t.Errorf("replica %d cannot join: %v", id, err)
			return
		}
		locked(func() { c.replicas[id], c.sms[id] = r, sm })
	}

	ids := func(xs ...int) []wire.ReplicaID {
		out := make([]wire.ReplicaID, len(xs))
		for i, x := range xs {
			out[i] = wire.ReplicaID(x)
		}
		return out
	}
	// 3 -> 5 voters: 4 and 5 join as learners, then vote.
	m := c.change(ids(1, 2, 3), ids(4, 5))
	if m.Epoch != 2 || !m.IsMember(4) || m.IsVoter(4) {
		t.Fatalf("after adding learners: %v", m)
	}
	join(4)
	join(5)
	m = c.change(ids(1, 2, 3, 4, 5), nil)
	if len(m.Voters) != 5 {
		t.Fatalf("after promoting: %v", m)
	}
	// Back to 3.
	c.change(ids(1, 2, 3), nil)
	c.waitRemoved(4, &mu)
	c.waitRemoved(5, &mu)
	// Replace 1, 2 and 3 with 6, 7 and 8, one by one: the new replica
	// starts (it waits to be let in), ReplaceMember adds it as a learner,
	// waits until it caught up, and swaps it in.
	voters := ids(1, 2, 3)
	for _, pair := range [][2]int{{1, 6}, {2, 7}, {3, 8}} {
		old, nw := wire.ReplicaID(pair[0]), wire.ReplicaID(pair[1])
		joined := make(chan struct{})
		go func() { defer close(joined); join(nw) }()
		var m Membership
		for attempt := 0; ; attempt++ {
			var err error
			l := c.leader()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			m, err = c.replicas[l].ReplaceMember(ctx, old, nw)
			cancel()
			if err == nil {
				break
			}
			if attempt == 5 {
				t.Fatalf("replacing %d with %d: %v", old, nw, err)
			}
			t.Logf("replacing %d with %d at %d: %v (retrying)", old, nw, l, err)
		}
		<-joined
		voters = append(slices.DeleteFunc(voters, func(x wire.ReplicaID) bool { return x == old }), nw)
		if !slices.Equal(m.Voters, voters) {
			t.Fatalf("after replacing %d with %d: %v, want voters %v", old, nw, m, voters)
		}
		c.waitRemoved(old, &mu)
	}
	close(stop)
	<-done
	c.proposeN("after", 20)

	final := c.waitConverged(6, 0)
	have := map[string]bool{}
	for _, cmd := range final {
		have[cmd] = true
	}
	for _, cmd := range acked {
		if !have[cmd] {
			t.Fatalf("acknowledged command %s is missing from the final state (%d commands)", cmd, len(final))
		}
	}
	for id, r := range c.replicas {
		ms := r.Memberships()
		last := ms[len(ms)-1]
		// At least 8 changes (one that timed out may have been retried).
		if !slices.Equal(last.Voters, voters) || last.Epoch < 9 {
			t.Fatalf("replica %d ends with %v, want voters %v at epoch 9 or later", id, last, voters)
		}
	}
	if len(acked) == 0 {
		t.Fatal("no command of the load was acknowledged")
	}
	t.Logf("%d commands of load acknowledged through 8 membership changes; final voters %v", len(acked), voters)
}

// TestChangeMembershipRefusals: a follower refuses (not the leader), and a
// bad member set is refused with the reason.
func TestChangeMembershipRefusals(t *testing.T) {
	c := newTestCluster(t, 3, memLogs)
	l := c.leader()
	f := wire.ReplicaID(1)
	if f == l {
		f = 2
	}
	ctx := context.Background()
	if _, err := c.replicas[f].ChangeMembership(ctx, []wire.ReplicaID{1, 2, 3}, nil); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("follower: %v, want ErrNotLeader", err)
	}
	if _, err := c.replicas[l].ChangeMembership(ctx, nil, []wire.ReplicaID{4}); err == nil {
		t.Fatal("a configuration without voters was accepted")
	}
	if _, err := c.replicas[l].ChangeMembership(ctx, []wire.ReplicaID{1, 2, 2}, nil); err == nil {
		t.Fatal("a voter listed twice was accepted")
	}
	if ms := c.replicas[l].Memberships(); len(ms) != 1 || ms[0].Epoch != 1 {
		t.Fatalf("refused changes changed the configuration: %v", ms)
	}
	_ = paxos.ErrChangeInProgress
}

// observingSM is a counterSM that records the membership changes it is
// told of (MembershipObserver).
type observingSM struct {
	counterSM
	mu      sync.Mutex
	changes []Membership
	slots   []wire.Slot
}

func (s *observingSM) MembershipChanged(slot wire.Slot, m Membership) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.slots, s.changes = append(s.slots, slot), append(s.changes, m)
}

// A state machine that implements MembershipObserver hears of each change,
// in slot order, with the slot it was chosen in and the configuration it
// makes, on every replica.
func TestStateMachineHearsOfMembershipChanges(t *testing.T) {
	c := &testCluster{t: t, net: transport.NewNetwork(), replicas: map[wire.ReplicaID]*Replica{},
		sms: map[wire.ReplicaID]*counterSM{}, logs: map[wire.ReplicaID]func() storage.Log{}, members: []wire.ReplicaID{1, 2, 3}}
	obs := map[wire.ReplicaID]*observingSM{}
	for _, id := range c.members {
		c.logs[id] = memLogs(id)
		obs[id] = &observingSM{}
		if err := c.startWith(id, obs[id]); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, r := range c.replicas {
			r.Stop()
		}
	})
	m1 := c.change([]wire.ReplicaID{1, 2, 3}, []wire.ReplicaID{4})
	m2 := c.change([]wire.ReplicaID{1, 2, 3}, nil)
	deadline := time.Now().Add(10 * time.Second)
	for _, id := range c.members {
		o := obs[id]
		for {
			o.mu.Lock()
			n := len(o.changes)
			o.mu.Unlock()
			if n >= 2 || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		o.mu.Lock()
		if len(o.changes) != 2 || o.changes[0].Epoch != m1.Epoch || o.changes[1].Epoch != m2.Epoch ||
			!slices.Equal(o.changes[0].Learners, []wire.ReplicaID{4}) || o.slots[0] >= o.slots[1] ||
			o.changes[0].From != o.slots[0]+wire.Slot(o.changes[0].Alpha) {
			t.Errorf("replica %d heard %v at slots %v, want epochs %d and %d in slot order", id, o.changes, o.slots, m1.Epoch, m2.Epoch)
		}
		o.mu.Unlock()
	}
}
