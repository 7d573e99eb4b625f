package libp2psec

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"

	ma "github.com/multiformats/go-multiaddr"
)

// gater refuses, once they are authenticated by the security handshake,
// connections from or to the peers in refuse, and records the peers and
// security protocols it sees.
type gater struct {
	refuse peer.ID

	mu       sync.Mutex
	secured  []peer.ID
	upgraded []network.ConnectionState
}

func (g *gater) InterceptPeerDial(peer.ID) bool               { return true }
func (g *gater) InterceptAddrDial(peer.ID, ma.Multiaddr) bool { return true }
func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool  { return true }
func (g *gater) InterceptUpgraded(c network.Conn) (bool, control.DisconnectReason) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.upgraded = append(g.upgraded, c.ConnState())
	return true, 0
}

func (g *gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.secured = append(g.secured, p)
	return p != g.refuse
}

func (g *gater) seen() ([]peer.ID, []network.ConnectionState) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.secured), slices.Clone(g.upgraded)
}

func TestConnectionGater(t *testing.T) {
	a, c := newHost(t, securepeerOnly), newHost(t, securepeerOnly)
	g := &gater{refuse: c.ID()}
	b := newHost(t, securepeerOnly, libp2p.ConnectionGater(g))

	connect(t, a, b)
	expectRefused(t, c, b)
	secured, upgraded := g.seen()
	if !slices.Contains(secured, a.ID()) || !slices.Contains(secured, c.ID()) {
		t.Errorf("the gater saw authenticated peers %v, want a %s and c %s", secured, a.ID(), c.ID())
	}
	if len(upgraded) != 1 || upgraded[0].Security != ID {
		t.Errorf("the gater saw upgraded connections %+v, want one with securepeer", upgraded)
	}
}

// expectRefused connects from to to, and expects to to refuse the
// connection. Like Noise's, securepeer's initiator completes its handshake
// before the responder has decided (one round trip and a half), so the
// dialer may see its Connect succeed and then the connection closed.
func expectRefused(t *testing.T, from, to host.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := from.Connect(ctx, peer.AddrInfo{ID: to.ID(), Addrs: to.Addrs()}); err != nil {
		return
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if len(from.Network().ConnsToPeer(to.ID())) == 0 {
			if n := len(to.Network().ConnsToPeer(from.ID())); n != 0 {
				t.Errorf("the refusing host has %d connections to the dialer", n)
			}
			return
		}
	}
	t.Error("the connection was not refused")
}

// refusingRcmgr is go-libp2p's resource manager, except that it refuses to
// attach a connection to one peer and records the peers it is asked to.
type refusingRcmgr struct {
	network.ResourceManager
	refuse peer.ID

	mu   sync.Mutex
	seen []peer.ID
}

type refusingScope struct {
	network.ConnManagementScope
	r *refusingRcmgr
}

var errRefused = errors.New("refused by the test's resource manager")

func (r *refusingRcmgr) OpenConnection(dir network.Direction, usefd bool, endpoint ma.Multiaddr) (network.ConnManagementScope, error) {
	s, err := r.ResourceManager.OpenConnection(dir, usefd, endpoint)
	if err != nil {
		return nil, err
	}
	return &refusingScope{s, r}, nil
}

// SetPeer is called once the security handshake has authenticated the
// peer.
func (s *refusingScope) SetPeer(p peer.ID) error {
	s.r.mu.Lock()
	s.r.seen = append(s.r.seen, p)
	s.r.mu.Unlock()
	if p == s.r.refuse {
		return errRefused
	}
	return s.ConnManagementScope.SetPeer(p)
}

func TestResourceManager(t *testing.T) {
	a, c := newHost(t, securepeerOnly), newHost(t, securepeerOnly)
	base, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(rcmgr.DefaultLimits.AutoScale()))
	if err != nil {
		t.Fatal(err)
	}
	rm := &refusingRcmgr{ResourceManager: base, refuse: c.ID()}
	b := newHost(t, securepeerOnly, libp2p.ResourceManager(rm))

	connect(t, a, b)
	expectRefused(t, c, b)
	rm.mu.Lock()
	seen := slices.Clone(rm.seen)
	rm.mu.Unlock()
	if !slices.Contains(seen, a.ID()) || !slices.Contains(seen, c.ID()) {
		t.Errorf("the resource manager saw peers %v, want a %s and c %s", seen, a.ID(), c.ID())
	}
	// The peer scope of a's connection is accounted under a's ID.
	var found bool
	b.Network().ResourceManager().ViewPeer(a.ID(), func(ps network.PeerScope) error {
		found = ps.Stat().NumConnsInbound == 1
		return nil
	})
	if !found {
		t.Error("b's resource manager does not count a's inbound connection")
	}
}
