package p2p

import (
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/transport"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/libp2p/go-libp2p/p2p/transport/tcpreuse"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/multiformats/go-varint"

	"github.com/securepeer/securepeer/internal/admit"
	"github.com/securepeer/securepeer/internal/pkgerr"
	"github.com/securepeer/securepeer/internal/wire"
)

// This file puts the TCP listeners of nodes and relays under
// internal/admit, the admission of securepeer's own listener
// (PROTOCOL.md, "Pending handshakes"). go-libp2p's TCP transport is kept
// for everything else (dialing from the listening port, which hole
// punching needs), but the upgrader it is given hands its listeners to an
// admit.Listener: every connection is accepted at once; its first flight
// (multistream-select's header and proposal) must arrive within the first
// flight's deadline, and securepeer's hello and message 1, which the peer
// sends once that proposal is answered, within the same deadline; the
// table of pending connections is bounded, and when it is full the
// heaviest source's oldest unproved connection makes room; handshake CPU
// is shared by source. go-libp2p's resource manager sees a connection
// only once its proposal has arrived.

// handshakeTimeout bounds an inbound connection from its accept to the
// end of its upgrade (security handshake and stream multiplexer), as
// go-libp2p's own accept timeout does.
const handshakeTimeout = 15 * time.Second

// An admission is the admission of one host's inbound TCP connections.
type admission struct {
	max   int // Limits.Pending
	rcmgr network.ResourceManager
	gater connmgr.ConnectionGater

	mu        sync.Mutex
	listeners []*admit.Listener[transport.CapableConn]
}

// pendingConns returns the connections in their handshake, or waiting for the
// host to take them, on all of a's listeners.
func (a *admission) pendingConns() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, l := range a.listeners {
		n += l.Pending()
	}
	return n
}

// tcpTransport is the constructor of the host's TCP transport, with the
// signature libp2p.Transport expects: go-libp2p's, given an upgrader
// whose listeners are a's.
func (a *admission) tcpTransport(u transport.Upgrader, rcmgr network.ResourceManager, shared *tcpreuse.ConnMgr, gater connmgr.ConnectionGater) (*tcp.TcpTransport, error) {
	a.rcmgr, a.gater = rcmgr, gater
	return tcp.NewTCPTransport(&admitUpgrader{Upgrader: u, a: a}, rcmgr, shared)
}

// An admitUpgrader is go-libp2p's upgrader, but for the listeners it
// makes: their connections go through internal/admit, and open a
// resource scope only once their first flight has arrived.
type admitUpgrader struct {
	transport.Upgrader
	a *admission
}

// GateMaListener returns l, whose connections are checked by the host's
// connection gater, if any, as go-libp2p's are; their resource scope is
// opened later, after the first flight.
func (u *admitUpgrader) GateMaListener(l manet.Listener) transport.GatedMaListener {
	return &acceptGate{Listener: l, gater: u.a.gater}
}

// UpgradeGatedMaListener returns a listener whose connections are
// admitted by internal/admit, then upgraded by go-libp2p's upgrader.
func (u *admitUpgrader) UpgradeGatedMaListener(t transport.Transport, l transport.GatedMaListener) transport.Listener {
	al := &admitListener{gated: l}
	al.l = admit.NewListener(netListener{l}, admit.Config[transport.CapableConn]{
		MaxPending:       u.a.max,
		FirstFlight:      mssFlightLen,
		HandshakeTimeout: handshakeTimeout,
		CPUOnDemand:      true,
		DemandWork:       true,
		Handshake: func(ctx context.Context, c net.Conn) (transport.CapableConn, error) {
			return u.upgrade(ctx, t, c.(*admit.Conn))
		},
		Discard: func(c transport.CapableConn) { c.Close() },
	})
	u.a.mu.Lock()
	u.a.listeners = append(u.a.listeners, al.l)
	u.a.mu.Unlock()
	return al
}

// UpgradeListener is UpgradeGatedMaListener of l gated.
func (u *admitUpgrader) UpgradeListener(t transport.Transport, l manet.Listener) transport.Listener {
	return u.UpgradeGatedMaListener(t, u.GateMaListener(l))
}

// Upgrade upgrades a connection this host dialed (go-libp2p's TCP
// transport upgrades only those here; its listeners are admitListeners).
// A hole punch's dial in the server's role of a simultaneous open first
// settles its role (settleRole, holepunch.go).
func (u *admitUpgrader) Upgrade(ctx context.Context, t transport.Transport, c manet.Conn, dir network.Direction, p peer.ID, scope network.ConnManagementScope) (transport.CapableConn, error) {
	if dir == network.DirInbound && p != "" {
		c, dir = settleRole(ctx, c)
	}
	return u.Upgrader.Upgrade(ctx, t, c, dir, p, scope)
}

