package main

// TCP forwarding: connect -from's local connections and listen -to's
// target, over multiplexed tunnels (tunnel.go) or a connection each.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/legacy"
)

// forwardTo connects to the local service at addr and proxies s to it.
func forwardTo(ctx context.Context, s *stream, addr string, log *slog.Logger) error {
	d := net.Dialer{Timeout: dialTimeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		s.abort()
		return fmt.Errorf("-to: %v; the connection from %s was closed", dialError(addr, err), s.remoteAddr)
	}
	log.Info("forwarding", "peer", s.peer.Fingerprint(), "to", addr)
	if err := proxy(ctx, s, c); err != nil {
		return fmt.Errorf("forwarding %s to %s: %v", s.remoteAddr, addr, err)
	}
	log.Info("connection closed", "peer", s.peer.Fingerprint(), "addr", s.remoteAddr)
	return nil
}

// connectFrom meets the peer at addr once and checks its key, and only then
// listens on from, as ssh -L authenticates before it binds: a peer that
// cannot be reached, refuses this side or has the wrong key ends the tunnel
// before it starts, with the usual exit codes. Then it carries each local
// connection to the peer. A failure then ends only the local connection
// concerned, with a notice, except a peer key that verify refuses (a
// changed key): that ends the tunnel (exit 3). A signal cuts the
// connections in progress, aborting their streams.
//
// With a peer that speaks tunnelProtocol (listen -to of this version), the
// connection that met the peer carries every local connection as a stream
// of its own (tunnel.go). If that connection is lost, the local
// connections in progress are reset, and the next local connection
// connects again.
//
// A peer that negotiates nothing (a securepeer listen -to from before
// tunnelProtocol, a listen -exec, another implementation of the protocol,
// or -legacy) gets what it got before: a secure connection of its own for
// each local connection. Refusing such a peer would gain nothing: the
// per-connection tunnel is as secure, only slower (a handshake per local
// connection), and it is the only way to reach a listen -exec or an old
// listen -to, so one side can be upgraded at a time. A notice says once
// that the peer does not multiplex, since the slowness would otherwise be
// a mystery.
func connectFrom(ctx context.Context, e *env, h handshaker, addr, from string, verify verifyFunc, log *slog.Logger) error {
	first, err := meetPeer(ctx, h, addr, verify, log)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	tc := &tunnelClient{ctx: ctx, h: h, addr: addr, log: log, notef: e.notef, live: map[*muxSession]bool{}}
	defer tc.closeAll() // after cancel, so that it makes no notice
	defer cancel()
	if first != nil {
		tc.adopt(first)
	} else if offersTunnel(h) {
		e.notef("the peer at %s does not multiplex tunnels (a securepeer listen -to older than %s, or a listen -exec), so each local connection gets a connection and a handshake of its own", addr, tunnelProtocol)
	}
	l, err := net.Listen("tcp", from)
	if err != nil {
		return listenError(from, err)
	}
	if err := announceAddr(log, "local connections", l.Addr()); err != nil {
		l.Close()
		return err
	}
	fatal := make(chan error, 1) // the first refused key, which ends the tunnel
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()

	var wg sync.WaitGroup
	for {
		// Plain TCP from this machine: no handshake to admit, so accepting
		// needs only the retry that keeps EMFILE from ending the tunnel.
		c, err := acceptRetrying(ctx, l, e.notef)
		if err != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			log.Info("local connection", "from", c.RemoteAddr().String())
			var keyRefused atomic.Bool
			t, s, err := tc.open(func(ctx context.Context, key peerKey) error {
				err := verify(ctx, key)
				keyRefused.Store(err != nil)
				return err
			})
			if err != nil {
				resetClose(c)
				switch {
				case keyRefused.Load():
					select {
					case fatal <- err:
					default:
					}
					cancel()
				case ctx.Err() == nil:
					e.notef("%v; closed the local connection from %s", err, c.RemoteAddr())
				}
				return
			}
			if s != nil { // a peer that does not multiplex
				if err := proxy(ctx, s, c); err != nil && ctx.Err() == nil {
					e.notef("tunnel for %s: %v", c.RemoteAddr(), err)
				}
				return
			}
			err = relayTunnel(ctx, t, c, true)
			var refused *refusedError
			switch {
			case err == nil || ctx.Err() != nil:
			case errors.As(err, &refused):
				e.notef("open failed for the local connection from %s: %v; check the service behind the peer's -to", c.RemoteAddr(), err)
			case !t.m.closed(): // a lost connection has a notice of its own
				e.notef("tunnel for %s: %v", c.RemoteAddr(), err)
			}
		}()
	}
	l.Close()
	wg.Wait()
	select {
	case err := <-fatal:
		return err
	default:
	}
	return interruption(ctx)
}

