package main

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/testutil"
	"github.com/securepeer/securepeer/internal/pkgerr"
	"github.com/securepeer/securepeer/p2p"
)

func newTestKey(t testing.TB) securepeer.PublicKey {
	t.Helper()
	id, err := securepeer.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id.PublicKey()
}

// newNoticeNode is a p2pNode without a libp2p node, for what it tells
// the user; stop stops its printer and returns what it printed.
func newNoticeNode(t testing.TB, relays map[securepeer.PublicKey]string) (n *p2pNode, stop func() string) {
	t.Helper()
	notes := new(testutil.NoteLog)
	n = &p2pNode{
		self:    newTestKey(t),
		log:     slog.New(slog.DiscardHandler),
		relay:   relays,
		say:     make(chan string, p2pNotices),
		printed: make(chan struct{}),
		peers:   make(map[securepeer.PublicKey]*peerPath),
		held:    make(map[securepeer.PublicKey]bool),
		direct:  make(map[securepeer.PublicKey]chan struct{}),
	}
	go n.print(notes.Notef)
	return n, func() string {
		n.mu.Lock()
		n.shut = true
		close(n.say)
		n.mu.Unlock()
		<-n.printed
		return notes.String()
	}
}

// TestPathNotices checks what the user is told of how a connection runs:
// once per path, again when it changes (another relay, direct), whether
// a direct connection was hole punched, and reservations gained and lost
// once each.
func TestPathNotices(t *testing.T) {
	relay, other := newTestKey(t), newTestKey(t)
	n, stop := newNoticeNode(t, map[securepeer.PublicKey]string{relay: "/ip4/203.0.113.7/tcp/4001"})
	peer := newTestKey(t)
	direct := n.watch(peer)
	relayed := p2p.Path{Relayed: true, Relay: relay, Remote: "/ip4/203.0.113.7/tcp/4001/p2p-circuit"}
	n.notify(p2p.Event{Kind: p2p.EventConnected, Peer: peer, Path: relayed})
	n.announce(peer, relayed, "connected to")
	n.announce(peer, relayed, "connected to") // said already
	n.notify(p2p.Event{Kind: p2p.EventDirect, Peer: peer, Path: p2p.Path{Remote: "/ip4/198.51.100.20/tcp/40312"}})
	select {
	case <-direct:
	default:
		t.Error("the watcher was not told that the connection went direct")
	}
	n.announce(peer, p2p.Path{Remote: "/ip4/198.51.100.20/tcp/40312"}, "connected to") // said already
	n.announce(peer, p2p.Path{Relayed: true, Relay: other}, "connected to")            // another relay
	n.notify(p2p.Event{Kind: p2p.EventReserved, Relay: relay})
	n.notify(p2p.Event{Kind: p2p.EventReserved, Relay: relay}) // a renewal
	n.notify(p2p.Event{Kind: p2p.EventReservationFailed, Relay: relay, Err: &p2p.RelayError{Relay: relay, Err: p2p.ErrRelayLost}})
	n.notify(p2p.Event{Kind: p2p.EventReservationFailed, Relay: relay, Err: &p2p.RelayError{Relay: relay, Err: p2p.ErrNoRelay}})
	got := stop()
	fp, rfp := peer.Fingerprint(), other.Fingerprint()
	want := strings.Join([]string{
		"connected to " + fp + " through relay /ip4/203.0.113.7/tcp/4001 (relayed)",
		"the connection to " + fp + " is now direct (198.51.100.20:40312)",
		"connected to " + fp + " through relay " + rfp + " (relayed)",
		"reachable as " + n.self.Fingerprint() + " through relay /ip4/203.0.113.7/tcp/4001",
		"lost the reservation on relay /ip4/203.0.113.7/tcp/4001 (the connection to the relay was lost); trying again",
	}, "\n")
	if got != want {
		t.Errorf("notices:\n%s\nwant:\n%s", got, want)
	}
}

// TestPathNoticesHolePunched: a first stream that is direct after a
// relayed connection came up says it was hole punched, and where they met.
func TestPathNoticesHolePunched(t *testing.T) {
	relay := newTestKey(t)
	n, stop := newNoticeNode(t, map[securepeer.PublicKey]string{relay: "/ip4/203.0.113.7/tcp/4001"})
	peer := newTestKey(t)
	n.watch(peer)
	n.notify(p2p.Event{Kind: p2p.EventConnected, Peer: peer, Path: p2p.Path{Relayed: true, Relay: relay}})
	n.notify(p2p.Event{Kind: p2p.EventDirect, Peer: peer, Path: p2p.Path{Remote: "/ip4/198.51.100.20/tcp/40312"}})
	n.announce(peer, p2p.Path{Remote: "/ip4/198.51.100.20/tcp/40312"}, "connected to")
	want := "connected to " + peer.Fingerprint() + " directly (198.51.100.20:40312), hole punched after meeting through relay /ip4/203.0.113.7/tcp/4001"
	if got := stop(); got != want {
		t.Errorf("notices:\n%s\nwant:\n%s", got, want)
	}
}

