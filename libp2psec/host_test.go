package libp2psec

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/sec"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
)

var (
	securepeerOnly      = libp2p.Security(ID, New)
	noiseOnly           = libp2p.Security(noise.ID, noise.New)
	securepeerThenNoise = libp2p.ChainOptions(
		libp2p.Security(ID, New),
		libp2p.Security(noise.ID, noise.New),
	)
)

// newHost returns a TCP-only host on loopback, closed at the end of the
// test.
func newHost(t testing.TB, opts ...libp2p.Option) host.Host {
	t.Helper()
	opts = append([]libp2p.Option{
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.NoTransports,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.DisableRelay(),
	}, opts...)
	h, err := libp2p.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func connect(t testing.TB, a, b host.Host) network.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		t.Fatal(err)
	}
	conns := a.Network().ConnsToPeer(b.ID())
	if len(conns) != 1 {
		t.Fatalf("%d connections to the peer, want 1", len(conns))
	}
	return conns[0]
}

func TestHosts(t *testing.T) {
	// 100 concurrent streams of 1 MiB exceed the default resource limits
	// for one peer when the race detector slows the test down: the limits
	// are the application's business, not the transport's.
	a := newHost(t, securepeerOnly, unlimited(t))
	b := newHost(t, securepeerOnly, unlimited(t))
	conn := connect(t, a, b)
	st := conn.ConnState()
	if st.Security != ID || st.StreamMultiplexer != yamux.ID || !st.UsedEarlyMuxerNegotiation {
		t.Fatalf("ConnState %+v, want securepeer with yamux negotiated in the handshake", st)
	}
	if !conn.RemotePublicKey().Equals(b.Peerstore().PrivKey(b.ID()).GetPublic()) {
		t.Error("the connection's remote public key is not b's")
	}

	t.Run("ping", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res := <-ping.Ping(ctx, a, b.ID())
		if res.Error != nil {
			t.Fatal(res.Error)
		}
	})

	t.Run("identify", func(t *testing.T) {
		for _, tc := range []struct {
			name       string
			self, peer host.Host
		}{{"a", a, b}, {"b", b, a}} {
			ids := tc.self.(interface{ IDService() identify.IDService }).IDService()
			conns := tc.self.Network().ConnsToPeer(tc.peer.ID())
			if len(conns) != 1 {
				t.Fatalf("%s: %d connections", tc.name, len(conns))
			}
			select {
			case <-ids.IdentifyWait(conns[0]):
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: identify did not complete", tc.name)
			}
			protos, err := tc.self.Peerstore().GetProtocols(tc.peer.ID())
			if err != nil || !slices.Contains(protos, ping.ID) {
				t.Errorf("%s: identify found protocols %v (%v), want ping among them", tc.name, protos, err)
			}
			pub := tc.self.Peerstore().PubKey(tc.peer.ID())
			if pub == nil || !pub.Equals(tc.peer.Peerstore().PrivKey(tc.peer.ID()).GetPublic()) {
				t.Errorf("%s: the peerstore holds the wrong public key for the peer", tc.name)
			}
		}
	})

	t.Run("streams", func(t *testing.T) {
		const streams = 100
		size := 1 << 20
		if testing.Short() {
			size = 64 << 10
		}
		exchangeStreams(t, a, b, streams, size)
	})
}

// unlimited returns a resource manager option without limits.
func unlimited(t testing.TB) libp2p.Option {
	t.Helper()
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(rcmgr.InfiniteLimits))
	if err != nil {
		t.Fatal(err)
	}
	return libp2p.ResourceManager(rm)
}

const echoHash protocol.ID = "/securepeer-test/hash/1.0.0"

// exchangeStreams opens n concurrent streams from a to b, sends size random
// bytes on each, and checks the SHA-256 that b sends back.
func exchangeStreams(t *testing.T, a, b host.Host, n, size int) {
	t.Helper()
	b.SetStreamHandler(echoHash, func(s network.Stream) {
		defer s.Close()
		h := sha256.New()
		if _, err := io.Copy(h, s); err != nil {
			s.Reset()
			return
		}
		s.Write(h.Sum(nil))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	errs := make(chan error, n)
	for i := range n {
		go func() {
			errs <- func() error {
				s, err := a.NewStream(ctx, b.ID(), echoHash)
				if err != nil {
					return err
				}
				defer s.Close()
				data := make([]byte, size)
				rand.Read(data)
				if _, err := s.Write(data); err != nil {
					return fmt.Errorf("stream %d: write: %w", i, err)
				}
				if err := s.CloseWrite(); err != nil {
					return fmt.Errorf("stream %d: close write: %w", i, err)
				}
				got, err := io.ReadAll(s)
				if err != nil {
					return fmt.Errorf("stream %d: read: %w", i, err)
				}
				if want := sha256.Sum256(data); string(got) != string(want[:]) {
					return fmt.Errorf("stream %d: hash %x, want %x", i, got, want)
				}
				return nil
			}()
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestHostsNegotiateSecurity(t *testing.T) {
	both := newHost(t, securepeerThenNoise)
	for _, tc := range []struct {
		name string
		opt  libp2p.Option
		want protocol.ID
	}{
		{"noise only", noiseOnly, noise.ID},
		{"securepeer only", securepeerOnly, ID},
		{"both", securepeerThenNoise, ID},
	} {
		for _, dir := range []string{"dial", "accept"} {
			t.Run(tc.name+"/"+dir, func(t *testing.T) {
				other := newHost(t, tc.opt)
				dialer, listener := both, other
				if dir == "accept" {
					dialer, listener = other, both
				}
				conn := connect(t, dialer, listener)
				if got := conn.ConnState().Security; got != tc.want {
					t.Fatalf("security %q, want %q", got, tc.want)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if res := <-ping.Ping(ctx, dialer, listener.ID()); res.Error != nil {
					t.Fatal(res.Error)
				}
			})
		}
	}
}

func TestHostWrongPeerID(t *testing.T) {
	a, b, c := newHost(t, securepeerOnly), newHost(t, securepeerOnly), newHost(t, securepeerOnly)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// b's addresses under c's ID: the host at the address is not c.
	err := a.Connect(ctx, peer.AddrInfo{ID: c.ID(), Addrs: b.Addrs()})
	var mismatch sec.ErrPeerIDMismatch
	if !errors.As(err, &mismatch) || mismatch.Expected != c.ID() || mismatch.Actual != b.ID() {
		t.Fatalf("Connect: %v, want a peer ID mismatch expecting %s, found %s", err, c.ID(), b.ID())
	}
	if n := len(b.Network().ConnsToPeer(a.ID())); n != 0 {
		t.Errorf("b has %d connections from a", n)
	}
}
