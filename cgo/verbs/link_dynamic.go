//go:build rdma && !rdmastatic

package verbs

// #cgo LDFLAGS: -libverbs
import "C"
