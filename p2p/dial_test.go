package p2p

import (
	"testing"
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
