package p2p

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"sync/atomic"
	"testing"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/securepeer/securepeer"
)

// TestSignerIdentity: a node and a relay whose keys are behind a signer
// (ssh-agent, for one) run, and go-libp2p signs with the signer: a peer
// reaches the node by key through the relay, sees the signer's key, and
// the node's signed peer records were made by the signer.
func TestSignerIdentity(t *testing.T) {
	relaySigner, nodeSigner := newCountingSigner(t), newCountingSigner(t)
	relayID, nodeID := signerIdentity(t, relaySigner), signerIdentity(t, nodeSigner)
	// Each identity signed its securepeer proof: count what comes after.
	relayBase, nodeBase := relaySigner.count(), nodeSigner.count()
	r := startRelay(t, RelayConfig{Identity: relayID})
	n := startNode(t, Config{Identity: nodeID, Relays: r.Addrs(), NoHolePunching: true})
	echo(t, listen(t, n, "/test/echo"))
	d := startNode(t, Config{Relays: r.Addrs(), NoHolePunching: true})
	s := dial(t, d, n.Key(), "/test/echo")
	if !s.Path().Relayed {
		t.Errorf("path %v, want relayed", s.Path())
	}
	roundTrip(t, s, "hello through a signer's relay")
	// The node signs its peer record, the relay its reservation voucher.
	if nodeSigner.count() == nodeBase || relaySigner.count() == relayBase {
		t.Errorf("go-libp2p's signatures: node %d, relay %d; want both signers used", nodeSigner.count()-nodeBase, relaySigner.count()-relayBase)
	}
}

// A countingSigner is an Ed25519 key seen only as a crypto.Signer, as an
// agent's is, that counts what it signs.
type countingSigner struct {
	key ed25519.PrivateKey
	n   atomic.Int64
}

func newCountingSigner(t testing.TB) *countingSigner {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &countingSigner{key: priv}
}

func (s *countingSigner) Public() crypto.PublicKey { return s.key.Public() }

func (s *countingSigner) Sign(r io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	s.n.Add(1)
	return s.key.Sign(r, msg, opts)
}

func (s *countingSigner) count() int64 { return s.n.Load() }

