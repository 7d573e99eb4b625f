package libp2psec

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestSecurepeerState reads the securepeer state of a host's connections:
// a first one, a redial that resumes, the listener's side, a Noise
// connection, and a closed connection.
func TestSecurepeerState(t *testing.T) {
	a, b := newHost(t, securepeerOnly), newHost(t, securepeerOnly)
	tests := []struct {
		name        string
		wantResumed bool
	}{
		{"first contact", false},
		{"a redial resumes", true},
		{"and again", true},
	}
	for _, tt := range tests {
		conn := connect(t, a, b) // waits for identify, so a has read b's ticket
		st, ok := SecurepeerState(conn)
		if !ok || !st.HandshakeComplete || !st.PostQuantum || !st.Initiator || st.DidResume != tt.wantResumed {
			t.Fatalf("%s: dialer's state %+v, %v; want a post-quantum initiator, resumed %v", tt.name, st, ok, tt.wantResumed)
		}
		in := b.Network().ConnsToPeer(a.ID())
		if len(in) != 1 {
			t.Fatalf("%s: the listener has %d connections", tt.name, len(in))
		}
		bst, ok := SecurepeerState(in[0])
		if !ok || bst.Initiator || bst.DidResume != tt.wantResumed || string(bst.ChannelBinding) != string(st.ChannelBinding) {
			t.Fatalf("%s: listener's state %+v, %v; want the responder of the same session", tt.name, bst, ok)
		}
		if err := a.Network().ClosePeer(b.ID()); err != nil {
			t.Fatal(err)
		}
		if _, ok := SecurepeerState(conn); ok {
			t.Fatalf("%s: a closed connection has a state", tt.name)
		}
	}

	n1, n2 := newHost(t, noiseOnly), newHost(t, noiseOnly)
	if _, ok := SecurepeerState(connect(t, n1, n2)); ok {
		t.Error("a Noise connection has a securepeer state")
	}
}

// A connection this package did not secure, whatever it claims, has no
// state; neither has one whose peer IDs differ from the securepeer
// connection's.
func TestSecurepeerStateOtherConn(t *testing.T) {
	a, b := newHost(t, securepeerOnly), newHost(t, securepeerOnly)
	conn := connect(t, a, b)
	if _, ok := SecurepeerState(fakeConn{conn, conn.LocalPeer()}); ok {
		t.Error("a connection with another remote peer ID got the state of the securepeer connection")
	}
}

// fakeConn is a host connection that reports another remote peer ID.
type fakeConn struct {
	network.Conn
	remote peer.ID
}

func (f fakeConn) RemotePeer() peer.ID { return f.remote }
