// Package verbs is a thin cgo binding to libibverbs (rdma-core): what the
// RDMA transport (package rdma) needs and nothing more. Device discovery,
// port and GID queries, protection domains, memory registration, completion
// queues with completion channels, reliable-connected queue pairs and their
// state transitions, batched posting of SEND, RDMA WRITE (with immediate
// data) and RECV work requests, and batched polling of completions.
//
// # Build
//
// The cgo half of the package builds only with the build tag rdma, so that
// the default build (and `make test`) needs no rdma-core headers. Without
// the tag the package holds only its pure-Go types (GID, Endpoint, MTU, the
// constants, Error), and Available reports false.
//
//	go build -tags rdma ./...             # dynamic: links -libverbs
//	go build -tags rdma,rdmastatic ./...  # static: links librxe-rdmav34.a and
//	                                      # libibverbs.a with the soft-RoCE
//	                                      # provider built in; use with
//	                                      # -ldflags '-linkmode external -extldflags "-static"'
//
// The static form is what tools/vmlab puts into its guest: a test binary
// that needs nothing from the initramfs but the kernel's rdma_rxe.
//
// # Ownership and free order
//
// Every object is created by a method of the object it depends on and freed
// by its own Close (or Free, Deregister). Nothing is freed by a finalizer:
// the RDMA hardware (or rdma_rxe) reads and writes registered memory behind
// the Go runtime's back, so lifetimes must be explicit. Free in this order,
// the reverse of creation:
//
//	QP.Close                 (before its CQs and its PD)
//	MR.Deregister            (before its Region and its PD)
//	Region.Free              (after every MR on it is deregistered)
//	CQ.Close                 (after every QP using it; acks its events)
//	CompChannel.Close        (after every CQ using it)
//	PD.Close                 (after its QPs and MRs)
//	Context.Close            (last)
//
// SendBatch, RecvBatch and Completions are plain C memory owned by the
// caller, independent of any device object; Free them when done. A Close
// that finds a dependent object still open returns an error (libibverbs
// answers EBUSY) and leaves the object open.
//
// # Memory and the cgo pointer rules
//
// Registered memory (Region) is mapped with mmap, outside the Go heap, so
// the collector never moves or frees it while the device may touch it; its
// byte-slice views (Region.Bytes, MR.Bytes) are valid until Region.Free.
// Work-request chains and completion arrays live in C memory (calloc), are
// filled and read from Go through slice views of that memory, and cross into
// C as one call per chain (PostSend, PostRecv) or per poll of many
// completions (CQ.Poll). No Go pointer is ever handed to C except pointers
// to Go values that hold no Go pointers, for the length of one call.
//
// # Concurrency
//
// libibverbs is thread-safe: different goroutines may post to and poll the
// same QP and CQ. A SendBatch, RecvBatch or Completions array is not: one
// goroutine fills and posts (or polls into) it at a time. Close must not
// race with other calls on the same object.
package verbs