func signerIdentity(t testing.TB, s crypto.Signer) *securepeer.Identity {
	t.Helper()
	id, err := securepeer.NewIdentityFromSigner(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestPeerIDRoundTrip: a key's peer ID names the key, both ways.
func TestPeerIDRoundTrip(t *testing.T) {
	k := newIdentity(t).PublicKey()
	id, err := PeerID(k)
	if err != nil {
		t.Fatal(err)
	}
	back, err := KeyOf(id)
	if err != nil || back != k {
		t.Fatalf("KeyOf(PeerID(k)) = %s, %v", back.Fingerprint(), err)
	}
	if _, err := PeerID(securepeer.PublicKey{}); err == nil {
		t.Error("PeerID accepted the zero key")
	}
}

// TestConfigErrors: a node or a relay with a bad configuration does not
// start, and says what is wrong.
func TestConfigErrors(t *testing.T) {
	id := newIdentity(t)
	self, err := PeerID(id.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	other := mustPeerID(t, newIdentity(t).PublicKey())
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no identity", Config{}},
		{"a QUIC listen address", Config{Identity: id, ListenAddrs: []string{"/ip4/127.0.0.1/udp/0/quic-v1"}}},
		{"a listen address that is not one", Config{Identity: id, ListenAddrs: []string{"127.0.0.1:0"}}},
		{"a relay without peer ID", Config{Identity: id, ListenAddrs: loopback, Relays: []string{"/ip4/127.0.0.1/tcp/4001"}}},
		{"a relay over QUIC", Config{Identity: id, ListenAddrs: loopback, Relays: []string{"/ip4/127.0.0.1/udp/4001/quic-v1/p2p/" + other.String()}}},
		{"this node as its own relay", Config{Identity: id, ListenAddrs: loopback, Relays: []string{"/ip4/127.0.0.1/tcp/4001/p2p/" + self.String()}}},
		{"negative limits", Config{Identity: id, ListenAddrs: loopback, Limits: Limits{Conns: -1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := Start(context.Background(), tc.cfg)
			if err == nil {
				n.Close()
				t.Fatal("Start succeeded")
			}
			t.Log(err)
		})
	}
	for _, tc := range []struct {
		name string
		cfg  RelayConfig
	}{
		{"no listen address", RelayConfig{Identity: id}},
		{"a circuit duration under a second", RelayConfig{Identity: id, ListenAddrs: loopback, Limits: RelayLimits{CircuitDuration: 1}}},
		{"a public address that is not TCP", RelayConfig{Identity: id, ListenAddrs: loopback, PublicAddrs: []string{"/ip4/203.0.113.7/udp/4001"}}},
	} {
		t.Run("relay/"+tc.name, func(t *testing.T) {
			r, err := RunRelay(context.Background(), tc.cfg)
			if err == nil {
				r.Close()
				t.Fatal("RunRelay succeeded")
			}
			t.Log(err)
		})
	}
}

func TestNodeMisuse(t *testing.T) {
	n := startNode(t, Config{})
	if err := n.Ready(context.Background()); err != nil {
		t.Errorf("Ready without relays: %v", err)
	}
	if _, err := n.Listen(echoProto); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Listen(echoProto); err == nil {
		t.Error("a second Listen for one protocol succeeded")
	}
	for _, name := range []string{"", "with space", string(make([]byte, 256))} {
		if _, err := n.Listen(name); err == nil {
			t.Errorf("Listen(%q) succeeded", name)
		}
	}
	if _, err := n.Dial(context.Background(), n.Key(), echoProto); !errors.Is(err, securepeer.ErrOwnKey) {
		t.Errorf("dialing its own key: %v, want ErrOwnKey", err)
	}
	r := startRelay(t, RelayConfig{})
	withRelay := startNode(t, Config{Relays: r.Addrs()})
	if err := withRelay.Ready(context.Background()); err == nil {
		t.Error("Ready before Listen succeeded")
	}
	n.Close()
	if err := n.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
	if _, err := n.Listen("other/1"); !errors.Is(err, ErrClosed) {
		t.Errorf("Listen after Close: %v, want ErrClosed", err)
	}
	if _, err := n.Dial(context.Background(), withRelay.Key(), echoProto); !errors.Is(err, ErrClosed) {
		t.Errorf("Dial after Close: %v, want ErrClosed", err)
	}
}

// TestReadyErrors: a listener whose relays cannot give it a reservation
// learns why from Ready.
func TestReadyErrors(t *testing.T) {
	refusing := startRelay(t, RelayConfig{AllowReserve: func(securepeer.PublicKey) bool { return false }})
	dead := newIdentity(t)
	deadAddr := "/ip4/127.0.0.1/tcp/1/p2p/" + mustPeerID(t, dead.PublicKey()).String()
	for _, tc := range []struct {
		name   string
		relays []string
		want   error
	}{
		{"refused", refusing.Addrs(), ErrReservationRefused},
		{"unreachable", []string{deadAddr}, ErrNoRelay},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := startNode(t, Config{Relays: tc.relays})
			if _, err := n.Listen(echoProto); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			err := n.Ready(ctx)
			wantErr(t, err, tc.want)
			var re *RelayError
			if !errors.As(err, &re) {
				t.Errorf("%v does not say which relay", err)
			}
			t.Log(err)
		})
	}
}

// TestStartContext: a node stops when the context it was started with is
// done, as Close stops it.
func TestStartContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	n, err := Start(ctx, Config{Identity: newIdentity(t), ListenAddrs: loopback})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	<-n.done
	if _, err := n.Listen(echoProto); !errors.Is(err, ErrClosed) {
		t.Errorf("Listen after the context ended: %v, want ErrClosed", err)
	}
	if err := n.Close(); err != nil {
		t.Errorf("Close after the context ended: %v", err)
	}
}

