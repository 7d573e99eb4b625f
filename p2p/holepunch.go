package p2p

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/securepeer/securepeer/internal/pkgerr"
)

// punching runs the node's part in hole punching: go-libp2p's DCUtR
// service, given the addresses to announce for it. go-libp2p's own choice
// of those (its observed addresses, kept only if they look public) misses
// two cases this engine wants: peers on one private network, and an
// address that a relay of the node's own saw, whatever range it is in.
// So the node announces the addresses its relays observed for its
// listening port, then its own interface addresses.
type punching struct {
	svc *holepunch.Service

	mu       sync.Mutex
	observed map[peer.ID]relayObservation // by relay
	again    map[peer.ID]chan struct{}    // peers with rounds to come; closed when the peer is gone
	offered  map[peer.ID][]ma.Multiaddr   // what each peer announced for its last hole punch (forgetOffered)
	slot     *predictSlot                 // one punch at a time predicts
}

// maxOffered bounds punching.offered, in peers and in addresses per
// peer. The entries go with the peer (peerGone); one that a hole punch
// made as the peer left stays until the map, full, is cleared.
const maxOffered = 256

// punchAgain holds the delays after which a node that received a relayed
// connection starts another round of hole punching, while the peer is
// still connected only through a relay. go-libp2p makes one round (up to
// three attempts) when the relayed connection opens, and never another;
// but a round fails for reasons that pass: the packets of the
// simultaneous open missed each other on a loaded host or a path whose
// delay changed, or a NAT mapping expired. A round costs a few messages
// over the relay and at most three dials; the rounds are bounded, and end
// when the peer's last connection does.
var punchAgain = []time.Duration{time.Second, 10 * time.Second, time.Minute, 10 * time.Minute}

// punchPoll is how often a round to come checks whether the round before
// it, which go-libp2p reports only per attempt, has ended.
const punchPoll = 250 * time.Millisecond

// punchTimeout bounds each hole punching attempt, and the dial to a
// peer's public address that go-libp2p tries before them. go-libp2p's
// default is 10 seconds; an attempt whose packets get through takes a few
// round trips, and one that fails for want of them (a NAT drops them in
// silence) only ends at this limit, so it is what a failed attempt costs.
// go-libp2p makes up to three attempts, the third with the roles of the
// simultaneous open swapped (settleRole makes the first attempt take the
// roles that fit when only the listener's packets get through).
const punchTimeout = 5 * time.Second

// startHolePunching starts the DCUtR service and the tracking of the
// addresses the relays observe.
func (n *Node) startHolePunching() error {
	ids, ok := n.host.(interface{ IDService() identify.IDService })
	if !ok {
		return pkgerr.New("p2p", "the libp2p host has no identify service")
	}
	sub, err := n.host.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
	if err != nil {
		return err
	}
	n.punch = &punching{
		observed: make(map[peer.ID]relayObservation),
		again:    make(map[peer.ID]chan struct{}),
		offered:  make(map[peer.ID][]ma.Multiaddr),
		slot:     newPredictSlot(),
	}
	n.wg.Go(func() {
		defer sub.Close()
		for {
			select {
			case e := <-sub.Out():
				n.identified(e.(event.EvtPeerIdentificationCompleted))
			case <-n.ctx.Done():
				return
			}
		}
	})
	svc, err := holepunch.NewService(n.host, ids.IDService(), n.holePunchAddrs,
		holepunch.WithTracer((*punchTracer)(n)), holepunch.DirectDialTimeout(punchTimeout),
		holepunch.WithAddrFilter((*punchFilter)(n)))
	if err != nil {
		return err
	}
	n.punch.svc = svc
	return nil
}

