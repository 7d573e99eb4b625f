package libp2psec

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/sec"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	tptu "github.com/libp2p/go-libp2p/p2p/net/upgrader"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ttransport "github.com/libp2p/go-libp2p/p2p/transport/testsuite"
)

var yamuxOnly = []tptu.StreamMuxer{{ID: yamux.ID, Muxer: yamux.DefaultTransport}}

// newTCPTransport returns go-libp2p's TCP transport with an upgrader whose
// only security transport is securepeer.
func newTCPTransport(t *testing.T) (*tcp.TcpTransport, peer.ID) {
	t.Helper()
	st, err := New(ID, newKey(t), yamuxOnly)
	if err != nil {
		t.Fatal(err)
	}
	u, err := tptu.New([]sec.SecureTransport{st}, yamuxOnly, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := tcp.NewTCPTransport(u, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tr, st.localID
}

// TestTransportSuite runs go-libp2p's own transport test suite, stress
// subtests included, over TCP secured by securepeer alone.
func TestTransportSuite(t *testing.T) {
	ta, peerA := newTCPTransport(t)
	tb, _ := newTCPTransport(t)
	ttransport.SubtestTransport(t, ta, tb, "/ip4/127.0.0.1/tcp/0", peerA)
}
