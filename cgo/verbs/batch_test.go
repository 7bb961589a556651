//go:build rdma

package verbs

import "testing"

// These need the headers and libibverbs but no device.

func TestBatchCapacity(t *testing.T) {
	b := NewSendBatch(3, 1)
	defer b.Free()
	if !b.Send(1, SGE{Addr: 0x1000, Len: 8, LKey: 1}, 0) {
		t.Fatal("first WR refused")
	}
	if b.Send(2, SGE{Addr: 0x2000, Len: 8, LKey: 1}, 0) {
		t.Fatal("a WR with an SGE fit where no SGE is left")
	}
	if !b.WriteImm(3, SGE{}, 0x3000, 9, 42, SendSignaled) {
		t.Fatal("a WR without data refused")
	}
	if b.AddSGE(SGE{Addr: 1, Len: 1, LKey: 1}) {
		t.Fatal("AddSGE past the SGE capacity")
	}
	if b.Len() != 2 || b.Cap() != 3 {
		t.Fatalf("len %d cap %d", b.Len(), b.Cap())
	}
	b.Reset()
	if b.Len() != 0 || !b.Send(4, SGE{Addr: 0x1000, Len: 8, LKey: 1}, 0) {
		t.Fatal("Reset did not empty the batch")
	}
	b.Free()
	b.Free() // idempotent

	r := NewRecvBatch(1, 1)
	defer r.Free()
	if !r.Add(1, SGE{Addr: 1, Len: 1, LKey: 1}) || r.Add(2, SGE{}) {
		t.Fatal("receive batch capacity")
	}
}

func TestCompletionsAndRegionWithoutDevice(t *testing.T) {
	w := NewCompletions(8)
	if w.Cap() != 8 || w.At(7).Status != WCSuccess {
		t.Fatal("completions")
	}
	w.Free()
	w.Free()
	r, err := AllocRegion(1)
	if err != nil {
		t.Fatal(err)
	}
	r.Bytes()[r.Len()-1] = 1
	if err := r.Free(); err != nil {
		t.Fatal(err)
	}
	if _, err := AllocRegion(0); err == nil {
		t.Fatal("AllocRegion(0) succeeded")
	}
	if !Available {
		t.Fatal("Available is false in an rdma build")
	}
}
