package p2p

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// A connGate keeps a host's connections that completed their handshake
// at Limits.Conns: once the host holds that many, a peer whose handshake
// completes is let in only if the gate makes room for it (a relay closes
// an idle connection), and refused otherwise (a node, or a relay with
// none idle). It indexes the connections by source address.
type connGate struct {
	high     int
	makeRoom bool
	host     atomic.Pointer[host.Host]

	mu       sync.Mutex
	total    int // connections counted: open, or let in and not yet open
	bySource map[netip.Prefix]map[network.Conn]struct{}
	// letIn are the connections let in by InterceptSecured that the host
	// has not yet reported open, by peer and address, with when they were
	// let in: they count from that moment, so that handshakes completing
	// together cannot each see the same free slot. One whose upgrade
	// fails after it stops counting after handshakeTimeout.
	letIn map[letInKey][]time.Time
}

type letInKey struct {
	p    peer.ID
	addr string
}

func newConnGate(high int, makeRoom bool) *connGate {
	return &connGate{
		high: max(high, 1), makeRoom: makeRoom,
		bySource: make(map[netip.Prefix]map[network.Conn]struct{}),
		letIn:    make(map[letInKey][]time.Time),
	}
}

// start makes the gate count h's connections.
func (g *connGate) start(h host.Host) {
	g.host.Store(&h)
	h.Network().Notify(&network.NotifyBundle{
		ConnectedF:    func(_ network.Network, c network.Conn) { g.connected(c) },
		DisconnectedF: func(_ network.Network, c network.Conn) { g.disconnected(c) },
	})
}

func (g *connGate) InterceptPeerDial(peer.ID) bool               { return true }
func (g *connGate) InterceptAddrDial(peer.ID, ma.Multiaddr) bool { return true }
func (g *connGate) InterceptAccept(network.ConnMultiaddrs) bool  { return true }
func (g *connGate) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}

// InterceptSecured lets in a peer whose incoming connection has just
// completed its handshake if the host holds fewer than its limit of
// connections, or if the gate makes room for it.
func (g *connGate) InterceptSecured(dir network.Direction, p peer.ID, addrs network.ConnMultiaddrs) bool {
	if dir != network.DirInbound {
		return true
	}
	h := g.host.Load()
	if h == nil {
		return true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.expireLocked(time.Now())
	if g.total >= g.high {
		if !g.makeRoom {
			return false
		}
		victim := g.victimLocked((*h).ConnManager())
		if victim == nil {
			return false
		}
		g.removeLocked(victim)
		go victim.Close() // its notification takes the swarm's lock
	}
	k := letInKey{p, addrs.RemoteMultiaddr().String()}
	g.letIn[k] = append(g.letIn[k], time.Now())
	g.total++
	return true
}

// expireLocked stops counting the connections let in that have not
// opened within handshakeTimeout: their upgrade failed.
func (g *connGate) expireLocked(now time.Time) {
	for k, ts := range g.letIn {
		i := 0
		for i < len(ts) && now.Sub(ts[i]) > handshakeTimeout {
			i++
		}
		g.total -= i
		if i == len(ts) {
			delete(g.letIn, k)
		} else {
			g.letIn[k] = ts[i:]
		}
	}
}

func (g *connGate) connected(c network.Conn) {
	src, ok := sourceOf(c.RemoteMultiaddr())
	if !ok {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.bySource[src] == nil {
		g.bySource[src] = make(map[network.Conn]struct{})
	}
	g.bySource[src][c] = struct{}{}
	k := letInKey{c.RemotePeer(), c.RemoteMultiaddr().String()}
	if ts := g.letIn[k]; len(ts) > 0 && c.Stat().Direction == network.DirInbound {
		// Counted since it was let in.
		if len(ts) == 1 {
			delete(g.letIn, k)
		} else {
			g.letIn[k] = ts[1:]
		}
		return
	}
	g.total++
}

func (g *connGate) disconnected(c network.Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.removeLocked(c)
}

// removeLocked stops counting c, if it is counted.
func (g *connGate) removeLocked(c network.Conn) {
	src, ok := sourceOf(c.RemoteMultiaddr())
	if !ok {
		return
	}
	if _, ok := g.bySource[src][c]; !ok {
		return
	}
	delete(g.bySource[src], c)
	if len(g.bySource[src]) == 0 {
		delete(g.bySource, src)
	}
	g.total--
}

// victimLocked returns the connection to close to make room, or nil if none is
// idle: an idle connection (a peer without a reservation or a circuit,
// which the relay tags), from the source address that holds the most
// connections and an idle one, its oldest. So idle connections cannot
// keep the relay's slots from peers that come later, and a source gives
// up its idle connections before any source that holds fewer: as
// securepeer's own listeners treat pending handshakes (PROTOCOL.md, "What
// a stranger can make a node or a relay hold").
func (g *connGate) victimLocked(cm connmgr.ConnManager) network.Conn {
	type source struct {
		p netip.Prefix
		n int
	}
	sources := make([]source, 0, len(g.bySource))
	for p, conns := range g.bySource {
		sources = append(sources, source{p, len(conns)})
	}
	slices.SortFunc(sources, func(a, b source) int { return b.n - a.n })
	for _, src := range sources {
		var victim network.Conn
		for c := range g.bySource[src.p] {
			if c.IsClosed() || (victim != nil && !c.Stat().Opened.Before(victim.Stat().Opened)) {
				continue
			}
			if info := cm.GetTagInfo(c.RemotePeer()); info != nil && info.Value > 0 {
				continue
			}
			victim = c
		}
		if victim != nil {
			return victim
		}
	}
	return nil
}

// sourceOf returns the source a connection's address counts under.
func sourceOf(a ma.Multiaddr) (netip.Prefix, bool) {
	ip, err := manet.ToIP(a)
	if err != nil {
		return netip.Prefix{}, false
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Prefix{}, false
	}
	addr = addr.Unmap()
	bits := sourceBitsV4
	if addr.Is6() {
		bits = sourceBitsV6
	}
	p, err := addr.Prefix(bits)
	return p, err == nil
}
