package main

// The p2p engine in the command: a node that reaches peers by key through
// relays and hole punching (package p2p), its streams as the command's
// streams, and what the user is told about how each connection runs.
//
// The command's application protocols travel as p2p stream protocols
// (PROTOCOL.md, "The command through relays"): a stream is opened for one
// name, /securepeer/app/NAME, negotiated inside the authenticated
// connection, and connect offers its names in order of preference, as it
// offers them in a native handshake's NextProtos.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/pkgerr"
	"github.com/securepeer/securepeer/p2p"
)

// A p2pNode is the command's p2p node, with what it tells the user.
type p2pNode struct {
	node  *p2p.Node
	self  securepeer.PublicKey
	log   *slog.Logger
	relay map[securepeer.PublicKey]string // each relay's address, as configured, for messages

	say     chan string // notices, in order, to the printer
	printed chan struct{}
	// directNote ends the notice that a connection went direct: what it
	// means for what the command does.
	directNote string

	mu    sync.Mutex
	peers map[securepeer.PublicKey]*peerPath // peers whose path the user is told of
	// direct, for a peer that connect watches, receives a value when the
	// connection to it goes direct (p2pDialer.directs).
	direct map[securepeer.PublicKey]chan struct{}
	held   map[securepeer.PublicKey]bool // relays with a reservation
	shut   bool
	// changed, if set (reservationsChanged), receives a value when a
	// reservation is gained or lost: the DHT record is out of date.
	changed chan struct{}
}

// A peerPath is what the user was last told of a peer's path.
type peerPath struct {
	told       bool                 // a path was announced
	relayed    bool                 // it was relayed
	relay      securepeer.PublicKey // through this relay
	metThrough string
}

// p2pNotices bounds the notices waiting to be printed; the node's
// goroutines must not wait for stderr.
const p2pNotices = 256

// p2pSpec is how a command starts its node.
type p2pSpec struct {
	relays []string // relay addresses
	listen []string // multiaddrs to listen on; nil for every interface, any port
	// verify decides who may connect to the node (listen's -allow); nil
	// refuses everyone but the peers this node dials (connect).
	verify func(ctx context.Context, key securepeer.PublicKey) error
	// notef prints what the node says (for listen, at a bounded rate:
	// peers cause these notices).
	notef func(format string, args ...any)
	// directNote ends the notice that a connection went direct.
	directNote string
}

// testOnlyDirectWait, if set, replaces the engine's DirectWait (negative:
// no wait), so that the NAT lab's tests can open a session on the relay
// before a hole punch that completes in well under DirectWait, as one on
// a slower path or a later attempt does.
var testOnlyDirectWait time.Duration

// startNode starts the command's p2p node with the identity id.
func startNode(ctx context.Context, id *securepeer.Identity, spec p2pSpec, log *slog.Logger) (*p2pNode, error) {
	n := &p2pNode{
		self:    id.PublicKey(),
		log:     log,
		relay:   make(map[securepeer.PublicKey]string),
		say:     make(chan string, p2pNotices),
		printed: make(chan struct{}),
		peers:   make(map[securepeer.PublicKey]*peerPath),
		held:    make(map[securepeer.PublicKey]bool),
		direct:  make(map[securepeer.PublicKey]chan struct{}),

		directNote: spec.directNote,
	}
	for _, r := range spec.relays {
		if k, err := relayKey(r); err == nil {
			if _, ok := n.relay[k]; !ok {
				n.relay[k] = relayTransport(r)
			}
		}
	}
	verify := spec.verify
	if verify == nil {
		verify = func(context.Context, securepeer.PublicKey) error {
			return errors.New("connect takes no connections but its peer's")
		}
	}
	// Not ctx: a signal must not cut the node's connections under the
	// sessions that the command then lets end (a stdio stream after
	// SIGHUP, listen's graceful stop); the command closes it.
	node, err := p2p.Start(context.WithoutCancel(ctx), p2p.Config{
		Identity:    id,
		ListenAddrs: spec.listen,
		Relays:      spec.relays,
		Verify:      verify,
		Notify:      n.notify,
		DirectWait:  testOnlyDirectWait,
	})
	if err != nil {
		return nil, nodeError(err)
	}
	n.node = node
	go n.print(spec.notef)
	return n, nil
}

