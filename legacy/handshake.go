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

	// WIRE.md §2: sign and send our header at once, without waiting for the
	// peer's; the two headers cross. The write runs beside the read so two
	// peers on an unbuffered pipe cannot deadlock.
	payload := marshalPayload(localToken, cfg.Keys.publicPEM, dh.publicBase64(), ciphers)
	sig, err := signSig(cfg.Keys.priv, []byte(payload))
	if err != nil {
		return errorf("signing the header: %w", err)
	}
	line := marshalHeaderLine(payload, sig)
	sent := make(chan error, 1)
	go func() {
		_, err := c.conn.Write(line)
		sent <- err
	}()
	defer func() {
		// Even on failure, let the header go out before the caller closes
		// the connection: the Node side reports why it failed only if it
		// has our header. A stuck write ends when ctx does (the watcher in
		// HandshakeContext closes the connection).
		if werr := <-sent; werr != nil && err == nil {
			err = errorf("sending the header: %w", werr)
		}
	}()

	// WIRE.md §2: the peer's header, parsed and bounded.
	hline, err := c.in.lr.readLine(MaxHeaderLine)
	if err != nil {
		if errors.Is(err, errLineTooLong) {
			return errHeader("longer than %d bytes", MaxHeaderLine)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return errorf("the connection closed before the peer's header; is it a secure-peer 0.2 peer? (%w)", err)
		}
		return err
	}
	h, err := parseHeader(hline)
	if err != nil {
		return err
	}
	if h.token == localToken {
		return newError("the peer sent back this side's own token (a reflected header)")
	}

	// WIRE.md §3: the combined token; the greater token's list votes first.
	xs, ys := h.ciphers, ciphers
	c.token = h.token + localToken
	if localToken > h.token {
		xs, ys = ciphers, h.ciphers
		c.token = localToken + h.token
	}

	// WIRE.md §4: the cipher vote, before the signature, as the Node module
	// orders its checks.
	name := pickCipher(xs, ys)
	if name == "" {
		return &NoCommonCipherError{Local: ciphers, Peer: h.ciphers}
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

	// WIRE.md §5 and §6: the shared secret, as base64 text, is the
	// createCipher password.
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
