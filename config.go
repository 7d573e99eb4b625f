package securepeer

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"io"
	"slices"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/sys/cpu"
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
	// they have none in common, the handshake fails on both sides with
	// [ErrNoCommonProtocol]. If either side sets none, nothing is
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

	// Rand is the source of randomness for ephemeral keys. If nil,
	// crypto/rand is used. It exists so that tests can make reproducible
	// handshakes (known-answer vectors); setting it to anything but a
	// cryptographically secure source breaks the security of every
	// connection.
	Rand io.Reader
}

const defaultHandshakeTimeout = 30 * time.Second

func (c *Config) rand() io.Reader {
	if c.Rand != nil {
		return c.Rand
	}
	return rand.Reader
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

// A Cipher is an AEAD that protects the transport records of a connection.
// Its value is its identifier on the wire.
type Cipher uint16

// The supported ciphers.
const (
	AES128GCM        Cipher = 0x0001 // AES-128 in GCM mode
	AES256GCM        Cipher = 0x0002 // AES-256 in GCM mode
	ChaCha20Poly1305 Cipher = 0x0003 // ChaCha20-Poly1305 (RFC 8439)
)

// String returns the cipher's name, such as "AES-256-GCM".
func (c Cipher) String() string {
	switch c {
	case AES128GCM:
		return "AES-128-GCM"
	case AES256GCM:
		return "AES-256-GCM"
	case ChaCha20Poly1305:
		return "ChaCha20-Poly1305"
	}
	return fmt.Sprintf("Cipher(0x%04x)", uint16(c))
}

// keySize returns the cipher's key size, or 0 for an unknown cipher.
func (c Cipher) keySize() int {
	switch c {
	case AES128GCM:
		return 16
	case AES256GCM, ChaCha20Poly1305:
		return 32
	}
	return 0
}

func (c Cipher) newAEAD(key []byte) (cipher.AEAD, error) {
	switch c {
	case AES128GCM, AES256GCM:
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		return cipher.NewGCM(block)
	case ChaCha20Poly1305:
		return chacha20poly1305.New(key)
	}
	return nil, fmt.Errorf("securepeer: unsupported cipher %v", c)
}

// tieOrder breaks ties in the cipher choice: the stronger cipher first.
var tieOrder = []Cipher{AES256GCM, ChaCha20Poly1305, AES128GCM}

var defaultCiphers = func() []Cipher {
	hasAES := (cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ) || cpu.ARM64.HasAES || cpu.S390X.HasAESGCM
	if hasAES {
		return []Cipher{AES256GCM, ChaCha20Poly1305, AES128GCM}
	}
	return []Cipher{ChaCha20Poly1305, AES256GCM, AES128GCM}
}()

// chooseCipher picks the transport cipher from the initiator's and the
// responder's preference lists (PROTOCOL.md, "Cipher choice"): among the
// ciphers both list and this implementation supports, the one with the
// lowest sum of its two positions; ties go to the earlier in tieOrder. The
// result depends only on the two lists, never on the roles or on random
// values, so both sides compute the same cipher and neither can steer it
// beyond what its own list says.
func chooseCipher(initiator, responder []Cipher) (Cipher, bool) {
	best, bestScore := Cipher(0), -1
	for _, c := range tieOrder {
		i, r := indexOf(initiator, c), indexOf(responder, c)
		if i < 0 || r < 0 {
			continue
		}
		if score := i + r; bestScore < 0 || score < bestScore {
			best, bestScore = c, score
		}
	}
	return best, bestScore >= 0
}

func indexOf(list []Cipher, c Cipher) int {
	for i, x := range list {
		if x == c {
			return i
		}
	}
	return -1
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
