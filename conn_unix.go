//go:build unix

package securepeer

import (
	"errors"
	"io"
	"os"
	"syscall"
)

const haveReadFD = true

var errWouldBlock = errors.New("securepeer: read would block")

// readFD reads once from the non-blocking descriptor fd, as the net
// package does: it retries on EINTR, reports EAGAIN as errWouldBlock and
// the end of the stream as io.EOF.
func readFD(fd uintptr, p []byte) (int, error) {
	for {
		n, err := syscall.Read(int(fd), p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return 0, errWouldBlock
		case err != nil:
			return 0, os.NewSyscallError("read", err)
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}
