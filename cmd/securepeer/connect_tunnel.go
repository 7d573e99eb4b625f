package main

// connect's tunnels: it meets the peer once, then carries its -from
// connections over one tunnel connection and serves the peer's streams to
// its -to targets, reconnecting when the connection is lost; or, with a
// peer that does not multiplex, a secure connection per local connection.

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
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/netutil"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/ratelog"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/tunnel"
	"github.com/securepeer/securepeer/internal/pkgerr"
	"github.com/securepeer/securepeer/legacy"
)

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
	d         peerDialer
	end       *tunnelEnd
	notef     func(string, ...any) // what the tunnel itself does (end.notef is the peer's streams')
	reconnect bool
	// direct says that the connection to the peer has gone direct (a
	// p2p peer): follow moves the tunnel to it. nil: never.
	direct <-chan struct{}

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
			return nil, pkgerr.Plainf("no tunnel connection to %s for %v (reconnecting)", tc.d, tunnelWait)
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
		if next := tc.follow(l); next != nil {
			prev := l
			l = next
			tc.set(l.m) // before prev stops, so that no local connection is sent to it
			go prev.retire()
			continue
		}
		cut := <-l.served
		<-m.Done()
		tc.set(nil)
		if tc.ctx.Err() != nil {
			return
		}
		why := pkgerr.Plainf("the tunnel connection to %s ended: %v", tc.d, m.Err()).Error()
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

// follow waits until the tunnel connection l ends, and returns nil; or,
// for a tunnel through a relay, until the connection to the peer has gone
// direct and a new tunnel connection runs over it, and returns that one.
// A stream does not move between connections, so the tunnel moves
// instead: its new local connections go direct, and those in progress
// finish on the relay (retire).
func (tc *tunnelClient) follow(l *tunnelLink) *tunnelLink {
	for {
		select {
		case <-l.m.Done():
			return nil
		case <-tc.direct:
		}
		if !l.s.relayed {
			continue
		}
		next, err := meetPeer(tc.ctx, tc.d, tc.end)
		switch {
		case err != nil || next == nil:
			if tc.ctx.Err() == nil && err != nil {
				tc.notef("the tunnel stays on the relay: a tunnel connection over the direct connection to %s failed (%s)", tc.d, strings.TrimSuffix(describe(err), "."))
			}
			if next != nil {
				next.end(errors.New("not needed"))
			}
		case next.s.relayed:
			// The direct connection went away meanwhile.
			next.retire()
		default:
			tc.notef("the tunnel to %s now runs over the direct connection; the local connections in progress finish on the relay", tc.d)
			return next
		}
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
		l, err := meetPeer(tc.ctx, tc.d, tc.end)
		switch {
		case tc.ctx.Err() != nil:
			if l != nil {
				l.end(context.Cause(tc.ctx))
			}
			return nil
		case err == nil && l == nil:
			tc.fail(pkgerr.Plainf("the peer at %s no longer multiplexes tunnels (%s); restart connect to tunnel over a connection per local connection", tc.d, tunnel.Protocol))
			return nil
		case err == nil:
			tc.notef("reconnected to %s", tc.d)
			return l
		case errorCode(err) == exitRejected:
			tc.fail(err)
			return nil
		}
		delay = min(2*delay, reconnectMax)
		tc.notef("reconnecting to %s failed (%s); trying again in about %v", tc.d, strings.TrimSuffix(describe(err), "."), delay.Round(time.Second))
	}
}

