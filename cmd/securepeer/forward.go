package main

// TCP forwarding, both ways: each side's -from addresses accept local
// connections and open streams to the peer, and each side's -to targets
// take the streams the peer opens, over multiplexed tunnels (package
// internal/tunnel);
// and, with a peer that does not multiplex, a secure connection per local
// connection.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/netutil"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/ratelog"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/tunnel"
	"github.com/securepeer/securepeer/legacy"
)

// A forwardSpec is one -from or -to: NAME=ADDR, or ADDR for the unnamed
// forward.
type forwardSpec struct{ name, addr string }

func (f forwardSpec) String() string {
	if f.name == "" {
		return f.addr
	}
	return f.name + "=" + f.addr
}

// forwardLabel names a forward in messages.
func forwardLabel(name string) string {
	if name == "" {
		return "the unnamed forward"
	}
	return fmt.Sprintf("%q", name)
}

// A tunnelEnd is what one side of a tunnel offers the streams the peer
// opens: its -to targets, by name ("" for the unnamed one).
type tunnelEnd struct {
	targets map[string]string
	log     *slog.Logger
	server  *tunnel.Server // serves a tunnel connection's streams
}

// newTunnelEnd is a tunnelEnd for the -to targets to, its notices going
// through rates, as a peer can cause them as fast as it likes.
func newTunnelEnd(to []forwardSpec, log *slog.Logger, rates *ratelog.Log) *tunnelEnd {
	end := &tunnelEnd{targets: targetMap(to), log: log}
	end.server = &tunnel.Server{
		Route: end.route,
		Log:   log,
		Notef: rates.Kind("notices about the peers' tunnel streams"),
		Fullf: rates.Kind("notices about full tunnel connections"),
	}
	return end
}

// route connects a stream for the forward name from the peer at from to
// this side's -to of that name, or refuses it with the reason.
func (end *tunnelEnd) route(ctx context.Context, name, from string) (net.Conn, string, error) {
	to, ok := end.targets[name]
	if !ok {
		return nil, "", &tunnel.Refusal{
			Status: end.noTarget(name),
			Err:    fmt.Errorf("refused a tunnel stream for %s from %s: there is no -to of that name here", forwardLabel(name), from),
		}
	}
	c, err := dialTarget(ctx, to)
	if err != nil {
		reason := targetFailure(err)
		return nil, "", &tunnel.Refusal{
			Status: "connect failed: " + reason,
			Err:    fmt.Errorf("-to: cannot connect to %s (%s), so the tunnel stream from %s was refused; is the service running there?", to, reason, from),
		}
	}
	return c, to, nil
}

// noTarget is the reason a stream for name is refused, for the peer to
// read: which names this side has, so that a typo is plain.
func (end *tunnelEnd) noTarget(name string) string {
	if len(end.targets) == 0 {
		return "no -to on its side, so it takes no streams"
	}
	var names []string
	for n := range end.targets {
		names = append(names, forwardLabel(n))
	}
	slices.Sort(names)
	return fmt.Sprintf("no -to for %s on its side; it has %s", forwardLabel(name), strings.Join(names, ", "))
}

// forwardPlain serves a peer that does not multiplex (a plain stream, or
// an older securepeer): it can name no forward, so it reaches the unnamed
// -to, if there is one.
func forwardPlain(ctx context.Context, s *stream, end *tunnelEnd) error {
	to, ok := end.targets[""]
	if !ok {
		s.abort()
		return fmt.Errorf("the peer at %s does not multiplex tunnels, so it can only reach an unnamed -to, and there is none; closed its connection", s.remoteAddr)
	}
	return forwardTo(ctx, s, to, end.log)
}

