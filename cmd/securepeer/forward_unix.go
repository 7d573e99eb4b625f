//go:build unix

package main

import (
	"net"
	"sync"
	"syscall"
)

// listenUnixMu serializes listenUnix's umask changes.
var listenUnixMu sync.Mutex

// listenUnix listens on a Unix socket at path that only this user can
// connect to: the socket is created with mode 0600 (a umask of 0177 while
// it is bound, as ssh's StreamLocalBindMask), so there is no moment when
// others could connect. The umask is the process's, so nothing else may
// create files meanwhile: the command listens on its -from addresses at
// start-up, before anything else runs.
func listenUnix(path string) (net.Listener, error) {
	listenUnixMu.Lock()
	defer listenUnixMu.Unlock()
	old := syscall.Umask(0o177)
	defer syscall.Umask(old)
	return net.Listen("unix", path)
}
