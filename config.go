package securepeer

import (
	"context"
	"crypto/rand"
	"io"
	"slices"
	"sync"
	"time"
)

// A Config configures a [Conn] or a listener. After one has been passed to a
// securepeer function it must not be modified. A Config may be reused for
// many connections.
type Config struct {
	// Identity is this side's key pair. It is required.
	Identity *Identity

	// Verify decides whether to accept the peer's key. It is called once per
	// handshake, after the peer has proved it holds the key, and before any
	// application data is accepted. It returns nil to accept and an error to
	// refuse: the Handshake of this side then returns an error wrapping it,
	// and the peer's Handshake or next Read returns an error wrapping
	// [ErrRejected].
	//
	// Verify may block, for example to ask a user or a database; ctx carries
	// the handshake's deadline. If Verify is nil, every key but this side's
	// own is accepted: that suits a server that authorises peers at the
	// application layer by [Conn.RemoteKey]. (A peer with this side's own
	// key is refused with [ErrOwnKey]: it is another session of the same
	// identity, cross-wired or reflected. A non-nil Verify sees it like any
	// other key.) See the knownhosts package for pinning and allow lists.
	Verify func(ctx context.Context, remote PublicKey) error

	// Ciphers lists the transport ciphers this side accepts, most preferred
	// first. If empty, a default is used: AES-GCM first on CPUs with AES
	// instructions, ChaCha20-Poly1305 first elsewhere. The cipher used is
	// chosen from both sides' lists as PROTOCOL.md, "Cipher choice",
	// describes.
	Ciphers []Cipher

	// NextProtos lists the application protocols this side speaks, most
	// preferred first, as in crypto/tls and RFC 7301 (ALPN): for example
	// "h2", or a stream multiplexer's name. If both sides set a list, the
	// handshake settles on one protocol that both list, the first in the
	// responder's order, as a TLS server picks by its own preference; if
	// they have none in common, the handshake fails on both sides: with
	// [ErrNoCommonProtocol] on the side that found it from the peer's
	// authenticated list (the initiator, or a resumption's responder), and
	// with [ErrPeerNoCommonProtocol], the peer's unauthenticated word, on
	// the other. If either side sets none, nothing is
	// negotiated and [ConnectionState.NegotiatedProtocol] is empty. Names
	// are 1 to 255 bytes, at most 32 of them, none twice. The lists travel
	// encrypted, so only the peer sees them (PROTOCOL.md, "Application
	// protocol").
	NextProtos []string

	// DisablePostQuantum turns off the hybrid ML-KEM-768 key exchange. By
	// default this side offers it as initiator and accepts it as responder;
	// if either side disables it, the connection uses X25519 alone and
	// [ConnectionState.PostQuantum] is false on both sides. An attacker cannot
	// remove the hybrid when both sides want it.
	DisablePostQuantum bool

	// HandshakeTimeout bounds the whole handshake, Verify included. If zero,
	// 30 seconds is used. A context passed to [Conn.HandshakeContext] or
	// [Dial] can shorten it.
	HandshakeTimeout time.Duration

	// ClientSessionCache, if not nil, lets this side resume sessions as
	// initiator: it keeps the tickets responders give it, keyed by their
	// address, and offers one when it connects to that address again, for
	// a handshake of one round trip that costs a fraction of a full one
	// (PROTOCOL.md, "Session resumption"). [Config.Verify] is still called,
	// with the key the responder proved in the full handshake the ticket
	// descends from. A ticket the responder no longer honours costs one
	// extra round trip, then a full handshake. The initiator takes a ticket
	// when it next reads from the connection after the handshake.
	ClientSessionCache ClientSessionCache

	// SessionCacheKey, if not empty, is the key under which an initiator
	// keeps and looks up its tickets in ClientSessionCache, in place of the
	// responder's network address: for example the peer ID a libp2p host
	// dials, which may move between addresses. Verify still decides
	// whether the key stored with a ticket is acceptable.
	SessionCacheKey string

	// SessionTicketsDisabled turns resumption off on this side: as
	// responder it gives no tickets and answers every resumption with a
	// full handshake; as initiator it neither asks for tickets nor offers
	// them. By default a responder gives a ticket to every initiator that
	// asks, sealed with keys it keeps in memory ([Config.SetSessionTicketKeys]).
	SessionTicketsDisabled bool

	// Time returns the current time, for tickets' expiry. If nil,
	// time.Now is used.
	Time func() time.Time

	// Rand is the source of randomness for ephemeral X25519 keys and ML-KEM
	// key pairs. If nil, crypto/rand is used. It exists so that the
	// package's tests can make reproducible handshakes (known-answer
	// vectors); ML-KEM encapsulation always uses crypto/rand outside them.
	// Setting it to anything but a cryptographically secure source breaks
	// the security of every connection; a listener refuses a handshake
	// whose ephemeral key repeats one it has seen, as a replay.
	Rand io.Reader

	ticketOnce sync.Once
	ticketKeys *ticketKeys // see tickets
}

const defaultHandshakeTimeout = 30 * time.Second

func (c *Config) rand() io.Reader {
	if c.Rand != nil {
		return c.Rand
	}
	return rand.Reader
}

// Clone returns a copy of c that shares c's session ticket keys,
// automatic or set with [Config.SetSessionTicketKeys]: tickets that either
// issues, the other honours, and the automatic keys rotate for both. A
// server that needs a Config per connection, for a Verify of its own,
// clones one base Config so that its peers can resume.
func (c *Config) Clone() *Config {
	return &Config{
		Identity:               c.Identity,
		Verify:                 c.Verify,
		Ciphers:                c.Ciphers,
		NextProtos:             c.NextProtos,
		ClientSessionCache:     c.ClientSessionCache,
		SessionCacheKey:        c.SessionCacheKey,
		SessionTicketsDisabled: c.SessionTicketsDisabled,
		Time:                   c.Time,
		DisablePostQuantum:     c.DisablePostQuantum,
		HandshakeTimeout:       c.HandshakeTimeout,
		Rand:                   c.Rand,
		ticketKeys:             c.tickets(),
	}
}

func (c *Config) now() time.Time {
	if c.Time != nil {
		return c.Time()
	}
	return time.Now()
}

func (c *Config) handshakeTimeout() time.Duration {
	if c.HandshakeTimeout > 0 {
		return c.HandshakeTimeout
	}
	return defaultHandshakeTimeout
}

func (c *Config) ciphers() []Cipher {
	if len(c.Ciphers) > 0 {
		return c.Ciphers
	}
	return defaultCiphers
}

// chooseProtocol picks the application protocol from both sides' lists
// (PROTOCOL.md, "Application protocol"): none if either list is empty, else
// the first of the responder's that the initiator lists too; ok is false if
// both lists are set and share none.
func chooseProtocol(initiator, responder []string) (proto string, ok bool) {
	if len(initiator) == 0 || len(responder) == 0 {
		return "", true
	}
	for _, p := range responder {
		if slices.Contains(initiator, p) {
			return p, true
		}
	}
	return "", false
}
