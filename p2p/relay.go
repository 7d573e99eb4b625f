package p2p

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/sec"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	basicconnmgr "github.com/libp2p/go-libp2p/p2p/net/connmgr"
	tptu "github.com/libp2p/go-libp2p/p2p/net/upgrader"
	pbv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/pkgerr"
	"github.com/securepeer/securepeer/libp2psec"
)

// RelayLimits bound what peers can make a relay hold. Zero fields take
// the defaults of [DefaultRelayLimits].
type RelayLimits struct {
	// Limits bound connections, as for a node: at once in all and per
	// source address, new ones per second per source, streams per peer,
	// accounted memory.
	Limits

	// Reservations bounds the reservations held at once, and
	// ReservationsPerIP those held from one source address.
	Reservations      int
	ReservationsPerIP int
	// ReservationTTL is how long a reservation lasts unless renewed (a
	// node renews it when three quarters have passed).
	ReservationTTL time.Duration

	// Circuits bounds the circuits open at once, all peers together, and
	// CircuitsPerPeer those to or from one peer.
	Circuits        int
	CircuitsPerPeer int
	// CircuitData bounds the bytes a circuit carries each way, and
	// CircuitDuration how long it lasts; the relay then cuts it, and
	// both peers are told why ([*CircuitError]).
	CircuitData     int64
	CircuitDuration time.Duration
}

// DefaultRelayLimits are the defaults of a relay's limits: a relay that
// carries whole sessions for the pairs that cannot go direct, not only
// the first bytes of a hole punch, as go-libp2p's defaults (128 KiB, two
// minutes per circuit) assume. PROTOCOL.md, "The relay's limits", says
// what each costs.
var DefaultRelayLimits = RelayLimits{
	Limits: Limits{
		Pending:        4096,
		Conns:          4096,
		ConnsPerIP:     16,
		ConnRate:       1,
		ConnBurst:      32,
		StreamsPerPeer: 64,
		Memory:         512 << 20,
	},
	Reservations:      1024,
	ReservationsPerIP: 8,
	ReservationTTL:    time.Hour,
	Circuits:          1024,
	CircuitsPerPeer:   16,
	CircuitData:       1 << 30,
	CircuitDuration:   time.Hour,
}

// withDefaults returns l with its zero fields taken from DefaultRelayLimits.
func (l RelayLimits) withDefaults() RelayLimits {
	d := DefaultRelayLimits
	l.Limits = l.Limits.withDefaults(d.Limits)
	setDefault(&l.Reservations, d.Reservations)
	setDefault(&l.ReservationsPerIP, d.ReservationsPerIP)
	setDefault(&l.ReservationTTL, d.ReservationTTL)
	setDefault(&l.Circuits, d.Circuits)
	setDefault(&l.CircuitsPerPeer, d.CircuitsPerPeer)
	setDefault(&l.CircuitData, d.CircuitData)
	setDefault(&l.CircuitDuration, d.CircuitDuration)
	return l
}

func (l RelayLimits) check() error {
	if err := l.Limits.check(); err != nil {
		return err
	}
	if l.Reservations < 0 || l.ReservationsPerIP < 0 || l.ReservationTTL < 0 || l.Circuits < 0 || l.CircuitsPerPeer < 0 || l.CircuitData < 0 || l.CircuitDuration < 0 {
		return pkgerr.Errorf("p2p", "negative relay limits: %+v", l)
	}
	if l.CircuitDuration < time.Second {
		return pkgerr.Errorf("p2p", "a circuit duration under a second (%v) cannot be announced: the relay protocol counts in seconds", l.CircuitDuration)
	}
	return nil
}

// RelayConfig configures a relay.
type RelayConfig struct {
	// Identity is the relay's key, which peers name in its address. It
	// may be held by ssh-agent or another signer.
	Identity *securepeer.Identity

	// ListenAddrs are the TCP multiaddrs to listen on
	// ("/ip4/0.0.0.0/tcp/4001").
	ListenAddrs []string

	// PublicAddrs, if not empty, are the addresses the relay announces,
	// in place of those it listens on: for a relay behind a port
	// forward, or with a DNS name.
	PublicAddrs []string

	// Limits bound what peers can make the relay hold.
	Limits RelayLimits

	// AllowReserve decides which keys may hold a reservation; nil lets
	// any key reserve. AllowCircuit decides which keys may open a
	// circuit to which; nil lets any key reach any key that holds a
	// reservation.
	AllowReserve func(key securepeer.PublicKey) bool
	AllowCircuit func(from, to securepeer.PublicKey) bool
}

