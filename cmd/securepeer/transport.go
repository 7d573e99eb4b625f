package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/securepeer/securepeer"
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
}

// A stream is a secure connection after a successful handshake.
type stream struct {
	conn secureConn // the plaintext stream
	raw  net.Conn   // the connection under it, for abort

	self        peerKey // this side's identity
	peer        peerKey
	remoteAddr  string
	protocol    string
	cipher      string
	postQuantum bool
	initiator   bool
	took        time.Duration // how long the handshake took
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
		"cipher", s.cipher,
		"post_quantum", s.postQuantum,
		"role", s.role(),
		"handshake", s.took.Round(time.Microsecond),
	}
	log.Info("handshake complete", append(args, extra...)...)
}

// close ends the stream cleanly: the authenticated end of stream, then the
// connection. It is what Ctrl-C and a finished transfer do.
// A peer that does not read gets closeTimeout before the connection is cut.
func (s *stream) close() {
	s.conn.SetWriteDeadline(time.Now().Add(closeTimeout))
	s.conn.CloseWrite()
	s.conn.Close()
}

// abort cuts the connection without an end of stream, so the peer reads an
// error rather than a clean end: for a failure that may have lost data.
func (s *stream) abort() {
	s.raw.Close()
	s.conn.Close()
}

// nativeHandshaker speaks the securepeer protocol.
type nativeHandshaker struct {
	id *securepeer.Identity
	// timeout bounds each handshake, Verify (and so a prompt) included.
	timeout time.Duration
}

func (h *nativeHandshaker) publicKey() peerKey { return h.id.PublicKey() }

func (h *nativeHandshaker) handshake(ctx context.Context, raw net.Conn, initiator bool, verify verifyFunc) (*stream, error) {
	cfg := &securepeer.Config{
		Identity:         h.id,
		HandshakeTimeout: h.timeout,
		Verify: func(ctx context.Context, remote securepeer.PublicKey) error {
			return verify(ctx, remote)
		},
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
		cipher:      st.Cipher.String(),
		postQuantum: st.PostQuantum,
		initiator:   st.Initiator,
		took:        time.Since(start),
	}, nil
}

// dialTimeout bounds the TCP connect, separately from the handshake.
const dialTimeout = 15 * time.Second

// dial connects to addr over TCP and runs the handshake as initiator.
func dial(ctx context.Context, h handshaker, addr string, verify verifyFunc, log *slog.Logger) (*stream, error) {
	start := time.Now()
	d := net.Dialer{Timeout: dialTimeout}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, errInterrupted
		}
		return nil, dialError(addr, err)
	}
	connected := time.Since(start)
	s, err := h.handshake(ctx, raw, true, verify)
	if err != nil {
		var ce *codeError
		if !errors.As(err, &ce) && ctx.Err() != nil {
			return nil, errInterrupted
		}
		return nil, handshakeError(addr, h, err)
	}
	s.logHandshake(log, "connect", connected.Round(time.Microsecond))
	return s, nil
}

// dialError explains a failed TCP connect.
func dialError(addr string, err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, errConnRefused):
		return fmt.Errorf("connection to %s refused; is securepeer listen running there, on that port?", addr)
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("connecting to %s timed out; check the address and any firewall in between", addr)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return fmt.Errorf("cannot resolve %q: %v; check the host name", dnsErr.Name, dnsErr.Err)
	}
	return fmt.Errorf("connecting to %s: %v", addr, err)
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
	return fmt.Errorf("handshake with %s failed: %w", addr, err)
}

// listenConfig says how a listener treats connections.
type listenConfig struct {
	h      handshaker
	verify verifyFunc
	log    *slog.Logger
	// refused is called when verify refuses a peer (nil: do nothing).
	refused func(remote string, err error)
}

// maxPendingHandshakes bounds the handshakes a listener runs at once, so a
// flood of connections waits in the kernel's queue rather than in memory.
const maxPendingHandshakes = 64

// serve accepts connections on l and runs the responder handshake on each,
// concurrently. For each stream whose handshake succeeds it calls handle in
// a goroutine of its own, with a context that ends when serving stops. serve
// runs until ctx ends or accepting fails; then it closes l and returns once
// every handshake and every handle call has returned.
func serve(ctx context.Context, l net.Listener, cfg listenConfig, handle func(context.Context, *stream)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	defer l.Close()

	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, maxPendingHandshakes)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		raw, err := l.Accept()
		if err != nil {
			<-slots
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accepting connections: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			remote := raw.RemoteAddr().String()
			s, err := cfg.h.handshake(ctx, raw, false, cfg.verify)
			<-slots
			if err != nil {
				var ce *codeError
				if errors.As(err, &ce) && ce.code == exitRejected && cfg.refused != nil {
					cfg.refused(remote, ce)
				} else {
					cfg.log.Info("handshake failed", "addr", remote, "err", err)
				}
				return
			}
			s.logHandshake(cfg.log)
			if ctx.Err() != nil {
				s.close()
				return
			}
			handle(ctx, s)
		}()
	}
}
