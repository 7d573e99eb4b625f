package legacy

// This file is the record layer: signed, encrypted frames (WIRE.md §6) and
// shutdown (WIRE.md §7). The handshake is in handshake.go.

import (
	"bufio"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// maxSeq is the last sequence number used in either direction: the Node
// module counts in a JavaScript number, which stops counting at 2^53. A
// connection stops there rather than wrap (unreachable in practice: each
// frame costs an RSA signature).
const maxSeq = 1<<53 - 1

// closeNotifyTimeout bounds how long Close waits to send the end frame.
const closeNotifyTimeout = 5 * time.Second

// A Conn is a secure-peer 0.2.1 connection over a net.Conn. It is symmetric:
// there is no client or server side. The handshake runs on the first Read or
// Write, or explicitly through [Conn.Handshake]; it needs the peer's header,
// so it waits until the peer runs its own.
//
// Each Write sends one frame per 64 KiB ([SendChunkSize]) of its data, each
// with its own RSA signature; Read returns the plaintext of the peer's
// frames. Read returns [io.EOF] only after the peer's end frame; a
// connection that ends without it returns an error wrapping [ErrTruncated]
// (or [ErrRejected] if no frame came at all). Any bad frame (a signature
// that fails, a frame out of order, replayed or malformed, a ciphertext that
// does not decrypt) closes the connection and is returned by every later
// Read, so no data from a tampered stream is ever returned.
//
// Errors from the underlying connection are returned as they are, so
// timeouts can be tested with [errors.Is] and [os.ErrDeadlineExceeded]; a
// Read that timed out may be retried.
//
// Read and Write may be called concurrently with each other, like those of a
// net.Conn.
type Conn struct {
	conn   net.Conn
	config *Config

	closeOnce sync.Once
	closeErr  error

	// handshakeMutex serialises handshakes; handshakeErr is the sticky
	// result of a failed one.
	handshakeMutex sync.Mutex
	handshakeErr   error
	handshakeDone  atomic.Bool

	// Set by the handshake with handshakeMutex held, and read-only once
	// handshakeDone is true.
	remoteKey *rsa.PublicKey
	remotePEM string
	suite     *suite
	token     string // the combined token, WIRE.md §3
	maxLine   int    // longest frame line accepted
	maxPlain  int    // largest plaintext accepted in one frame

	in  halfIn
	out halfOut
}

var _ net.Conn = (*Conn)(nil)

// halfIn is the receiving direction.
type halfIn struct {
	sync.Mutex
	lr      lineReader // also used, before the handshake is done, by it
	seq     uint64     // sequence number of the next frame
	err     error      // first permanent error; io.EOF after the end frame
	pending []byte     // plaintext received and not yet returned
}

// halfOut is the sending direction.
type halfOut struct {
	sync.Mutex
	seq   uint64 // sequence number of the next frame
	err   error  // first permanent error
	ended bool   // the end frame was sent
	buf   []byte // the frame line being written
}

// NewConn returns a secure-peer 0.2.1 connection over conn, configured by
// config, which must not be nil and must have [Config.Keys] set. It does no
// I/O; the handshake runs on the first Read, Write or [Conn.Handshake].
func NewConn(conn net.Conn, config *Config) *Conn {
	c := &Conn{conn: conn, config: config}
	c.in.lr.br = bufio.NewReaderSize(conn, 64<<10)
	return c
}

// Handshake runs the handshake if it has not run yet, as
// [Conn.HandshakeContext] does with [context.Background].
func (c *Conn) Handshake() error {
	return c.HandshakeContext(context.Background())
}

// HandshakeContext sends this side's header, reads and checks the peer's,
// and agrees on a cipher and key (WIRE.md §2 to §5). It returns once the
// peer's key passed [Config.Verify]: secure-peer sends nothing to say it
// accepted this side's key, so a rejection shows up only later, as a Read
// error wrapping [ErrRejected]. If ctx ends first, the connection is closed.
// After a failure the connection is closed and every later call returns the
// same error.
func (c *Conn) HandshakeContext(ctx context.Context) error {
	if c.handshakeDone.Load() {
		return nil
	}
	c.handshakeMutex.Lock()
	defer c.handshakeMutex.Unlock()
	if c.handshakeDone.Load() {
		return nil
	}
	if c.handshakeErr != nil {
		return c.handshakeErr
	}
	if timeout := c.config.handshakeTimeout(); timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}

	// If ctx ends, close the connection to unblock the handshake's I/O,
	// as crypto/tls does.
	var stop func() error
	if ctx.Done() != nil {
		done := make(chan struct{})
		interrupted := make(chan error, 1)
		go func() {
			select {
			case <-ctx.Done():
				c.closeConn()
				interrupted <- ctx.Err()
			case <-done:
				interrupted <- nil
			}
		}()
		stop = func() error {
			close(done)
			return <-interrupted
		}
	}

	err := c.handshake(ctx)
	if stop != nil {
		if ctxErr := stop(); ctxErr != nil {
			err = errorf("handshake interrupted: %w", ctxErr)
		}
	}
	if err != nil {
		c.closeConn()
		c.handshakeErr = err
		return err
	}
	c.handshakeDone.Store(true)
	return nil
}