// relayedInbound starts the rounds of hole punching to come with the peer
// of c, a connection that reached the node through a relay, unless they
// already run (punchAgain). go-libp2p starts the first round itself.
func (n *Node) relayedInbound(c network.Conn) {
	p := c.RemotePeer()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed || n.punch == nil || n.isRelay(p) {
		return
	}
	n.punch.mu.Lock()
	defer n.punch.mu.Unlock()
	if _, ok := n.punch.again[p]; ok {
		return
	}
	gone := make(chan struct{})
	n.punch.again[p] = gone
	// Under n.mu, after checking n.closed: Close waits for n.wg after
	// setting it, so that this Add comes before the Wait.
	n.wg.Go(func() { n.punchRounds(p, gone) })
}

// punchRounds runs the rounds of hole punching to come with p (punchAgain)
// while p is connected only through a relay, until gone is closed.
func (n *Node) punchRounds(p peer.ID, gone <-chan struct{}) {
	defer func() {
		n.punch.mu.Lock()
		if n.punch.again[p] == gone {
			delete(n.punch.again, p)
		}
		n.punch.mu.Unlock()
	}()
	for _, d := range punchAgain {
		if !n.pause(d, gone) {
			return
		}
		for {
			if c := n.bestConn(p); c == nil || !isCircuit(c.RemoteMultiaddr()) {
				return // gone, or direct
			}
			closed, err := n.directConnect(p)
			if closed {
				return
			}
			if !errors.Is(err, holepunch.ErrHolePunchActive) {
				break
			}
			// The round before this one has yet to end.
			if !n.pause(punchPoll, gone) {
				return
			}
		}
	}
}

// directConnect runs a round of hole punching with p, and reports whether
// the node closed first. go-libp2p's DirectConnect waits, before
// anything, for its service to be ready, which it never is if the node
// closes before it announced any address: so the round runs on a
// goroutine of its own that the node does not wait for. Once the node has
// closed, a round that started ends at once (go-libp2p's ErrClosed).
func (n *Node) directConnect(p peer.ID) (closed bool, err error) {
	done := make(chan error, 1)
	go func() { done <- n.punch.svc.DirectConnect(p) }()
	select {
	case err := <-done:
		return false, err
	case <-n.ctx.Done():
		return true, nil
	}
}

// pause waits for d, and reports false if the node closes or gone is
// closed before.
func (n *Node) pause(d time.Duration, gone <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-gone:
	case <-n.ctx.Done():
	}
	return false
}

// peerGone ends the rounds of hole punching to come with p, whose last
// connection has ended.
func (n *Node) peerGone(p peer.ID) {
	if n.punch == nil {
		return
	}
	n.punch.mu.Lock()
	defer n.punch.mu.Unlock()
	delete(n.punch.offered, p)
	if gone, ok := n.punch.again[p]; ok {
		close(gone)
		delete(n.punch.again, p)
	}
}

// identified records the address a relay observed for the node, if the
// connection it observed runs from one of the node's listening ports
// (outgoing TCP connections reuse the listening port): that address is
// the one a hole punch must aim at, and the relays' observations are the
// evidence that port prediction asks for (perFlow).
func (n *Node) identified(e event.EvtPeerIdentificationCompleted) {
	if !n.isRelay(e.Peer) || e.ObservedAddr == nil {
		return
	}
	ap, ok := addrPort(e.ObservedAddr)
	if !ok {
		return
	}
	local := e.Conn.LocalMultiaddr()
	lp, ok := addrPort(local)
	if !ok || !slices.ContainsFunc(n.host.Network().ListenAddresses(), func(a ma.Multiaddr) bool { return samePort(a, local) }) {
		return
	}
	n.punch.mu.Lock()
	n.punch.observed[e.Peer] = relayObservation{observation{local: int(lp.Port()), addr: ap}, e.ObservedAddr}
	n.punch.mu.Unlock()
}

// A relayObservation is a relay's observation, with the address as the
// relay gave it.
type relayObservation struct {
	observation
	ma ma.Multiaddr
}

func samePort(a, b ma.Multiaddr) bool {
	pa, err1 := a.ValueForProtocol(ma.P_TCP)
	pb, err2 := b.ValueForProtocol(ma.P_TCP)
	return err1 == nil && err2 == nil && pa == pb
}

