//go:build unix

// Package nbwrite makes one non-blocking write on a socket's raw descriptor:
// the direct-write path of the TCP transport (engine/transport) and of
// client/proto's Writer, where a sender writes to an idle connection itself
// instead of waking a writer goroutine.
package nbwrite

import "syscall"

// Supported says whether Once works here: it needs a raw, non-blocking
// descriptor (syscall.RawConn) and write(2).
const Supported = true

// Once makes one write system call of b on the non-blocking socket fd. n is 0
// whenever err is not nil.
func Once(fd uintptr, b []byte) (n int, err error) {
	n, err = syscall.Write(int(fd), b)
	if err != nil {
		n = 0
	}
	return n, err
}

// Retryable says whether Once's error only means "not now" (a full socket
// buffer, an interrupted call): the caller's writer goroutine, which may
// wait, carries on with the bytes left.
func Retryable(err error) bool {
	return err == syscall.EAGAIN || err == syscall.EWOULDBLOCK || err == syscall.EINTR
}