// forwardTo connects to the local service at addr and proxies s to it.
func forwardTo(ctx context.Context, s *stream, addr string, log *slog.Logger) error {
	c, err := dialTarget(ctx, addr)
	if err != nil {
		s.abort()
		return fmt.Errorf("-to: cannot connect to %s (%s); the connection from %s was closed; is the service running there?", addr, targetFailure(err), s.remoteAddr)
	}
	log.Info("forwarding", "peer", s.peer.Fingerprint(), "to", addr)
	if err := proxy(ctx, s, c); err != nil {
		return fmt.Errorf("forwarding %s to %s: %v", s.remoteAddr, addr, err)
	}
	log.Info("connection closed", "peer", s.peer.Fingerprint(), "addr", s.remoteAddr)
	return nil
}

// localForward accepts local connections on l, for the forward spec, and
// carries each over a stream of the session that session returns, until
// ctx ends; relayCtx ending cuts them. It returns once every local
// connection has ended.
func localForward(ctx, relayCtx context.Context, l net.Listener, spec forwardSpec, session func(context.Context) (*tunnel.Session, error), notef func(string, ...any), log *slog.Logger) {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	for {
		// Plain connections from this machine: no handshake to admit, so
		// accepting needs only the retry that keeps EMFILE from ending
		// the tunnel.
		c, err := acceptRetrying(ctx, l, notef)
		if err != nil {
			return
		}
		wg.Go(func() {
			log.Info("local connection", "from", connLabel(c), "forward", spec.String())
			forwardLocal(relayCtx, c, spec, session, notef)
		})
	}
}

// forwardLocal carries the local connection c over a new stream for spec,
// and says with notef why it failed, if it did, unless ctx has ended.
func forwardLocal(ctx context.Context, c net.Conn, spec forwardSpec, session func(context.Context) (*tunnel.Session, error), notef func(string, ...any)) {
	note := func(err error) {
		if ctx.Err() == nil {
			notef("%v", err)
		}
	}
	m, err := session(ctx)
	if err != nil {
		netutil.ResetClose(c)
		note(fmt.Errorf("%v; closed the local connection from %s", err, connLabel(c)))
		return
	}
	err = m.Forward(ctx, c, spec.name)
	var open *tunnel.OpenError
	var refused *tunnel.RefusedError
	switch {
	case err == nil || ctx.Err() != nil:
	case errors.As(err, &open):
		note(fmt.Errorf("%v; closed the local connection from %s", err, connLabel(c)))
	case errors.As(err, &refused) && strings.HasPrefix(refused.Reason, "connect failed"):
		note(fmt.Errorf("open failed for the local connection from %s (-from %s): %v; check the service behind the peer's -to", connLabel(c), spec, err))
	case errors.As(err, &refused), errors.Is(err, tunnel.ErrStreamReset):
		note(fmt.Errorf("open failed for the local connection from %s (-from %s): %v", connLabel(c), spec, err))
	case m.Closed(): // a lost connection has a notice of its own
	default:
		note(fmt.Errorf("tunnel for %s: %v", connLabel(c), err))
	}
}

// Reconnecting: the first try after about reconnectMin, then each wait
// twice the last, up to reconnectMax, each with jitter (between half and
// all of it), so that many clients of a restarted listener do not all
// come back at the same moment.
const (
	reconnectMin = 500 * time.Millisecond
	reconnectMax = 30 * time.Second
)

// tunnelWait is how long a local connection waits for a tunnel connection
// while connect reconnects, before it is reset.
const tunnelWait = 15 * time.Second

func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// A tunnelClient keeps connect's tunnel connection up: it serves the
// streams the peer opens to this side's -to targets, gives local
// connections their streams, and when the connection is lost it connects
// again with backoff (autossh's job), unless told not to.
type tunnelClient struct {
	ctx       context.Context
	fail      context.CancelCauseFunc // ends the tunnel with its cause
	h         handshaker
	addr      string
	verify    verifyFunc
	end       *tunnelEnd
	notef     func(string, ...any) // what the tunnel itself does (end.notef is the peer's streams')
	reconnect bool

	mu      sync.Mutex
	cur     *tunnel.Session // nil while reconnecting
	changed chan struct{}   // closed when cur changes
}