// A Relay is a running circuit relay v2: peers that cannot be reached
// directly hold a reservation on it, and peers reach them through
// circuits it carries. Every connection to the relay, and every
// connection carried by a circuit, is a securepeer connection; the relay
// sees only ciphertext of the latter and cannot stand in for either peer.
type Relay struct {
	host   host.Host
	adm    *admission
	relay  *relay.Relay
	key    securepeer.PublicKey
	stats  *relayStats
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	err    error
}

// RunRelay starts a relay that runs until ctx is done or Close is
// called.
func RunRelay(ctx context.Context, cfg RelayConfig) (*Relay, error) {
	if cfg.Identity == nil {
		return nil, pkgerr.New("p2p", "RelayConfig.Identity is nil")
	}
	if len(cfg.ListenAddrs) == 0 {
		return nil, pkgerr.New("p2p", "RelayConfig.ListenAddrs is empty: a relay needs a port that peers can reach")
	}
	limits := cfg.Limits.withDefaults()
	if err := limits.check(); err != nil {
		return nil, err
	}
	h, adm, err := newRelayHost(cfg, limits)
	if err != nil {
		return nil, err
	}
	r := &Relay{host: h, adm: adm, key: cfg.Identity.PublicKey(), stats: &relayStats{}, done: make(chan struct{})}
	r.relay, err = relay.New(h,
		relay.WithResources(limits.resources()),
		relay.WithACL(&relayACL{reserve: cfg.AllowReserve, circuit: cfg.AllowCircuit, stats: r.stats, circuits: limits.Circuits}),
		relay.WithMetricsTracer(r.stats),
	)
	if err != nil {
		h.Close()
		return nil, pkgerr.Errorf("p2p", "starting the relay service: %w", err)
	}
	var runCtx context.Context
	runCtx, r.cancel = context.WithCancel(ctx)
	go func() {
		<-runCtx.Done()
		r.Close()
	}()
	return r, nil
}

// newRelayHost starts the relay's libp2p host: securepeer only, TCP
// only, securepeer's admission for connections in their handshake,
// limits per source, and a gate that makes room when it is full.
func newRelayHost(cfg RelayConfig, limits RelayLimits) (host.Host, *admission, error) {
	keyOpts, err := hostOptions(cfg.Identity)
	if err != nil {
		return nil, nil, err
	}
	listen, err := parseListenAddrs(cfg.ListenAddrs)
	if err != nil {
		return nil, nil, err
	}
	public, err := parsePublicAddrs(cfg.PublicAddrs)
	if err != nil {
		return nil, nil, err
	}
	rm, err := newResourceManager(limits.Limits, nil, limits.serviceLimits)
	if err != nil {
		return nil, nil, err
	}
	// The connection manager only records the relay's tags (on peers
	// with a reservation or a circuit): its watermarks are above the
	// resource manager's limit, so it never trims; the gate makes room.
	cm, err := basicconnmgr.NewConnManager(limits.Conns, limits.Conns+1)
	if err != nil {
		rm.Close()
		return nil, nil, pkgerr.Errorf("p2p", "connection manager: %w", err)
	}
	gate := newConnGate(limits.Conns, true)
	adm := &admission{max: limits.Pending}
	opts := append(keyOpts,
		libp2p.ListenAddrs(listen...),
		libp2p.NoTransports,
		libp2p.Transport(adm.tcpTransport),
		libp2p.Security(libp2psec.ID, newRelaySecurity(cfg.Identity)),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.ConnectionGater(gate),
		libp2p.DisableRelay(),
		libp2p.Ping(false),
		libp2p.DisableMetrics(),
		libp2p.UserAgent("securepeer-relay"),
	)
	if len(public) > 0 {
		opts = append(opts, libp2p.AddrsFactory(func([]ma.Multiaddr) []ma.Multiaddr { return public }))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		rm.Close()
		cm.Close()
		return nil, nil, pkgerr.Errorf("p2p", "starting the relay's host: %w", err)
	}
	gate.start(h)
	return h, adm, nil
}

