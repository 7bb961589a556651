//go:build rdma

package verbs

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"encoding/binary"
	"fmt"
	"unsafe"
)

// DeviceInfo describes one RDMA device libibverbs sees.
type DeviceInfo struct {
	Name          string // kernel name, e.g. "rxe0"
	GUID          uint64
	NodeType      int // enum ibv_node_type (1: CA, ... ; RNIC 4)
	TransportType int // enum ibv_transport_type (0: IB, which RoCE is)
}

// maxDevices bounds Devices' answer.
const maxDevices = 64

// Devices lists the RDMA devices (ibv_get_device_list). An empty list with
// a nil error means there are none; libibverbs reports a system with no
// RDMA support at all (no /sys/class/infiniband_verbs) as ENOSYS, which is
// returned as an *Error.
func Devices() ([]DeviceInfo, error) {
	buf := (*C.vb_devinfo)(C.calloc(maxDevices, C.size_t(unsafe.Sizeof(C.vb_devinfo{}))))
	if buf == nil {
		return nil, errOf("calloc", int(C.ENOMEM))
	}
	defer C.free(unsafe.Pointer(buf))
	n := int(C.vb_device_list(buf, maxDevices))
	if n < 0 {
		return nil, errOf("ibv_get_device_list", n)
	}
	out := make([]DeviceInfo, 0, n)
	for _, d := range unsafe.Slice(buf, n) {
		out = append(out, DeviceInfo{
			Name:          C.GoString(&d.name[0]),
			GUID:          uint64(d.guid),
			NodeType:      int(d.node_type),
			TransportType: int(d.transport_type),
		})
	}
	return out, nil
}

// Context is an open device (struct ibv_context). It owns nothing the
// caller created from it: close PDs, CQs and completion channels first.
type Context struct {
	c    *C.struct_ibv_context
	name string
}

// Open opens the device with the given name, or the first device for "".
// Close it when done, after every object made from it.
func Open(name string) (*Context, error) {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	c, err := C.vb_open_device(cs)
	if c == nil {
		return nil, errnoOf(fmt.Sprintf("ibv_open_device(%q)", name), err)
	}
	return &Context{c: c, name: C.GoString(C.ibv_get_device_name(c.device))}, nil
}

// Name is the device's kernel name.
func (c *Context) Name() string { return c.name }

// Close closes the device (ibv_close_device). Everything made from it must
// be closed first.
func (c *Context) Close() error {
	if c.c == nil {
		return ErrClosed
	}
	if rc := C.ibv_close_device(c.c); rc != 0 {
		return errOf("ibv_close_device", int(rc))
	}
	c.c = nil
	return nil
}

// QueryPort returns a port's attributes (ports count from 1).
func (c *Context) QueryPort(port uint8) (PortAttr, error) {
	if c.c == nil {
		return PortAttr{}, ErrClosed
	}
	var a C.struct_ibv_port_attr
	if rc := C.vb_query_port(c.c, C.uint8_t(port), &a); rc != 0 {
		return PortAttr{}, errOf(fmt.Sprintf("ibv_query_port(%d)", port), int(rc))
	}
	return PortAttr{
		State:       PortState(a.state),
		MaxMTU:      MTU(a.max_mtu),
		ActiveMTU:   MTU(a.active_mtu),
		GIDTableLen: int(a.gid_tbl_len),
		MaxMsgSize:  uint32(a.max_msg_sz),
		LID:         uint16(a.lid),
		LinkLayer:   uint8(a.link_layer),
	}, nil
}

// GIDTypeUnknown is what QueryGID reports as the type where the kernel
// cannot say (ibv_query_gid_ex unsupported).
const GIDTypeUnknown GIDType = 0xffffffff

// QueryGID returns the GID at index of a port's table and its type. An
// empty slot is a zero GID.
func (c *Context) QueryGID(port uint8, index int) (GID, GIDType, error) {
	if c.c == nil {
		return GID{}, 0, ErrClosed
	}
	// C memory for the results: Go pointers would do (they hold no Go
	// pointers), but this keeps every argument plainly C's.
	out := (*[20]byte)(C.calloc(1, 20))
	if out == nil {
		return GID{}, 0, errOf("calloc", int(C.ENOMEM))
	}
	defer C.free(unsafe.Pointer(out))
	rc := C.vb_query_gid(c.c, C.uint8_t(port), C.int(index), (*C.uint8_t)(unsafe.Pointer(&out[0])), (*C.uint32_t)(unsafe.Pointer(&out[16])))
	if rc != 0 {
		return GID{}, 0, errOf(fmt.Sprintf("ibv_query_gid_ex(port %d, index %d)", port, index), int(rc))
	}
	var g GID
	copy(g[:], out[:16])
	return g, GIDType(binary.NativeEndian.Uint32(out[16:])), nil
}

// RoCEv2IPv4GID finds the port's RoCE v2 GID that maps an IPv4 address
// (on soft-RoCE over an IPv4-addressed netdev, index 1), which is what
// two RoCE v2 peers address each other with. It returns the index and the
// GID, or an error naming what the table held.
func (c *Context) RoCEv2IPv4GID(port uint8) (int, GID, error) {
	pa, err := c.QueryPort(port)
	if err != nil {
		return 0, GID{}, err
	}
	var seen []string
	fallback := -1
	var fallbackGID GID
	for i := 0; i < pa.GIDTableLen; i++ {
		g, t, err := c.QueryGID(port, i)
		if err != nil {
			return 0, GID{}, err
		}
		if g.IsZero() {
			continue
		}
		seen = append(seen, fmt.Sprintf("%d:%v/%v", i, g, t))
		if !g.IsIPv4Mapped() {
			continue
		}
		if t == GIDTypeRoCEv2 {
			return i, g, nil
		}
		if t == GIDTypeUnknown && fallback < 0 {
			fallback, fallbackGID = i, g
		}
	}
	if fallback >= 0 {
		// The kernel cannot tell types; RoCE v1 and v2 entries come in
		// pairs with v2 second, so take the last IPv4-mapped one of a pair.
		if g, _, err := c.QueryGID(port, fallback+1); err == nil && g == fallbackGID {
			return fallback + 1, g, nil
		}
		return fallback, fallbackGID, nil
	}
	return 0, GID{}, fmt.Errorf("verbs: %s port %d has no RoCE v2 IPv4-mapped GID (table: %v)", c.name, port, seen)
}

// PD is a protection domain (struct ibv_pd). Memory regions and queue pairs
// belong to one; close them before the PD.
type PD struct {
	pd  *C.struct_ibv_pd
	ctx *Context
}

// AllocPD allocates a protection domain.
func (c *Context) AllocPD() (*PD, error) {
	if c.c == nil {
		return nil, ErrClosed
	}
	pd, err := C.ibv_alloc_pd(c.c)
	if pd == nil {
		return nil, errnoOf("ibv_alloc_pd", err)
	}
	return &PD{pd: pd, ctx: c}, nil
}

// Context is the device the PD belongs to.
func (pd *PD) Context() *Context { return pd.ctx }

// Close deallocates the PD (ibv_dealloc_pd); its MRs and QPs must be gone.
func (pd *PD) Close() error {
	if pd.pd == nil {
		return ErrClosed
	}
	if rc := C.ibv_dealloc_pd(pd.pd); rc != 0 {
		return errOf("ibv_dealloc_pd", int(rc))
	}
	pd.pd = nil
	return nil
}
