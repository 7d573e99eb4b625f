package p2p

import (
	"net/netip"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/x/rate"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/securepeer/securepeer/internal/pkgerr"
)

// Source prefixes: the unit of a per-source bound. An IPv6 user commonly
// holds a /56 or a /64, so a /56 counts as one source, as go-libp2p's
// defaults have it.
const (
	sourceBitsV4 = 32
	sourceBitsV6 = 56
)

// newResourceManager returns go-libp2p's resource manager with l's
// bounds: connections at once in all (Conns, and twice Pending for those
// in their handshake) and per source, new connections per second per
// source, streams per peer, memory. Incoming connections reach it only
// once their first flight has come (admission.go). Unlike go-libp2p's
// defaults, loopback is not exempt, so that the bounds hold however the
// host is reached. Connections through a relay reach a node from the
// relay's address, so the addresses of trusted relays are exempt from
// the per-source bounds (the relay bounds each source itself).
//
// more, if not nil, sets further limits (a relay's, for its service).
func newResourceManager(l Limits, trusted []peer.AddrInfo, more func(*rcmgr.PartialLimitConfig)) (network.ResourceManager, error) {
	scaling := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&scaling)
	fds := 2*(l.Conns+transientConns(l)) + 64
	base := scaling.Scale(l.Memory, fds)
	conns := rcmgr.LimitVal(l.Conns + transientConns(l))
	transient := rcmgr.LimitVal(transientConns(l))
	streams := rcmgr.LimitVal(l.StreamsPerPeer)
	partial := rcmgr.PartialLimitConfig{
		System: rcmgr.ResourceLimits{
			Conns: conns, ConnsInbound: conns, ConnsOutbound: conns,
			FD:     rcmgr.LimitVal(fds),
			Memory: rcmgr.LimitVal64(l.Memory),
		},
		Transient: rcmgr.ResourceLimits{
			Conns: transient, ConnsInbound: transient, ConnsOutbound: transient,
		},
		PeerDefault: rcmgr.ResourceLimits{
			Streams: streams, StreamsInbound: streams, StreamsOutbound: streams,
		},
	}
	if more != nil {
		more(&partial)
	}
	limits := partial.Build(base)

	var exempt4, exempt6 []rcmgr.NetworkPrefixLimit
	var rateExempt []rate.PrefixLimit
	for _, p := range trustedPrefixes(trusted) {
		limit := rcmgr.NetworkPrefixLimit{Network: p, ConnCount: l.Conns}
		if p.Addr().Is4() {
			exempt4 = append(exempt4, limit)
		} else {
			exempt6 = append(exempt6, limit)
		}
		rateExempt = append(rateExempt, rate.PrefixLimit{Prefix: p})
	}
	if exempt4 == nil {
		exempt4 = []rcmgr.NetworkPrefixLimit{}
	}
	if exempt6 == nil {
		exempt6 = []rcmgr.NetworkPrefixLimit{}
	}
	perSource := rate.Limit{RPS: l.ConnRate, Burst: l.ConnBurst}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits),
		rcmgr.WithLimitPerSubnet(
			[]rcmgr.ConnLimitPerSubnet{{PrefixLength: sourceBitsV4, ConnCount: l.ConnsPerIP}},
			[]rcmgr.ConnLimitPerSubnet{{PrefixLength: sourceBitsV6, ConnCount: l.ConnsPerIP}}),
		rcmgr.WithNetworkPrefixLimit(exempt4, exempt6),
		rcmgr.WithConnRateLimiters(&rate.Limiter{
			NetworkPrefixLimits: rateExempt,
			SubnetRateLimiter: rate.SubnetLimiter{
				IPv4SubnetLimits: []rate.SubnetLimit{{PrefixLength: sourceBitsV4, Limit: perSource}},
				IPv6SubnetLimits: []rate.SubnetLimit{{PrefixLength: sourceBitsV6, Limit: perSource}},
				GracePeriod:      time.Minute,
			},
		}),
		rcmgr.WithMetricsDisabled(),
	)
	if err != nil {
		return nil, pkgerr.Errorf("p2p", "resource manager: %w", err)
	}
	return rm, nil
}

// transientConns bounds, in the resource manager, the connections whose
// handshake has not yet named the peer (its transient scope): twice the
// Pending that securepeer's admission holds, so that the resource manager
// never refuses a connection that the admission let in while the
// connections it dropped to make room are still giving their scopes back.
// The system's limit is Conns more.
func transientConns(l Limits) int {
	return 2 * l.Pending
}

// trustedPrefixes returns the IP addresses, as single-address prefixes,
// of the relays given by IP address (a relay given by DNS name is not
// exempt).
func trustedPrefixes(relays []peer.AddrInfo) []netip.Prefix {
	var out []netip.Prefix
	for _, r := range relays {
		for _, a := range r.Addrs {
			ip, err := manet.ToIP(a)
			if err != nil {
				continue
			}
			addr, ok := netip.AddrFromSlice(ip)
			if !ok {
				continue
			}
			addr = addr.Unmap()
			out = append(out, netip.PrefixFrom(addr, addr.BitLen()))
		}
	}
	return out
}
