package p2p

import (
	"context"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/pkgerr"
)

// DefaultListenAddrs are where a [Node] listens when [Config.ListenAddrs]
// is empty: every interface, IPv4 and IPv6, on a port the system picks.
var DefaultListenAddrs = []string{"/ip4/0.0.0.0/tcp/0", "/ip6/::/tcp/0"}

// DefaultDirectWait is how long [Node.Dial] waits, by default, for a
// direct connection once a relayed one is up (PROTOCOL.md, "Relayed, then
// direct").
const DefaultDirectWait = 1500 * time.Millisecond

// Config configures a [Node].
type Config struct {
	// Identity is the node's key, which is also its libp2p peer ID. It may
	// be held by ssh-agent or another signer (NewIdentityFromSigner).
	Identity *securepeer.Identity

	// ListenAddrs are the multiaddrs to listen on, TCP only
	// ("/ip4/0.0.0.0/tcp/4001"); nil means DefaultListenAddrs. A node
	// listens even if it only dials: hole punching dials from the
	// listening port.
	ListenAddrs []string

	// Relays are the circuit relays to reach peers through and, once
	// [Node.Listen] has been called, to hold a reservation on: multiaddrs
	// that end with the relay's peer ID, which names its key
	// ("/ip4/203.0.113.7/tcp/4001/p2p/12D3KooW..."). A relay with several
	// addresses may be listed once per address.
	Relays []string

	// Verify decides which peers may open connections to this node, as
	// securepeer's Config.Verify does: it sees each peer's key once the
	// handshake has proved it, and a non-nil error refuses the
	// connection. nil accepts any key. Peers this node dials by key are
	// not asked about, also when they connect back (as a hole punch may
	// make them); nor are its relays.
	Verify func(ctx context.Context, key securepeer.PublicKey) error

	// DirectWait is how long Dial waits, once it has a relayed
	// connection, for hole punching to give a direct one before it opens
	// its stream on the relayed one. Zero means DefaultDirectWait;
	// negative means no wait (hole punching still runs, and streams
	// opened later use its connection).
	DirectWait time.Duration

	// NoHolePunching keeps the node out of hole punching: it neither
	// starts one (as the listener of a relayed connection does) nor
	// answers one, so its relayed connections stay relayed unless a
	// direct address answers. Hole punching shows each peer the other's
	// addresses; a node that must not show its own to peers also needs
	// to announce none (go-libp2p's identify sends a host's listening
	// addresses to every peer).
	NoHolePunching bool

	// Limits bound what peers can make the node hold. Zero fields take
	// the defaults of [NodeLimits].
	Limits Limits

	// Notify, if not nil, receives the node's events: reservations,
	// connections and how they run, hole punching. It is called from the
	// node's goroutines, several at once, and must not block.
	Notify func(Event)
}

// Limits bound the connections and streams that peers can make a node
// or a relay hold: connections in their handshake through securepeer's
// admission (internal/admit), the rest through go-libp2p's resource
// manager. Connections from one source are bounded by address: an IPv4
// address, or an IPv6 /56. Zero fields take defaults ([NodeLimits],
// [RelayLimits]).
type Limits struct {
	// Pending bounds the incoming connections whose handshake has not
	// completed, all sources together. When they are all taken, each new
	// connection makes room: the oldest of the source that holds the most
	// connections whose peer has proved nothing (PROTOCOL.md, "Pending
	// handshakes").
	Pending int
	// Conns bounds the connections at once that have completed their
	// handshake, all peers together. A relay that holds as many makes
	// room for a newcomer by closing an idle one; a node refuses the
	// newcomer.
	Conns int
	// ConnsPerIP bounds the connections at once from one source, counted
	// from the arrival of a connection's first bytes.
	ConnsPerIP int
	// ConnRate is how many new connections per second one source may
	// open, on average, and ConnBurst how many at once, counted at the
	// arrival of each connection's first bytes.
	ConnRate  float64
	ConnBurst int
	// StreamsPerPeer bounds the streams at once with one peer.
	StreamsPerPeer int
	// Memory bounds the memory that the resource manager accounts for
	// (stream multiplexer buffers, protocol state), in bytes.
	Memory int64
}

