package legacy

// This file is the handshake of WIRE.md §2 to §5, one step after another.

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
)

// handshake runs the steps of the handshake. It is called with
// c.handshakeMutex held; on error the caller closes the connection.
func (c *Conn) handshake(ctx context.Context) (err error) {
	cfg := c.config
	if err := cfg.check(); err != nil {
		return err
	}
	ciphers := cfg.ciphers()
	c.maxPlain = cfg.maxFrameSize()
	c.maxLine = maxFrameLine(c.maxPlain)

	// WIRE.md §2: a fresh token and Diffie-Hellman key. The Node module
	// reuses one DH key for every connection of a factory; this does not.
	var tok [tokenBytes]byte
	if _, err := io.ReadFull(cfg.rand(), tok[:]); err != nil {
		return errorf("reading randomness: %w", err)
	}
	localToken := base64.StdEncoding.EncodeToString(tok[:])
	dh, err := generateDH(cfg.rand())
	if err != nil {
		return err
	}
	defer dh.wipe()

	sent, err := c.sendHeader(localToken, dh, ciphers)
	if err != nil {
		return err
	}
	defer func() {
		// Even on failure, let the header go out before the caller closes
		// the connection: the Node side reports why it failed only if it
		// has our header. A stuck write ends when ctx does (the watcher in
		// HandshakeContext closes the connection).
		if werr := <-sent; werr != nil && err == nil {
			err = errorf("sending the header: %w", werr)
		}
	}()
	h, err := c.readHeader(localToken)
	if err != nil {
		return err
	}
	name, err := c.agreeCipher(h, localToken, ciphers)
	if err != nil {
		return err
	}
	// WIRE.md §2: the header's self-signature, then the caller's policy.
	if err := h.verify(); err != nil {
		return err
	}
	if cfg.Verify != nil {
		if err := cfg.Verify(ctx, h.publicKey); err != nil {
			return errorf("Config.Verify rejected the peer's key %s: %w", Fingerprint(h.publicKey), err)
		}
	}
	return c.installSuite(h, dh, name)
}

// sendHeader signs this side's header and starts sending it, without
// waiting for the peer's (WIRE.md §2): the two headers cross. The write
// runs beside the read, so that two peers on an unbuffered pipe cannot
// deadlock; its result arrives on the channel.
func (c *Conn) sendHeader(localToken string, dh *dhKey, ciphers []string) (<-chan error, error) {
	cfg := c.config
	payload := marshalPayload(localToken, cfg.Keys.publicPEM, dh.publicBase64(), ciphers)
	sig, err := signSig(cfg.Keys.priv, []byte(payload))
	if err != nil {
		return nil, errorf("signing the header: %w", err)
	}
	line := marshalHeaderLine(payload, sig)
	sent := make(chan error, 1)
	go func() {
		_, err := c.conn.Write(line)
		sent <- err
	}()
	return sent, nil
}

// readHeader reads the peer's header, parsed and bounded (WIRE.md §2), and
// refuses this side's own.
func (c *Conn) readHeader(localToken string) (*header, error) {
	hline, err := c.in.lr.readLine(MaxHeaderLine)
	if err != nil {
		if errors.Is(err, errLineTooLong) {
			return nil, errHeader("longer than %d bytes", MaxHeaderLine)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errorf("the connection closed before the peer's header; is it a secure-peer 0.2 peer? (%w)", err)
		}
		return nil, err
	}
	h, err := parseHeader(hline)
	if err != nil {
		return nil, err
	}
	if h.token == localToken {
		return nil, newError("the peer sent back this side's own token (a reflected header)")
	}
	return h, nil
}

// agreeCipher sets the combined token (WIRE.md §3), whose greater half's
// list votes first, and returns the cipher of the vote (§4), taken before
// the signature is checked, as the Node module orders its checks.
func (c *Conn) agreeCipher(h *header, localToken string, ciphers []string) (string, error) {
	xs, ys := h.ciphers, ciphers
	c.token = h.token + localToken
	if localToken > h.token {
		xs, ys = ciphers, h.ciphers
		c.token = localToken + h.token
	}
	name := pickCipher(xs, ys)
	if name == "" {
		return "", &NoCommonCipherError{Local: ciphers, Peer: h.ciphers}
	}
	return name, nil
}

// installSuite derives the cipher suite from the shared secret, as base64
// text, the createCipher password (WIRE.md §5 and §6), and takes the
// peer's key.
func (c *Conn) installSuite(h *header, dh *dhKey, name string) error {
	password, err := dh.sharedPassword(h.dhPublic)
	if err != nil {
		return err
	}
	defer clear(password)
	if c.suite, err = newSuite(name, password); err != nil {
		return err
	}
	c.remoteKey = h.publicKey
	c.remotePEM = h.publicPEM
	return nil
}