// connectTunnel meets the peer d reaches once and checks its key, and only
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
func connectTunnel(ctx context.Context, e *env, d peerDialer, from, to []forwardSpec, noReconnect bool, log *slog.Logger) error {
	tctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	end := newTunnelEnd(to, log, ratelog.New(e.notef))
	first, err := meetPeer(tctx, d, end)
	if err != nil {
		return err
	}
	if first == nil && len(to) > 0 {
		return pkgerr.Plainf("the peer at %s does not multiplex tunnels (%s), and -to on connect needs it: only a multiplexing listen can open streams to this side; run a securepeer listen of this version there", d, tunnel.Protocol)
	}
	if first == nil {
		if f, ok := namedForward(from); ok {
			// A plain connection cannot say which forward it is for, so
			// it would reach the peer's unnamed -to, whatever that is.
			return pkgerr.Plainf("the peer at %s does not multiplex tunnels (%s was not negotiated), so it cannot be told which forward a connection is for: -from %s would reach whatever its unnamed -to is; run a securepeer listen of this version there, or use an unnamed -from", d, tunnel.Protocol, f)
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
		if d.offersTunnel() {
			e.notef("the peer at %s does not multiplex tunnels (a securepeer listen -to older than %s, or a listen -exec), so each local connection gets a connection and a handshake of its own, to its unnamed -to", d, tunnel.Protocol)
		} else {
			e.notef("-legacy does not multiplex tunnels, so each local connection gets a connection and a handshake of its own with the peer at %s", d)
		}
		return perConnection(ctx, e, d.plain(), from, listeners, log)
	}

	tc := &tunnelClient{
		ctx: tctx, fail: fail, d: d,
		end:       end,
		notef:     e.notef,
		reconnect: !noReconnect,
		changed:   make(chan struct{}),
	}
	if dn, ok := d.(interface{ directs() <-chan struct{} }); ok {
		tc.direct = dn.directs()
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
// secure connection of its own to the peer, made by d: the tunnel for a
// peer that does not multiplex. (Through the p2p engine, a stream of its
// own on the connection to the peer.) A failure ends only the local connection
// concerned, with a notice, except a peer key that verify refuses or a
// peer that refuses this side: that ends the tunnel (exit 3). A signal
// cuts the connections in progress, aborting their streams.
func perConnection(ctx context.Context, e *env, d peerDialer, from []forwardSpec, listeners []net.Listener, log *slog.Logger) error {
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
					s, err := d.dial(tctx)
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

// offersTunnel reports whether h offers tunnel.Protocol: a native
// handshaker that offers it (not -legacy, nor a plain one).
func offersTunnel(h handshaker) bool {
	nh, ok := h.(*nativeHandshaker)
	return ok && slices.Contains(nh.protos, tunnel.Protocol)
}

// meetPeer connects to the peer with d and checks its key: the tunnel's
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
func meetPeer(ctx context.Context, d peerDialer, end *tunnelEnd) (*tunnelLink, error) {
	log := end.log
	s, err := d.dial(ctx)
	if err != nil {
		return nil, err
	}
	if s.negotiated == tunnel.Protocol {
		m := newTunnelSession(s, true, log)
		served := make(chan int, 1)
		go func() { served <- end.server.Serve(ctx, ctx, m) }()
		l := &tunnelLink{m: m, served: served, s: s}
		if err := m.Ping(); err != nil {
			why := pkgerr.Plainf("the peer at %s did not answer: %v", d, err)
			if m.Closed() {
				why = m.Err() // a refusal of this side's key, or of the connection
			}
			l.end(why)
			if ctx.Err() != nil {
				return nil, interruption(ctx)
			}
			return nil, why
		}
		log.Info("peer met; the tunnel opens", "addr", d.String(), "mode", tunnel.Protocol)
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
	log.Info("peer met; the tunnel opens", "addr", d.String(), "first_read", fmt.Sprint(err))
	return nil, nil
}

// A tunnelLink is a tunnel connection whose peer's streams are served from
// its start: served gives, once the session has ended, the number of them
// its end cut.
type tunnelLink struct {
	m      *tunnel.Session
	served <-chan int
	s      *stream // the secure stream under m
}

// retire stops the connection, which a newer one replaces: the peer opens
// no new streams on it, and it closes cleanly once the streams in
// progress have ended.
func (l *tunnelLink) retire() {
	l.m.Stop()
	<-l.served
}

// end cuts the connection, for why, and waits until its streams have.
func (l *tunnelLink) end(why error) {
	l.m.Fail(why)
	<-l.served
}
