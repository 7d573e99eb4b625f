package p2p

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	tptu "github.com/libp2p/go-libp2p/p2p/net/upgrader"
	ma "github.com/multiformats/go-multiaddr"
	mss "github.com/multiformats/go-multistream"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/pkgerr"
	"github.com/securepeer/securepeer/libp2psec"
)

// A Node is a libp2p host that speaks securepeer: it reaches peers by
// their keys, directly or through circuit relays, goes direct by hole
// punching where the NATs between them allow it, and serves streams of
// the protocols it listens on. Its only security transport is securepeer
// (libp2psec), its only transport TCP, its stream multiplexer yamux.
type Node struct {
	host   host.Host
	adm    *admission
	key    securepeer.PublicKey
	id     peer.ID
	relays []peer.AddrInfo
	verify func(context.Context, securepeer.PublicKey) error
	wait   time.Duration
	notify func(Event)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	verified  map[peer.ID]bool
	waiters   map[peer.ID][]chan struct{}
	listeners map[protocol.ID]*Listener
	reserver  *reserver
	punch     *punching     // nil if the node does not hole punch
	done      chan struct{} // closed once Close has finished
}

// maxVerified bounds the cache of keys Verify accepted; past it, the
// cache is emptied and Verify asked again.
const maxVerified = 4096

// Start starts a node: it listens on cfg.ListenAddrs and runs until ctx
// is done or Close is called. It makes no reservation until
// [Node.Listen] is called.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	n, err := newNode(cfg)
	if err != nil {
		return nil, err
	}
	if err := n.startHost(cfg); err != nil {
		return nil, err
	}
	if !cfg.NoHolePunching {
		if err := n.startHolePunching(); err != nil {
			n.Close()
			return nil, pkgerr.Errorf("p2p", "starting hole punching: %w", err)
		}
	}
	for _, r := range n.relays {
		n.host.Peerstore().AddAddrs(r.ID, r.Addrs, peerstore.PermanentAddrTTL)
		n.host.ConnManager().Protect(r.ID, "securepeer-relay")
	}
	n.host.Network().Notify(&network.NotifyBundle{
		ConnectedF:    func(_ network.Network, c network.Conn) { n.connOpened(c) },
		DisconnectedF: func(_ network.Network, c network.Conn) { n.connClosed(c) },
	})
	// Not in n.wg: Close waits for n.wg.
	go func() {
		select {
		case <-ctx.Done():
			n.Close()
		case <-n.ctx.Done():
		}
	}()
	return n, nil
}

// newNode checks cfg and returns a node that has yet to start.
func newNode(cfg Config) (*Node, error) {
	if cfg.Identity == nil {
		return nil, pkgerr.New("p2p", "Config.Identity is nil")
	}
	n := &Node{
		key:       cfg.Identity.PublicKey(),
		verify:    cfg.Verify,
		wait:      cfg.DirectWait,
		notify:    cfg.Notify,
		verified:  make(map[peer.ID]bool),
		waiters:   make(map[peer.ID][]chan struct{}),
		listeners: make(map[protocol.ID]*Listener),
		done:      make(chan struct{}),
	}
	if n.wait == 0 {
		n.wait = DefaultDirectWait
	}
	var err error
	if n.id, err = PeerID(n.key); err != nil {
		return nil, err
	}
	if n.relays, err = parseRelays(cfg.Relays, n.id); err != nil {
		return nil, err
	}
	return n, nil
}

