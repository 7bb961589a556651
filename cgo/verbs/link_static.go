//go:build rdma && rdmastatic

package verbs

// A fully static link with the soft-RoCE provider built in (the providers
// are otherwise dlopened from /usr/lib/*/libibverbs/). RDMA_STATIC_PROVIDERS
// makes ibv_get_device_list, a macro then, register the named providers
// first; libnl is what libibverbs talks netlink with. Link with
// -ldflags '-linkmode external -extldflags "-static"'.

// #cgo CFLAGS: -DRDMA_STATIC_PROVIDERS=rxe
// #cgo LDFLAGS: -lrxe-rdmav34 -libverbs -lnl-route-3 -lnl-3 -lpthread
import "C"
