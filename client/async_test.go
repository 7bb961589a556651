package client

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vestalabs/vesta/client/proto"
	"github.com/vestalabs/vesta/tools/vestad/kv"
)

// Chains of asynchronous puts, each put issued from the previous one's
// callback, through lost replies, refusals and a small session window (so
// writes queue for sequence numbers): every callback runs exactly once and
// without error, and each key ends at its chain's last value, so no retried
// put applied after a later one.
func TestAsyncPutsUnderRetries(t *testing.T) {
	fc := newFakeCluster(t, 3, kv.Options{})
	fc.loseReply, fc.unavailable = 0.2, 0.1
	c, err := New(fc.addrs(), Options{BackoffMin: time.Millisecond, BackoffMax: 20 * time.Millisecond, MaxUnacked: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const chains, length = 16, 40
	var calls [chains][length]atomic.Int32
	var wg sync.WaitGroup
	wg.Add(chains)
	var put func(ch, i int)
	put = func(ch, i int) {
		key := []byte(fmt.Sprintf("chain-%d", ch))
		c.PutAsync(key, []byte(strconv.Itoa(i)), func(err error) {
			if calls[ch][i].Add(1) != 1 {
				t.Errorf("chain %d put %d: done called twice", ch, i)
				return
			}
			if err != nil {
				t.Errorf("chain %d put %d: %v", ch, i, err)
				wg.Done()
				return
			}
			if i+1 < length {
				put(ch, i+1)
				return
			}
			wg.Done()
		})
	}
	for ch := 0; ch < chains; ch++ {
		put(ch, 0)
	}
	waitGroup(t, &wg)
	for ch := 0; ch < chains; ch++ {
		got := make(chan string, 1)
		c.GetAsync([]byte(fmt.Sprintf("chain-%d", ch)), func(v []byte, found bool, err error) {
			if err != nil || !found {
				t.Errorf("get chain %d: %v %v", ch, found, err)
			}
			got <- string(v)
		})
		if v := <-got; v != strconv.Itoa(length-1) {
			t.Fatalf("chain %d = %q, want %d", ch, v, length-1)
		}
	}
	time.Sleep(50 * time.Millisecond) // a second call of a callback would show now
	for ch := range calls {
		for i := range calls[ch] {
			if n := calls[ch][i].Load(); n != 1 {
				t.Fatalf("chain %d put %d: done called %d times", ch, i, n)
			}
		}
	}
	fc.mu.Lock()
	retried := 0
	for _, n := range fc.applied {
		if n > 1 {
			retried++
		}
	}
	fc.mu.Unlock()
	if retried == 0 {
		t.Fatal("no write was delivered twice: the test exercised nothing")
	}
}

func waitGroup(t *testing.T, wg *sync.WaitGroup) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("calls did not complete")
	}
}

