package natlab

import (
	"fmt"
	"net/netip"
	"strings"
)

// The interfaces of a router namespace: wan0 faces the lab's internet, lan0
// the host behind it. Rulesets name them, so every router uses these.
const (
	wanIf = "wan0"
	lanIf = "lan0"
)

// The symmetric NAT hands out public ports in turn from this range: the
// first new flow gets symmetricFirstPort, the next one the port after it,
// and so on, wrapping after symmetricPorts flows.
const (
	symmetricFirstPort = 20000
	symmetricPorts     = 16384
)

// rulesetTable is the table name every router's ruleset lives in, and
// droppedSet the set in it where every refused packet from the internet is
// recorded (see [Host.Dropped]).
const (
	rulesetTable = "natlab"
	droppedSet   = "dropped"
)

// rulesetBase is what every router shares, whatever its kind.
//
// The input chain keeps the router itself closed: a packet from the
// internet to the router's own address that belongs to no flow (an
// unsolicited SYN or datagram to a port without a mapping, or one whose
// filter said no and so was never translated) is dropped in silence, as
// home routers do. Silence matters for TCP hole punching: a RST from the
// peer's router would abort the SYN_SENT socket of a host whose SYN arrived
// a moment before the peer's own SYN went out, where a drop lets its
// retransmission (one second later) find the path open.
//
// The forward chain lets every flow the host starts out, lets in what
// conntrack holds to be part of one (ct state established covers the first
// packet that travels in a flow's reply direction too, which is how a
// simultaneous-open SYN from the peer gets in), and refuses the rest.
// Kinds that translate unsolicited packets to the host (full cone,
// address-restricted) also let in the flows their prerouting chain
// translated (ct status dnat).
//
// Refused packets pass through the refuse chain, which records TCP and UDP
// ones in the dropped set as (protocol, source address, source port,
// destination port) before dropping them, so that a test can tell a
// filtered packet from a slow one without waiting for a timeout.
const rulesetBase = `table ip natlab {
	set dropped {
		type inet_proto . ipv4_addr . inet_service . inet_service
		flags dynamic, timeout
		timeout 10m
		size 65536
	}
	chain refuse {
		meta l4proto { tcp, udp } add @dropped { meta l4proto . ip saddr . th sport . th dport }
		drop
	}
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "wan0" ct state established,related accept
		iifname "wan0" jump refuse
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "lan0" oifname "wan0" accept
		iifname "wan0" ct state established,related accept
%s		iifname "wan0" jump refuse
	}
%s}
`

// acceptTranslated is the forward rule of kinds whose prerouting chain
// translates unsolicited packets to the host.
const acceptTranslated = "\t\tiifname \"wan0\" ct status dnat accept\n"

// masquerade is the endpoint-independent mapping the three cone kinds
// share. Linux's masquerade keeps the host's source port whenever no other
// flow through the router holds the same public address, port and
// destination, so with one host behind the router a local address and
// port map to the same public port for every destination, for TCP and for
// UDP alike (RFC 4787 REQ-1, and port preservation, section 4.2.1).
const masquerade = `	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan0" masquerade
	}
`

// portRestrictedNAT is the port-restricted cone: masquerade's
// endpoint-independent mapping with conntrack's own filtering, which is
// address-and-port-dependent: a packet from the internet gets in only if it
// is the reply direction of a flow the host started, that is, from the exact
// address and port the host sent to from that mapping. For UDP that is
// RFC 4787's APDF. For TCP the same holds for a SYN: one from the peer the
// host is dialing, to the port it dials from, is the reply direction of the
// host's own SYN's flow, so a simultaneous open gets through, and any other
// SYN is dropped.
const portRestrictedNAT = masquerade

// addressRestrictedNAT is the address-restricted cone: masquerade's
// endpoint-independent mapping plus address-dependent filtering. The
// contacted set holds (protocol, public port, remote address) for every
// packet the host sends out, refreshed by each (update), after the
// postrouting NAT has put the public port in the packet (priority srcnat +
// 10). A new packet from the internet whose protocol, destination port and
// source address are in the set is translated to the host at the same
// port (the mapping keeps the port), and so a mapping lets in any port of
// an address the host has sent to through it, for UDP datagrams and TCP
// SYNs alike. A SYN from the exact address and port the host dials is the
// reply direction of the host's own flow and gets in before this chain
// is asked, as with the port-restricted kind. An entry lives five minutes
// after the host last sent through it (RFC 4787 REQ-5 asks at least two).
const addressRestrictedNAT = `	set contacted {
		type inet_proto . inet_service . ipv4_addr
		flags dynamic, timeout
		timeout 5m
		size 65536
	}
	chain track {
		type filter hook postrouting priority srcnat + 10; policy accept;
		oifname "wan0" meta l4proto { tcp, udp } update @contacted { meta l4proto . th sport . ip daddr }
	}
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "wan0" meta l4proto . th dport . ip saddr @contacted dnat to %[1]s
	}
` + masquerade