func (tc *tunnelClient) set(m *tunnel.Session) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.cur = m
	close(tc.changed)
	tc.changed = make(chan struct{})
}

// session returns the tunnel connection, waiting up to tunnelWait while
// connect reconnects.
func (tc *tunnelClient) session(ctx context.Context) (*tunnel.Session, error) {
	timer := time.NewTimer(tunnelWait)
	defer timer.Stop()
	for {
		tc.mu.Lock()
		m, changed := tc.cur, tc.changed
		tc.mu.Unlock()
		if m != nil && !m.Closed() {
			return m, nil
		}
		select {
		case <-changed:
		case <-timer.C:
			return nil, fmt.Errorf("no tunnel connection to %s for %v (reconnecting)", tc.addr, tunnelWait)
		case <-ctx.Done():
			return nil, interruption(ctx)
		}
	}
}

// run serves m, and each connection after it, until the tunnel ends.
func (tc *tunnelClient) run(l *tunnelLink) {
	for l != nil {
		m := l.m
		tc.set(m)
		cut := <-l.served
		<-m.Done()
		tc.set(nil)
		if tc.ctx.Err() != nil {
			return
		}
		why := fmt.Sprintf("the tunnel connection to %s ended: %v", tc.addr, m.Err())
		if cut > 0 {
			why += fmt.Sprintf(", with %s from the peer in progress, which were cut", streamCount(cut))
		}
		if !tc.reconnect {
			tc.fail(errors.New(why + "; not reconnecting, as -no-reconnect asks"))
			return
		}
		tc.notef("%s; the local connections in progress were reset; reconnecting", why)
		l = tc.redial()
	}
}

// redial connects to the peer again, with backoff, until it succeeds, the
// tunnel ends, or the peer refuses this side or shows another key (which
// ends the tunnel: exit 3, as at startup).
func (tc *tunnelClient) redial() *tunnelLink {
	delay := reconnectMin
	for {
		select {
		case <-time.After(jitter(delay)):
		case <-tc.ctx.Done():
			return nil
		}
		l, err := meetPeer(tc.ctx, tc.h, tc.addr, tc.verify, tc.end)
		switch {
		case tc.ctx.Err() != nil:
			if l != nil {
				l.end(context.Cause(tc.ctx))
			}
			return nil
		case err == nil && l == nil:
			tc.fail(fmt.Errorf("the peer at %s no longer multiplexes tunnels (%s); restart connect to tunnel over a connection per local connection", tc.addr, tunnel.Protocol))
			return nil
		case err == nil:
			tc.notef("reconnected to %s", tc.addr)
			return l
		case errorCode(err) == exitRejected:
			tc.fail(err)
			return nil
		}
		delay = min(2*delay, reconnectMax)
		tc.notef("reconnecting to %s failed (%s); trying again in about %v", tc.addr, strings.TrimSuffix(describe(err), "."), delay.Round(time.Second))
	}
}

