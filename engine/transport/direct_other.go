//go:build !unix

package transport

// directWrites is false where there is no non-blocking raw write: every
// frame goes through the peer's writer goroutine.
const directWrites = false

func writeOnce(uintptr, []byte) (int, error) {
	panic("transport: direct writes are not supported here")
}

func retryable(error) bool { return false }