// startHost starts the node's libp2p host.
func (n *Node) startHost(cfg Config) error {
	priv, err := hostKey(cfg.Identity)
	if err != nil {
		return err
	}
	listen, err := parseListenAddrs(cfg.ListenAddrs)
	if err != nil {
		return err
	}
	limits := cfg.Limits.withDefaults(NodeLimits)
	if err := limits.check(); err != nil {
		return err
	}
	rm, err := newResourceManager(limits, n.relays, nil)
	if err != nil {
		return err
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	gate := newConnGate(limits.Conns, false)
	n.adm = &admission{max: limits.Pending}
	n.host, err = libp2p.New(
		libp2p.Identity(priv),
		libp2p.ListenAddrs(listen...),
		libp2p.NoTransports,
		libp2p.Transport(n.adm.tcpTransport),
		libp2p.ConnectionGater(gate),
		libp2p.Security(libp2psec.ID, n.securityTransport),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(rm),
		libp2p.EnableRelay(),
		libp2p.Ping(false),
		libp2p.DisableMetrics(),
		libp2p.UserAgent("securepeer-p2p"),
	)
	if err != nil {
		rm.Close()
		n.cancel()
		return pkgerr.Errorf("p2p", "starting the libp2p host: %w", err)
	}
	gate.start(n.host)
	return nil
}

// securityTransport is the constructor of the host's security transport,
// with the signature go-libp2p expects.
func (n *Node) securityTransport(id protocol.ID, key crypto.PrivKey, muxers []tptu.StreamMuxer) (*secTransport, error) {
	t, err := libp2psec.NewWithOptions(libp2psec.Options{VerifyInbound: n.verifyInbound})(id, key, muxers)
	if err != nil {
		return nil, err
	}
	return &secTransport{Transport: t, node: n}, nil
}

// Key returns the node's key.
func (n *Node) Key() securepeer.PublicKey { return n.key }

// ID returns the node's libp2p peer ID, which names its key.
func (n *Node) ID() peer.ID { return n.id }

// Addrs returns the node's addresses, as multiaddrs that end with its
// peer ID: its direct addresses, then its addresses through each relay
// on which it holds a reservation. A peer needs none of them to dial the
// node by key through a relay they share; they are for showing, and for
// peers that do not have the node's relays.
func (n *Node) Addrs() []string {
	self := ma.StringCast("/p2p/" + n.id.String())
	var out []string
	for _, a := range n.host.Addrs() {
		if !isCircuit(a) {
			out = append(out, a.Encapsulate(self).String())
		}
	}
	n.mu.Lock()
	r := n.reserver
	n.mu.Unlock()
	if r == nil {
		return out
	}
	for _, relay := range r.held() {
		for _, a := range n.circuitAddrs(relay) {
			out = append(out, a.Encapsulate(self).String())
		}
	}
	return out
}

// AddAddrs tells the node where the peer with key may be reached:
// multiaddrs, with or without the trailing /p2p/ peer ID (which must then
// be key's), direct ("/ip4/198.51.100.7/tcp/4001") or through a relay the
// node need not have among its own ("/ip4/203.0.113.7/tcp/4001/p2p/RELAY/p2p-circuit",
// as [Node.Addrs] gives them). Dial tries them along with its relays.
func (n *Node) AddAddrs(key securepeer.PublicKey, addrs []string) error {
	id, err := PeerID(key)
	if err != nil {
		return err
	}
	var parsed []ma.Multiaddr
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return pkgerr.Errorf("p2p", "peer address %q: %w", s, err)
		}
		transport, pid := peer.SplitAddr(a)
		if pid != "" && pid != id {
			return pkgerr.Errorf("p2p", "peer address %q names another key than the peer's", s)
		}
		if !isPeerAddr(transport) {
			return pkgerr.Errorf("p2p", "peer address %q is not an IP address and TCP port, or one followed by a relay's peer ID and /p2p-circuit", s)
		}
		parsed = append(parsed, transport)
	}
	n.host.Peerstore().AddAddrs(id, parsed, peerstore.PermanentAddrTTL)
	return nil
}

// Close stops the node: its listeners, its reservations, its
// connections. It returns once all are stopped. What the node's streams
// wrote before reaches the peer first (flush), so that a program may
// write, end its stream and exit.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		<-n.done
		return nil
	}
	n.closed = true
	listeners := make([]*Listener, 0, len(n.listeners))
	for _, l := range n.listeners {
		listeners = append(listeners, l)
	}
	n.mu.Unlock()
	defer close(n.done)
	for _, l := range listeners {
		l.Close()
	}
	n.flush()
	n.cancel()
	if n.punch != nil && n.punch.svc != nil {
		n.punch.svc.Close()
	}
	err := n.host.Close()
	n.wg.Wait()
	return err
}

func (n *Node) isClosed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.closed
}

// emit reports e, unless the node is closed.
func (n *Node) emit(e Event) {
	if n.notify != nil && !n.isClosed() {
		n.notify(e)
	}
}

// isRelay reports whether p is one of the node's relays.
func (n *Node) isRelay(p peer.ID) bool {
	for _, r := range n.relays {
		if r.ID == p {
			return true
		}
	}
	return false
}

// liveConn reports whether the node has an open connection to p.
func (n *Node) liveConn(p peer.ID) bool {
	for _, c := range n.host.Network().ConnsToPeer(p) {
		if !c.IsClosed() {
			return true
		}
	}
	return false
}

// connected reports a connection whose handshake has completed.
func (n *Node) connected(c *trackedConn) {
	n.emit(Event{
		Kind:    EventConnected,
		Peer:    c.peerKey(),
		Path:    c.path(),
		Resumed: c.SecurepeerState().DidResume,
	})
}

