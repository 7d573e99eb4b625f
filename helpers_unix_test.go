//go:build unix

package securepeer

import (
	"net"
	"syscall"
	"testing"
)

// waitReadable waits until bytes have arrived on a TCP connection, without
// reading them: it peeks.
func waitReadable(t *testing.T, c net.Conn) {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var one [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return n > 0 || err != syscall.EAGAIN
	})
	if err != nil {
		t.Fatal(err)
	}
}
