package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/netutil"
	"github.com/securepeer/securepeer/internal/pkgerr"
	"github.com/securepeer/securepeer/internal/wire"
)

// This file is the one place that knows how a secure stream is made. The
// commands (listen, connect, demo) see only a [handshaker], which turns a
// plain net.Conn into a [stream], and a [peerKey]. The native securepeer
// protocol is [nativeHandshaker]; a -legacy mode plugs in a second
// handshaker and nothing else changes.

// A peerKey is a peer's long-term public key, whatever the protocol.
// securepeer.PublicKey is one.
type peerKey interface {
	// String is the key in the form allow files and -expect take.
	String() string
	// Fingerprint is "SHA256:..." as ssh-keygen -lf prints it.
	Fingerprint() string
}

// A verifyFunc decides whether to accept a peer's key during the handshake;
// a non-nil error refuses the peer.
type verifyFunc func(ctx context.Context, key peerKey) error

// A secureConn is the plaintext side of a secure connection: a net.Conn that
// can end its writing with an authenticated end of stream.
type secureConn interface {
	net.Conn
	CloseWrite() error
}

// A handshaker makes secure streams out of plain connections.
type handshaker interface {
	// handshake runs the handshake over raw, as initiator or responder,
	// calling verify with the peer's key. On error it closes raw.
	handshake(ctx context.Context, raw net.Conn, initiator bool, verify verifyFunc) (*stream, error)
	// publicKey is this side's identity.
	publicKey() peerKey
	// firstFlight is admit.Config.FirstFlight for a responder: given the
	// first bytes b an initiator sent, the length of its first flight.
	firstFlight(b []byte) int
	// tcpTimeout bounds an initiator's TCP connect (0: dialTimeout).
	tcpTimeout() time.Duration
}

// A stream is a secure connection after a successful handshake.
//
// The command writes to conn only through write, closeWrite, close and
// abort, so that an abort cannot race a clean end: once abort has begun, no
// end of stream goes out.
type stream struct {
	conn secureConn // the plaintext stream
	raw  net.Conn   // the connection under it, for a cut

	self        peerKey // this side's identity
	peer        peerKey
	remoteAddr  string
	protocol    string
	path        string // how a p2p stream's connection runs; "" over TCP
	relayed     bool   // a p2p stream through a relay
	negotiated  string // the application protocol both sides chose, if any
	cipher      string
	postQuantum bool
	initiator   bool
	took        time.Duration // how long the handshake took
	resumed     bool          // a resumed session (securepeer.ConnectionState.DidResume)

	sendMu  sync.Mutex // held across each Write and CloseWrite of conn
	aborted bool       // guarded by sendMu: write and closeWrite fail
}

// errStreamAborted is what writes return after abort.
var errStreamAborted = errors.New("the stream was aborted")

// Write writes p to the stream; a stream is the io.Writer of copies to the
// peer.
func (s *stream) Write(p []byte) (int, error) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.aborted {
		return 0, errStreamAborted
	}
	return s.conn.Write(p)
}

// closeWrite sends the authenticated end of stream: everything has been
// sent. It fails once abort has begun.
func (s *stream) closeWrite() error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.aborted {
		return errStreamAborted
	}
	return s.conn.CloseWrite()
}

// role names the side of the handshake this stream played.
func (s *stream) role() string {
	if s.initiator {
		return "initiator"
	}
	return "responder"
}

// logHandshake logs what -v promises: the peer, cipher, post-quantum,
// role and timings.
func (s *stream) logHandshake(log *slog.Logger, extra ...any) {
	args := []any{
		"peer", s.peer.Fingerprint(),
		"addr", s.remoteAddr,
		"protocol", s.protocol,
	}
	if s.path != "" {
		args = append(args, "path", s.path)
	}
	if s.cipher != "" {
		args = append(args, "cipher", s.cipher)
	}
	args = append(args, "post_quantum", s.postQuantum, "role", s.role())
	switch {
	case s.path == "":
		args = append(args, "handshake", s.took.Round(time.Microsecond))
	case s.initiator:
		// A p2p stream: the engine made its connection, and took is the
		// dial, connection and stream.
		args = append(args, "dial", s.took.Round(time.Microsecond))
	}
	if s.resumed {
		args = append(args, "resumed", true)
	}
	if s.negotiated != "" {
		args = append(args, "next_proto", s.negotiated)
	}
	log.Info("handshake complete", append(args, extra...)...)
}

// close ends the stream cleanly: the authenticated end of stream (unless
// already sent), then the connection. It is what a finished transfer does,
// never an interrupted one. A peer that does not read gets closeTimeout
// before the connection is cut.
func (s *stream) close() {
	s.conn.SetWriteDeadline(time.Now().Add(closeTimeout))
	s.closeWrite()
	s.conn.Close()
}

// abortWait bounds how long abort waits for a Write in progress, which
// normally takes one record's time, before cutting under it.
const abortWait = time.Second

