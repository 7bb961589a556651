//go:build rdma

package verbs

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestSendVersusWriteImm measures, for the record (it asserts nothing of
// speed), the two ways the rdma transport could move frames: SENDs into
// receives posted with buffers, and RDMA WRITEs with immediate data into the
// peer's ring (receives posted without buffers). Ping-pong round trips
// between the pair's two QPs, busy-polled, for a small and a large frame,
// then a one-way stream in chains of 16. Each figure is printed as an
// "@@VMLAB verbsfig" line for tools/vmlab's report and docs/ARCHITECTURE.md.
func TestSendVersusWriteImm(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: times SEND against WRITE-with-immediate on a device for several seconds; make vmlab-rdma runs it on soft-RoCE")
	}
	p := newPair(t, openDevice(t), QPConfig{MaxSendWR: 64, MaxRecvWR: 64})
	const slot = 16 << 10 // 64 slots in each 1 MiB region
	spin := func(s *side, n int) {
		got := 0
		deadline := time.Now().Add(waitLimit)
		for got < n {
			k, err := s.cq.PollN(s.wc, n-got)
			must(t, err)
			for i := range k {
				wc := s.wc.At(i)
				must(t, wc.Err())
			}
			got += k
			if k == 0 && time.Now().After(deadline) {
				t.Fatalf("got %d of %d completions", got, n)
			}
		}
	}
	rb := NewRecvBatch(64, 64)
	defer rb.Free()
	sb := NewSendBatch(64, 64)
	defer sb.Free()
	post := func(s *side, write bool, slots int) {
		for i := range slots {
			ok := false
			if write {
				ok = rb.Add(uint64(i), SGE{})
			} else {
				ok = rb.Add(uint64(i), s.mr.SGE(i*slot, slot))
			}
			if !ok {
				t.Fatal("receive batch full")
			}
		}
		_, err := s.qp.PostRecv(rb)
		must(t, err)
	}
	// send posts k frames of size from s to its peer d, the last signaled.
	send := func(s, d *side, write bool, size, k int) {
		for i := range k {
			flags := SendFlags(0)
			if i == k-1 {
				flags = SendSignaled
			}
			ok := false
			if write {
				ok = sb.WriteImm(uint64(i), s.mr.SGE(i*slot, size), d.mr.Addr()+uint64(i*slot), d.mr.RKey(), uint32(i*slot), flags)
			} else {
				ok = sb.SendImm(uint64(i), s.mr.SGE(i*slot, size), uint32(i), flags)
			}
			if !ok {
				t.Fatal("send batch full")
			}
		}
		_, err := s.qp.PostSend(sb)
		must(t, err)
	}
	name := map[bool]string{false: "send", true: "write_imm"}
	for _, write := range []bool{false, true} {
		for _, size := range []int{64, 16 << 10} {
			const rounds = 400
			rtts := make([]time.Duration, 0, rounds)
			for range rounds {
				post(p.a, write, 1)
				post(p.b, write, 1)
				t0 := time.Now()
				send(p.a, p.b, write, size, 1)
				spin(p.b, 1) // the receive (the send's completion may come later)
				send(p.b, p.a, write, size, 1)
				spin(p.a, 2) // a's send completion and its receive
				rtts = append(rtts, time.Since(t0))
				spin(p.b, 1) // b's send completion
			}
			slices.Sort(rtts)
			p50, p99 := rtts[len(rtts)/2], rtts[len(rtts)*99/100]
			t.Logf("%s %d B: round trip p50 %v p99 %v", name[write], size, p50, p99)
			fmt.Printf("@@VMLAB verbsfig op=%s kind=rtt size=%d p50_us=%.1f p99_us=%.1f\n", name[write], size, us(p50), us(p99))
		}
		for _, size := range []int{64, 16 << 10} {
			const chains, k = 100, 16
			t0 := time.Now()
			for range chains {
				post(p.b, write, k)
				send(p.a, p.b, write, size, k)
				spin(p.b, k)
				spin(p.a, 1)
			}
			d := time.Since(t0)
			n := chains * k
			t.Logf("%s %d B: stream of %d in chains of %d: %.0f frames/s, %.1f MB/s", name[write], size, n, k, float64(n)/d.Seconds(), float64(n*size)/d.Seconds()/1e6)
			fmt.Printf("@@VMLAB verbsfig op=%s kind=stream size=%d frames_per_s=%.0f mb_per_s=%.1f\n", name[write], size, float64(n)/d.Seconds(), float64(n*size)/d.Seconds()/1e6)
		}
	}
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