// upgrade opens the connection's resource scope, now that its first
// flight has come, and runs go-libp2p's upgrade on it: multistream-select,
// the securepeer handshake (which reads its own first flight with
// awaitHandshakeFlight), the stream multiplexer.
func (u *admitUpgrader) upgrade(ctx context.Context, t transport.Transport, c *admit.Conn) (transport.CapableConn, error) {
	mc, ok := c.NetConn().(manet.Conn)
	if !ok {
		return nil, pkgerr.New("p2p", "an admitted connection without multiaddrs")
	}
	scope, err := u.a.rcmgr.OpenConnection(network.DirInbound, true, mc.RemoteMultiaddr())
	if err != nil {
		return nil, pkgerr.Errorf("p2p", "the resource manager refused the connection: %w", err)
	}
	ac := &admittedConn{Conn: c, local: mc.LocalMultiaddr(), remote: mc.RemoteMultiaddr()}
	return u.Upgrader.Upgrade(ctx, t, ac, network.DirInbound, "", scope)
}

// mssFlightLen is admit's FirstFlight for libp2p: the length of the
// dialer's first bytes, multistream-select's header and its first
// proposal, two messages of a varint length and as many bytes. A length
// over maxMSSMessage, or a bad varint, ends the flight where it stands:
// the negotiation then fails on it.
func mssFlightLen(b []byte) int {
	off := 0
	for range 2 {
		n, size, err := varint.FromUvarint(b[off:])
		switch {
		case errors.Is(err, varint.ErrUnderflow) || (err == nil && size == 0):
			return len(b) + 1
		case err != nil || n > maxMSSMessage:
			return len(b)
		}
		off += size + int(n)
		if off > len(b) {
			return off
		}
	}
	return off
}

// maxMSSMessage bounds a multistream-select message in a first flight: a
// protocol ID is at most a few dozen bytes.
const maxMSSMessage = 1024

// awaitHandshakeFlight reads securepeer's hello and message 1 on an
// admitted connection, as the rest of its first flight: the dialer sends
// them once multistream-select has been answered, so they are bounded by
// the deadline that began at the accept, and read into a buffer that
// grows with the bytes received. Other connections (relayed, or dialed)
// are left alone.
func awaitHandshakeFlight(ctx context.Context, insecure net.Conn) error {
	ac, ok := insecure.(*admittedConn)
	if !ok {
		return nil
	}
	return ac.ReadMoreFirstFlight(ctx, wire.FirstFlightLen)
}

// An admittedConn is a connection admitted by internal/admit, as
// go-libp2p's upgrader takes it (a manet.Conn). It keeps admit.Conn's
// methods, through which the securepeer handshake takes its turn of
// handshake CPU, says when the peer has proved its key, and waits for a
// new first flight after a refused ticket.
type admittedConn struct {
	*admit.Conn
	local, remote ma.Multiaddr
}

var _ manet.Conn = (*admittedConn)(nil)

func (c *admittedConn) LocalMultiaddr() ma.Multiaddr  { return c.local }
func (c *admittedConn) RemoteMultiaddr() ma.Multiaddr { return c.remote }

// CloseWrite ends this side's writing on the socket: securepeer does so
// after refusing a peer (Verify), so that its alert reaches the peer
// before the reset that closing a socket with unread data sends.
func (c *admittedConn) CloseWrite() error {
	cw, ok := c.NetConn().(interface{ CloseWrite() error })
	if !ok {
		return pkgerr.New("p2p", "the connection cannot be half-closed")
	}
	return cw.CloseWrite()
}

// SyscallConn returns the socket's, once the first flight has been read,
// so that securepeer's record layer reads from the socket itself.
func (c *admittedConn) SyscallConn() (syscall.RawConn, error) {
	if c.Buffered() > 0 {
		return nil, pkgerr.New("p2p", "part of the first flight is still buffered")
	}
	sc, ok := c.NetConn().(syscall.Conn)
	if !ok {
		return nil, pkgerr.New("p2p", "the connection has no descriptor")
	}
	return sc.SyscallConn()
}

// An acceptGate applies the host's connection gater to accepted
// connections, and opens no resource scope.
type acceptGate struct {
	manet.Listener
	gater connmgr.ConnectionGater
}

func (g *acceptGate) Accept() (manet.Conn, network.ConnManagementScope, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, nil, err
		}
		if g.gater != nil && !g.gater.InterceptAccept(c) {
			c.Close()
			continue
		}
		return c, nil, nil
	}
}

// A netListener is a gated listener as admit takes it.
type netListener struct {
	transport.GatedMaListener
}

func (l netListener) Accept() (net.Conn, error) {
	c, scope, err := l.GatedMaListener.Accept()
	if err != nil {
		return nil, err
	}
	if scope != nil {
		scope.Done() // opened after the first flight instead
	}
	return c, nil
}

// An admitListener is a libp2p transport listener whose connections
// internal/admit admits and go-libp2p's upgrader upgrades.
type admitListener struct {
	l     *admit.Listener[transport.CapableConn]
	gated transport.GatedMaListener
}

var _ transport.Listener = (*admitListener)(nil)

// Accept returns the next upgraded connection.
func (l *admitListener) Accept() (transport.CapableConn, error) {
	c, err := l.l.Accept()
	if errors.Is(err, net.ErrClosed) {
		return nil, transport.ErrListenerClosed
	}
	return c, err
}

// Close stops the listener and ends the connections it has not handed
// out.
func (l *admitListener) Close() error { return l.l.Close() }

func (l *admitListener) Addr() net.Addr          { return l.gated.Addr() }
func (l *admitListener) Multiaddr() ma.Multiaddr { return l.gated.Multiaddr() }