// abort ends the stream without an end of stream, so the peer reads an
// error rather than a clean end: for a failure or an interruption that may
// have lost data. In the native protocol the peer is told, authenticated,
// that the stream was aborted (securepeer.ErrAborted); -legacy has no such
// message, so the TCP connection is reset. It takes at most about two
// seconds (abortWait, then the library's bound on sending the alert).
func (s *stream) abort() {
	// Wait for a Write in progress, so the alert can follow it, and stop
	// any later Write or end of stream. If the Write does not end in time
	// (a peer that does not read), the cut below ends it.
	stopped := make(chan struct{})
	go func() {
		s.sendMu.Lock()
		s.aborted = true
		s.sendMu.Unlock()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(abortWait):
	}
	if a, ok := s.conn.(interface{ Abort() error }); ok {
		a.Abort()
		return
	}
	netutil.ResetClose(s.raw)
	s.conn.Close()
}

// nativeHandshaker speaks the securepeer protocol.
type nativeHandshaker struct {
	id *securepeer.Identity
	// timeout bounds each handshake, Verify (and so a prompt) included.
	timeout time.Duration
	// protos is securepeer.Config.NextProtos: tunnelProtos for the
	// sides of a tunnel, execProtos for a stdio connect and listen -exec.
	protos []string
	// tcp bounds the TCP connect (connect -w; 0: dialTimeout).
	tcp time.Duration
	// sessions, for an initiator, keeps the tickets of the process's
	// handshakes, so that connecting again (a tunnel reconnecting, a
	// connection per local connection) resumes: one round trip, at a
	// fraction of a full handshake's cost. nil: no resumption.
	sessions securepeer.ClientSessionCache
	// tickets, for a responder, is the Config that every connection's
	// Config is cloned from, so that all of them share its ticket keys: the
	// library's automatic ones, in memory only and rotated daily, so a
	// restarted listen honours no older ticket (the peer then pays one
	// round trip more). nil: no tickets.
	tickets *securepeer.Config
}

func (h *nativeHandshaker) tcpTimeout() time.Duration { return h.tcp }

func (h *nativeHandshaker) publicKey() peerKey { return h.id.PublicKey() }

func (h *nativeHandshaker) firstFlight(b []byte) int { return wire.FirstFlightLen(b) }

func (h *nativeHandshaker) handshake(ctx context.Context, raw net.Conn, initiator bool, verify verifyFunc) (*stream, error) {
	cfg := new(securepeer.Config)
	if h.tickets != nil {
		cfg = h.tickets.Clone()
	}
	cfg.Identity = h.id
	cfg.HandshakeTimeout = h.timeout
	cfg.NextProtos = h.protos
	// An initiator without a cache neither asks for tickets nor offers
	// them; a responder without the shared keys gives none.
	cfg.ClientSessionCache = h.sessions
	cfg.SessionTicketsDisabled = !initiator && h.tickets == nil
	cfg.Verify = func(ctx context.Context, remote securepeer.PublicKey) error {
		return verify(ctx, remote)
	}
	var c *securepeer.Conn
	if initiator {
		c = securepeer.Client(raw, cfg)
	} else {
		c = securepeer.Server(raw, cfg)
	}
	start := time.Now()
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	st := c.ConnectionState()
	return &stream{
		conn:        c,
		raw:         raw,
		self:        h.id.PublicKey(),
		peer:        st.RemoteKey,
		remoteAddr:  raw.RemoteAddr().String(),
		protocol:    "securepeer",
		negotiated:  st.NegotiatedProtocol,
		cipher:      st.Cipher.String(),
		postQuantum: st.PostQuantum,
		initiator:   st.Initiator,
		took:        time.Since(start),
		resumed:     st.DidResume,
	}, nil
}

// A handshakeSpec is what listen or connect asks of its handshaker.
type handshakeSpec struct {
	cmd     string        // "listen" or "connect", for messages
	timeout time.Duration // bounds each handshake, Verify included
	tcp     time.Duration // bounds an initiator's TCP connect (0: dialTimeout)
	// protos, for the native protocol, is what it offers
	// (securepeer.Config.NextProtos).
	protos []string
	// responder shares ticket keys between the process's handshakes, as
	// listen's are; otherwise a session cache keeps their tickets, as
	// connect's do. Either way connecting again resumes.
	responder bool
}

// newHandshaker is the one place that chooses the protocol: -legacy's,
// with its rsa-json key file and its warning, or the native one, with the
// identity (created on first use if it is the default one).
func newHandshaker(e *env, cf *commonFlags, lf *legacyFlags, spec handshakeSpec) (handshaker, error) {
	if lf.enabled {
		lh, err := legacyStart(e, spec.cmd, cf.identity, lf, spec)
		if err != nil {
			return nil, err
		}
		return lh, nil
	}
	id, err := e.loadIdentity(cf.identity)
	if err != nil {
		return nil, err
	}
	h := &nativeHandshaker{id: id, timeout: spec.timeout, protos: spec.protos, tcp: spec.tcp}
	if spec.responder {
		h.tickets = new(securepeer.Config)
	} else {
		// One cache for the process: every connection to the peer (the
		// tunnel's reconnects, per-connection tunnels) can resume.
		h.sessions = securepeer.NewLRUClientSessionCache(0)
	}
	return h, nil
}