// connectTunnel meets the peer at addr once and checks its key, and only
// then listens on the -from addresses, as ssh -L authenticates before it
// binds: a peer that cannot be reached, refuses this side or has the
// wrong key ends the tunnel before it starts, with the usual exit codes.
// That connection then carries every local connection of every -from as
// a stream of its own, and the streams the peer opens for this side's -to
// targets (reverse forwarding, ssh -R), until a signal. When it is lost,
// the local connections in progress are reset and connect reconnects
// (tunnelClient), unless noReconnect.
//
// A peer that does not multiplex (a securepeer listen -to from before
// tunnel.Protocol, a listen -exec, another implementation of the protocol,
// or -legacy) gets what it got before: a secure connection of its own for
// each local connection (perConnection). Refusing such a peer would gain
// nothing for -from: that tunnel is as secure, only slower, and it is the
// only way to reach a listen -exec or an old listen -to, so one side can
// be upgraded at a time. A notice says once that the peer does not
// multiplex, since the slowness would otherwise be a mystery. -to needs a
// multiplexing peer, which alone can open streams towards this side.
func connectTunnel(ctx context.Context, e *env, h handshaker, addr string, from, to []forwardSpec, noReconnect bool, verify verifyFunc, log *slog.Logger) error {
	tctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	end := newTunnelEnd(to, log, ratelog.New(e.notef))
	first, err := meetPeer(tctx, h, addr, verify, end)
	if err != nil {
		return err
	}
	if first == nil && len(to) > 0 {
		return fmt.Errorf("the peer at %s does not multiplex tunnels (%s), and -to on connect needs it: only a multiplexing listen can open streams to this side; run a securepeer listen of this version there", addr, tunnel.Protocol)
	}
	if first == nil {
		if f, ok := namedForward(from); ok {
			// A plain connection cannot say which forward it is for, so
			// it would reach the peer's unnamed -to, whatever that is.
			return fmt.Errorf("the peer at %s does not multiplex tunnels (%s was not negotiated), so it cannot be told which forward a connection is for: -from %s would reach whatever its unnamed -to is; run a securepeer listen of this version there, or use an unnamed -from", addr, tunnel.Protocol, f)
		}
	}
	listeners, err := listenAll(from)
	if err == nil {
		err = announceAddrs(log, "local connections", listeners)
	}
	if err != nil {
		closeAll(listeners)
		if first != nil {
			first.end(errors.New("connect could not listen"))
		}
		return err
	}
	if first == nil {
		if offersTunnel(h) {
			e.notef("the peer at %s does not multiplex tunnels (a securepeer listen -to older than %s, or a listen -exec), so each local connection gets a connection and a handshake of its own, to its unnamed -to", addr, tunnel.Protocol)
		} else {
			e.notef("-legacy does not multiplex tunnels, so each local connection gets a connection and a handshake of its own with the peer at %s", addr)
		}
		return perConnection(ctx, e, h, addr, from, listeners, verify, log)
	}

	tc := &tunnelClient{
		ctx: tctx, fail: fail, h: h, addr: addr, verify: verify,
		end:       end,
		notef:     e.notef,
		reconnect: !noReconnect,
		changed:   make(chan struct{}),
	}
	var wg sync.WaitGroup
	wg.Go(func() { tc.run(first) })
	for i, l := range listeners {
		wg.Go(func() { localForward(tctx, tctx, l, from[i], tc.session, e.notef, log) })
	}
	<-tctx.Done()
	wg.Wait()
	if ctx.Err() != nil {
		return interruption(ctx)
	}
	return context.Cause(tctx)
}

// perConnection carries each local connection of the listeners over a
// secure connection of its own to the peer at addr: the tunnel for a peer
// that does not multiplex. A failure ends only the local connection
// concerned, with a notice, except a peer key that verify refuses or a
// peer that refuses this side: that ends the tunnel (exit 3). A signal
// cuts the connections in progress, aborting their streams.
func perConnection(ctx context.Context, e *env, h handshaker, addr string, from []forwardSpec, listeners []net.Listener, verify verifyFunc, log *slog.Logger) error {
	if nh, ok := h.(*nativeHandshaker); ok {
		// Offer nothing: these connections are plain streams, whatever
		// the peer might offer by now.
		plain := *nh
		plain.protos = nil
		h = &plain
	}
	tctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	var wg sync.WaitGroup
	for _, l := range listeners {
		wg.Go(func() {
			var conns sync.WaitGroup
			defer conns.Wait()
			stop := context.AfterFunc(tctx, func() { l.Close() })
			defer stop()
			for {
				c, err := acceptRetrying(tctx, l, e.notef)
				if err != nil {
					return
				}
				conns.Go(func() {
					log.Info("local connection", "from", connLabel(c))
					s, err := dial(tctx, h, addr, verify, log)
					if err != nil {
						netutil.ResetClose(c)
						switch {
						case errorCode(err) == exitRejected:
							fail(err)
						case tctx.Err() == nil:
							e.notef("%v; closed the local connection from %s", err, connLabel(c))
						}
						return
					}
					if err := proxy(tctx, s, c); err != nil && tctx.Err() == nil {
						e.notef("tunnel for %s: %v", connLabel(c), err)
					}
				})
			}
		})
	}
	<-tctx.Done()
	wg.Wait()
	if ctx.Err() != nil {
		return interruption(ctx)
	}
	return context.Cause(tctx)
}