// holePunchAddrs returns the addresses the node can announce for a hole
// punch: those its relays observed, then its interface addresses.
// go-libp2p's service waits for this list to be non-empty before it
// punches, and then asks for it before each attempt, and gives it to
// punchFilter.FilterLocal, which adds the predictions.
func (n *Node) holePunchAddrs() []ma.Multiaddr {
	observed, _ := n.relayObservations()
	var own []ma.Multiaddr
	if h, ok := n.host.(interface{ AllAddrs() []ma.Multiaddr }); ok {
		own = h.AllAddrs()
	}
	return ma.Unique(append(observed, own...))
}

// withPredictions returns what the node announces to p for a hole punch,
// given addrs (holePunchAddrs): if the relays' observations show a NAT
// that gives each flow a port of its own (perFlow), the ports that come
// after the one a relay observes just now (observeFresh, predictPorts),
// after the observed addresses, within maxAnnounced; else addrs. It takes
// the prediction slot for p first (predictSlot), which punchTracer gives
// back once the attempt's dials have left or the attempt has ended.
func (n *Node) withPredictions(p peer.ID, addrs []ma.Multiaddr) []ma.Multiaddr {
	observed, obs := n.relayObservations()
	room := predictRoom(len(addrs))
	if room == 0 || !perFlow(obs) {
		return addrs
	}
	took := n.punch.slot.take(n.ctx, p)
	fresh, ok := n.observeFresh()
	predicted := predictPorts(obs, fresh, ok, room)
	if took && len(predicted) == 0 {
		n.punch.slot.release(p) // nothing to keep the ports for
	}
	out := observed
	for _, ap := range predicted {
		out = append(out, tcpAddr(ap))
	}
	return ma.Unique(append(out, addrs...))
}

// relayObservations returns the addresses the node's relays observed,
// as they gave them and as observations, in the order of its relays.
func (n *Node) relayObservations() ([]ma.Multiaddr, []observation) {
	var observed []ma.Multiaddr
	var obs []observation
	n.punch.mu.Lock()
	defer n.punch.mu.Unlock()
	for _, r := range n.relays {
		if o, ok := n.punch.observed[r.ID]; ok {
			observed = append(observed, o.ma)
			obs = append(obs, o.observation)
		}
	}
	return observed, obs
}

// A punchFilter is the node's filter of the addresses a hole punch
// exchanges.
type punchFilter Node

// FilterLocal adds the node's predictions, if it makes any, to what it
// announces to p (withPredictions).
func (f *punchFilter) FilterLocal(p peer.ID, addrs []ma.Multiaddr) []ma.Multiaddr {
	return (*Node)(f).withPredictions(p, addrs)
}

// FilterRemote keeps, of the addresses a peer announced, the first on
// each IP address if the node's own NAT gives each flow a port of its own
// (perFlow): the peer's other ports on that address are the ports its
// own NAT will give out next (port prediction), which only a SYN from a
// port the peer aimed at, its observed one, can meet; this node's SYNs
// leave from new ports that the peer did not aim at, and each one moves
// the node's NAT past the ports it predicted itself. So two nodes behind
// such NATs punch as they did without prediction, and stay relayed.
func (f *punchFilter) FilterRemote(_ peer.ID, addrs []ma.Multiaddr) []ma.Multiaddr {
	_, obs := (*Node)(f).relayObservations()
	if !perFlow(obs) {
		return addrs
	}
	return firstPerIP(addrs)
}

// A punchTracer turns go-libp2p's hole punching events into the node's.
type punchTracer Node

// Trace reports the end of each hole punching attempt, and tells the
// prediction slot, which the attempt may hold, when the attempt dials and
// when it ends.
func (t *punchTracer) Trace(evt *holepunch.Event) {
	n := (*Node)(t)
	switch evt.Evt.(type) {
	case *holepunch.StartHolePunchEvt:
		n.punch.slot.dialing(evt.Remote)
	case *holepunch.EndHolePunchEvt, *holepunch.ProtocolErrorEvt:
		n.punch.slot.release(evt.Remote)
	}
	key, err := KeyOf(evt.Remote)
	if err != nil {
		return
	}
	switch e := evt.Evt.(type) {
	case *holepunch.StartHolePunchEvt:
		n.forgetOffered(evt.Remote, e.RemoteAddrs)
	case *holepunch.EndHolePunchEvt:
		var err error
		if !e.Success {
			err = errors.New(e.Error)
		}
		n.emit(Event{Kind: EventHolePunch, Peer: key, Err: err})
	case *holepunch.ProtocolErrorEvt:
		n.emit(Event{Kind: EventHolePunch, Peer: key, Err: errors.New(e.Error)})
	}
}