// TestP2PNoticeNamesNoLibrary: a notice of the p2p node that names a
// library's error shows it without the library's name, as notef does,
// though the node formats it before notef sees it.
func TestP2PNoticeNamesNoLibrary(t *testing.T) {
	_, badKey := securepeer.ParsePublicKey("ssh-ed25519 AAAA")
	n, stop := newNoticeNode(t, nil)
	n.mu.Lock()
	n.tellLocked("refused %s: %v", "x", badKey)
	n.mu.Unlock()
	want := "refused x: " + pkgerr.Unnamed(badKey).Error()
	if got := stop(); got != want {
		t.Errorf("notice %q, want %q", got, want)
	}
}

// TestPathNoticesBounded drives 5000 peer keys, as a listen -p2p without
// -allow lets in, through the notices of their paths: the node keeps at
// most maxPeerPaths of them, and queues at most p2pNotices notices
// whatever the printer's pace (listen's printer is rate-limited too).
func TestPathNoticesBounded(t *testing.T) {
	// No printer: one that never prints.
	n := &p2pNode{self: newTestKey(t), log: slog.New(slog.DiscardHandler), say: make(chan string, p2pNotices), peers: make(map[securepeer.PublicKey]*peerPath)}
	for i := range 5000 {
		n.announce(newTestKey(t), p2p.Path{Remote: fmt.Sprintf("/ip4/198.51.100.%d/tcp/4001", i%250+1)}, "accepted")
		if len(n.peers) > maxPeerPaths {
			t.Fatalf("%d peers' paths kept, want at most %d", len(n.peers), maxPeerPaths)
		}
	}
	if len(n.say) != p2pNotices {
		t.Errorf("%d notices queued, want the bound, %d", len(n.say), p2pNotices)
	}
}

// TestCircuitFailure checks the sentence a stream through a relay ends
// with, for each reason the p2p package gives.
func TestCircuitFailure(t *testing.T) {
	s := &stream{remoteAddr: "SHA256:peer", path: "through relay /ip4/203.0.113.7/tcp/4001 (relayed)"}
	for _, tc := range []struct {
		ce   p2p.CircuitError
		want string
	}{
		{p2p.CircuitError{Err: p2p.ErrRelayLost}, "the relay was lost"},
		{p2p.CircuitError{Err: p2p.ErrCircuitDataLimit, DataLimit: 1 << 30}, "the relay cut it at its data limit, 1.0 GiB each way"},
		{p2p.CircuitError{Err: p2p.ErrCircuitTimeLimit, TimeLimit: time.Hour}, "the relay cut it at its time limit, 1h0m0s"},
		{p2p.CircuitError{Err: p2p.ErrCircuitEnded}, "the relay or the peer dropped it"},
	} {
		err := streamError(s, fmt.Errorf("reading: %w", &tc.ce))
		want := "the connection to SHA256:peer, through relay /ip4/203.0.113.7/tcp/4001 (relayed), ended: " + tc.want + "; data may be missing"
		if err.Error() != want {
			t.Errorf("%v: %q, want %q", tc.ce.Err, err, want)
		}
	}
	// A peer's abort, not a relay's end.
	if err := streamError(s, peerAbort(errors.Join(errors.New("x")))); strings.Contains(err.Error(), "relay") {
		t.Errorf("a plain error read as a relay's end: %v", err)
	}
}

// TestHostPort checks how messages show a connection's address.
func TestHostPort(t *testing.T) {
	for in, want := range map[string]string{
		"/ip4/198.51.100.20/tcp/40312":          "198.51.100.20:40312",
		"/ip6/2001:db8::1/tcp/4001":             "[2001:db8::1]:4001",
		"/ip4/203.0.113.7/tcp/4001/p2p-circuit": "203.0.113.7:4001",
		"/dns/relay.example/tcp/4001":           "/dns/relay.example/tcp/4001",
		"garbage":                               "garbage",
	} {
		if got := hostPort(in); got != want {
			t.Errorf("hostPort(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestListenMultiaddrs checks listen's ADDR as the node's TCP addresses.
func TestListenMultiaddrs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{"", nil, ""},
		{":4001", []string{"/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001"}, ""},
		{"198.51.100.7:4001", []string{"/ip4/198.51.100.7/tcp/4001"}, ""},
		{"[2001:db8::1]:4001", []string{"/ip6/2001:db8::1/tcp/4001"}, ""},
		{"example.org:4001", nil, "takes an IP address"},
	} {
		got, err := listenMultiaddrs(tc.in)
		checkUsage(t, err, tc.err)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("listenMultiaddrs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
