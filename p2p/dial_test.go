package p2p

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

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
	d := startNode(t, Config{Relays: r.Addrs(), DirectWait: -1, NoHolePunching: true})
	s := dial(t, d, l.Key(), echoProto)
	roundTrip(t, s, "hello, through the relay")
	if p := s.Path(); !p.Relayed || p.Relay != r.Key() {
		t.Errorf("path %v, want relayed through %s", p, r.Key().Fingerprint())
	}

	// A dialer without relays of its own, given the listener's address
	// through the relay.
	var circuit []string
	for _, a := range l.Addrs() {
		if strings.Contains(a, "/p2p-circuit/") {
			circuit = append(circuit, a)
		}
	}
	if len(circuit) == 0 {
		t.Fatalf("the listener's addresses %v have none through the relay", l.Addrs())
	}
	other := startNode(t, Config{DirectWait: -1, NoHolePunching: true})
	if err := other.AddAddrs(l.Key(), circuit); err != nil {
		t.Fatal(err)
	}
	s2 := dial(t, other, l.Key(), echoProto)
	roundTrip(t, s2, "through a relay given by address")
	if p := s2.Path(); !p.Relayed || p.Relay != r.Key() {
		t.Errorf("path %v, want relayed through %s", p, r.Key().Fingerprint())
	}
}

// TestDialRelayedThenDirect: the dialer knows only the relay; once the
// relayed connection is up, the peers hole punch (DCUtR) to the
// addresses the relay observed, which on loopback answer at once, and
// the stream opens on the direct connection.
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
	events.wait(t, "a hole punch", func(e Event) bool { return e.Kind == EventHolePunch && e.Peer == l.Key() && e.Err == nil })
	// The direct connection resumed the session of the relayed one: the
	// listener's ticket came with its first record on the relay.
	direct := events.wait(t, "a direct connection", func(e Event) bool {
		return e.Kind == EventConnected && e.Peer == l.Key() && !e.Path.Relayed
	})
	if !direct.Resumed || !s.Resumed() {
		t.Errorf("the direct connection did not resume (event %v, stream %v)", direct.Resumed, s.Resumed())
	}
}

// TestResumeThroughRelay: a dialer that reaches a peer through a relay
// again resumes the session of its last connection.
func TestResumeThroughRelay(t *testing.T) {
	r := startRelay(t, RelayConfig{})
	l := startNode(t, Config{Relays: r.Addrs()})
	echo(t, listen(t, l, echoProto))
	d := startNode(t, Config{Relays: r.Addrs(), DirectWait: -1, NoHolePunching: true})
	for i, want := range []bool{false, true, true} {
		s := dial(t, d, l.Key(), echoProto)
		roundTrip(t, s, "hello")
		if p := s.Path(); !p.Relayed {
			t.Fatalf("dial %d: path %v, want relayed", i, p)
		}
		if s.Resumed() != want {
			t.Errorf("dial %d: resumed %v, want %v", i, s.Resumed(), want)
		}
		s.Close()
		if err := d.host.Network().ClosePeer(l.ID()); err != nil {
			t.Fatal(err)
		}
		// Forget the addresses the listener announced, which answer on
		// loopback, so that the next dial goes through the relay again.
		d.host.Peerstore().ClearAddrs(l.ID())
	}
}

