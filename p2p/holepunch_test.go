package p2p

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	manet "github.com/multiformats/go-multiaddr/net"
)

// TestPunchDialLandsOnListener: a hole punch's dial in the server's role
// (go-libp2p's DCUtR has the node that received the relayed connection
// dial so) that lands on the peer's listening port, as when the peer is
// behind a NAT that maps per destination, completes on that attempt: the
// dialer takes the client's role when the peer's listener says nothing.
// Before, both sides waited as servers until the attempt timed out.
func TestPunchDialLandsOnListener(t *testing.T) {
	a := startNode(t, Config{})
	b := startNode(t, Config{})
	echo(t, listen(t, b, echoProto))
	ctx, cancel := context.WithTimeout(context.Background(), punchTimeout)
	defer cancel()
	punch := network.WithForceDirectDial(network.WithSimultaneousConnect(ctx, false, "hole-punching"), "hole-punching")
	info := peer.AddrInfo{ID: b.ID(), Addrs: b.host.Addrs()}
	start := time.Now()
	if err := a.host.Connect(punch, info); err != nil {
		t.Fatalf("the punch's dial in the server's role failed after %v: %v", time.Since(start), err)
	}
	t.Logf("connected in %v", time.Since(start))
	roundTrip(t, dial(t, a, b.Key(), echoProto), "punched")
}

// TestSettleRole: a connection whose peer speaks first keeps the server's
// role, and the peer's bytes are read again; one whose peer says nothing
// within roleWait takes the client's.
func TestSettleRole(t *testing.T) {
	for _, tc := range []struct {
		name  string
		speak []byte
		want  network.Direction
	}{
		{"peer speaks first", []byte("first bytes"), network.DirInbound},
		{"peer silent", nil, network.DirOutbound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			accepted := make(chan net.Conn, 1)
			go func() {
				c, err := ln.Accept()
				if err == nil {
					accepted <- c
				}
			}()
			raw, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			c, err := manet.WrapNetConn(raw)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			peerSide := <-accepted
			defer peerSide.Close()
			if tc.speak != nil {
				peerSide.Write(tc.speak)
			}
			got, dir := settleRole(context.Background(), c)
			if dir != tc.want {
				t.Fatalf("role %v, want %v", dir, tc.want)
			}
			if tc.speak != nil {
				b := make([]byte, len(tc.speak))
				if _, err := io.ReadFull(got, b); err != nil || string(b) != string(tc.speak) {
					t.Errorf("read again %q, %v; want %q", b, err, tc.speak)
				}
			}
		})
	}
}
