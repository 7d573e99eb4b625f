package p2p

import (
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	ma "github.com/multiformats/go-multiaddr"
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
	observed map[peer.ID]ma.Multiaddr // by relay
}

// punchTimeout bounds each hole punching attempt, and the dial to a
// peer's public address that go-libp2p tries before them. go-libp2p's
// default is 10 seconds; an attempt whose packets get through takes a few
// round trips, and one that fails for want of them (a NAT drops them in
// silence) only ends at this limit, so it is what a failed attempt costs.
// go-libp2p makes up to three attempts, the third with the roles of the
// simultaneous open swapped: when only the listener's packets get through
// (it is behind a NAT that maps per destination, and the dialer is
// reachable), only that third attempt succeeds, after two that time out.
const punchTimeout = 5 * time.Second

// startHolePunching starts the DCUtR service and the tracking of the
// addresses the relays observe.
func (n *Node) startHolePunching() error {
	ids, ok := n.host.(interface{ IDService() identify.IDService })
	if !ok {
		return errors.New("p2p: the libp2p host has no identify service")
	}
	sub, err := n.host.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
	if err != nil {
		return err
	}
	n.punch = &punching{observed: make(map[peer.ID]ma.Multiaddr)}
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
		holepunch.WithTracer((*punchTracer)(n)), holepunch.DirectDialTimeout(punchTimeout))
	if err != nil {
		return err
	}
	n.punch.svc = svc
	return nil
}

// identified records the address a relay observed for the node, if the
// connection it observed runs from one of the node's listening ports
// (outgoing TCP connections reuse the listening port): that address is
// the one a hole punch must aim at.
func (n *Node) identified(e event.EvtPeerIdentificationCompleted) {
	if !n.isRelay(e.Peer) || e.ObservedAddr == nil || !isTCP(e.ObservedAddr) {
		return
	}
	local := e.Conn.LocalMultiaddr()
	if !slices.ContainsFunc(n.host.Network().ListenAddresses(), func(a ma.Multiaddr) bool { return samePort(a, local) }) {
		return
	}
	n.punch.mu.Lock()
	n.punch.observed[e.Peer] = e.ObservedAddr
	n.punch.mu.Unlock()
}

func samePort(a, b ma.Multiaddr) bool {
	pa, err1 := a.ValueForProtocol(ma.P_TCP)
	pb, err2 := b.ValueForProtocol(ma.P_TCP)
	return err1 == nil && err2 == nil && pa == pb
}

// holePunchAddrs returns the addresses the node announces for a hole
// punch: those its relays observed, then its interface addresses.
func (n *Node) holePunchAddrs() []ma.Multiaddr {
	var out []ma.Multiaddr
	n.punch.mu.Lock()
	for _, r := range n.relays {
		if a, ok := n.punch.observed[r.ID]; ok {
			out = append(out, a)
		}
	}
	n.punch.mu.Unlock()
	if h, ok := n.host.(interface{ AllAddrs() []ma.Multiaddr }); ok {
		out = append(out, h.AllAddrs()...)
	}
	return ma.Unique(out)
}

// A punchTracer turns go-libp2p's hole punching events into the node's.
type punchTracer Node

// Trace reports the end of each hole punching attempt.
func (t *punchTracer) Trace(evt *holepunch.Event) {
	n := (*Node)(t)
	key, err := KeyOf(evt.Remote)
	if err != nil {
		return
	}
	switch e := evt.Evt.(type) {
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