// TestRelayKilled: two relays, and a listener reachable through both.
// When the relay carrying a session stops, the session's stream says so
// (ErrRelayLost), a direct session lives on, and a new dial goes through
// the other relay and resumes.
func TestRelayKilled(t *testing.T) {
	relays := []*Relay{startRelay(t, RelayConfig{}), startRelay(t, RelayConfig{})}
	addrs := append(relays[0].Addrs(), relays[1].Addrs()...)
	levents := newEventLog()
	l := startNode(t, Config{Relays: addrs, Notify: levents.notify})
	echo(t, listen(t, l, echoProto))
	for _, r := range relays {
		levents.wait(t, "a reservation", func(e Event) bool { return e.Kind == EventReserved && e.Relay == r.Key() })
	}
	devents := newEventLog()
	d := startNode(t, Config{Relays: addrs, DirectWait: -1, NoHolePunching: true, Notify: devents.notify})
	relayed := dial(t, d, l.Key(), echoProto)
	roundTrip(t, relayed, "through a relay")
	direct := startNode(t, Config{})
	if err := direct.AddAddrs(l.Key(), l.Addrs()); err != nil {
		t.Fatal(err)
	}
	directStream := dial(t, direct, l.Key(), echoProto)
	roundTrip(t, directStream, "directly")

	used := slices.IndexFunc(relays, func(r *Relay) bool { return r.Key() == relayed.Path().Relay })
	if used < 0 {
		t.Fatalf("path %v is not through either relay", relayed.Path())
	}
	relays[used].Close()
	_, err := relayed.Read(make([]byte, 1))
	wantErr(t, err, ErrRelayLost)
	var ce *CircuitError
	if !errors.As(err, &ce) || ce.Relay != relays[used].Key() || ce.Peer != l.Key() {
		t.Errorf("error %v does not name the relay and the peer", err)
	}
	t.Log(err)
	roundTrip(t, directStream, "still directly")
	lost := levents.wait(t, "the listener told", kind(EventDisconnected, d.Key()))
	wantErr(t, lost.Err, ErrRelayLost)
	levents.wait(t, "the listener's reservation lost", func(e Event) bool {
		return e.Kind == EventReservationFailed && e.Relay == relays[used].Key() && errors.Is(e.Err, ErrRelayLost)
	})

	// Forget the addresses the listener announced, which answer on
	// loopback, so that the new dial goes through a relay.
	d.host.Peerstore().ClearAddrs(l.ID())
	again := dial(t, d, l.Key(), echoProto)
	roundTrip(t, again, "through the other relay")
	if p := again.Path(); !p.Relayed || p.Relay != relays[1-used].Key() {
		t.Errorf("path %v, want relayed through the other relay", p)
	}
	if !again.Resumed() {
		t.Error("the new session through the other relay did not resume")
	}
}

