//go:build !rdma

package verbs

// Available reports whether this build has the libibverbs binding (the
// rdma build tag). Without it, nothing here can open a device.
const Available = false
