package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/legacy"
)

const connectUsage = `Usage: securepeer connect [flags] ADDR

Connects to the securepeer listener at ADDR (HOST:PORT) and joins the stream
to stdin and stdout, like nc: stdin's end is sent as the end of the stream,
so the peer can still answer, and connect exits 0 once the peer's stream
has ended. A signal (Ctrl-C, SIGTERM, SIGHUP) before stdin's end aborts
the stream: the peer is told that data may be missing.

With -from, it instead meets the peer once and checks its key (exiting 1 or
3 if that fails), then listens on a local address and carries each local
TCP connection to the peer (like ssh -L), until Ctrl-C. With a listen -to
of this version, that one connection carries every local connection as a
stream of its own, with keepalives; if it is lost, the local connections
in progress are reset and the next one connects again. A peer that does
not multiplex (an older listen -to, a listen -exec) gets a secure
connection per local connection. A stream the peer refuses (its -to
target is down: "connect failed: connection refused") or that fails ends
only that local connection, with a notice; a changed peer key ends the
tunnel (exit 3).

The peer's key is checked as ssh checks host keys: against -expect if
given, else against known_hosts ($SECUREPEER_HOME/known_hosts, default
~/.securepeer/known_hosts). On first contact a terminal is asked to confirm
the fingerprint; without a terminal, connect refuses unless -accept-new is
given. A key that differs from the recorded one is always refused (exit 3):
remove the line named in the message if the change was intended.

Flags:
    -expect KEY        accept only this peer key: a fingerprint (SHA256:...), a
                       key (ssh-ed25519 AAAA...), or a .pub file; known_hosts is
                       then neither read nor written
    -accept-new        trust and record an unknown peer's key without asking
                       (a changed key is still refused)
    -known-hosts FILE  use FILE instead of the default known_hosts
    -from LOCALADDR    tunnel: listen on LOCALADDR and forward connections
    -i FILE            identity (default $SECUREPEER_HOME/id_ed25519); FILE.pub
                       for a key held by ssh-agent
    -progress          show bytes, rate and elapsed time on stderr (terminal only),
                       with a percentage and the time left when stdin is a file
    -v                 log handshakes (peer, cipher, post-quantum, role, timings)
    -legacy            speak the Node secure-peer 0.2 protocol instead (see below)
    -ciphers LIST      -legacy only: cipher preference list, comma-separated and
                       spelled as the Node side spells them (default
                       AES-256-CBC,RC4; see securepeer help listen)

Legacy mode: -legacy talks to a peer that runs the Node module secure-peer
0.2, to migrate it. The protocol is insecure (identities in clear, replayable
handshake, forceable cipher choice, no forward secrecy), and a warning says
so. -i then takes an rsa-json key file ({"private": PEM, "public": PEM};
default $SECUREPEER_HOME/id_legacy_rsa.json, made by securepeer keygen
-legacy). RSA keys are never written to known_hosts, so -accept-new and
-known-hosts do not apply: pin the peer with -expect, which then takes its
legacy fingerprint (SHA256:..., as securepeer id -legacy prints it), a PEM
public key file, or its rsa-json file. Without -expect, connect shows the
peer's fingerprint and refuses (exit 3). A Node peer stops sending once it
has this side's end of stream (what it sends in direct reply still arrives),
so to receive more than that, keep stdin open until it is in.

Examples:
    # send a file; the listener writes it to its stdout
    securepeer connect example.org:5000 < backup.tar
    # talk to the upper-casing echo of securepeer help listen
    echo 'beep boop' | securepeer connect -expect SHA256:... 127.0.0.1:5000
    # reach a web server exposed with listen -to, at http://127.0.0.1:8080/
    securepeer connect -from 127.0.0.1:8080 example.org:5000
    # talk to a Node secure-peer 0.2 server whose public key is in server.pem
    echo 'beep boop' | securepeer connect -legacy -i keys.json -expect server.pem example.org:5000
`

// connectHandshakeTimeout bounds a client handshake when nobody is asked a
// question; with a possible prompt, the server's limit applies instead.
const connectHandshakeTimeout = 30 * time.Second

func runConnect(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("connect", flag.ContinueOnError)
	var cf commonFlags
	cf.register(fs)
	var lf legacyFlags
	lf.register(fs)
	expect := fs.String("expect", "", "")
	acceptNew := fs.Bool("accept-new", false, "")
	knownHosts := fs.String("known-hosts", "", "")
	from := fs.String("from", "", "")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(rest) == 0:
		return usageErrorf("connect: missing the peer's address, as in securepeer connect example.org:5000")
	case len(rest) == 2 && isDigits(rest[1]) && !strings.Contains(rest[0], ":"):
		// nc's habit: HOST PORT.
		return usageErrorf("connect: the address is one argument, HOST:PORT; did you mean %s?", net.JoinHostPort(rest[0], rest[1]))
	case len(rest) > 1:
		return usageErrorf("connect: unexpected arguments %q after the address; data to send goes to stdin, as in echo hi | securepeer connect HOST:PORT", rest[1:])
	}
	addr := rest[0]
	if err := checkAddr("peer address", addr, true); err != nil {
		return err
	}
	if *from != "" {
		if err := checkAddr("-from address", *from, false); err != nil {
			return err
		}
	}
	log := cf.logger(e)
	if lf.enabled {
		if *acceptNew || *knownHosts != "" {
			return usageErrorf("connect: -legacy does not use known_hosts, so -accept-new and -known-hosts do not apply; pin the peer with -expect")
		}
		pin := &legacyPinPolicy{log: log, addr: addr}
		if *expect != "" {
			if pin.expect, err = parseLegacyExpect(*expect); err != nil {
				return err
			}
		}
		h, err := legacyStart(e, "connect", cf.identity, &lf, connectHandshakeTimeout)
		if err != nil {
			return err
		}
		return connectWith(ctx, e, &cf, h, addr, *from, pin.verify, log)
	}
	if _, err := lf.check("connect"); err != nil {
		return err
	}
	policy := &hostPolicy{e: e, addr: addr, acceptNew: *acceptNew, log: log}
	if *expect != "" {
		if policy.expect, err = parseExpect(*expect); err != nil {
			return err
		}
	}
	if policy.expect == "" { // a pin is all -expect checks: known_hosts is not read
		if policy.file, err = e.knownHostsPath(*knownHosts); err != nil {
			return err
		}
	}

	id, err := e.loadIdentity(cf.identity)
	if err != nil {
		return err
	}
	policy.self = id.PublicKey()
	timeout := connectHandshakeTimeout
	if policy.expect == "" && !policy.acceptNew && haveTerminal() {
		timeout = listenHandshakeTimeout
	}
	h := &nativeHandshaker{id: id, timeout: timeout}
	if *from != "" {
		h.protos = tunnelProtos()
	}
	return connectWith(ctx, e, &cf, h, addr, *from, policy.verify, log)
}

// connectWith connects to the peer at addr with h, and joins it to stdin and
// stdout, or with from set, tunnels local connections to it.
func connectWith(ctx context.Context, e *env, cf *commonFlags, h handshaker, addr, from string, verify verifyFunc, log *slog.Logger) error {
	if from != "" {
		return connectFrom(ctx, e, h, addr, from, verify, log)
	}
	s, err := dial(ctx, h, addr, verify, log)
	if err != nil {
		return err
	}
	m := cf.meter(e)
	defer m.finish()
	return joinStdio(ctx, s, e.stdin, e.stdinIsTerminal(), e.stdout, m)
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
