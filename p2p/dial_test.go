package p2p

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/securepeer/securepeer"
)

const echoProto = "echo/1"

func TestDialDirect(t *testing.T) {
	l := startNode(t, Config{})
	echo(t, listen(t, l, echoProto))
	d := startNode(t, Config{})
	if err := d.AddAddrs(l.Key(), l.Addrs()); err != nil {
		t.Fatal(err)
	}
	s := dial(t, d, l.Key(), echoProto)
	roundTrip(t, s, "hello, directly")
	if p := s.Path(); p.Relayed {
		t.Errorf("path %v, want direct", p)
	}
	if s.RemoteKey() != l.Key() || s.Protocol() != echoProto {
		t.Errorf("stream key %s, protocol %q", s.RemoteKey().Fingerprint(), s.Protocol())
	}
}

func TestDialRelayed(t *testing.T) {
	r := startRelay(t, RelayConfig{})
	l := startNode(t, Config{Relays: r.Addrs()})
	echo(t, listen(t, l, echoProto))
	d := startNode(t, Config{Relays: r.Addrs(), DirectWait: -1})
	s := dial(t, d, l.Key(), echoProto)
	roundTrip(t, s, "hello, through the relay")
	if p := s.Path(); !p.Relayed || p.Relay != r.Key() {
		t.Errorf("path %v, want relayed through %s", p, r.Key().Fingerprint())
	}
}

// TestDialRelayedThenDirect: the dialer knows only the relay; once the
// relayed connection is up, it dials the addresses the listener
// announced, which on loopback answer, and the stream opens on the
// direct connection.
func TestDialRelayedThenDirect(t *testing.T) {
	r := startRelay(t, RelayConfig{})
	l := startNode(t, Config{Relays: r.Addrs()})
	echo(t, listen(t, l, echoProto))
	events := newEventLog()
	d := startNode(t, Config{Relays: r.Addrs(), DirectWait: testTimeout, Notify: events.notify})
	s := dial(t, d, l.Key(), echoProto)
	roundTrip(t, s, "hello, directly after the relay")
	if p := s.Path(); p.Relayed {
		t.Errorf("path %v, want direct", p)
	}
	relayed := events.wait(t, "a relayed connection", func(e Event) bool {
		return e.Kind == EventConnected && e.Peer == l.Key() && e.Path.Relayed
	})
	if relayed.Path.Relay != r.Key() {
		t.Errorf("relayed through %s, want %s", relayed.Path.Relay.Fingerprint(), r.Key().Fingerprint())
	}
	events.wait(t, "the direct connection reported", kind(EventDirect, l.Key()))
}

// TestDialErrors checks that each way a dial fails is told apart, with
// the real relay and go-libp2p's own errors.
func TestDialErrors(t *testing.T) {
	r := startRelay(t, RelayConfig{})
	// closing accepts TCP connections and closes them at once: an address
	// where no relay answers.
	closing, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closing.Close() })
	go func() {
		for {
			c, err := closing.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := closing.Addr().(*net.TCPAddr).Port
	deadRelay := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", port, mustPeerID(t, newIdentity(t).PublicKey()))
	// The relay's address under another key: a host with another key
	// answers there.
	fakeRelay := strings.TrimSuffix(r.Addrs()[0], r.host.ID().String()) + mustPeerID(t, newIdentity(t).PublicKey()).String()
	other := startNode(t, Config{})
	listen(t, other, echoProto)

	for _, tc := range []struct {
		name   string
		relays []string
		// setup returns the listener to dial, and addresses to give for
		// it.
		setup func(t *testing.T, d *Node) (key securepeer.PublicKey, addrs []string)
		proto string
		want  error
	}{
		{"no relay, no address", nil, func(t *testing.T, d *Node) (securepeer.PublicKey, []string) {
			return newIdentity(t).PublicKey(), nil
		}, echoProto, ErrNoPath},
		{"relay unreachable", []string{deadRelay}, func(t *testing.T, d *Node) (securepeer.PublicKey, []string) {
			return newIdentity(t).PublicKey(), nil
		}, echoProto, ErrNoRelay},
		{"relay with another key", []string{fakeRelay}, func(t *testing.T, d *Node) (securepeer.PublicKey, []string) {
			return newIdentity(t).PublicKey(), nil
		}, echoProto, ErrNoRelay},
		{"no reservation", r.Addrs(), func(t *testing.T, d *Node) (securepeer.PublicKey, []string) {
			return startNode(t, Config{Relays: r.Addrs()}).Key(), nil
		}, echoProto, ErrNoReservation},
		{"protocol not served", nil, func(t *testing.T, d *Node) (securepeer.PublicKey, []string) {
			return other.Key(), other.Addrs()
		}, "other/1", ErrNotServed},
		{"rejected by Verify", nil, func(t *testing.T, d *Node) (securepeer.PublicKey, []string) {
			refuse := startNode(t, Config{Verify: func(_ context.Context, k securepeer.PublicKey) error {
				return errors.New("not on the list")
			}})
			listen(t, refuse, echoProto)
			return refuse.Key(), refuse.Addrs()
		}, echoProto, securepeer.ErrRejected},
		{"another key at the address", nil, func(t *testing.T, d *Node) (securepeer.PublicKey, []string) {
			var addrs []string
			for _, a := range other.Addrs() {
				addrs = append(addrs, strings.TrimSuffix(a, "/p2p/"+other.ID().String()))
			}
			return newIdentity(t).PublicKey(), addrs
		}, echoProto, ErrWrongKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startNode(t, Config{Relays: tc.relays, DirectWait: -1})
			key, addrs := tc.setup(t, d)
			if addrs != nil {
				if err := d.AddAddrs(key, addrs); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			s, err := d.Dial(ctx, key, tc.proto)
			if err == nil {
				s.Close()
				t.Fatal("Dial succeeded")
			}
			wantErr(t, err, tc.want)
			var de *DialError
			if !errors.As(err, &de) || de.Peer != key {
				t.Errorf("error %v is not a *DialError for the key dialed", err)
			}
			t.Log(err)
		})
	}
}

func mustPeerID(t testing.TB, k securepeer.PublicKey) peer.ID {
	t.Helper()
	id, err := PeerID(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