// namedForward returns the first named forward of fs, if any.
func namedForward(fs []forwardSpec) (forwardSpec, bool) {
	for _, f := range fs {
		if f.name != "" {
			return f, true
		}
	}
	return forwardSpec{}, false
}

// offersTunnel reports whether h offers tunnel.Protocol.
func offersTunnel(h handshaker) bool {
	nh, ok := h.(*nativeHandshaker)
	return ok && slices.Contains(nh.protos, tunnel.Protocol)
}

// targetMap is the -to flags by name.
func targetMap(to []forwardSpec) map[string]string {
	m := make(map[string]string, len(to))
	for _, f := range to {
		m[f.name] = f.addr
	}
	return m
}

// listenAll listens on the address of each -from, in order.
func listenAll(from []forwardSpec) ([]net.Listener, error) {
	var ls []net.Listener
	for _, f := range from {
		l, err := listenForward(f.addr)
		if err != nil {
			closeAll(ls)
			return nil, err
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// A forward's address is HOST:PORT, or unix:PATH for a Unix socket, as
// ssh -L and -R take a path.
const unixPrefix = "unix:"

// forwardNet splits a forward's address into a network and an address
// for package net.
func forwardNet(addr string) (network, address string) {
	if path, ok := strings.CutPrefix(addr, unixPrefix); ok {
		return "unix", path
	}
	return "tcp", addr
}

// listenForward listens on a -from address. A Unix socket is made
// accessible to this user only (listenUnix), and removed when the
// listener is closed; one that exists already is an error, as ssh's is
// without StreamLocalBindUnlink, since another program may be using it.
func listenForward(addr string) (net.Listener, error) {
	network, address := forwardNet(addr)
	if network == "tcp" {
		l, err := net.Listen("tcp", address)
		if err != nil {
			return nil, listenError(addr, err)
		}
		return l, nil
	}
	l, err := listenUnix(address)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("cannot listen on %s: %s exists; if no program uses it any more (a securepeer that was killed), remove it", addr, address)
	case err != nil:
		return nil, fmt.Errorf("cannot listen on %s: %v", addr, err)
	}
	return l, nil
}

// dialTarget connects to a -to target.
func dialTarget(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: dialTimeout}
	network, address := forwardNet(addr)
	return d.DialContext(ctx, network, address)
}

// connLabel names a local connection in messages: its address, or the
// Unix socket it came in on (whose peers have no address).
func connLabel(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		return a.String()
	}
	return unixPrefix + c.LocalAddr().String()
}

func closeAll(ls []net.Listener) {
	for _, l := range ls {
		l.Close()
	}
}

// tunnelPeers are listen's tunnel connections, and the one peer its -from
// connections go to: the first that connected, by its key, for as long as
// a connection with that key is up (over its newest one: a peer that
// reconnects, say after a restart, is the same peer). A peer with another
// key never takes them over while that one stays; when it leaves, they go
// to the peer connected longest, and a notice says so. Binding to a key
// keeps an admitted peer from taking traffic meant for another, which
// "whoever connected last" allowed.
type tunnelPeers struct {
	notef func(format string, args ...any) // nil: listen has no -from, nothing to say

	mu    sync.Mutex
	list  []*tunnelConn // in the order they connected
	bound string        // the key that -from connections go to; "" for none
}