// TestVerifyDialTarget: a node whose Verify refuses every key still lets
// in a peer it has dialed, as a hole punch may make that peer open the
// direct connection while the relayed one is up.
func TestVerifyDialTarget(t *testing.T) {
	r := startRelay(t, RelayConfig{})
	l := startNode(t, Config{Relays: r.Addrs(), NoHolePunching: true})
	echo(t, listen(t, l, echoProto))
	d := startNode(t, Config{Relays: r.Addrs(), NoHolePunching: true, DirectWait: -1,
		Verify: func(context.Context, securepeer.PublicKey) error { return errors.New("no one") }})
	if err := l.AddAddrs(d.Key(), d.Addrs()); err != nil {
		t.Fatal(err)
	}
	echo(t, listen(t, d, echoProto))
	// back opens a stream from l to d, on a direct connection: d's
	// relayed connections are limited, which a stream opened without
	// saying it allows them cannot use.
	back := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if _, err := l.host.Network().DialPeer(network.WithForceDirectDial(ctx, "test"), d.ID()); err != nil {
			return err
		}
		s, err := l.host.NewStream(ctx, d.ID(), ProtocolPrefix+echoProto)
		if err != nil {
			return err
		}
		defer s.Close()
		b := []byte{1}
		if _, err := s.Write(b); err != nil {
			return err
		}
		_, err = s.Read(b)
		return err
	}
	if err := back(); err == nil {
		t.Fatal("d let l in before it dialed l")
	}
	s := dial(t, d, l.Key(), echoProto)
	roundTrip(t, s, "hello")
	if !s.Path().Relayed {
		t.Fatalf("path %v, want relayed", s.Path())
	}
	if err := back(); err != nil {
		t.Fatalf("d refused l after dialing it: %v", err)
	}
}

// TestCloseDelivers: what a stream wrote before its node closed reaches
// the peer, whole and followed by its end, directly and through a relay:
// Close does not drop what yamux still holds, as a program that writes,
// ends its stream and exits at once expects.
func TestCloseDelivers(t *testing.T) {
	const size = 8 << 20
	r := startRelay(t, RelayConfig{})
	for _, tc := range []struct {
		name    string
		relayed bool
	}{{"direct", false}, {"relayed", true}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{NoHolePunching: true, DirectWait: -1}
			if tc.relayed {
				cfg.Relays = r.Addrs()
			}
			receiver := startNode(t, cfg)
			ln := listen(t, receiver, echoProto)
			sender, err := Start(context.Background(), Config{Identity: newIdentity(t), ListenAddrs: loopback, Relays: cfg.Relays, NoHolePunching: true, DirectWait: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer sender.Close()
			if !tc.relayed {
				if err := sender.AddAddrs(receiver.Key(), receiver.Addrs()); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			s, err := sender.Dial(ctx, receiver.Key(), echoProto)
			if err != nil {
				t.Fatal(err)
			}
			if s.Path().Relayed != tc.relayed {
				t.Fatalf("path %v, want relayed %v", s.Path(), tc.relayed)
			}
			got := make(chan int64, 1)
			go func() {
				in, err := ln.AcceptStream()
				if err != nil {
					got <- -1
					return
				}
				n, err := io.Copy(io.Discard, in)
				if err != nil {
					t.Errorf("the receiver read %d bytes, then %v", n, err)
				}
				got <- n
			}()
			if _, err := s.Write(make([]byte, size)); err != nil {
				t.Fatal(err)
			}
			if err := s.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			sender.Close()
			if n := <-got; n != size {
				t.Errorf("the receiver got %d bytes, want %d", n, size)
			}
		})
	}
}
