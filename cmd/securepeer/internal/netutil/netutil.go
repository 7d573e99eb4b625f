// Package netutil ends the command's plain connections: cleanly, with a
// half-close, or with a reset that the program on the other end reads as
// an error.
package netutil

import (
	"io"
	"net"
)

// CloseWrite half-closes c if it can, and closes it otherwise.
func CloseWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// ResetClose closes a TCP connection with a reset, so that the program on
// the other end sees an error rather than a clean end of data. It looks
// through wrappers that have a NetConn method, as crypto/tls's Conn does.
func ResetClose(c net.Conn) {
	inner := c
	for {
		if tc, ok := inner.(*net.TCPConn); ok {
			tc.SetLinger(0)
			break
		}
		w, ok := inner.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		inner = w.NetConn()
	}
	c.Close()
}

// Drain reads and drops what r sends, until it ends or fails, as a side
// that has said its last does while the peer reads it: closing a TCP
// connection with data unread resets it, and a reset can discard what the
// peer has not read yet. The channel is closed once r has ended.
func Drain(r io.Reader) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, r)
		close(done)
	}()
	return done
}
