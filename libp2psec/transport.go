package libp2psec

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/sec"
	tptu "github.com/libp2p/go-libp2p/p2p/net/upgrader"

	"github.com/securepeer/securepeer"
)

// ID is the security protocol ID of securepeer version 1 (PROTOCOL.md in
// the parent module), as negotiated by multistream-select. It is an untyped
// constant, as go-libp2p's noise.ID and tls.ID are, so that it can be
// passed both to libp2p.Security, which takes a string, and where a
// [protocol.ID] is expected.
const ID = "/securepeer/1.0.0"

// maxMuxers and maxMuxerLen are the limits of securepeer's application
// protocol list (PROTOCOL.md, "Application protocol").
const (
	maxMuxers   = 32
	maxMuxerLen = 255
)

// ErrNotPostQuantum is returned, wrapped, by SecureInbound and
// SecureOutbound when the peer completed the handshake without the
// ML-KEM-768 hybrid. This transport refuses such connections, so that
// [ID] in a connection's state always means a post-quantum session.
var ErrNotPostQuantum = errors.New("libp2psec: the peer turned off the post-quantum hybrid")

// Transport is a securepeer security transport for go-libp2p. It is safe
// for concurrent use.
type Transport struct {
	protocolID protocol.ID
	localID    peer.ID
	identity   *securepeer.Identity
	muxers     []string

	// verifyInbound, if set, is asked about each initiator's key
	// (Options.VerifyInbound).
	verifyInbound func(context.Context, securepeer.PublicKey) error

	// base is cloned for each connection (each has a Verify of its own),
	// so that all of them share the ticket cache, by peer ID, and the
	// library's automatic ticket keys, which rotate daily (PROTOCOL.md,
	// "Session resumption").
	base *securepeer.Config
}

// sessionCacheSize is how many peers' tickets a Transport keeps.
const sessionCacheSize = 1024

var _ sec.SecureTransport = (*Transport)(nil)

// New returns a securepeer transport for the host whose identity is key,
// which must be an Ed25519 key. muxers are the stream multiplexers the host
// supports, most preferred first; they are offered inside the handshake,
// and the one both sides choose is in the connection's
// [network.ConnectionState].StreamMultiplexer. New has the signature
// go-libp2p expects of a security transport's constructor:
//
//	libp2p.New(libp2p.Security(libp2psec.ID, libp2psec.New))
func New(id protocol.ID, key crypto.PrivKey, muxers []tptu.StreamMuxer) (*Transport, error) {
	return buildTransport(id, key, muxers, nil)
}

// buildTransport is [New], with identity as the host's securepeer identity
// if it is not nil (Options.Identity), or one made from key's bytes.
func buildTransport(id protocol.ID, key crypto.PrivKey, muxers []tptu.StreamMuxer, identity *securepeer.Identity) (*Transport, error) {
	if key == nil {
		return nil, errors.New("libp2psec: no private key")
	}
	if key.Type() != pb.KeyType_Ed25519 {
		return nil, fmt.Errorf("libp2psec: securepeer needs an Ed25519 host key, not %v", key.Type())
	}
	var err error
	if identity == nil {
		identity, err = identityOf(key)
	} else {
		err = checkIdentity(identity, key)
	}
	if err != nil {
		return nil, err
	}
	localID, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("libp2psec: %w", err)
	}
	names, err := muxerNames(muxers)
	if err != nil {
		return nil, err
	}
	return &Transport{
		protocolID: id,
		localID:    localID,
		identity:   identity,
		muxers:     names,
		base: &securepeer.Config{
			Identity:           identity,
			NextProtos:         names,
			ClientSessionCache: securepeer.NewLRUClientSessionCache(sessionCacheSize),
		},
	}, nil
}

// identityOf makes the securepeer identity of key, an Ed25519 key whose
// bytes go-libp2p can give.
func identityOf(key crypto.PrivKey) (*securepeer.Identity, error) {
	raw, err := key.Raw()
	if err != nil {
		return nil, fmt.Errorf("libp2psec: reading the Ed25519 key: %w", err)
	}
	defer clear(raw)
	if len(raw) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("libp2psec: Ed25519 private key of %d bytes, want %d", len(raw), ed25519.PrivateKeySize)
	}
	identity, err := securepeer.NewIdentity(ed25519.PrivateKey(raw))
	if err != nil {
		return nil, fmt.Errorf("libp2psec: %w", err)
	}
	return identity, nil
}

// checkIdentity reports whether identity's key is key's.
func checkIdentity(identity *securepeer.Identity, key crypto.PrivKey) error {
	pub, err := key.GetPublic().Raw()
	if err != nil {
		return fmt.Errorf("libp2psec: reading the host's public key: %w", err)
	}
	if !identity.PublicKey().Ed25519().Equal(ed25519.PublicKey(pub)) {
		return errors.New("libp2psec: Options.Identity is not the host key's identity")
	}
	return nil
}

// muxerNames returns the IDs of muxers, checked for what the handshake
// can carry.
func muxerNames(muxers []tptu.StreamMuxer) ([]string, error) {
	if len(muxers) > maxMuxers {
		return nil, fmt.Errorf("libp2psec: %d stream multiplexers, at most %d can be negotiated", len(muxers), maxMuxers)
	}
	names := make([]string, 0, len(muxers))
	for _, m := range muxers {
		name := string(m.ID)
		if len(name) == 0 || len(name) > maxMuxerLen {
			return nil, fmt.Errorf("libp2psec: stream multiplexer ID %q is not 1 to %d bytes", name, maxMuxerLen)
		}
		if slices.Contains(names, name) {
			return nil, fmt.Errorf("libp2psec: stream multiplexer %q listed twice", name)
		}
		names = append(names, name)
	}
	return names, nil
}

