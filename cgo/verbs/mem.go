//go:build rdma

package verbs

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Region is memory for the device: an anonymous private mapping, outside
// the Go heap, so the collector never moves or frees it and the cgo pointer
// rules do not apply to it. The Region owns the mapping; Free unmaps it,
// after every MR registered on it is deregistered (the device may write it
// until then). Bytes (and MR.Bytes) are views of the mapping, invalid after
// Free: keep no slice of it past that.
type Region struct {
	mem []byte // the mapping; nil after Free
	mrs int    // MRs registered on it and not deregistered: Free refuses while any is
}

// AllocRegion maps size bytes (rounded up to whole pages), zeroed and
// populated up front so that the first touch by the device or by Go does
// not fault.
func AllocRegion(size int) (*Region, error) {
	if size <= 0 {
		return nil, fmt.Errorf("verbs: region size %d", size)
	}
	pg := unix.Getpagesize()
	size = (size + pg - 1) &^ (pg - 1)
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, &Error{Op: fmt.Sprintf("mmap(%d)", size), Errno: err.(unix.Errno)}
	}
	return &Region{mem: mem}, nil
}

// Bytes is the whole region; valid until Free.
func (r *Region) Bytes() []byte { return r.mem }

// Len is the region's size in bytes.
func (r *Region) Len() int { return len(r.mem) }

// Addr is the region's virtual address (what SGEs and remote peers name).
func (r *Region) Addr() uint64 {
	if r.mem == nil {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(r.mem))))
}

// Free unmaps the region. Every MR on it must be deregistered first: while
// one is registered the device may still write the memory, so Free refuses
// (an error, the mapping kept) rather than unmap it under the device.
func (r *Region) Free() error {
	if r.mem == nil {
		return ErrClosed
	}
	if r.mrs > 0 {
		return fmt.Errorf("verbs: region still has %d registered MRs (deregister them first)", r.mrs)
	}
	if err := unix.Munmap(r.mem); err != nil {
		return &Error{Op: "munmap", Errno: err.(unix.Errno)}
	}
	r.mem = nil
	return nil
}

// MR is memory registered with a PD (struct ibv_mr) over [Off, Off+Len) of a
// Region. It does not own the Region: Deregister it before Region.Free and
// before PD.Close.
type MR struct {
	mr     *C.struct_ibv_mr
	region *Region
	off    int
	n      int
	lkey   uint32
	rkey   uint32
	addr   uint64
}

// Register registers all of r with the given access (ibv_reg_mr).
// AccessRemoteWrite and AccessRemoteRead need AccessLocalWrite too.
func (pd *PD) Register(r *Region, access Access) (*MR, error) {
	return pd.RegisterRange(r, 0, r.Len(), access)
}

// RegisterRange registers n bytes of r from off.
func (pd *PD) RegisterRange(r *Region, off, n int, access Access) (*MR, error) {
	if pd.pd == nil || r.mem == nil {
		return nil, ErrClosed
	}
	if off < 0 || n <= 0 || off+n > len(r.mem) {
		return nil, fmt.Errorf("verbs: register [%d, %d) of a %d-byte region", off, off+n, len(r.mem))
	}
	addr := r.Addr() + uint64(off)
	mr, err := C.vb_reg_mr(pd.pd, C.uint64_t(addr), C.size_t(n), C.int(access))
	if mr == nil {
		return nil, errnoOf(fmt.Sprintf("ibv_reg_mr(%d bytes, access %#x)", n, uint32(access)), err)
	}
	r.mrs++
	return &MR{mr: mr, region: r, off: off, n: n, lkey: uint32(mr.lkey), rkey: uint32(mr.rkey), addr: addr}, nil
}

// LKey is the key local work requests name the memory with.
func (m *MR) LKey() uint32 { return m.lkey }

// RKey is the key a peer names the memory with in RDMA operations.
func (m *MR) RKey() uint32 { return m.rkey }

// Addr is the registered memory's first address.
func (m *MR) Addr() uint64 { return m.addr }

// Len is the registered length.
func (m *MR) Len() int { return m.n }

// Bytes is the registered memory; valid until the Region is freed.
func (m *MR) Bytes() []byte { return m.region.mem[m.off : m.off+m.n : m.off+m.n] }

// SGE describes n bytes at off within the MR. It panics when the range is
// outside the MR: a wrong SGE would let the device touch other memory (it
// would refuse it, but late and obscurely).
func (m *MR) SGE(off, n int) SGE {
	if off < 0 || n < 0 || off+n > m.n {
		panic(fmt.Sprintf("verbs: SGE [%d, %d) outside a %d-byte MR", off, off+n, m.n))
	}
	return SGE{Addr: m.addr + uint64(off), Len: uint32(n), LKey: m.lkey}
}

// Deregister deregisters the memory (ibv_dereg_mr). No work request naming
// it may be outstanding.
func (m *MR) Deregister() error {
	if m.mr == nil {
		return ErrClosed
	}
	if rc := C.ibv_dereg_mr(m.mr); rc != 0 {
		return errOf("ibv_dereg_mr", int(rc))
	}
	m.mr = nil
	m.region.mrs--
	return nil
}
