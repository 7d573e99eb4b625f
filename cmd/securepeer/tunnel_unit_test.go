package main

// In-process tests of the tunnel protocol's limits (tunnel.go, forward.go):
// what a hostile peer sends on its streams must cost this side a bounded
// amount and end only the streams concerned, with no goroutine left.

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/testenv"
)

// muxPair returns two ends of a tunnel session over a loopback TCP pair,
// without the secure stream (the limits are the tunnel's), and serves the
// server end's streams with targets until the test ends.
func muxPair(t *testing.T, targets map[string]string) (client *muxSession, notes func() string) {
	t.Helper()
	a, b := testenv.TCPPair(t)
	id, err := securepeer.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	mk := func(c *net.TCPConn) *stream {
		return &stream{conn: c, raw: c, self: id.PublicKey(), peer: id.PublicKey(), remoteAddr: c.RemoteAddr().String()}
	}
	log := slog.New(slog.DiscardHandler)
	client = newMuxSession(mk(a), true, log)
	server := newMuxSession(mk(b), false, log)
	var mu sync.Mutex
	var sb strings.Builder
	end := &tunnelEnd{targets: targets, log: log, notef: func(f string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		sb.WriteString(strings.TrimSpace(fmt.Sprintf(f, args...)) + "\n")
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		serveStreams(ctx, ctx, server, end)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		client.fail(io.EOF)
		<-done
	})
	return client, func() string {
		mu.Lock()
		defer mu.Unlock()
		return sb.String()
	}
}

// TestTunnelHostileStreams opens streams as a hostile peer would: a header
// longer than any name, a name with no -to, and more streams at once than
// a connection may carry.
func TestTunnelHostileStreams(t *testing.T) {
	testenv.CheckNoLeaks(t, 10*time.Second)
	// A target that accepts and then says nothing, so its streams stay
	// open.
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var heldMu sync.Mutex
	go func() {
		for {
			c, err := target.Accept()
			if err != nil {
				return
			}
			heldMu.Lock()
			held = append(held, c)
			heldMu.Unlock()
		}
	}()
	t.Cleanup(func() {
		target.Close()
		heldMu.Lock()
		for _, c := range held {
			c.Close()
		}
		heldMu.Unlock()
	})
	m, notes := muxPair(t, map[string]string{"web": target.Addr().String()})

	t.Run("header too long", func(t *testing.T) {
		st, err := m.sess.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		var hdr [4]byte
		binary.BigEndian.PutUint32(hdr[:], 1<<31)
		st.Write(hdr[:])
		st.SetReadDeadline(time.Now().Add(testTimeout))
		if n, err := io.Copy(io.Discard, st); n != 0 || err != nil && !strings.Contains(err.Error(), "reset") {
			t.Errorf("a stream with a 2 GiB name read %d bytes, %v; want it cut", n, err)
		}
		waitFor(t, func() bool { return strings.Contains(notes(), "more than securepeer-tunnel/1 allows") }, stringer(notes))
	})

	t.Run("no such name", func(t *testing.T) {
		ts, err := m.openForward("admin")
		if err != nil {
			t.Fatal(err)
		}
		defer ts.cut()
		err = ts.readStatus()
		if err == nil || !strings.Contains(err.Error(), `no -to for "admin" on its side; it has "web"`) {
			t.Errorf("a stream for a name with no -to: %v", err)
		}
	})

	t.Run("too many streams", func(t *testing.T) {
		var open []*tunnelStream
		defer func() {
			for _, ts := range open {
				ts.cut()
			}
		}()
		for range maxTunnelStreams {
			ts, err := m.openForward("web")
			if err != nil {
				t.Fatal(err)
			}
			open = append(open, ts)
			if err := ts.readStatus(); err != nil {
				t.Fatalf("stream %d: %v", len(open), err)
			}
		}
		ts, err := m.openForward("web")
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, ts)
		if err := ts.readStatus(); err == nil || !strings.Contains(err.Error(), "the most it may") {
			t.Errorf("stream %d of a connection that may carry %d: %v", len(open), maxTunnelStreams, err)
		}
	})
	if m.closed() {
		t.Errorf("the session ended: %v", m.err())
	}
}
