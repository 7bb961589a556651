//go:build unix

package main

import "syscall"

// rawReadSupported says whether connReader reads through the socket's raw
// descriptor, which lets it give its buffer back before it waits.
const rawReadSupported = true

// rawRead makes one read system call on the non-blocking socket fd. again
// is true when the socket has nothing to read now.
func rawRead(fd uintptr, p []byte) (n int, again bool, err error) {
	for {
		n, err = syscall.Read(int(fd), p)
		switch err {
		case nil:
			return n, false, nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, true, nil
		}
		return 0, false, err
	}
}