// offersTunnel reports whether h offers tunnelProtocol.
func offersTunnel(h handshaker) bool {
	nh, ok := h.(*nativeHandshaker)
	return ok && len(nh.protos) > 0
}

// A tunnelClient gives connect -from's local connections their streams:
// yamux streams of the current tunnel connection, which it makes anew once
// the last is lost, or, with a peer that does not multiplex, secure
// connections of their own.
type tunnelClient struct {
	ctx   context.Context
	h     handshaker
	addr  string
	log   *slog.Logger
	notef func(string, ...any)

	mu   sync.Mutex // held while connecting, so local connections wait for one handshake
	cur  *muxSession
	live map[*muxSession]bool // sessions not yet ended, cur and older ones
}

// open returns a tunnel stream for a new local connection, or s, a secure
// connection of its own, if the peer does not multiplex. verify checks the
// peer's key if open connects.
func (tc *tunnelClient) open(verify verifyFunc) (t *tunnelStream, s *stream, err error) {
	for range 2 {
		var m *muxSession
		m, s, err = tc.session(verify)
		if err != nil || s != nil {
			return nil, s, err
		}
		st, oerr := m.sess.OpenStream()
		if oerr == nil {
			return &tunnelStream{st: st, m: m}, nil, nil
		}
		// The session has ended, or the peer is stopping (a yamux go
		// away): connect again, once.
		tc.mu.Lock()
		if tc.cur == m {
			tc.cur = nil
		}
		tc.mu.Unlock()
		if !m.closed() {
			err = fmt.Errorf("the peer at %s accepts no more streams on this connection", tc.addr)
		} else {
			err = m.err()
		}
	}
	return nil, nil, err
}

// session returns the current tunnel session, connecting anew if there is
// none; or, if the peer does not multiplex, a secure connection.
func (tc *tunnelClient) session(verify verifyFunc) (*muxSession, *stream, error) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.cur != nil && !tc.cur.closed() {
		return tc.cur, nil, nil
	}
	s, err := dial(tc.ctx, tc.h, tc.addr, verify, tc.log)
	if err != nil {
		return nil, nil, err
	}
	if s.negotiated != tunnelProtocol {
		return nil, s, nil
	}
	m := newMuxSession(s, true, tc.log)
	tc.adoptLocked(m)
	return m, nil, nil
}

func (tc *tunnelClient) adopt(m *muxSession) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.adoptLocked(m)
}

// adoptLocked makes m the current session, and says when it ends.
func (tc *tunnelClient) adoptLocked(m *muxSession) {
	tc.cur = m
	tc.live[m] = true
	go func() {
		<-m.sess.CloseChan()
		tc.mu.Lock()
		delete(tc.live, m)
		if tc.cur == m {
			tc.cur = nil
		}
		tc.mu.Unlock()
		if tc.ctx.Err() == nil {
			tc.notef("the tunnel connection to %s ended: %v; the local connections in progress were reset, and the next one connects again", tc.addr, m.err())
		}
	}()
}

// closeAll cuts the sessions left, when the tunnel ends.
func (tc *tunnelClient) closeAll() {
	tc.mu.Lock()
	live := make([]*muxSession, 0, len(tc.live))
	for m := range tc.live {
		live = append(live, m)
	}
	tc.mu.Unlock()
	for _, m := range live {
		m.fail(errors.New("the tunnel was stopped"))
	}
}