// relaySecurity is libp2psec's security transport, which reads the
// securepeer first flight of an admitted connection as the rest of its
// first flight (admission.go) before the handshake.
type relaySecurity struct {
	*libp2psec.Transport
}

func newRelaySecurity(identity *securepeer.Identity) func(protocol.ID, crypto.PrivKey, []tptu.StreamMuxer) (*relaySecurity, error) {
	newTransport := libp2psec.NewWithOptions(libp2psec.Options{Identity: identity})
	return func(id protocol.ID, key crypto.PrivKey, muxers []tptu.StreamMuxer) (*relaySecurity, error) {
		t, err := newTransport(id, key, muxers)
		if err != nil {
			return nil, err
		}
		return &relaySecurity{t}, nil
	}
}

// SecureInbound runs libp2psec's handshake as responder, once the
// handshake's first flight has come.
func (t *relaySecurity) SecureInbound(ctx context.Context, insecure net.Conn, p peer.ID) (sec.SecureConn, error) {
	if err := awaitHandshakeFlight(ctx, insecure); err != nil {
		insecure.Close()
		return nil, err
	}
	return t.Transport.SecureInbound(ctx, insecure, p)
}

// resources returns go-libp2p's relay resources for l.
func (l RelayLimits) resources() relay.Resources {
	rc := relay.DefaultResources()
	rc.Limit = &relay.RelayLimit{Duration: l.CircuitDuration, Data: l.CircuitData}
	rc.ReservationTTL = l.ReservationTTL
	rc.MaxReservations = l.Reservations
	rc.MaxReservationsPerIP = l.ReservationsPerIP
	rc.MaxReservationsPerASN = l.Reservations
	rc.MaxCircuits = l.CircuitsPerPeer
	rc.BufferSize = circuitBuffer
	return rc
}

// circuitBuffer is the size of each of a circuit's two copy buffers
// (go-libp2p's default is 2 KiB). Measured on loopback
// (BenchmarkThroughput/p2p-relayed), 16 KiB carries 1.7 times as many
// bytes per second as 2 KiB, and 64 KiB no more than 16.
const circuitBuffer = 16 << 10

// relayRequests bounds the relay's requests (reservations, circuits being
// set up) being read at once, all peers together: each holds a stream
// and a 4 KiB message buffer for a moment.
const relayRequests = 64

// serviceLimits sets the resource manager's limits for go-libp2p's relay
// service: two streams per circuit (one each side) and its two buffers,
// for Circuits circuits, plus relayRequests requests; and, per peer,
// CircuitsPerPeer circuits. They are the hard bound on what circuits
// hold; relayACL counts circuits exactly.
func (l RelayLimits) serviceLimits(cfg *rcmgr.PartialLimitConfig) {
	streams := rcmgr.LimitVal(2*l.Circuits + relayRequests)
	memory := rcmgr.LimitVal64(int64(l.Circuits)*2*circuitBuffer + relayRequests*4096)
	if cfg.Service == nil {
		cfg.Service = make(map[string]rcmgr.ResourceLimits)
	}
	cfg.Service[relay.ServiceName] = rcmgr.ResourceLimits{
		Streams: streams, StreamsInbound: streams, StreamsOutbound: streams, Memory: memory,
	}
	perPeer := rcmgr.LimitVal(2*l.CircuitsPerPeer + 8)
	if cfg.ServicePeer == nil {
		cfg.ServicePeer = make(map[string]rcmgr.ResourceLimits)
	}
	cfg.ServicePeer[relay.ServiceName] = rcmgr.ResourceLimits{
		Streams: perPeer, StreamsInbound: perPeer, StreamsOutbound: perPeer,
		Memory: rcmgr.LimitVal64(int64(l.CircuitsPerPeer)*2*circuitBuffer + 1<<20),
	}
}

// parsePublicAddrs parses a relay's public addresses.
func parsePublicAddrs(addrs []string) ([]ma.Multiaddr, error) {
	return parseTCPAddrs(addrs, "public address", "an IP address or DNS name and a TCP port")
}

