//go:build !unix

package proto

// directWrites is false where there is no non-blocking raw write: every
// frame goes through the Writer's goroutine.
const directWrites = false

func writeOnce(uintptr, []byte) (int, error) {
	panic("proto: direct writes are not supported here")
}
