package p2p

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/transport"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/libp2p/go-libp2p/p2p/transport/tcpreuse"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Port prediction, for a node behind a NAT that gives every new flow the
// next port of a counter (PROTOCOL.md, "Relayed, then direct"). Such a
// NAT maps each destination to a port of its own, so the port a relay
// observed is no use to a peer: the node's dial to the peer leaves from
// a later one. The node announces, besides what it observed, the few
// ports that come next on the same address; the peer dials them all from
// its listening port, and the one the node's own dial leaves from meets
// the peer's dial in a simultaneous open.

// maxPredicted bounds the ports a node predicts, whatever room the
// peer's dials leave (predictRoom).
const maxPredicted = 6

// An observation is an address a peer observed for a connection from one
// of the node's listening ports: by whom, from which local port, and, for
// a connection the node dialed, which of its flows (flowLog) it was.
type observation struct {
	by    string // the observer: a peer ID
	local int    // the node's port
	addr  netip.AddrPort
	ma    ma.Multiaddr // addr, as the observer gave it
	flow  uint64       // the connection's flow, 0 if not known
}

// A flowLog holds the node's recent dials, one entry per flow its NAT
// sees as new: a NAT that counts ports gives each the next port, so the
// flows the node started after an observed one tell how far its NAT's
// counter has moved since (predictPorts). A dial to a destination the
// node dialed within flowMemory is not a new flow: the NAT keeps the
// mapping of an unanswered SYN that long, and a new SYN on the same
// addresses and ports is the same flow to it (hole punching rounds dial
// the same addresses again). The log is bounded (maxFlows), and holds
// only the node's own dials.
type flowLog struct {
	mu    sync.Mutex
	last  uint64 // the last flow's number; the first is 1
	flows []flow // oldest first
}

type flow struct {
	n  uint64
	to string // the destination, a multiaddr's bytes
	at time.Time
}

// maxFlows bounds a flowLog: more flows than that since an observation
// leave no prediction worth announcing.
const maxFlows = 64

// flowMemory is how long a NAT keeps a flow whose SYN went unanswered:
// Linux conntrack's nf_conntrack_tcp_timeout_syn_sent.
const flowMemory = 2 * time.Minute

// dialed records a dial to to at now.
func (l *flowLog) dialed(to ma.Multiaddr, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := string(to.Bytes())
	for _, f := range l.flows {
		if f.to == key && now.Sub(f.at) < flowMemory {
			return
		}
	}
	l.last++
	if len(l.flows) == maxFlows {
		l.flows = slices.Delete(l.flows, 0, 1)
	}
	l.flows = append(l.flows, flow{n: l.last, to: key, at: now})
}

// flowTo returns the number of the last flow to to, or 0.
func (l *flowLog) flowTo(to ma.Multiaddr) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := string(to.Bytes())
	for i := len(l.flows) - 1; i >= 0; i-- {
		if l.flows[i].to == key {
			return l.flows[i].n
		}
	}
	return 0
}

// since returns how many flows started after flow n, and false if n is
// no longer in the log.
func (l *flowLog) since(n uint64) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n == 0 || len(l.flows) == 0 || n < l.flows[0].n {
		return 0, false
	}
	later := 0
	for _, f := range l.flows {
		if f.n > n {
			later++
		}
	}
	return later, true
}

// undo forgets the flows to to recorded since start: a dial that failed
// before sending anything.
func (l *flowLog) undo(to ma.Multiaddr, start time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := string(to.Bytes())
	l.flows = slices.DeleteFunc(l.flows, func(f flow) bool { return f.to == key && !f.at.Before(start) })
}

// predictRoom returns how many predicted addresses fit beside others
// (the rest of what the node announces) in the dials a peer makes to the
// node at once: go-libp2p's swarm dials at most
// swarm.DefaultPerPeerRateLimit addresses of one peer at a time, and
// holds the others until one of those fails, which a dial into a NAT
// that drops it in silence does only at the attempt's end. So a
// prediction that does not fit would never be dialed in time.
func predictRoom(others int) int {
	return max(0, min(maxPredicted, swarm.DefaultPerPeerRateLimit-others))
}