// Options are a Transport's optional settings, for [NewWithOptions].
type Options struct {
	// VerifyInbound, if not nil, decides which peers may dial this host,
	// inside the handshake, as securepeer's Config.Verify does for a
	// responder: it sees each initiator's key once the handshake has
	// proved it and the peer ID checks have passed, and a non-nil error
	// refuses the peer with securepeer's authenticated rejection, so that
	// the dialer's connection reports securepeer.ErrRejected at its first
	// read rather than an unexplained close. It runs for every inbound
	// handshake, full or resumed, including the responder's side of a
	// hole punch's simultaneous open; the ctx it gets bounds the
	// handshake.
	VerifyInbound func(ctx context.Context, key securepeer.PublicKey) error

	// Identity, if not nil, is the host's securepeer identity, which must
	// be the host key's: the transport runs its handshakes with it
	// instead of one made from the host key's bytes. It lets a host whose
	// key go-libp2p cannot read (a crypto.PrivKey that signs through
	// ssh-agent, say, made from [securepeer.Identity.Signer]) run
	// securepeer with an identity behind the same signer.
	Identity *securepeer.Identity
}

// NewWithOptions returns a constructor that makes transports as [New]
// does, with opts, for libp2p.Security:
//
//	libp2p.Security(libp2psec.ID, libp2psec.NewWithOptions(libp2psec.Options{VerifyInbound: allow}))
func NewWithOptions(opts Options) func(protocol.ID, crypto.PrivKey, []tptu.StreamMuxer) (*Transport, error) {
	return func(id protocol.ID, key crypto.PrivKey, muxers []tptu.StreamMuxer) (*Transport, error) {
		t, err := buildTransport(id, key, muxers, opts.Identity)
		if err != nil {
			return nil, err
		}
		t.verifyInbound = opts.VerifyInbound
		return t, nil
	}
}

// ID returns the protocol ID the transport was created with.
func (t *Transport) ID() protocol.ID { return t.protocolID }

// SecureInbound runs the handshake as responder on insecure. If p is not
// empty, an initiator whose peer ID is not p is refused with an error
// wrapping [sec.ErrPeerIDMismatch]; if p is empty, any peer but this host
// itself is accepted. ctx bounds the handshake: its deadline, however far,
// and its cancellation; without a deadline, securepeer's default limit of
// 30 seconds applies. On failure insecure is closed.
func (t *Transport) SecureInbound(ctx context.Context, insecure net.Conn, p peer.ID) (sec.SecureConn, error) {
	return t.secure(ctx, insecure, p, false)
}

// SecureOutbound runs the handshake as initiator on insecure, and accepts
// only a responder whose peer ID is p. The check runs in securepeer's
// Verify, before this host's identity is sent, so a wrong peer never learns
// who dialed it; the error then wraps [sec.ErrPeerIDMismatch]. ctx bounds
// the handshake, as for [Transport.SecureInbound]. On failure insecure is
// closed.
func (t *Transport) SecureOutbound(ctx context.Context, insecure net.Conn, p peer.ID) (sec.SecureConn, error) {
	if p == "" {
		insecure.Close()
		return nil, errors.New("libp2psec: SecureOutbound needs the expected peer ID")
	}
	return t.secure(ctx, insecure, p, true)
}

func (t *Transport) secure(ctx context.Context, insecure net.Conn, p peer.ID, initiator bool) (sec.SecureConn, error) {
	c := &Conn{localID: t.localID}
	cfg := t.base.Clone()
	cfg.HandshakeTimeout = handshakeTimeout(ctx)
	// A returning dialer resumes with the ticket it was given by the peer
	// it dials; Verify checks the peer ID whether the handshake is full or
	// resumed.
	cfg.SessionCacheKey = string(p)
	cfg.Verify = func(vctx context.Context, remote securepeer.PublicKey) error {
		pub, err := crypto.UnmarshalEd25519PublicKey(remote.Ed25519())
		if err != nil {
			return fmt.Errorf("libp2psec: %w", err)
		}
		id, err := peer.IDFromPublicKey(pub)
		if err != nil {
			return fmt.Errorf("libp2psec: %w", err)
		}
		if p != "" && id != p {
			return sec.ErrPeerIDMismatch{Expected: p, Actual: id}
		}
		if id == t.localID {
			return fmt.Errorf("libp2psec: %w", securepeer.ErrOwnKey)
		}
		if !initiator && t.verifyInbound != nil {
			if err := t.verifyInbound(vctx, remote); err != nil {
				return err
			}
		}
		c.remoteID, c.remoteKey = id, pub
		return nil
	}
	if initiator {
		c.conn = securepeer.Client(insecure, cfg)
	} else {
		c.conn = securepeer.Server(insecure, cfg)
	}
	if err := c.conn.HandshakeContext(ctx); err != nil {
		insecure.Close()
		return nil, err
	}
	st := c.conn.ConnectionState()
	if !st.PostQuantum {
		c.conn.Abort()
		return nil, ErrNotPostQuantum
	}
	c.state = network.ConnectionState{
		Security:                  t.protocolID,
		StreamMultiplexer:         protocol.ID(st.NegotiatedProtocol),
		UsedEarlyMuxerNegotiation: st.NegotiatedProtocol != "",
	}
	secured.add(c)
	return c, nil
}

// handshakeTimeout returns the securepeer handshake limit for a handshake
// bounded by ctx: past ctx's deadline, so that ctx alone decides even when
// it allows more than securepeer's default, or zero (the default) if ctx
// has no deadline.
func handshakeTimeout(ctx context.Context) time.Duration {
	dl, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	return max(time.Until(dl), 0) + time.Second
}
