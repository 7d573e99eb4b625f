package natlab

import "fmt"

// A Kind is what stands between a host and the lab's internet: nothing, one
// of four NATs, or a stateful firewall. Each is an nftables ruleset on a
// router of its own (see ruleset.go); [Kind.Mapping] and [Kind.Filtering]
// name what it does in RFC 4787's terms.
type Kind int

const (
	// Public puts the host straight on the internet: its own public address,
	// no translation and no filter.
	Public Kind = iota
	// FullCone translates with endpoint-independent mapping and
	// endpoint-independent filtering: once the host has sent from a port,
	// anyone may send to that port's mapping.
	FullCone
	// AddressRestricted translates with endpoint-independent mapping and
	// address-dependent filtering: a mapping lets in packets from any port of
	// an address the host has sent to from it.
	AddressRestricted
	// PortRestricted translates with endpoint-independent mapping and
	// address-and-port-dependent filtering: a mapping lets in packets only
	// from an address and port the host has sent to from it. This is Linux's
	// own masquerade, and most home routers.
	PortRestricted
	// Symmetric translates with address-and-port-dependent mapping (a new
	// public port for every new destination) and address-and-port-dependent
	// filtering.
	Symmetric
	// Firewall gives the host a public address and no translation, and drops
	// every packet from the internet that is not part of a flow the host
	// started: address-and-port-dependent filtering without a NAT.
	Firewall
	// SymmetricRandom is Symmetric with the public port of each new flow
	// chosen at random rather than in sequence, as many real symmetric
	// NATs do: no port prediction can follow it. It is not among
	// [Kinds], whose every pair the NAT tests try.
	SymmetricRandom
)

// Kinds returns every Kind, in declaration order.
func Kinds() []Kind {
	return []Kind{Public, FullCone, AddressRestricted, PortRestricted, Symmetric, Firewall}
}

var kindNames = [...]string{
	Public:            "public",
	FullCone:          "full-cone",
	AddressRestricted: "address-restricted",
	PortRestricted:    "port-restricted",
	Symmetric:         "symmetric",
	Firewall:          "firewall",
	SymmetricRandom:   "symmetric-random",
}

// String returns the kind's name, as test names use it.
func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return fmt.Sprintf("Kind(%d)", int(k))
	}
	return kindNames[k]
}

// Translates reports whether the host sits behind a NAT: a private address
// of its own, and a router's public address on the internet.
func (k Kind) Translates() bool {
	switch k {
	case FullCone, AddressRestricted, PortRestricted, Symmetric, SymmetricRandom:
		return true
	}
	return false
}

// A Behavior is one of RFC 4787's classes of mapping (section 4.1) or
// filtering (section 5), plus [Open] for no filter at all.
type Behavior int

const (
	// Open is the filtering of a host with no filter in front of it: every
	// packet to its address reaches it, to any port.
	Open Behavior = iota + 1
	// EndpointIndependent mapping reuses one public address and port for
	// every destination the host sends to from one local address and port;
	// endpoint-independent filtering lets anyone send to that mapping, and
	// nobody to a port that has none.
	EndpointIndependent
	// AddressDependent filtering lets packets in through a mapping only from
	// addresses the host has sent to through it, from any of their ports.
	AddressDependent
	// AddressAndPortDependent mapping gives every new destination address and
	// port a new public port; such filtering lets packets in through a
	// mapping only from the exact addresses and ports the host has sent to
	// through it.
	AddressAndPortDependent
)

var behaviorNames = [...]string{
	Open:                    "open",
	EndpointIndependent:     "endpoint-independent",
	AddressDependent:        "address-dependent",
	AddressAndPortDependent: "address-and-port-dependent",
}

// String returns RFC 4787's name for b.
func (b Behavior) String() string {
	if b <= 0 || int(b) >= len(behaviorNames) {
		return fmt.Sprintf("Behavior(%d)", int(b))
	}
	return behaviorNames[b]
}

// Mapping returns how the kind picks the public address and port the
// internet sees. A host that is not translated keeps its own, which is
// endpoint-independent. The lab's endpoint-independent NATs also keep the
// host's port, as Linux does whenever no other flow holds it.
func (k Kind) Mapping() Behavior {
	if k == Symmetric || k == SymmetricRandom {
		return AddressAndPortDependent
	}
	return EndpointIndependent
}

// Sequential reports whether the kind gives every new flow the port after
// the last flow's, so that a host that knows one of its public ports,
// and how many flows it has started since, knows the next: port
// prediction works against it.
func (k Kind) Sequential() bool { return k == Symmetric }

// Filtering returns which packets from the internet the kind lets through to
// the host.
func (k Kind) Filtering() Behavior {
	switch k {
	case Public:
		return Open
	case FullCone:
		return EndpointIndependent
	case AddressRestricted:
		return AddressDependent
	default:
		return AddressAndPortDependent
	}
}

// Punchable reports whether two hosts behind kinds a and b can open a TCP
// connection to each other by simultaneous open, the way the p2p
// engine's hole punching (libp2p's DCUtR, with port prediction) does it:
// each listens on a port with SO_REUSEPORT, learns its own public
// address and port from a connection it makes from that port to a
// public observer (a relay), and then both dial the other's observed
// address and port from their listening port at about the same time. A
// host whose NAT maps per destination and hands out ports in sequence
// also announces the next few ports its NAT will give out, and its peer
// dials those too. The punch succeeds when either side's SYN reaches the
// other; it is derived from the kinds' behaviours alone, by [reaches].
func Punchable(a, b Kind) bool { return reaches(a, b) || reaches(b, a) }

// reaches reports whether a SYN that from's host sends from its listening
// port to an address to's host announced gets through to to's host.
func reaches(from, to Kind) bool {
	if to.Mapping() != EndpointIndependent {
		// The observed port is the mapping made for the observer;
		// to's own SYN went out through a different one. If its NAT
		// counts ports, that one is among the ports to predicted, and
		// to's SYN went to from's observed port: from's SYN to it, from
		// that same port (an endpoint-independent mapping keeps it),
		// is the reply direction of to's flow. Otherwise nothing of
		// from's fits a mapping that lets it in.
		return to.Sequential() && from.Mapping() == EndpointIndependent
	}
	switch to.Filtering() {
	case Open, EndpointIndependent:
		// Anyone may reach the observed port.
		return true
	case AddressDependent:
		// to's own SYN went to from's address, which opens the
		// mapping to every port of it; from's retransmitted SYN gets
		// in even if its first one arrived too early.
		return true
	default:
		// Only the exact address and port to's SYN went to may
		// answer: from's SYN must leave from the port the observer
		// saw, which only an endpoint-independent mapping does.
		return from.Mapping() == EndpointIndependent
	}
}