// nodeError explains why the node could not start.
func nodeError(err error) error {
	return pkgerr.Plainf("starting the p2p node: %w", err)
}

// close stops the node, and prints what it still had to say.
func (n *p2pNode) close() {
	n.node.Close()
	n.mu.Lock()
	if !n.shut {
		n.shut = true
		close(n.say)
	}
	n.mu.Unlock()
	<-n.printed
}

// print prints the notices in the order they came.
func (n *p2pNode) print(notef func(string, ...any)) {
	defer close(n.printed)
	for s := range n.say {
		notef("%s", s)
	}
}

// tellLocked queues a notice, formatting a library's error among args
// without its package's name, as notef does (it gets the notice whole).
// n.mu is held.
func (n *p2pNode) tellLocked(format string, args ...any) {
	if n.shut {
		return
	}
	select {
	case n.say <- fmt.Sprintf(format, pkgerr.Args(args)...):
	default: // stderr is that slow: the -v log still has the event
	}
}

// notify is the node's Config.Notify: it logs every event, and turns the
// ones a user needs into notices. It runs in the node's goroutines, and
// must not block.
func (n *p2pNode) notify(e p2p.Event) {
	n.logEvent(e)
	n.mu.Lock()
	defer n.mu.Unlock()
	switch e.Kind {
	case p2p.EventReserved:
		n.reservedLocked(e.Relay)
	case p2p.EventReservationFailed:
		if n.held[e.Relay] {
			n.held[e.Relay] = false
			n.changedLocked()
			n.tellLocked("lost the reservation on relay %s (%s); trying again", n.relayName(e.Relay), relayCause(e.Err))
		}
	case p2p.EventConnected:
		if p, ok := n.peers[e.Peer]; ok && e.Path.Relayed {
			p.metThrough = n.relayName(e.Path.Relay)
		}
	case p2p.EventDirect:
		if p, ok := n.peers[e.Peer]; ok && p.told && p.relayed {
			p.relayed = false
			n.tellLocked("the connection to %s is now direct (%s)%s", e.Peer.Fingerprint(), hostPort(e.Path.Remote), n.directNote)
		}
		if ch, ok := n.direct[e.Peer]; ok {
			select {
			case ch <- struct{}{}:
			default: // one is waiting to be seen already
			}
		}
	}
}

// reservedLocked says that the node is reachable through relay, unless
// it said so since it last lost that relay. n.mu is held.
func (n *p2pNode) reservedLocked(relay securepeer.PublicKey) {
	if !n.held[relay] {
		n.held[relay] = true
		n.changedLocked()
		n.tellLocked("reachable as %s through relay %s", n.self.Fingerprint(), n.relayName(relay))
	}
}

// reservationsChanged returns a channel that receives a value when the
// node gains or loses a reservation (one value for changes not yet seen).
func (n *p2pNode) reservationsChanged() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.changed == nil {
		n.changed = make(chan struct{}, 1)
	}
	return n.changed
}

// changedLocked tells reservationsChanged's receiver that a reservation
// was gained or lost. n.mu is held.
func (n *p2pNode) changedLocked() {
	select {
	case n.changed <- struct{}{}:
	default: // a change is waiting to be seen already, or nobody watches
	}
}

// logEvent logs e, structured, for -v.
func (n *p2pNode) logEvent(e p2p.Event) {
	args := []any{"event", eventName(e.Kind)}
	if !e.Peer.IsZero() {
		args = append(args, "peer", e.Peer.Fingerprint())
	}
	if !e.Relay.IsZero() {
		args = append(args, "relay", n.relayName(e.Relay))
	}
	switch e.Kind {
	case p2p.EventConnected, p2p.EventDisconnected:
		args = append(args, "path", n.pathWords(e.Path))
	case p2p.EventDirect:
		args = append(args, "addr", hostPort(e.Path.Remote))
	}
	if e.Resumed {
		args = append(args, "resumed", true)
	}
	if !e.Expires.IsZero() {
		args = append(args, "expires", e.Expires.Format(time.TimeOnly))
	}
	if e.Err != nil {
		args = append(args, "err", pkgerr.Unnamed(e.Err).Error())
	}
	n.log.Info("p2p", args...)
}

