package libp2psec

import (
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	ma "github.com/multiformats/go-multiaddr"
)

// libp2p chooses the security protocol with multistream-select, in clear
// and unauthenticated, before any handshake. A host that lists securepeer
// and Noise can therefore be downgraded by anyone on the path: rewrite
// "/securepeer/1.0.0" in the dialer's proposal, the listener answers "na",
// and the two hosts settle on Noise, without the post-quantum hybrid
// (PROTOCOL.md in this directory, "Downgrade to another security
// protocol"). Two ways refuse it: a host that lists securepeer alone, and
// this gate, for a host that must still reach peers without securepeer.

// RequireSecurepeer returns a connection gater, for libp2p.ConnectionGater,
// that refuses every connection to or from a peer for which required
// returns true unless a [Transport] secured it, so that an attacker who
// rewrites the multistream-select negotiation gets no connection with that
// peer at all rather than a Noise one. required says which peers are known
// to speak securepeer, for example from a list the application keeps;
// connections with other peers are gated by next alone.
//
// The gate decides once the connection is upgraded (security handshake and
// multiplexer), when libp2p first shows which transport secured it: a
// refused connection is closed before the host uses it. next, if not nil,
// is asked first at every step, and its refusals stand.
func RequireSecurepeer(required func(peer.ID) bool, next connmgr.ConnectionGater) connmgr.ConnectionGater {
	return &requireGate{required: required, next: next}
}

type requireGate struct {
	required func(peer.ID) bool
	next     connmgr.ConnectionGater
}

var _ connmgr.ConnectionGater = (*requireGate)(nil)

func (g *requireGate) InterceptPeerDial(p peer.ID) bool {
	return g.next == nil || g.next.InterceptPeerDial(p)
}

func (g *requireGate) InterceptAddrDial(p peer.ID, a ma.Multiaddr) bool {
	return g.next == nil || g.next.InterceptAddrDial(p, a)
}

func (g *requireGate) InterceptAccept(c network.ConnMultiaddrs) bool {
	return g.next == nil || g.next.InterceptAccept(c)
}

func (g *requireGate) InterceptSecured(d network.Direction, p peer.ID, c network.ConnMultiaddrs) bool {
	return g.next == nil || g.next.InterceptSecured(d, p, c)
}

func (g *requireGate) InterceptUpgraded(c network.Conn) (bool, control.DisconnectReason) {
	if g.next != nil {
		if ok, reason := g.next.InterceptUpgraded(c); !ok {
			return false, reason
		}
	}
	if g.required(c.RemotePeer()) {
		if _, ok := SecurepeerState(c); !ok {
			return false, 0
		}
	}
	return true, 0
}
