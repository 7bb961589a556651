//go:build !unix

// Package nbwrite makes one non-blocking write on a socket's raw descriptor;
// see nbwrite_unix.go. Elsewhere it is not supported and callers write
// through their writer goroutines only.
package nbwrite

// Supported is false: there is no non-blocking raw write here.
const Supported = false

// Once is never called where Supported is false.
func Once(uintptr, []byte) (int, error) {
	panic("nbwrite: not supported on this system")
}

// Retryable is never called where Supported is false.
func Retryable(error) bool { return false }