// fullConeNAT is the full cone: masquerade's endpoint-independent mapping
// plus endpoint-independent filtering. The mapped set holds (protocol,
// public port) for every packet the host sends out, and a new packet from
// anyone to a port in the set is translated to the host at that port: a
// UDP datagram or a TCP SYN from any address and port reaches the host
// once it has sent from that port, and nothing reaches a port it has not
// sent from (this is not a DMZ). Entries live five minutes after the last
// packet out.
const fullConeNAT = `	set mapped {
		type inet_proto . inet_service
		flags dynamic, timeout
		timeout 5m
		size 65536
	}
	chain track {
		type filter hook postrouting priority srcnat + 10; policy accept;
		oifname "wan0" meta l4proto { tcp, udp } update @mapped { meta l4proto . th sport }
	}
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "wan0" meta l4proto . th dport @mapped dnat to %[1]s
	}
` + masquerade

// symmetricNAT is address-and-port-dependent mapping: every new TCP or UDP
// flow out gets the next public port of a counter (numgen inc), so the
// same local port seen from two destinations, or from two ports of one,
// shows two public ports. Its filtering is conntrack's, as for the
// port-restricted kind: only the reply direction of a flow gets in. A TCP
// simultaneous open with a peer fails because the peer dials the port an
// observer saw, which belongs to the flow to that observer, while this
// host's SYN to the peer leaves from a new port the peer's router has
// never seen.
//
// The ports are handed out in turn, as many carrier-grade NATs do, so
// that two flows never get the same port by chance and the tests that say
// they differ cannot fail by luck. That also lets the p2p engine predict
// the ports of a host's next flows, and punch through against a peer with
// an endpoint-independent mapping; the SymmetricRandom kind
// (symmetricRandomNAT) is the NAT that prediction cannot follow. The
// counter indexes a map of ports because nft 1.0.6 stores a bare numgen
// result in the wrong byte order for a port. Other protocols (ICMP) are
// masqueraded.
const symmetricNAT = `	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan0" meta l4proto { tcp, udp } snat to %[2]s : numgen inc mod %[3]d map { %[4]s }
		oifname "wan0" masquerade
	}
`

// symmetricRandomNAT is the symmetric NAT with each new TCP or UDP flow's
// public port drawn at random from the same range (fully-random), as many
// real symmetric NATs do: no count of the host's flows tells the next
// port. Other protocols (ICMP) are masqueraded.
const symmetricRandomNAT = `	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan0" meta l4proto { tcp, udp } snat to %[2]s:%[3]d-%[4]d fully-random
		oifname "wan0" masquerade
	}
`

// firewallRules adds nothing to the base: no translation, and the base's
// forward chain already lets in only what conntrack holds to be part of a
// flow the host started: address-and-port-dependent filtering for UDP and
// TCP, with the host's own address and ports.
const firewallRules = ""

// ruleset returns the nftables ruleset of a router of kind k whose public
// address is public and whose host is host.
func ruleset(k Kind, public, host netip.Addr) (string, error) {
	var forward, rules string
	switch k {
	case FullCone:
		forward, rules = acceptTranslated, fmt.Sprintf(fullConeNAT, host)
	case AddressRestricted:
		forward, rules = acceptTranslated, fmt.Sprintf(addressRestrictedNAT, host)
	case PortRestricted:
		rules = portRestrictedNAT
	case Symmetric:
		rules = fmt.Sprintf(symmetricNAT, host, public, symmetricPorts, symmetricPortMap())
	case SymmetricRandom:
		rules = fmt.Sprintf(symmetricRandomNAT, host, public, symmetricFirstPort, symmetricFirstPort+symmetricPorts-1)
	case Firewall:
		rules = firewallRules
	default:
		return "", fmt.Errorf("natlab: %v has no router", k)
	}
	return fmt.Sprintf(rulesetBase, forward, rules), nil
}

// symmetricPortMap returns the elements of the symmetric NAT's map from
// the counter to a public port: "0 : 20000, 1 : 20001, ...".
func symmetricPortMap() string {
	var b strings.Builder
	for i := range symmetricPorts {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d : %d", i, symmetricFirstPort+i)
	}
	return b.String()
}