// TestDialErrors checks that each way a dial fails is told apart, with
// the real relay and go-libp2p's own errors.
func TestDialErrors(t *testing.T) {
	r := startRelay(t, RelayConfig{})
	deadRelay := closingRelayAddr(t)
	// The relay's address under another key: a host with another key
	// answers there.
	fakeRelay := strings.TrimSuffix(r.Addrs()[0], r.host.ID().String()) + mustPeerID(t, newIdentity(t).PublicKey()).String()
	other := startNode(t, Config{})
	listen(t, other, echoProto)
	// setups return the listener to dial, and addresses to give for it.
	unknown := func(t *testing.T) (securepeer.PublicKey, []string) { return newIdentity(t).PublicKey(), nil }

	for _, tc := range []struct {
		name   string
		relays []string
		setup  func(t *testing.T) (key securepeer.PublicKey, addrs []string)
		proto  string
		want   error
	}{
		{"no relay, no address", nil, unknown, echoProto, ErrNoPath},
		{"relay unreachable", []string{deadRelay}, unknown, echoProto, ErrNoRelay},
		{"relay with another key", []string{fakeRelay}, unknown, echoProto, ErrNoRelay},
		{"no reservation", r.Addrs(), func(t *testing.T) (securepeer.PublicKey, []string) {
			return startNode(t, Config{Relays: r.Addrs()}).Key(), nil
		}, echoProto, ErrNoReservation},
		{"protocol not served", nil, func(t *testing.T) (securepeer.PublicKey, []string) {
			return other.Key(), other.Addrs()
		}, "other/1", ErrNotServed},
		{"rejected by Verify", nil, func(t *testing.T) (securepeer.PublicKey, []string) {
			refuse := refusingNode(t, Config{})
			return refuse.Key(), refuse.Addrs()
		}, echoProto, securepeer.ErrRejected},
		{"rejected by Verify through a relay", r.Addrs(), func(t *testing.T) (securepeer.PublicKey, []string) {
			return refusingNode(t, Config{Relays: r.Addrs(), NoHolePunching: true}).Key(), nil
		}, echoProto, securepeer.ErrRejected},
		{"another key at the address", nil, func(t *testing.T) (securepeer.PublicKey, []string) {
			var addrs []string
			for _, a := range other.Addrs() {
				addrs = append(addrs, strings.TrimSuffix(a, "/p2p/"+other.ID().String()))
			}
			return newIdentity(t).PublicKey(), addrs
		}, echoProto, ErrWrongKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startNode(t, Config{Relays: tc.relays, DirectWait: -1, NoHolePunching: true})
			key, addrs := tc.setup(t)
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

// closingRelayAddr returns a relay's address where no relay answers: a TCP
// listener there accepts each connection and closes it at once.
func closingRelayAddr(t *testing.T) string {
	t.Helper()
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
	return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", port, mustPeerID(t, newIdentity(t).PublicKey()))
}

// refusingNode starts a node with cfg that serves echoProto and whose
// Verify refuses every key.
func refusingNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	cfg.Verify = func(context.Context, securepeer.PublicKey) error { return errors.New("not on the list") }
	n := startNode(t, cfg)
	listen(t, n, echoProto)
	return n
}

func mustPeerID(t testing.TB, k securepeer.PublicKey) peer.ID {
	t.Helper()
	id, err := PeerID(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// oldConn is a connection opened long ago, for awaitDirect.
type oldConn struct {
	network.Conn
	opened time.Time
}

func (c oldConn) Stat() network.ConnStats {
	return network.ConnStats{Stats: network.Stats{Opened: c.opened}}
}

// TestAwaitDirectOnce: Dial waits for a direct connection only within
// DirectWait of the relayed connection's opening, so that the streams of
// a pair that stays relayed, opened later, do not each wait again.
func TestAwaitDirectOnce(t *testing.T) {
	const wait = time.Hour
	n := startNode(t, Config{DirectWait: wait})
	p := mustPeerID(t, newIdentity(t).PublicKey())
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	n.awaitDirect(ctx, p, oldConn{opened: time.Now().Add(-wait)})
	if ctx.Err() != nil {
		t.Fatal("awaitDirect waited on a relayed connection opened DirectWait ago")
	}
	// A relayed connection that just opened is waited on, until the
	// context ends here.
	short, cancelShort := context.WithCancel(context.Background())
	cancelShort()
	n.awaitDirect(short, p, oldConn{opened: time.Now()})
}

// TestDialOpensStreamOnceMore checks that a stream that fails before its
// protocol is agreed, on a connection that ended under it, is opened once
// more on a new connection, and that one the peer refuses (a protocol it
// does not serve) is not.
func TestDialOpensStreamOnceMore(t *testing.T) {
	l := startNode(t, Config{})
	echo(t, listen(t, l, echoProto))
	d := startNode(t, Config{})
	if err := d.AddAddrs(l.Key(), l.Addrs()); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, dial(t, d, l.Key(), echoProto), "a first connection")
	calls := 0
	testOnlyNewStream = func(ctx context.Context, n *Node, p peer.ID, id protocol.ID) (network.Stream, error) {
		calls++
		if calls == 1 {
			// The connection ends as the stream goes out on it.
			for _, c := range n.host.Network().ConnsToPeer(p) {
				c.Close()
			}
			return nil, fmt.Errorf("failed to negotiate protocol: %w", network.ErrReset)
		}
		return n.host.NewStream(network.WithAllowLimitedConn(ctx, "securepeer"), p, id)
	}
	defer func() { testOnlyNewStream = nil }()
	roundTrip(t, dial(t, d, l.Key(), echoProto), "on a new connection")
	if calls != 2 {
		t.Errorf("%d attempts to open the stream, want 2", calls)
	}
	calls = 2 // no failure injected from here on
	_, err := d.Dial(context.Background(), l.Key(), "nobody-serves/1")
	wantErr(t, err, ErrNotServed)
	if calls != 3 {
		t.Errorf("%d attempts for a protocol the peer does not serve, want 1", calls-2)
	}
}