// dialTimeout bounds the TCP connect, separately from the handshake.
const dialTimeout = 15 * time.Second

// dial connects to addr over TCP and runs the handshake as initiator, once.
// Its error wraps the library's: securepeer.ErrNoCommonProtocol when this
// side found, in the peer's authenticated message 2, that the peer speaks
// none of h's application protocols; securepeer.ErrPeerNoCommonProtocol
// when the peer only said so, in an abort anyone on the path can forge.
// Only the first may change what is offered next (dialOrPlain).
func dial(ctx context.Context, h handshaker, addr string, verify verifyFunc, log *slog.Logger) (*stream, error) {
	start := time.Now()
	d := net.Dialer{Timeout: dialTimeout}
	if t := h.tcpTimeout(); t > 0 {
		d.Timeout = t
	}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, interruption(ctx)
		}
		return nil, dialError(addr, err)
	}
	connected := time.Since(start)
	s, err := h.handshake(ctx, raw, true, verify)
	if err != nil {
		var ce *codeError
		if !errors.As(err, &ce) && ctx.Err() != nil {
			return nil, interruption(ctx)
		}
		return nil, handshakeError(addr, h, err)
	}
	s.logHandshake(log, "connect", connected.Round(time.Microsecond))
	return s, nil
}

// dialOrPlain is dial for a stdio connect: a peer that wants application
// protocols this command does not speak (a library server with its own
// NextProtos) still gets a plain stream, as before this side offered any,
// with one handshake more, offering nothing. It does so only when this side
// itself found that there is no protocol in common, from the peer's
// authenticated message 2 (securepeer.ErrNoCommonProtocol): never on the
// peer's word, which an attacker on the path could forge to strip
// securepeer-exec/1 and with it the exit status. The fallback is never
// silent: notef says what the stream lacks.
func dialOrPlain(ctx context.Context, h handshaker, addr string, verify verifyFunc, log *slog.Logger, notef func(string, ...any)) (*stream, error) {
	s, err := dial(ctx, h, addr, verify, log)
	nh, ok := h.(*nativeHandshaker)
	if !ok || len(nh.protos) == 0 || !errors.Is(err, securepeer.ErrNoCommonProtocol) {
		return s, err
	}
	notef("the peer at %s speaks none of the application protocols this side offers (%s), as its authenticated answer shows; connecting again as a plain stream, which carries no exit status", addr, strings.Join(nh.protos, ", "))
	plain := *nh
	plain.protos = nil
	return dial(ctx, &plain, addr, verify, log)
}

// dialError explains a failed TCP connect.
func dialError(addr string, err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return pkgerr.Plainf("connection to %s refused; is securepeer listen running there, on that port?", addr)
	case errors.As(err, &ne) && ne.Timeout():
		return pkgerr.Plainf("connecting to %s timed out; check the address and any firewall in between", addr)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return pkgerr.Plainf("cannot resolve %q: %v; check the host name", dnsErr.Name, dnsErr.Err)
	}
	return pkgerr.Plainf("connecting to %s: %v", addr, err)
}

// handshakeError explains a failed handshake and picks the exit code: 3 if
// either side refused the other's key.
func handshakeError(addr string, h handshaker, err error) error {
	var ce *codeError
	if errors.As(err, &ce) {
		// Our own Verify refused the peer, and said why.
		return ce
	}
	if errors.Is(err, securepeer.ErrRejected) {
		return rejectedErrorf("the peer at %s refused this identity (%s); ask its owner to allow the key that securepeer id prints", addr, h.publicKey().Fingerprint())
	}
	var ne net.Error
	if limit := handshakeLimit(h); limit > 0 && errors.As(err, &ne) && ne.Timeout() {
		// The library's message speaks of its API (a limit or a context's
		// deadline); the user set the limit with -w, or did not.
		return pkgerr.Plainf("the handshake with %s timed out after %v (connect -w sets that limit); is the peer a securepeer peer, and reachable?", addr, limit)
	}
	// The library's error, without its package's name, which this command
	// prints once itself; errors.Is still finds what it wraps.
	cause := pkgerr.Unnamed(err)
	if errors.Is(err, securepeer.ErrSignerUnavailable) {
		return pkgerr.Plainf("handshake with %s failed: %w; is the key still in ssh-agent? (ssh-add -l lists its keys)", addr, cause)
	}
	return pkgerr.Plainf("handshake with %s failed: %w", addr, cause)
}

// handshakeLimit is how long h lets a handshake take, or 0 if not known.
func handshakeLimit(h handshaker) time.Duration {
	switch h := h.(type) {
	case *nativeHandshaker:
		return h.timeout
	case *legacyHandshaker:
		return h.timeout
	}
	return 0
}