// RemoteKey returns the peer's RSA public key, or nil before the handshake
// has completed.
func (c *Conn) RemoteKey() *rsa.PublicKey {
	if !c.handshakeDone.Load() {
		return nil
	}
	return c.remoteKey
}

// RemoteKeyPEM returns the peer's public key PEM exactly as it sent it (what
// a Node application sees as id.key.public), or "" before the handshake has
// completed.
func (c *Conn) RemoteKeyPEM() string {
	if !c.handshakeDone.Load() {
		return ""
	}
	return c.remotePEM
}

// Cipher returns the negotiated cipher name, spelled as in the preference
// lists, or "" before the handshake has completed.
func (c *Conn) Cipher() string {
	if !c.handshakeDone.Load() {
		return ""
	}
	return c.suite.name
}

// NetConn returns the underlying connection. Reading from or writing to it
// corrupts the session.
func (c *Conn) NetConn() net.Conn { return c.conn }

// LocalAddr returns the local network address.
func (c *Conn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// RemoteAddr returns the remote network address.
func (c *Conn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// SetDeadline sets the read and write deadlines of the underlying
// connection. A Write that times out breaks the connection, since part of a
// frame may have been sent; a Read that times out can be retried.
func (c *Conn) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }

// SetReadDeadline sets the read deadline of the underlying connection.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline of the underlying connection.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// closeConn closes the underlying connection once.
func (c *Conn) closeConn() error {
	c.closeOnce.Do(func() { c.closeErr = c.conn.Close() })
	return c.closeErr
}

// Write encrypts and sends b, one frame per [SendChunkSize] bytes. Each frame
// is signed with this side's RSA key, which costs a millisecond or more, so
// batch small writes when speed matters (a bufio.Writer does). An empty
// Write sends nothing.
func (c *Conn) Write(b []byte) (int, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	c.out.Lock()
	defer c.out.Unlock()
	if c.out.err != nil {
		return 0, c.out.err
	}
	if c.out.ended {
		return 0, errShutdown
	}
	var n int
	for len(b) > 0 {
		chunk := b[:min(len(b), SendChunkSize)]
		if err := c.writeFrameLocked(chunk, false); err != nil {
			return n, err
		}
		n += len(chunk)
		b = b[len(chunk):]
	}
	return n, nil
}

// CloseWrite sends the end frame, after which the peer's Read returns
// io.EOF, and Write fails. It runs the handshake first if needed, and does
// nothing if the end frame was already sent.
//
// It does not half-close the underlying connection: the Node module treats
// a TCP FIN that comes before its peer's end frame as a broken stream. Note
// that the Node module itself half-closes TCP as soon as it receives an end
// frame, so after CloseWrite, a Node peer can still deliver what it sends
// in direct response, but nothing later.
func (c *Conn) CloseWrite() error {
	if err := c.Handshake(); err != nil {
		return err
	}
	c.out.Lock()
	defer c.out.Unlock()
	if c.out.ended {
		return nil
	}
	if c.out.err != nil {
		return c.out.err
	}
	return c.writeFrameLocked(nil, true)
}

// Close sends the end frame if the handshake completed and it was not sent
// yet (waiting at most 5 seconds, and not at all while a Write is in
// progress), then closes the underlying connection.
func (c *Conn) Close() error {
	var endErr error
	if c.handshakeDone.Load() && c.out.TryLock() {
		if !c.out.ended && c.out.err == nil {
			c.conn.SetWriteDeadline(time.Now().Add(closeNotifyTimeout))
			endErr = c.writeFrameLocked(nil, true)
		}
		c.out.Unlock()
	}
	if err := c.closeConn(); err != nil {
		return err
	}
	if endErr != nil {
		return errorf("sending the end frame (the connection was closed anyway): %w", endErr)
	}
	return nil
}

// writeFrameLocked encrypts, signs and sends p as one data frame, or sends
// the end frame if end is set. c.out must be held. Any error is permanent:
// part of the line may have been sent.
func (c *Conn) writeFrameLocked(p []byte, end bool) error {
	if c.out.seq > maxSeq {
		c.out.err = newError("the sequence number is exhausted")
		return c.out.err
	}
	f := frame{end: end}
	if !end {
		f.ct = base64.StdEncoding.EncodeToString(c.suite.encrypt(p))
	}
	d := frameDigest(c.out.seq, c.token, f.ct)
	sig, err := rsa.SignPKCS1v15(nil, c.config.Keys.priv, crypto.SHA256, d[:])
	if err != nil {
		c.out.err = errorf("signing a frame: %w", err)
		return c.out.err
	}
	f.sig = sig
	c.out.buf = appendFrame(c.out.buf[:0], f)
	if _, err := c.conn.Write(c.out.buf); err != nil {
		c.out.err = err
		return err
	}
	c.out.seq++
	if end {
		c.out.ended = true
	}
	return nil
}

// Read returns plaintext from the peer's frames. It returns io.EOF after the
// peer's end frame.
func (c *Conn) Read(b []byte) (int, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	if len(b) == 0 {
		return 0, nil
	}
	c.in.Lock()
	defer c.in.Unlock()
	for len(c.in.pending) == 0 {
		if c.in.err != nil {
			return 0, c.in.err
		}
		if err := c.readFrameLocked(); err != nil {
			return 0, err
		}
	}
	n := copy(b, c.in.pending)
	c.in.pending = c.in.pending[n:]
	return n, nil
}

// readFrameLocked reads, checks and decrypts one frame into c.in.pending,
// or sets c.in.err to io.EOF for the end frame. c.in must be held. The
// sequence number advances only once the signature is verified.
func (c *Conn) readFrameLocked() error {
	line, err := c.in.lr.readLine(c.maxLine)
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return err // not permanent: the partial line is kept
		}
		return c.failRead(c.readError(err))
	}
	f, err := parseFrame(line)
	if err != nil {
		return c.failRead(err)
	}
	if c.in.seq > maxSeq {
		return c.failRead(newError("the sequence number is exhausted"))
	}
	d := frameDigest(c.in.seq, c.token, f.ct)
	if rsa.VerifyPKCS1v15(c.remoteKey, crypto.SHA256, d[:], f.sig) != nil {
		return c.failRead(errAuth)
	}
	c.in.seq++
	if f.end {
		c.in.err = io.EOF
		return nil
	}
	ct, err := base64.StdEncoding.DecodeString(f.ct) // checked by parseFrame
	if err != nil {
		return c.failRead(errMalformedFrame) // unreachable: parseFrame checked it
	}
	pt, err := c.suite.decrypt(ct)
	if err != nil {
		return c.failRead(err)
	}
	if len(pt) > c.maxPlain {
		return c.failRead(c.tooLong())
	}
	c.in.pending = pt
	return nil
}