// Key returns the relay's key.
func (r *Relay) Key() securepeer.PublicKey { return r.key }

// Addrs returns the relay's addresses to hand out: multiaddrs ending
// with its peer ID, which names its key, as [Config.Relays] takes them.
func (r *Relay) Addrs() []string {
	var out []string
	self := ma.StringCast("/p2p/" + r.host.ID().String())
	for _, a := range r.host.Addrs() {
		out = append(out, a.Encapsulate(self).String())
	}
	return out
}

// Stats returns the relay's counters.
func (r *Relay) Stats() RelayStats { return r.stats.snapshot(r.host) }

// Close stops the relay: every reservation and circuit ends.
func (r *Relay) Close() error {
	r.once.Do(func() {
		if r.cancel != nil {
			r.cancel()
		}
		r.relay.Close()
		r.err = r.host.Close()
		close(r.done)
	})
	<-r.done
	return r.err
}

// relayACL applies a RelayConfig's AllowReserve and AllowCircuit, and
// refuses a circuit when Circuits are open (go-libp2p's relay bounds
// circuits per peer only). Requests that arrive together may each see
// one slot free; the resource manager's limits on the relay service
// bound them all the same.
type relayACL struct {
	reserve  func(securepeer.PublicKey) bool
	circuit  func(from, to securepeer.PublicKey) bool
	stats    *relayStats
	circuits int
}

func (a *relayACL) AllowReserve(p peer.ID, _ ma.Multiaddr) bool {
	key, err := KeyOf(p)
	if err != nil {
		return false
	}
	return a.reserve == nil || a.reserve(key)
}

func (a *relayACL) AllowConnect(src peer.ID, _ ma.Multiaddr, dst peer.ID) bool {
	if a.stats.circuits.Load() >= int64(a.circuits) {
		return false
	}
	from, err := KeyOf(src)
	if err != nil {
		return false
	}
	to, err := KeyOf(dst)
	if err != nil {
		return false
	}
	return a.circuit == nil || a.circuit(from, to)
}

// RelayStats are a relay's counters.
type RelayStats struct {
	// Conns is the connections open to the relay now.
	Conns int
	// Reservations is the reservations held now, Circuits the circuits
	// open now.
	Reservations, Circuits int
	// ReservationsRefused and CircuitsRefused count the requests refused
	// since the relay started, for any reason (limits, access rules, no
	// reservation).
	ReservationsRefused, CircuitsRefused int
	// Bytes counts the bytes carried by circuits since the relay
	// started.
	Bytes int64
}

// relayStats counts what go-libp2p's relay reports through its metrics
// tracer interface.
type relayStats struct {
	reservations, circuits           atomic.Int64
	reservesRefused, circuitsRefused atomic.Int64
	bytes                            atomic.Int64
}

var _ relay.MetricsTracer = (*relayStats)(nil)

func (s *relayStats) RelayStatus(bool)               {}
func (s *relayStats) ConnectionOpened()              { s.circuits.Add(1) }
func (s *relayStats) ConnectionClosed(time.Duration) { s.circuits.Add(-1) }
func (s *relayStats) BytesTransferred(n int)         { s.bytes.Add(int64(n)) }
func (s *relayStats) ReservationClosed(n int)        { s.reservations.Add(-int64(n)) }
func (s *relayStats) ReservationAllowed(renewal bool) {
	if !renewal {
		s.reservations.Add(1)
	}
}

func (s *relayStats) ConnectionRequestHandled(st pbv2.Status) {
	if st != pbv2.Status_OK {
		s.circuitsRefused.Add(1)
	}
}

func (s *relayStats) ReservationRequestHandled(st pbv2.Status) {
	if st != pbv2.Status_OK {
		s.reservesRefused.Add(1)
	}
}

func (s *relayStats) snapshot(h host.Host) RelayStats {
	return RelayStats{
		Conns:               len(h.Network().Conns()),
		Reservations:        int(s.reservations.Load()),
		Circuits:            int(s.circuits.Load()),
		ReservationsRefused: int(s.reservesRefused.Load()),
		CircuitsRefused:     int(s.circuitsRefused.Load()),
		Bytes:               s.bytes.Load(),
	}
}