// A tunnelConn is one of listen's tunnel connections: the secure stream,
// which says who the peer is, and the session over it.
type tunnelConn struct {
	s *stream
	m *tunnel.Session
}

func (c *tunnelConn) key() string { return c.s.peer.String() }

func (c *tunnelConn) fingerprint() string { return c.s.peer.Fingerprint() }

func (p *tunnelPeers) add(c *tunnelConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.list = append(p.list, c)
	switch key := c.key(); {
	case p.bound == "":
		p.bound = key
		p.say("-from connections now go to %s, which connected from %s, while it stays connected", c.fingerprint(), c.s.remoteAddr)
	case key != p.bound:
		p.say("%s connected a tunnel from %s; -from connections still go to %s, which connected first", c.fingerprint(), c.s.remoteAddr, p.boundFingerprint())
	}
}

func (p *tunnelPeers) remove(c *tunnelConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.list = slices.DeleteFunc(p.list, func(x *tunnelConn) bool { return x == c })
	if c.key() != p.bound || p.boundFingerprint() != "" {
		return // another peer's, or the bound peer has another connection
	}
	if len(p.list) == 0 {
		p.bound = ""
		p.say("%s, which -from connections went to, has left; they are reset until a tunnel peer connects", c.fingerprint())
		return
	}
	next := p.list[0]
	p.bound = next.key()
	p.say("%s, which -from connections went to, has left; they now go to %s, which connected from %s", c.fingerprint(), next.fingerprint(), next.s.remoteAddr)
}

// boundFingerprint is the bound key's fingerprint, or "" if none of its
// connections is left. p.mu is held.
func (p *tunnelPeers) boundFingerprint() string {
	for _, c := range p.list {
		if c.key() == p.bound {
			return c.fingerprint()
		}
	}
	return ""
}

// say gives a notice about which peer -from connections go to, if listen
// has any. p.mu is held.
func (p *tunnelPeers) say(format string, args ...any) {
	if p.notef != nil {
		p.notef(format, args...)
	}
}

// carrier is the tunnel connection that a -from connection takes: the
// bound peer's newest that is still up.
func (p *tunnelPeers) carrier(ctx context.Context) (*tunnel.Session, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.list) - 1; i >= 0; i-- {
		if c := p.list[i]; c.key() == p.bound && !c.m.Closed() {
			return c.m, nil
		}
	}
	return nil, errors.New("no peer is connected with a tunnel to carry it (a connect -to peer)")
}

// newTunnelSession starts a tunnel session over s, as yamux's client (the
// connect side) or server.
func newTunnelSession(s *stream, client bool, log *slog.Logger) *tunnel.Session {
	return tunnel.NewSession(streamConn{s}, tunnel.Config{
		Client:      client,
		Addr:        s.remoteAddr,
		Peer:        s.peer.Fingerprint(),
		Log:         log,
		Describe:    func(err error) error { return streamError(s, err) },
		KeepAlive:   testOnlyKeepAlive,
		PingTimeout: testOnlyKeepAlive,
	})
}