func eventName(k p2p.EventKind) string {
	switch k {
	case p2p.EventReserved:
		return "reserved"
	case p2p.EventReservationFailed:
		return "reservation_failed"
	case p2p.EventConnected:
		return "connected"
	case p2p.EventDirect:
		return "direct"
	case p2p.EventDisconnected:
		return "disconnected"
	case p2p.EventHolePunch:
		return "hole_punch"
	}
	return strconv.Itoa(int(k))
}

// relayName is how messages name a relay: its address as the user gave
// it, or its key's fingerprint for a relay the peer brought.
func (n *p2pNode) relayName(key securepeer.PublicKey) string {
	if a, ok := n.relay[key]; ok {
		return a
	}
	return key.Fingerprint()
}

// pathWords says how a connection runs, as the user reads it.
func (n *p2pNode) pathWords(p p2p.Path) string {
	if p.Relayed {
		return "through relay " + n.relayName(p.Relay) + " (relayed)"
	}
	return "directly (" + hostPort(p.Remote) + ")"
}

// announce tells the user how a stream to the peer with key runs (path), when that
// differs from what they were told last; later changes (the connection
// going direct) are told as the node sees them. It is what connect says
// of the peer it reaches, and listen of each peer it serves.
func (n *p2pNode) announce(key securepeer.PublicKey, path p2p.Path, verb string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.peerLocked(key)
	if p.told && p.relayed == path.Relayed && (!path.Relayed || p.relay == path.Relay) {
		return
	}
	p.told, p.relayed, p.relay = true, path.Relayed, path.Relay
	switch {
	case path.Relayed:
		n.tellLocked("%s %s through relay %s (relayed)", verb, key.Fingerprint(), n.relayName(path.Relay))
	case p.metThrough != "":
		n.tellLocked("%s %s directly (%s), hole punched after meeting through relay %s", verb, key.Fingerprint(), hostPort(path.Remote), p.metThrough)
	default:
		n.tellLocked("%s %s directly (%s)", verb, key.Fingerprint(), hostPort(path.Remote))
	}
}

// watch makes the node tell the user how the connection to key runs: the
// peer connect dials, before it dials, so that meeting it through a
// relay is noted. The channel it returns receives a value each time the
// connection to key goes direct.
func (n *p2pNode) watch(key securepeer.PublicKey) <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.peerLocked(key)
	ch := make(chan struct{}, 1)
	n.direct[key] = ch
	return ch
}

// maxPeerPaths bounds the peers whose path the node keeps: past it, it
// forgets them all (a peer then announced again is announced anew).
const maxPeerPaths = 4096

// peerLocked returns what the user was told of key's path. n.mu is held.
func (n *p2pNode) peerLocked(key securepeer.PublicKey) *peerPath {
	p, ok := n.peers[key]
	if !ok {
		if len(n.peers) >= maxPeerPaths {
			clear(n.peers)
		}
		p = &peerPath{}
		n.peers[key] = p
	}
	return p
}

// newP2PStream is a p2p stream as the command's stream.
func newP2PStream(st *p2p.Stream, self securepeer.PublicKey, initiator bool, took time.Duration, n *p2pNode) *stream {
	c := p2pConn{st}
	return &stream{
		conn:       c,
		raw:        c,
		self:       self,
		peer:       st.RemoteKey(),
		remoteAddr: st.RemoteKey().Fingerprint(),
		protocol:   "securepeer over p2p",
		negotiated: st.Protocol(),
		path:       n.pathWords(st.Path()),
		relayed:    st.Path().Relayed,
		// libp2psec refuses a handshake without the ML-KEM-768 hybrid.
		postQuantum: true,
		initiator:   initiator,
		took:        took,
		resumed:     st.Resumed(),
	}
}

// p2pConn is a p2p stream as the command's secure connection. A stream
// the peer resets reads as securepeer.ErrAborted, which is what the
// peer's abort means in the native protocol: the peer ended it without
// an end, and data may be missing. A stream whose connection failed
// reads as the p2p package says (a relay's limit, the relay lost), never
// as an end.
type p2pConn struct{ *p2p.Stream }

func (c p2pConn) Read(b []byte) (int, error) {
	n, err := c.Stream.Read(b)
	return n, peerAbort(err)
}