// predictPorts returns the k ports that the node's NAT will give its next
// flows if it gives each flow the next port of a counter: those after the
// latest observation's port and the later flows the node has started
// since (later), on the latest observation's address, wrapping from
// 65535 to 1, leaving out those any observation names; or none, without
// evidence that the NAT gives a new port per flow. obs holds the relays'
// observations and, last, the latest observation of anyone's. Only
// observations of the latest's address are evidence, and only a relay's
// observation of that address makes the latest count: a peer that lied
// about the address could otherwise make the node announce ports of
// someone else's. The evidence is two ports seen for one local port (the
// mapping depends on the destination), or, with a single observer, a
// port other than the node's own (one observer cannot tell a NAT that
// counts from one that moved the port for good; the cost of being wrong
// is k dials that fail).
func predictPorts(obs []observation, later, k int) []uint16 {
	if len(obs) == 0 || k <= 0 || later < 0 {
		return nil
	}
	latest := obs[len(obs)-1]
	var same []observation
	relaySaw := false
	for i, o := range obs {
		if o.addr.Addr() == latest.addr.Addr() {
			same = append(same, o)
			relaySaw = relaySaw || i < len(obs)-1
		}
	}
	if !relaySaw || !perFlow(same) {
		return nil
	}
	var out []uint16
	p := nextPort(latest.addr.Port(), later)
	for range 65535 {
		if len(out) == k {
			break
		}
		p = nextPort(p, 1)
		if !slices.ContainsFunc(same, func(o observation) bool { return o.addr.Port() == p }) {
			out = append(out, p)
		}
	}
	return out
}

// nextPort returns the port n after p, counting 65535 then 1.
func nextPort(p uint16, n int) uint16 {
	return uint16((int(p)-1+n)%65535 + 1)
}

// perFlow reports whether observations of one address show a NAT that
// gives a new port per flow.
func perFlow(obs []observation) bool {
	first := obs[0]
	for _, o := range obs[1:] {
		if o.addr.Port() != first.addr.Port() && o.local == first.local {
			return true
		}
	}
	observers := make(map[string]bool)
	for _, o := range obs {
		observers[o.by] = true
	}
	return len(observers) == 1 && first.addr.Port() != uint16(first.local)
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
	return ap, err == nil
}

// tcpAddr returns the multiaddr of ap.
func tcpAddr(ap netip.AddrPort) ma.Multiaddr {
	a, err := manet.FromNetAddr(net.TCPAddrFromAddrPort(ap))
	if err != nil {
		return nil
	}
	return a
}

// A flowCounter is the resource manager the node's TCP transport is
// given: the node's, which also records in the node's flowLog each
// outbound TCP connection it lets the transport open, just before the
// transport's dial sends its SYN. A dial that the resource manager
// refuses sends nothing, and is not recorded.
type flowCounter struct {
	network.ResourceManager
	flows *flowLog
}

func (r *flowCounter) OpenConnection(dir network.Direction, usefd bool, endpoint ma.Multiaddr) (network.ConnManagementScope, error) {
	scope, err := r.ResourceManager.OpenConnection(dir, usefd, endpoint)
	if err == nil && dir == network.DirOutbound && usefd {
		r.flows.dialed(endpoint, time.Now())
	}
	return scope, err
}

// flowOf returns o's flow, or 0 if o is nil.
func flowOf(o *observation) uint64 {
	if o == nil {
		return 0
	}
	return o.flow
}

// A countingTCP is go-libp2p's TCP transport, whose dials that fail
// before sending a SYN are taken back out of the node's flowLog
// (flowCounter records them).
type countingTCP struct {
	*tcp.TcpTransport
	flows *flowLog
}

func (t *countingTCP) Dial(ctx context.Context, raddr ma.Multiaddr, p peer.ID) (transport.CapableConn, error) {
	start := time.Now()
	c, err := t.TcpTransport.Dial(ctx, raddr, p)
	t.unsent(raddr, start, err)
	return c, err
}

func (t *countingTCP) DialWithUpdates(ctx context.Context, raddr ma.Multiaddr, p peer.ID, updates chan<- transport.DialUpdate) (transport.CapableConn, error) {
	start := time.Now()
	c, err := t.TcpTransport.DialWithUpdates(ctx, raddr, p, updates)
	t.unsent(raddr, start, err)
	return c, err
}

// unsent takes a dial that started at start and failed with err out of
// the flowLog if it failed before sending a SYN: the resource manager
// refused it once it knew the peer, or the kernel did (no route, or no
// local address and port to send from). (An ICMP error from a
// router on the way does not end a connect on Linux: TCP keeps trying
// until its timeout.)
func (t *countingTCP) unsent(raddr ma.Multiaddr, start time.Time, err error) {
	if errors.Is(err, network.ErrResourceLimitExceeded) || errors.Is(err, syscall.ENETUNREACH) ||
		errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EADDRINUSE) {
		t.flows.undo(raddr, start)
	}
}

// tcpTransport is the constructor of the node's TCP transport: the
// admission's, whose dials are recorded in the node's flowLog
// (flowCounter).
func (n *Node) tcpTransport(u transport.Upgrader, rcmgr network.ResourceManager, shared *tcpreuse.ConnMgr, gater connmgr.ConnectionGater) (*countingTCP, error) {
	t, err := n.adm.tcpTransport(u, &flowCounter{ResourceManager: rcmgr, flows: &n.flows}, shared, gater)
	if err != nil {
		return nil, err
	}
	return &countingTCP{TcpTransport: t, flows: &n.flows}, nil
}
