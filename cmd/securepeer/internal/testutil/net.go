package testutil

import (
	"net"
	"testing"
)

// ListenLocal listens on a loopback port of its own, which it keeps until
// the test closes it.
func ListenLocal(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}
