package p2p

import (
	"fmt"
	"time"

	"github.com/securepeer/securepeer"
)

// A Path is how a connection to a peer runs: directly, or through a
// relay.
type Path struct {
	// Relayed is true for a connection through a relay.
	Relayed bool
	// Relay is the relay's key, for a relayed connection.
	Relay securepeer.PublicKey
	// Remote is the peer's address as this node sees it, a multiaddr: an
	// IP address and TCP port for a direct connection, the relay's
	// address followed by /p2p-circuit for a relayed one.
	Remote string
}

// String describes the path in a few words.
func (p Path) String() string {
	if p.Relayed {
		return "relayed through " + p.Relay.Fingerprint()
	}
	return "direct, " + p.Remote
}

// An EventKind is what an [Event] reports.
type EventKind int

// The events a [Node] reports to [Config.Notify].
const (
	// EventReserved: a reservation on Relay was made or renewed, until
	// Expires. A listening node keeps one on each of its relays.
	EventReserved EventKind = iota + 1
	// EventReservationFailed: a reservation on Relay could not be made,
	// or was lost; Err says why (a [*RelayError]). The node tries again.
	EventReservationFailed
	// EventConnected: a connection to Peer was set up over Path, with a
	// full handshake or, if Resumed, a resumed one.
	EventConnected
	// EventDirect: a direct connection to Peer appeared while a relayed
	// one was open. Streams opened from now on use it; streams already
	// open on the relayed connection stay there.
	EventDirect
	// EventDisconnected: a connection to Peer over Path ended. For a
	// relayed connection that this node did not close, Err says why (a
	// [*CircuitError]).
	EventDisconnected
	// EventHolePunch: a hole punching attempt with Peer ended; Err is nil
	// if it gave a direct connection.
	EventHolePunch
)

// An Event is something a [Node] reports about its relays and its
// connections, for the user to see.
type Event struct {
	Kind EventKind
	// Peer is the peer's key; zero for relay events.
	Peer securepeer.PublicKey
	// Relay is the relay's key, for reservation events.
	Relay securepeer.PublicKey
	// Path is the connection's path, for connection events.
	Path Path
	// Resumed is true if the connection's handshake resumed an earlier
	// session (one round trip, no signatures).
	Resumed bool
	// Expires is when a reservation ends unless renewed.
	Expires time.Time
	// Err says why, for failures and ends.
	Err error
}

// String describes the event in one sentence.
func (e Event) String() string {
	switch e.Kind {
	case EventReserved:
		return fmt.Sprintf("reachable through relay %s until %s", e.Relay.Fingerprint(), e.Expires.Format(time.TimeOnly))
	case EventReservationFailed:
		return fmt.Sprintf("no reservation on relay %s: %v", e.Relay.Fingerprint(), trimPrefix(e.Err))
	case EventConnected:
		how := "new session"
		if e.Resumed {
			how = "resumed session"
		}
		return fmt.Sprintf("connected to %s, %s, %s", e.Peer.Fingerprint(), e.Path, how)
	case EventDirect:
		return fmt.Sprintf("direct connection to %s (%s): new streams go direct", e.Peer.Fingerprint(), e.Path.Remote)
	case EventDisconnected:
		if e.Err != nil {
			return fmt.Sprintf("connection to %s (%s) ended: %v", e.Peer.Fingerprint(), e.Path, trimPrefix(e.Err))
		}
		return fmt.Sprintf("connection to %s (%s) closed", e.Peer.Fingerprint(), e.Path)
	case EventHolePunch:
		if e.Err != nil {
			return fmt.Sprintf("hole punching with %s failed: %v", e.Peer.Fingerprint(), e.Err)
		}
		return fmt.Sprintf("hole punching with %s succeeded", e.Peer.Fingerprint())
	}
	return fmt.Sprintf("event %d", int(e.Kind))
}