// The sweeper gives up on a server that does not answer after
// AttemptTimeout, and the call moves to the next server.
func TestAsyncAttemptTimeout(t *testing.T) {
	fc := newFakeCluster(t, 2, kv.Options{})
	fc.setLeader(1)
	fc.mu.Lock()
	fc.mute = 0 // the first address the client tries
	fc.mu.Unlock()
	const timeout = 100 * time.Millisecond
	// No hedging: it would find the leader before the attempt times out.
	c, err := New(fc.addrs(), Options{AttemptTimeout: timeout, HedgeDelay: -1, BackoffMin: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	errc := make(chan error, 1)
	c.GetAsync([]byte("k"), func(_ []byte, _ bool, err error) { errc <- err })
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the sweeper did not time the attempt out")
	}
	if d := time.Since(start); d < timeout {
		t.Fatalf("answered after %v, before the muted server's attempt could time out", d)
	}
	// The client now knows the leader: no more timeouts.
	start = time.Now()
	c.PutAsync([]byte("k"), []byte("v"), func(err error) { errc <- err })
	if err := <-errc; err != nil || time.Since(start) > timeout/2 {
		t.Fatalf("put: %v after %v", err, time.Since(start))
	}
}

// Close fails every call in flight with ErrClosed, exactly once; calls after
// Close fail at once.
func TestAsyncCloseFailsPendingOnce(t *testing.T) {
	fc := newFakeCluster(t, 1, kv.Options{})
	c, err := New(fc.addrs(), Options{BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	errc := make(chan error, 1)
	c.PutAsync([]byte("k"), []byte("v"), func(err error) { errc <- err }) // opens the session
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	fc.mu.Lock()
	fc.hang = true
	fc.mu.Unlock()
	const n = 100
	var calls [3 * n]atomic.Int32
	var wrong atomic.Int32
	check := func(i int, err error) {
		calls[i].Add(1)
		if !errors.Is(err, ErrClosed) {
			wrong.Add(1)
		}
	}
	for i := 0; i < n; i++ {
		c.PutAsync([]byte("k"), []byte("v"), func(err error) { check(i, err) })
		c.GetAsync([]byte("k"), func(_ []byte, _ bool, err error) { check(n+i, err) })
	}
	// Some calls wait in backoff: the server refuses them.
	fc.mu.Lock()
	fc.hang, fc.unavailable = false, 1
	fc.mu.Unlock()
	for i := 0; i < n; i++ {
		c.PutAsync([]byte("k"), []byte("v"), func(err error) { check(2*n+i, err) })
	}
	time.Sleep(50 * time.Millisecond)
	c.Close()
	time.Sleep(50 * time.Millisecond)
	for i := range calls {
		if got := calls[i].Load(); got != 1 {
			t.Fatalf("call %d: done called %d times", i, got)
		}
	}
	if w := wrong.Load(); w != 0 {
		t.Fatalf("%d calls failed with something other than ErrClosed", w)
	}
	c.PutAsync([]byte("k"), []byte("v"), func(err error) { errc <- err })
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("put after Close: %v", err)
	}
}

func TestAsyncTooLarge(t *testing.T) {
	fc := newFakeCluster(t, 1, kv.Options{})
	c := newTestClient(t, fc.addrs())
	var got error
	c.PutAsync([]byte("k"), make([]byte, proto.MaxValueSize+1), func(err error) { got = err })
	if !errors.Is(got, ErrTooLarge) {
		t.Fatalf("oversized value: %v (done must run before PutAsync returns)", got)
	}
}

// okServer answers every request OK, allocating nothing per request: a
// server whose cost does not blur the client's in a benchmark.
func okServer(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			tb.Cleanup(func() { nc.Close() })
			go func() {
				defer nc.Close()
				if proto.ReadPreamble(nc) != nil {
					return
				}
				rd := proto.NewReader(nc, 0, 0)
				bw := bufio.NewWriterSize(nc, 64<<10)
				var out []byte
				for {
					body, err := rd.Next()
					if err != nil {
						return
					}
					req, err := proto.DecodeRequest(body)
					if err != nil {
						return
					}
					out = proto.AppendResponse(out[:0], &proto.Response{ID: req.ID})
					bw.Write(out)
					if !rd.HasFrame() && bw.Flush() != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// BenchmarkPutAsync keeps 256 puts in flight through PutAsync against a
// server that answers at once: the client's cost per operation (allocs/op
// counts this process, the trivial server included).
func BenchmarkPutAsync(b *testing.B) {
	c, err := New([]string{okServer(b)}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	key, value := []byte("key"), make([]byte, 64)
	const inflight = 256
	var issued, completed atomic.Int64
	finished := make(chan struct{})
	var done func(error)
	done = func(err error) {
		if err != nil {
			b.Error(err)
		}
		if issued.Add(1) <= int64(b.N) {
			c.PutAsync(key, value, done)
		}
		if completed.Add(1) == int64(b.N) {
			close(finished)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < min(inflight, b.N); i++ {
		issued.Add(1)
		c.PutAsync(key, value, done)
	}
	<-finished
}

// BenchmarkPutBlocking is BenchmarkPutAsync through the blocking Put, from
// 256 goroutines.
func BenchmarkPutBlocking(b *testing.B) {
	c, err := New([]string{okServer(b)}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	value := make([]byte, 64)
	b.SetParallelism(128)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := ctxT(b)
		for pb.Next() {
			if err := c.Put(ctx, []byte("key"), value); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
