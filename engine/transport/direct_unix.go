//go:build unix

package transport

import "syscall"

// directWrites says whether a sender may write to a peer's socket itself
// (see peer.flush): it needs a non-blocking write on the raw descriptor.
const directWrites = true

// writeOnce makes one write system call on the (non-blocking) socket fd.
func writeOnce(fd uintptr, b []byte) (int, error) {
	n, err := syscall.Write(int(fd), b)
	if err != nil {
		n = 0
	}
	return n, err
}

// retryable says whether a direct write's error only means "not now": the
// writer goroutine, which may wait, carries on.
func retryable(err error) bool {
	return err == syscall.EAGAIN || err == syscall.EWOULDBLOCK || err == syscall.EINTR
}