// meetPeer connects to the peer at addr and checks its key: the tunnel's
// check before it binds. If the peer speaks tunnel.Protocol, it returns the
// connection as a tunnel session, its peer's streams served by end from
// the start, after a keepalive ping has come back, so that a peer that
// refuses this side's key (which the initiator learns only from its first
// read), or the connection (a listen at its limit of sessions, which says
// why on a stream and answers no ping), is known.
//
// Otherwise it closes the stream cleanly, and each local connection will
// make its own. Kept idle until one comes, a plain stream may meanwhile
// have been closed by the peer's side (listen -to dials its service at
// once, and services close idle connections), by a NAT or by a restart,
// and the first local connection would then fail for no fault of its own.
// Closing costs one handshake, and on a listen -to or -exec peer one empty
// session. (A tunnel session has keepalives, and listen -to dials its
// service only for a stream.)
func meetPeer(ctx context.Context, h handshaker, addr string, verify verifyFunc, end *tunnelEnd) (*tunnelLink, error) {
	log := end.log
	s, err := dial(ctx, h, addr, verify, log)
	if err != nil {
		return nil, err
	}
	if s.negotiated == tunnel.Protocol {
		m := newTunnelSession(s, true, log)
		served := make(chan int, 1)
		go func() { served <- end.server.Serve(ctx, ctx, m) }()
		l := &tunnelLink{m: m, served: served}
		if err := m.Ping(); err != nil {
			why := fmt.Errorf("the peer at %s did not answer: %v", addr, err)
			if m.Closed() {
				why = m.Err() // a refusal of this side's key, or of the connection
			}
			l.end(why)
			if ctx.Err() != nil {
				return nil, interruption(ctx)
			}
			return nil, why
		}
		log.Info("peer met; the tunnel opens", "addr", addr, "mode", tunnel.Protocol)
		return l, nil
	}
	defer s.conn.Close()
	// The initiator finishes its handshake before the responder has
	// checked its key, and a secure-peer 0.2 peer refuses by closing: a
	// refusal shows only in the first read. So send the end of stream and
	// read the peer's first answer, normally its own end of stream, for
	// at most closeTimeout.
	if err := s.closeWrite(); err != nil && !connectionGone(err) {
		return nil, streamError(s, err)
	}
	s.conn.SetReadDeadline(time.Now().Add(closeTimeout))
	_, err = s.conn.Read(make([]byte, 1))
	if errors.Is(err, securepeer.ErrRejected) || errors.Is(err, legacy.ErrRejected) {
		return nil, streamError(s, err)
	}
	if ctx.Err() != nil {
		return nil, interruption(ctx)
	}
	log.Info("peer met; the tunnel opens", "addr", addr, "first_read", fmt.Sprint(err))
	return nil, nil
}

// A tunnelLink is a tunnel connection whose peer's streams are served from
// its start: served gives, once the session has ended, the number of them
// its end cut.
type tunnelLink struct {
	m      *tunnel.Session
	served <-chan int
}

// end cuts the connection, for why, and waits until its streams have.
func (l *tunnelLink) end(why error) {
	l.m.Fail(why)
	<-l.served
}

// targetFailure is the REASON of a "connect failed" status: what dialing
// the -to target said, without the address, as ssh says it.
func targetFailure(err error) string {
	var errno syscall.Errno
	var ne net.Error
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr):
		return "cannot resolve the host name"
	case errors.As(err, &errno):
		return errno.Error()
	case errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	}
	return "cannot connect"
}

func streamCount(n int) string {
	if n == 1 {
		return "1 stream"
	}
	return fmt.Sprintf("%d streams", n)
}

// testOnlyKeepAlive, if set, replaces tunnelKeepAlive and
// tunnelPingTimeout, so tests notice a dead peer quickly.
var testOnlyKeepAlive time.Duration

// testOnlyNoMux makes listen and connect offer no application protocol, as
// securepeer before tunnel.Protocol did: tests and benchmarks of the
// fallback to a connection per local connection.
var testOnlyNoMux bool

// streamProtocol is a plain secure stream, as when nothing is negotiated.
// Every side that offers an application protocol offers it too, so that a
// connect and a listen that want different things (say a stdio connect
// and a listen -to) still meet on a plain stream, as they did before
// either offered anything, instead of failing the handshake with
// securepeer.ErrNoCommonProtocol.
const streamProtocol = "securepeer-stream/1"

// tunnelProtos is what the sides of a native tunnel offer in NextProtos.
func tunnelProtos() []string {
	if testOnlyNoMux {
		return nil
	}
	return []string{tunnel.Protocol, streamProtocol}
}
