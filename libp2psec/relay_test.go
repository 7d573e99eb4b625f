package libp2psec

import (
	"context"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/sec"
	tptu "github.com/libp2p/go-libp2p/p2p/net/upgrader"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"

	ma "github.com/multiformats/go-multiaddr"
)

// TestRelay connects two hosts that know each other only through a circuit
// relay v2 host, with securepeer on both hops and end to end.
func TestRelay(t *testing.T) {
	r := newHost(t, securepeerOnly)
	if _, err := relay.New(r); err != nil {
		t.Fatal(err)
	}
	var aLog, bLog handshakeLog
	a := newHost(t, aLog.security(), libp2p.EnableRelay())
	b := newHost(t, bLog.security(), libp2p.EnableRelay())

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rinfo := peer.AddrInfo{ID: r.ID(), Addrs: r.Addrs()}
	if err := b.Connect(ctx, rinfo); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Reserve(ctx, b, rinfo); err != nil {
		t.Fatal(err)
	}
	circuit, err := ma.NewMultiaddr("/p2p/" + r.ID().String() + "/p2p-circuit")
	if err != nil {
		t.Fatal(err)
	}
	// a knows b only by the circuit address: no direct address to try.
	var addrs []ma.Multiaddr
	for _, ra := range r.Addrs() {
		addrs = append(addrs, ra.Encapsulate(circuit))
	}
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: addrs}); err != nil {
		t.Fatal(err)
	}

	const proto = "/securepeer-test/relay-echo/1.0.0"
	b.SetStreamHandler(proto, func(s network.Stream) {
		defer s.Close()
		io.Copy(s, s)
	})
	s, err := a.NewStream(network.WithAllowLimitedConn(ctx, "test"), b.ID(), proto)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	msg := []byte("through the relay, encrypted end to end")
	if _, err := s.Write(msg); err != nil {
		t.Fatal(err)
	}
	s.CloseWrite()
	got, err := io.ReadAll(s)
	if err != nil || string(got) != string(msg) {
		t.Fatalf("echo %q (%v), want %q", got, err, msg)
	}

	relayed := s.Conn()
	if _, err := relayed.RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT); err != nil {
		t.Errorf("the connection to b is not relayed: %s", relayed.RemoteMultiaddr())
	}
	// go-libp2p's relayed connections report only their transport in
	// ConnState, not the security protocol they were upgraded with, so the
	// end-to-end handshake is seen in the transports' own logs, and in
	// SecurepeerState.
	if !aLog.has(b.ID(), true) || !bLog.has(a.ID(), false) {
		t.Errorf("no securepeer handshake between a and b: a saw %v, b saw %v", aLog.list(), bLog.list())
	}
	if st, ok := SecurepeerState(relayed); !ok || !st.PostQuantum || !st.Initiator {
		t.Errorf("the relayed connection's securepeer state: %+v, %v", st, ok)
	}
	for _, hop := range []struct {
		name string
		conn network.Conn
	}{
		{"a to relay", onlyConn(t, a, r)},
		{"b to relay", onlyConn(t, b, r)},
	} {
		if st := hop.conn.ConnState(); st.Security != ID {
			t.Errorf("%s: security %q, want %q", hop.name, st.Security, ID)
		}
	}
}

// A handshakeLog records the securepeer handshakes of a host's transport.
type handshakeLog struct {
	mu   sync.Mutex
	done []handshakeEntry
}

type handshakeEntry struct {
	peer     peer.ID
	outbound bool
}

func (l *handshakeLog) has(p peer.ID, outbound bool) bool {
	return slices.Contains(l.list(), handshakeEntry{p, outbound})
}

func (l *handshakeLog) list() []handshakeEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.done)
}

// security returns a libp2p option for securepeer whose handshakes go to l.
func (l *handshakeLog) security() libp2p.Option {
	return libp2p.Security(ID, func(id protocol.ID, key crypto.PrivKey, muxers []tptu.StreamMuxer) (*loggingTransport, error) {
		t, err := New(id, key, muxers)
		return &loggingTransport{t, l}, err
	})
}

type loggingTransport struct {
	*Transport
	log *handshakeLog
}

func (t *loggingTransport) SecureInbound(ctx context.Context, insecure net.Conn, p peer.ID) (sec.SecureConn, error) {
	c, err := t.Transport.SecureInbound(ctx, insecure, p)
	t.record(c, false)
	return c, err
}

func (t *loggingTransport) SecureOutbound(ctx context.Context, insecure net.Conn, p peer.ID) (sec.SecureConn, error) {
	c, err := t.Transport.SecureOutbound(ctx, insecure, p)
	t.record(c, true)
	return c, err
}

func (t *loggingTransport) record(c sec.SecureConn, outbound bool) {
	if c == nil {
		return
	}
	t.log.mu.Lock()
	defer t.log.mu.Unlock()
	t.log.done = append(t.log.done, handshakeEntry{c.RemotePeer(), outbound})
}

func onlyConn(t *testing.T, h, to host.Host) network.Conn {
	t.Helper()
	conns := h.Network().ConnsToPeer(to.ID())
	if len(conns) != 1 {
		t.Fatalf("%d connections to %s, want 1", len(conns), to.ID())
	}
	return conns[0]
}