// meetPeer connects to the peer at addr and checks its key: the tunnel's
// check before it binds. If the peer speaks tunnelProtocol, it returns the
// connection as a tunnel session, after a keepalive ping has come back, so
// that a peer that refuses this side's key (which the initiator learns
// only from its first read) is known.
//
// Otherwise it closes the stream cleanly, and each local connection will
// make its own. Kept idle until one comes, a plain stream may meanwhile
// have been closed by the peer's side (listen -to dials its service at
// once, and services close idle connections), by a NAT or by a restart,
// and the first local connection would then fail for no fault of its own.
// Closing costs one handshake, and on a listen -to or -exec peer one empty
// session. (A tunnel session has keepalives, and listen -to dials its
// service only for a stream.)
func meetPeer(ctx context.Context, h handshaker, addr string, verify verifyFunc, log *slog.Logger) (*muxSession, error) {
	s, err := dial(ctx, h, addr, verify, log)
	if err != nil {
		return nil, err
	}
	if s.negotiated == tunnelProtocol {
		m := newMuxSession(s, true, log)
		if _, err := m.sess.Ping(); err != nil {
			why := fmt.Errorf("the peer at %s did not answer: %v", addr, err)
			if m.closed() {
				why = m.err() // a refusal of this side's key, for one
			}
			m.fail(why)
			if ctx.Err() != nil {
				return nil, interruption(ctx)
			}
			return nil, why
		}
		log.Info("peer met; the tunnel opens", "addr", addr, "mode", tunnelProtocol)
		return m, nil
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

// serveTunnel serves a tunnel session over s for listen -to: each stream
// the peer opens is connected to to. When ctx ends (a first signal) it
// tells the peer to open no more streams and closes the session cleanly
// once the streams in progress have ended; when cutCtx ends, it cuts them.
func serveTunnel(ctx, cutCtx context.Context, s *stream, to string, log *slog.Logger, notef func(string, ...any)) {
	m := newMuxSession(s, false, log)
	var mu sync.Mutex
	active, stopping := 0, false
	idle := make(chan struct{}, 1) // a stream ended while stopping
	var handlers sync.WaitGroup

	stopped := context.AfterFunc(ctx, func() {
		m.sess.GoAway()
		mu.Lock()
		stopping = true
		n := active
		mu.Unlock()
		if n == 0 {
			m.closeClean()
		}
	})
	defer stopped()
	cut := context.AfterFunc(cutCtx, func() { m.fail(context.Cause(cutCtx)) })
	defer cut()
	go func() {
		for range idle {
			mu.Lock()
			done := stopping && active == 0
			mu.Unlock()
			if done {
				m.closeClean()
			}
		}
	}()
	defer close(idle)

	cutStreams := 0 // streams the session's end cut
	for {
		st, err := m.sess.AcceptStream()
		if err != nil {
			break // the session has ended
		}
		mu.Lock()
		if stopping {
			mu.Unlock()
			st.Close()
			continue
		}
		active++
		mu.Unlock()
		handlers.Go(func() {
			defer func() {
				mu.Lock()
				active--
				mu.Unlock()
				select {
				case idle <- struct{}{}:
				default:
				}
			}()
			err := forwardStream(cutCtx, m, st, to, log)
			switch {
			case err == nil || cutCtx.Err() != nil:
			case m.closed(): // said once for the session, below
				mu.Lock()
				cutStreams++
				mu.Unlock()
			default:
				notef("%v", err)
			}
		})
	}
	handlers.Wait()
	switch {
	case ctx.Err() != nil || cutCtx.Err() != nil:
	case cutStreams > 0:
		notef("the tunnel connection from %s ended with %s in progress, which were cut: %v", s.remoteAddr, streamCount(cutStreams), m.err())
	default:
		log.Info("tunnel connection ended", "peer", s.peer.Fingerprint(), "addr", s.remoteAddr, "reason", m.err().Error())
	}
}

// forwardStream connects one tunnel stream to the -to target, or refuses
// it with the reason.
func forwardStream(ctx context.Context, m *muxSession, st *yamux.Stream, to string, log *slog.Logger) error {
	t := &tunnelStream{st: st, m: m}
	d := net.Dialer{Timeout: dialTimeout}
	c, err := d.DialContext(ctx, "tcp", to)
	if err != nil {
		reason := targetFailure(err)
		t.writeFrame([]byte("connect failed: " + reason))
		st.Close()
		return fmt.Errorf("-to: cannot connect to %s (%s), so the tunnel stream from %s was refused; is the service running there?", to, reason, m.s.remoteAddr)
	}
	if err := t.writeFrame([]byte("ok")); err != nil {
		resetClose(c)
		st.Close()
		return err
	}
	log.Info("forwarding", "peer", m.s.peer.Fingerprint(), "stream", st.StreamID(), "to", to)
	if err := relayTunnel(ctx, t, c, false); err != nil {
		return fmt.Errorf("forwarding a stream from %s to %s: %v", m.s.remoteAddr, to, err)
	}
	return nil
}

func streamCount(n int) string {
	if n == 1 {
		return "1 stream"
	}
	return fmt.Sprintf("%d streams", n)
}
