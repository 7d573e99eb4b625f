package legacy

// Helpers to run testdata/peer.js, a peer built on the real npm module
// secure-peer 0.2.1, through internal/nodetest (its package doc says how
// to run these tests locally).

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/securepeer/securepeer/internal/nodetest"
)

// interopTimeout bounds each interop test; generous for a loaded 2-core
// machine running the race detector.
const interopTimeout = 90 * time.Second

// nodeKeys is the Node side's key file.
const nodeKeys = "testdata/keys/b.json"

// waitNode waits for node to exit and returns every event it printed; a
// nonzero exit status fails the test.
func waitNode(t *testing.T, ctx context.Context, p *nodetest.Peer) []nodetest.Event {
	t.Helper()
	events, err := p.Wait(ctx)
	if err != nil {
		t.Errorf("node exited with %v", err)
	}
	return events
}

// has reports whether the process printed an event with that name.
func has(events []nodetest.Event, name string) bool {
	for _, ev := range events {
		if ev.Event == name {
			return true
		}
	}
	return false
}

// connectTo starts node and returns a TCP connection between it and this
// process: if goListens, node connects to a Go listener; otherwise node
// listens and Go dials.
func connectTo(t *testing.T, ctx context.Context, goListens bool, s nodetest.Settings) (net.Conn, *nodetest.Peer) {
	t.Helper()
	if !goListens {
		s.Listen = true
		p := nodetest.Start(t, ctx, s)
		ev := p.Next(ctx, "listening")
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(ev.Port)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn, p
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s.Port = ln.Addr().(*net.TCPAddr).Port
	p := nodetest.Start(t, ctx, s)
	if dl, ok := ctx.Deadline(); ok {
		ln.(*net.TCPListener).SetDeadline(dl)
	}
	conn, err := ln.Accept()
	if err != nil {
		t.Fatalf("accepting node's connection: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, p
}

// direction names a test for goListens.
func direction(goListens bool) string {
	if goListens {
		return "node-connects"
	}
	return "go-connects"
}
