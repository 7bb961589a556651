//go:build !linux

package pmem

import (
	"errors"

	"github.com/vestalabs/vesta/engine/storage"
)

// DefaultSize is the size of a new log file when Options.Size is zero.
const DefaultSize = 64 << 20

// Options configure Open; see the Linux build for their meaning.
type Options struct {
	Identity   storage.Identity
	Create     storage.CreateMode
	Size       int64
	RequireDAX bool
	Flush      FlushMethod
	Prefault   bool
}

// Open is supported on Linux only (mmap with MAP_SYNC, fstatfs, flock).
func Open(path string, opts Options) (*Log, error) {
	return nil, errors.New("pmem: file-backed logs need Linux")
}