func (c p2pConn) Write(b []byte) (int, error) {
	n, err := c.Stream.Write(b)
	return n, peerAbort(err)
}

// peerAbort wraps securepeer.ErrAborted around err if the peer reset the
// stream.
func peerAbort(err error) error {
	var se *network.StreamError
	if errors.As(err, &se) && se.Remote {
		return pkgerr.Plainf("%w (%w)", securepeer.ErrAborted, err)
	}
	return err
}

// relayKey returns the key a relay address names.
func relayKey(addr string) (securepeer.PublicKey, error) {
	a, err := ma.NewMultiaddr(addr)
	if err != nil {
		return securepeer.PublicKey{}, err
	}
	_, id := peer.SplitAddr(a)
	return p2p.KeyOf(id)
}

// relayTransport returns the part of a relay address before its /p2p/ID,
// which is how messages name the relay.
func relayTransport(addr string) string {
	a, err := ma.NewMultiaddr(addr)
	if err != nil {
		return addr
	}
	transport, _ := peer.SplitAddr(a)
	if transport == nil {
		return addr
	}
	return transport.String()
}

// hostPort returns a direct connection's multiaddr as HOST:PORT, or as it
// is.
func hostPort(addr string) string {
	a, err := ma.NewMultiaddr(addr)
	if err != nil || len(a) < 2 {
		return addr
	}
	ip, err1 := netip.ParseAddr(a[0].Value())
	port, err2 := strconv.ParseUint(a[1].Value(), 10, 16)
	if err1 != nil || err2 != nil || a[1].Code() != ma.P_TCP {
		return addr
	}
	return netip.AddrPortFrom(ip, uint16(port)).String()
}

// listenMultiaddrs turns listen's ADDR (HOST:PORT, :PORT for every
// interface) into the node's TCP multiaddrs. An empty addr is the
// engine's default: every interface, a port the system picks.
func listenMultiaddrs(addr string) ([]string, error) {
	if addr == "" {
		return nil, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, usageErrorf("listen address %q: want HOST:PORT or :PORT", addr)
	}
	if host == "" {
		return []string{"/ip4/0.0.0.0/tcp/" + port, "/ip6/::/tcp/" + port}, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return nil, usageErrorf("listen address %q: through relays, listen takes an IP address, as in 0.0.0.0:%s or :%s", addr, port, port)
	}
	if ip.Is4() || ip.Is4In6() {
		return []string{"/ip4/" + ip.Unmap().String() + "/tcp/" + port}, nil
	}
	return []string{"/ip6/" + ip.String() + "/tcp/" + port}, nil
}

// relayCause says what a relay error says, without repeating the relay.
func relayCause(err error) string {
	var re *p2p.RelayError
	if errors.As(err, &re) {
		s := pkgerr.Unnamed(re.Err).Error()
		if re.Cause != nil {
			s += ": " + re.Cause.Error()
		}
		return s
	}
	if err == nil {
		return "no reason given"
	}
	return pkgerr.Unnamed(err).Error()
}

// circuitError returns the *p2p.CircuitError in err, if a relayed
// connection's end is why err happened.
func circuitError(err error) *p2p.CircuitError {
	var ce *p2p.CircuitError
	if errors.As(err, &ce) {
		return ce
	}
	return nil
}

// circuitFailure says why the relayed connection under s ended, in a
// sentence: the relay lost, or its data or time limit reached.
func circuitFailure(s *stream, ce *p2p.CircuitError) error {
	via := s.path
	if via == "" {
		via = "through relay " + ce.Relay.Fingerprint()
	}
	var why string
	switch {
	case errors.Is(ce.Err, p2p.ErrRelayLost):
		why = "the relay was lost"
	case errors.Is(ce.Err, p2p.ErrCircuitDataLimit):
		why = fmt.Sprintf("the relay cut it at its data limit, %s each way", formatBytes(float64(ce.DataLimit)))
	case errors.Is(ce.Err, p2p.ErrCircuitTimeLimit):
		why = fmt.Sprintf("the relay cut it at its time limit, %v", ce.TimeLimit)
	default:
		why = "the relay or the peer dropped it"
	}
	return pkgerr.Plainf("the connection to %s, %s, ended: %s; data may be missing", s.remoteAddr, via, why)
}
