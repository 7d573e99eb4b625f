//go:build !unix

package main

import "net"

// listenUnix listens on a Unix socket at path. Windows has no umask; the
// socket's access is its directory's.
func listenUnix(path string) (net.Listener, error) {
	return net.Listen("unix", path)
}