// disconnected reports a connection that has ended, and why.
func (n *Node) disconnected(c *trackedConn, why error) {
	if n.isRelay(c.RemotePeer()) {
		return
	}
	n.emit(Event{Kind: EventDisconnected, Peer: c.peerKey(), Path: c.path(), Err: why})
}

// connOpened wakes the dials waiting for a direct connection to the
// peer, and reports a direct connection to a peer already connected
// through a relay. A connection received through a relay gets the rounds
// of hole punching to come (relayedInbound).
func (n *Node) connOpened(c network.Conn) {
	if isCircuit(c.RemoteMultiaddr()) {
		if c.Stat().Direction == network.DirInbound {
			n.relayedInbound(c)
		}
		return
	}
	p := c.RemotePeer()
	n.mu.Lock()
	waiters := n.waiters[p]
	delete(n.waiters, p)
	n.mu.Unlock()
	for _, w := range waiters {
		close(w)
	}
	for _, other := range n.host.Network().ConnsToPeer(p) {
		if isCircuit(other.RemoteMultiaddr()) && !other.IsClosed() {
			key, _ := KeyOf(p)
			n.emit(Event{Kind: EventDirect, Peer: key, Path: Path{Remote: c.RemoteMultiaddr().String()}})
			return
		}
	}
}

// connClosed forgets that a peer passed Verify once its last connection
// is gone, and tells the reserver when that peer is a relay.
func (n *Node) connClosed(c network.Conn) {
	p := c.RemotePeer()
	if n.liveConn(p) {
		return
	}
	n.mu.Lock()
	delete(n.verified, p)
	r := n.reserver
	n.mu.Unlock()
	n.peerGone(p)
	if r != nil {
		r.relayDown(p)
	}
}

// isPeerAddr reports whether a is a TCP address, or a TCP address, a
// relay's peer ID and /p2p-circuit.
func isPeerAddr(a ma.Multiaddr) bool {
	if a == nil {
		return false
	}
	if !isCircuit(a) {
		return isTCP(a)
	}
	relay, rest := ma.SplitFunc(a, func(c ma.Component) bool { return c.Code() == ma.P_CIRCUIT })
	transport, id := peer.SplitAddr(relay)
	return len(rest) == 1 && id != "" && transport != nil && isTCP(transport)
}

func isCircuit(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

// verifyInbound is the security transport's inbound check: Verify, asked
// once per peer while the peer stays connected (a hole punch makes a
// second connection from a peer already accepted).
func (n *Node) verifyInbound(ctx context.Context, key securepeer.PublicKey) error {
	if n.verify == nil {
		return nil
	}
	p, err := PeerID(key)
	if err != nil {
		return err
	}
	n.mu.Lock()
	ok := n.verified[p]
	n.mu.Unlock()
	if ok {
		return nil
	}
	if err := n.verify(ctx, key); err != nil {
		return err
	}
	n.trust(p)
	return nil
}

// trust records that p may connect to the node without Verify: it passed
// Verify, or the node dials it (a hole punch can make the peer the
// initiator of the direct connection, on its third attempt).
func (n *Node) trust(p peer.ID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.verified) >= maxVerified {
		clear(n.verified)
	}
	n.verified[p] = true
}

// flushTimeout bounds how long Close waits for each peer to have read
// what was sent to it: a round trip, on a link that may be slow.
const flushTimeout = 2 * time.Second

// flushProtocol is what flush proposes; no one serves it.
const flushProtocol = "/securepeer/flush/0"

// flush waits, for at most flushTimeout, until the peer of each
// connection but the relays' has taken in everything sent on it. yamux
// queues what a stream writes and its end, and closing the session drops
// what is still queued (and a TCP close with unread data resets the
// connection, which drops what the peer's kernel holds). So before it
// closes, the node opens a stream on each connection and proposes a
// protocol: the peer answers (that it does not serve it) only once it has
// processed every frame sent before, yamux frames being read in order.
// A yamux ping would not do: yamux sends pings ahead of queued data.
func (n *Node) flush() {
	ctx, cancel := context.WithTimeout(network.WithAllowLimitedConn(context.Background(), "flush"), flushTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	var wg sync.WaitGroup
	for _, c := range n.host.Network().Conns() {
		if c.IsClosed() || n.isRelay(c.RemotePeer()) {
			continue
		}
		wg.Go(func() {
			s, err := c.NewStream(ctx)
			if err != nil {
				return
			}
			defer s.Reset()
			s.SetDeadline(deadline)
			mss.SelectProtoOrFail(protocol.ID(flushProtocol), s)
		})
	}
	wg.Wait()
}
