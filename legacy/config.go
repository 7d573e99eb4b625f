package legacy

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"io"
	"slices"
	"time"
)

// A Config configures a [Conn]. It must not be modified after it has been
// passed to [NewConn]; one Config may serve many connections.
type Config struct {
	// Keys is this side's RSA key pair. It is required.
	Keys *Keys

	// Ciphers is this side's preference list, sent as the header's
	// "ciphers" (the Node module's opts.ciphers). Every name must be one of
	// [SupportedCiphers], in any capitalisation, and is sent as spelled here.
	// The peers vote on the names both list, compared exactly, so spell them
	// as the Node side does. If nil, [DefaultCiphers] is used.
	Ciphers []string

	// Verify, if not nil, is called during the handshake with the peer's
	// public key, after its self-signature was checked. A non-nil error
	// aborts the handshake, which closes the connection without sending a
	// frame (what the Node module does on id.reject()). The signature only
	// proves the peer holds the key; Verify is where a key is trusted.
	// If Verify is nil, any key is accepted, as a server that authorises
	// peers at the application layer wants.
	Verify func(ctx context.Context, pub *rsa.PublicKey) error

	// HandshakeTimeout bounds the whole handshake, Verify included. If
	// zero, 30 seconds is used, as in the securepeer package, so that a peer
	// that sends nothing cannot hold a connection forever; a negative value
	// means no limit other than the context's.
	HandshakeTimeout time.Duration

	// MaxFrameSize is the largest plaintext accepted in one received frame.
	// The Node module sends one frame per write() chunk, with no limit;
	// streams from files, sockets and stdin give chunks of 64 KiB, but an
	// application that writes one large Buffer sends it as one frame. Zero
	// means [DefaultMaxFrameSize]; at most [MaxFrameSizeLimit].
	MaxFrameSize int

	// Rand is the source of the header token and the Diffie-Hellman key. If
	// nil, crypto/rand is used. It is meant for tests that reproduce
	// recorded sessions.
	Rand io.Reader
}

func (c *Config) rand() io.Reader {
	if c.Rand != nil {
		return c.Rand
	}
	return rand.Reader
}

func (c *Config) ciphers() []string {
	if c.Ciphers == nil {
		return DefaultCiphers
	}
	return c.Ciphers
}

func (c *Config) maxFrameSize() int {
	if c.MaxFrameSize == 0 {
		return DefaultMaxFrameSize
	}
	return c.MaxFrameSize
}

// check reports the first mistake in c.
func (c *Config) check() error {
	if c == nil {
		return newError("nil Config")
	}
	if c.Keys == nil || c.Keys.priv == nil {
		return newError("Config.Keys is not set")
	}
	list := c.ciphers()
	if len(list) == 0 {
		return newError("Config.Ciphers is empty")
	}
	for i, name := range list {
		if _, ok := lookupCipher(name); !ok {
			return errorf("Config.Ciphers: unsupported cipher %q; supported: %v", name, SupportedCiphers())
		}
		if slices.Contains(list[:i], name) {
			return errorf("Config.Ciphers lists %q twice", name)
		}
	}
	if m := c.MaxFrameSize; m < 0 || m > MaxFrameSizeLimit {
		return errorf("Config.MaxFrameSize %d is out of range 0 to %d", m, MaxFrameSizeLimit)
	}
	return nil
}

// defaultHandshakeTimeout is the handshake limit when Config sets none.
const defaultHandshakeTimeout = 30 * time.Second

func (c *Config) handshakeTimeout() time.Duration {
	switch {
	case c == nil || c.HandshakeTimeout == 0:
		return defaultHandshakeTimeout
	case c.HandshakeTimeout < 0:
		return 0
	}
	return c.HandshakeTimeout
}