// NodeLimits are the defaults of a [Node]'s [Limits]: a node serves its
// own sessions, not the public.
var NodeLimits = Limits{
	Pending:        1024,
	Conns:          256,
	ConnsPerIP:     16,
	ConnRate:       1,
	ConnBurst:      32,
	StreamsPerPeer: 512,
	Memory:         128 << 20,
}

// setDefault sets *v to def if it is the zero value.
func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// withDefaults returns l with its zero fields taken from def.
func (l Limits) withDefaults(def Limits) Limits {
	setDefault(&l.Pending, def.Pending)
	setDefault(&l.Conns, def.Conns)
	setDefault(&l.ConnsPerIP, def.ConnsPerIP)
	setDefault(&l.ConnRate, def.ConnRate)
	setDefault(&l.ConnBurst, def.ConnBurst)
	setDefault(&l.StreamsPerPeer, def.StreamsPerPeer)
	setDefault(&l.Memory, def.Memory)
	return l
}

func (l Limits) check() error {
	if l.Pending < 0 || l.Conns < 0 || l.ConnsPerIP < 0 || l.ConnRate < 0 || l.ConnBurst < 0 || l.StreamsPerPeer < 0 || l.Memory < 0 {
		return pkgerr.Errorf("p2p", "negative limits: %+v", l)
	}
	return nil
}

// parseListenAddrs parses TCP listen multiaddrs.
func parseListenAddrs(addrs []string) ([]ma.Multiaddr, error) {
	if len(addrs) == 0 {
		addrs = DefaultListenAddrs
	}
	return parseTCPAddrs(addrs, "listen address", "an IP address and TCP port: this engine speaks TCP only")
}

// parseTCPAddrs parses addrs, each a TCP multiaddr (isTCP); what names
// them in an error, and notTCP says what one that is not TCP should be.
func parseTCPAddrs(addrs []string, what, notTCP string) ([]ma.Multiaddr, error) {
	out := make([]ma.Multiaddr, 0, len(addrs))
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, pkgerr.Errorf("p2p", "%s %q: %w", what, s, err)
		}
		if !isTCP(a) {
			return nil, pkgerr.Errorf("p2p", "%s %q is not %s", what, s, notTCP)
		}
		out = append(out, a)
	}
	return out, nil
}

// isTCP reports whether a is /ip4|ip6|dns.../tcp/PORT and nothing more.
func isTCP(a ma.Multiaddr) bool {
	if len(a) != 2 || a[1].Code() != ma.P_TCP {
		return false
	}
	switch a[0].Code() {
	case ma.P_IP4, ma.P_IP6, ma.P_DNS, ma.P_DNS4, ma.P_DNS6:
		return true
	}
	return false
}

// parseRelays parses relay multiaddrs, grouping the addresses of one
// relay in the order the relays are first listed; each must name the
// relay's peer ID, an Ed25519 key other than self's.
func parseRelays(relays []string, self peer.ID) ([]peer.AddrInfo, error) {
	var infos []peer.AddrInfo
	for _, s := range relays {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, pkgerr.Errorf("p2p", "relay address %q: %w", s, err)
		}
		transport, id := peer.SplitAddr(a)
		if id == "" || transport == nil || !isTCP(transport) {
			return nil, pkgerr.Errorf("p2p", "relay address %q is not an IP address and TCP port followed by /p2p/ and the relay's peer ID", s)
		}
		if _, err := KeyOf(id); err != nil {
			return nil, pkgerr.Errorf("p2p", "relay address %q: %w", s, err)
		}
		if id == self {
			return nil, pkgerr.Errorf("p2p", "relay address %q names this node's own key", s)
		}
		i := slices.IndexFunc(infos, func(ai peer.AddrInfo) bool { return ai.ID == id })
		if i < 0 {
			infos = append(infos, peer.AddrInfo{ID: id})
			i = len(infos) - 1
		}
		infos[i].Addrs = append(infos[i].Addrs, transport)
	}
	return infos, nil
}