// failRead records a permanent read error and, for a protocol error, closes
// the connection as the Node module does. c.in must be held.
func (c *Conn) failRead(err error) error {
	c.in.err = err
	c.in.pending = nil
	if !errors.Is(err, ErrRejected) && !errors.Is(err, ErrTruncated) {
		c.closeConn()
	}
	return err
}

func (c *Conn) tooLong() error {
	return errorf("%w: the limit is %d bytes; raise Config.MaxFrameSize if the Node side writes larger chunks", ErrFrameTooLarge, c.maxPlain)
}

// readError turns a read error from the underlying connection into what
// Read returns. c.in must be held.
func (c *Conn) readError(err error) error {
	if errors.Is(err, errLineTooLong) {
		return c.tooLong()
	}
	ended := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
	switch {
	case ended && c.in.seq == 0:
		return errorf("%w (%w)", ErrRejected, err)
	case ended:
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return errorf("%w (%w)", ErrTruncated, err)
	}
	return err
}

// frameDigest is the SHA-256 of what a frame's signature covers (WIRE.md
// §6): "<seq>,<token><ciphertext base64>", where an end frame has no
// ciphertext.
func frameDigest(seq uint64, token, ct string) [sha256.Size]byte {
	h := sha256.New()
	var num [20]byte
	h.Write(strconv.AppendUint(num[:0], seq, 10))
	h.Write([]byte{','})
	io.WriteString(h, token)
	io.WriteString(h, ct)
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// verifySig checks an RSA PKCS #1 v1.5 SHA-256 signature, what the Node
// module's createVerify('RSA-SHA256') checks.
func verifySig(pub *rsa.PublicKey, msg, sig []byte) bool {
	d := sha256.Sum256(msg)
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], sig) == nil
}

// signSig makes the signature verifySig checks.
func signSig(priv *rsa.PrivateKey, msg []byte) ([]byte, error) {
	d := sha256.Sum256(msg)
	return rsa.SignPKCS1v15(nil, priv, crypto.SHA256, d[:])
}
