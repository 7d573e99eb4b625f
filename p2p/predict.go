package p2p

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify/pb"
	"github.com/libp2p/go-msgio/pbio"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	mss "github.com/multiformats/go-multistream"
)

// Port prediction, for a node behind a NAT that gives every new flow the
// next port of a counter (PROTOCOL.md, "Relayed, then direct"). Such a
// NAT maps each destination to a port of its own, so the port a relay
// observed is no use to a peer: the node's dial to the peer leaves from
// a later one. So, just before it announces its addresses for a hole
// punch, a node with evidence of such a NAT makes one new connection to
// a relay of its own, reads the address the relay observed for it
// (identify), closes it, and announces the few ports that come after that
// one on the same address. The peer dials them all from its listening
// port, and the one the node's own dial leaves from meets the peer's dial
// in a simultaneous open.

// predictK bounds the ports a node predicts: its punch dials, those of
// other punches that run at the same time, and other flows of the node's
// take the ports after the fresh observation's; a peer's dials to ports
// further on would rarely meet one.
const predictK = 4

// maxAnnounced bounds what a node announces for a hole punch, predictions
// included: the peer dials every address at once, and go-libp2p lets a
// node hold swarm.DefaultPerPeerRateLimit dials to one peer at a time
// (the resource manager's default per peer is as many connections),
// while the peer also holds the relayed connection, and may hold one
// more, to the node, that is going away.
var maxAnnounced = swarm.DefaultPerPeerRateLimit - 2

// observeTimeout bounds the fresh observation: a relay that does not
// answer within it leaves the node announcing no prediction.
const observeTimeout = 2 * time.Second

// An observation is the address a relay observed for a connection from
// one of the node's listening ports.
type observation struct {
	local int // the node's port
	addr  netip.AddrPort
}

// perFlow reports whether the relays' observations of the node show a
// NAT that gives a new port per flow: two ports seen for one local port
// (the mapping depends on the destination), or a port other than the
// node's own (one observer cannot tell a NAT that counts from one that
// moved the port for good; the cost of being wrong is one connection to
// the relay and a few dials that fail).
func perFlow(obs []observation) bool {
	for i, a := range obs {
		if a.addr.Port() != uint16(a.local) {
			return true
		}
		for _, b := range obs[i+1:] {
			if a.local == b.local && a.addr != b.addr {
				return true
			}
		}
	}
	return false
}

// predictPorts returns the k addresses after fresh, a port that a relay
// observed just now, on its address, wrapping from 65535 to 1; or none,
// without evidence that the NAT gives a new port per flow (perFlow of
// obs, the relays' earlier observations), without a fresh observation
// (ok false), or if fresh is on an address that no earlier observation
// of a relay's names.
func predictPorts(obs []observation, fresh netip.AddrPort, ok bool, k int) []netip.AddrPort {
	if !ok || k <= 0 || !perFlow(obs) {
		return nil
	}
	known := false
	for _, o := range obs {
		known = known || o.addr.Addr() == fresh.Addr()
	}
	if !known {
		return nil
	}
	out := make([]netip.AddrPort, 0, k)
	for i := 1; i <= k; i++ {
		out = append(out, netip.AddrPortFrom(fresh.Addr(), nextPort(fresh.Port(), i)))
	}
	return out
}

// nextPort returns the port n after p, counting 65535 then 1.
func nextPort(p uint16, n int) uint16 {
	return uint16((int(p)-1+n)%65535 + 1)
}

// predictRoom returns how many predicted addresses fit beside others
// (the rest of what the node announces) within maxAnnounced.
func predictRoom(others int) int {
	return max(0, min(predictK, maxAnnounced-others))
}

// observeFresh makes a new connection to one of the node's relays, and
// returns the address the relay observed for it. The connection is the
// host's own TCP transport's, upgraded with securepeer and yamux as any,
// but it is not added to the swarm: nothing but this function uses it,
// and it is closed before this returns. It is outbound, to a relay the
// node was configured with, so nothing of it is reachable by anyone
// else.
func (n *Node) observeFresh() (netip.AddrPort, bool) {
	ctx, cancel := context.WithTimeout(n.ctx, observeTimeout)
	defer cancel()
	for _, r := range n.relays {
		for _, a := range r.Addrs {
			if !isTCP(a) {
				continue
			}
			if ap, err := n.observeVia(ctx, r.ID, a); err == nil {
				return ap, true
			}
			if ctx.Err() != nil {
				return netip.AddrPort{}, false
			}
		}
	}
	return netip.AddrPort{}, false
}

// errNoObservation is what observeVia returns when it learns nothing.
var errNoObservation = errors.New("p2p: the relay observed no address")

// observeVia connects to relay at a, asks it for its identify record, and
// returns the address it observed for the connection.
func (n *Node) observeVia(ctx context.Context, relay peer.ID, a ma.Multiaddr) (netip.AddrPort, error) {
	sw, ok := n.host.Network().(*swarm.Swarm)
	if !ok {
		return netip.AddrPort{}, errNoObservation
	}
	t := sw.TransportForDialing(a)
	if t == nil {
		return netip.AddrPort{}, errNoObservation
	}
	c, err := t.Dial(context.WithValue(ctx, probeKey{}, true), a, relay)
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer c.Close()
	s, err := c.OpenStream(ctx)
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer s.Reset()
	if d, ok := ctx.Deadline(); ok {
		s.SetDeadline(d)
	}
	if err := mss.SelectProtoOrFail(identify.ID, s); err != nil {
		return netip.AddrPort{}, err
	}
	return readObserved(s)
}

// A probeKey marks the context of observeVia's dial: its connection is
// no connection of the node's, and emits no event (secTransport).
type probeKey struct{}

func isProbe(ctx context.Context) bool {
	v, _ := ctx.Value(probeKey{}).(bool)
	return v
}

// maxIdentifyMsg bounds the identify record observeVia reads.
const maxIdentifyMsg = 64 << 10

// readObserved reads an identify record, preceded by its length as a
// varint (libp2p's identify protocol), from r, and returns the TCP address
// it says the relay observed.
func readObserved(r io.Reader) (netip.AddrPort, error) {
	var msg pb.Identify
	if err := pbio.NewDelimitedReader(r, maxIdentifyMsg).ReadMsg(&msg); err != nil {
		return netip.AddrPort{}, err
	}
	obs, err := ma.NewMultiaddrBytes(msg.GetObservedAddr())
	if err != nil {
		return netip.AddrPort{}, errNoObservation
	}
	if ap, ok := addrPort(obs); ok {
		return ap, nil
	}
	return netip.AddrPort{}, errNoObservation
}

// firstPerIP returns the first of addrs on each IP address, and those
// that are on none.
func firstPerIP(addrs []ma.Multiaddr) []ma.Multiaddr {
	var out []ma.Multiaddr
	seen := make(map[netip.Addr]bool)
	for _, a := range addrs {
		if ap, ok := addrPort(a); ok {
			if seen[ap.Addr()] {
				continue
			}
			seen[ap.Addr()] = true
		}
		out = append(out, a)
	}
	return out
}

// addrPort returns a TCP multiaddr's IP address and port.
func addrPort(a ma.Multiaddr) (netip.AddrPort, bool) {
	if !isTCP(a) {
		return netip.AddrPort{}, false
	}
	na, err := manet.ToNetAddr(a)
	if err != nil {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(na.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), err == nil
}

// tcpAddr returns the multiaddr of ap.
func tcpAddr(ap netip.AddrPort) ma.Multiaddr {
	a, err := manet.FromNetAddr(net.TCPAddrFromAddrPort(ap))
	if err != nil {
		return nil
	}
	return a
}