// forgetOffered takes out of the peerstore the addresses that p
// announced for its last hole punch and not for this one, which is about
// to dial addrs, on an IP address that this one still announces: the
// ports a peer behind a symmetric NAT predicted for an attempt that
// failed. go-libp2p keeps a hole punch's addresses for two minutes and
// dials all that it keeps, so they would be dialed again with the next
// attempt's, and the lot would exceed the dials and connections
// go-libp2p lets the node hold to one peer (maxAnnounced). (Such a port,
// if also given by AddAddrs, goes too.) It is called just before each
// attempt's dials (go-libp2p's tracer reports the start synchronously).
func (n *Node) forgetOffered(p peer.ID, addrs []string) {
	var now []ma.Multiaddr
	for _, s := range addrs[:min(len(addrs), maxOffered)] {
		if a, err := ma.NewMultiaddr(s); err == nil {
			now = append(now, a)
		}
	}
	n.punch.mu.Lock()
	before := n.punch.offered[p]
	if len(n.punch.offered) >= maxOffered {
		clear(n.punch.offered)
	}
	n.punch.offered[p] = now
	n.punch.mu.Unlock()
	ips := make(map[netip.Addr]bool)
	for _, a := range now {
		if ap, ok := addrPort(a); ok {
			ips[ap.Addr()] = true
		}
	}
	ps := n.host.Peerstore()
	for _, a := range before {
		ap, ok := addrPort(a)
		if ok && ips[ap.Addr()] && !slices.ContainsFunc(now, a.Equal) {
			ps.SetAddr(p, a, 0)
		}
	}
}

// roleWait is how long a hole punch's dial in the server's role waits for
// the peer to speak first before it takes the client's role (settleRole).
const roleWait = 500 * time.Millisecond

// settleRole settles the role of a connection that this node dialed for a
// hole punch in the server's role (go-libp2p's DCUtR has the node that
// received the relayed connection dial as the server of a TCP
// simultaneous open, and its peer as the client). That is right when the
// two dials meet in a simultaneous open: the peer's connection is its
// own dial too, and it speaks first, as the client. It is wrong when only
// this node's packets get through (the peer is behind a NAT that maps per
// destination, so that this node aimed at a port it no longer uses, and
// this node's dial lands on the peer's listening port): the peer's
// listener then accepts the connection, as a server, and the two servers
// wait for each other until the attempt times out; go-libp2p swaps the
// roles only on its third attempt, about 10 seconds in. So the node waits
// up to roleWait for the peer's first bytes: if they come, it is the
// server, and they are read again by the handshake; if none come, the
// peer is a listener, and this node is the client. It returns the
// connection to upgrade and the role, as a direction: DirInbound for the
// server, DirOutbound for the client.
func settleRole(ctx context.Context, c manet.Conn) (manet.Conn, network.Direction) {
	deadline := time.Now().Add(roleWait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := c.SetReadDeadline(deadline); err != nil {
		return c, network.DirInbound
	}
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
	b := make([]byte, 64)
	n, err := c.Read(b)
	stop()
	c.SetReadDeadline(time.Time{})
	switch {
	case n > 0:
		return &replayConn{Conn: c, pending: b[:n]}, network.DirInbound
	case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil:
		return c, network.DirOutbound
	}
	return c, network.DirInbound // failed: the upgrade reports it
}

// A replayConn returns pending before what it reads from the connection.
type replayConn struct {
	manet.Conn
	pending []byte
}

func (c *replayConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
