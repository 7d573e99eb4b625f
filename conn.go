package securepeer

import (
	"context"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/securepeer/securepeer/internal/pkgerr"
	"github.com/securepeer/securepeer/internal/wire"
)

// A Conn is a securepeer connection: an encrypted, mutually authenticated
// stream over an underlying connection. It implements [net.Conn]. Read and
// Write run the handshake first if it has not run yet. The handshake's
// messages travel in their own length-prefixed frames, outside the record
// layer; after it, every byte is in a record (PROTOCOL.md).
//
// A Conn is safe for one concurrent Read and one concurrent Write, and for
// Close, deadlines and the accessors at any time.
type Conn struct {
	// The fields are in an order that leaves no padding (an idle
	// connection's memory is what a server holds per peer).
	conn   net.Conn
	config *Config

	// handshakeMutex is held for the whole handshake; state and handshakeErr
	// are written under it. Once handshakeDone is set, state is immutable.
	handshakeMutex sync.Mutex
	handshakeErr   error
	handshakeDone  atomic.Bool
	closed         atomic.Bool
	state          ConnectionState

	// deadlineMu guards the deadlines the user set, and handshaking, below:
	// the handshake replaces them while it runs and restores them
	// afterwards.
	deadlineMu    sync.Mutex
	readDeadline  time.Time
	writeDeadline time.Time

	in  readHalf
	out writeHalf

	// resumption is the secret of the ticket the responder is to send, for
	// an initiator until it arrives (pending), guarded by in's mutex after
	// the handshake.
	resumption struct {
		secret  [32]byte
		pending bool
	}
	mode        wire.Mode
	handshaking bool // guarded by deadlineMu
}

var _ net.Conn = (*Conn)(nil)

// A halfConn is what both directions of the record layer hold: the
// cipher state and the first permanent error. Its mutex is held by the one
// Read (for in) or Write (for out) in progress.
type halfConn struct {
	sync.Mutex
	err    error // first permanent error; every later call returns it
	cipher Cipher
	aead   cipher.AEAD
	key    [32]byte // current key (cipher.keySize() bytes), kept for rekeying
	iv     [12]byte
	nonce  [12]byte
	seq    uint64 // number of records sealed or opened so far
}

// A writeHalf is the sending direction.
type writeHalf struct {
	halfConn
	// ticket is a ticket record's plaintext to send before the next
	// record (sendTicket).
	ticket []byte
}

// A readHalf is the receiving direction. buf holds received bytes not yet
// opened in (*buf)[r:w], and plain the unread rest of the last record
// opened in place. buf comes from bufPool and goes back when nothing is
// pending. Keeping this state across calls lets a Read that hit a deadline
// resume later.
type readHalf struct {
	halfConn
	buf   *[]byte
	r, w  int
	plain []byte
	// raw, if not nil, is the descriptor under the connection, which
	// awaitRecord waits on; small is where it reads otherwise.
	raw   syscall.RawConn
	small [wire.RecordHeaderSize]byte
	// readRaw is awaitRecord's callback for raw.Read, made once so that
	// waiting for a record allocates nothing; rawErr is its result.
	readRaw func(fd uintptr) bool
	rawErr  error
}

// rekeyInterval is the number of records after which a direction's key is
// replaced (PROTOCOL.md, "Key rotation and limits"). It is a variable so
// that tests can shrink it.
var rekeyInterval uint64 = 1 << 20

// maxSeq is the number of records after which a direction refuses to go on,
// rather than ever reuse a nonce.
const maxSeq = 1<<64 - 1

var bufPool = sync.Pool{New: func() any {
	b := make([]byte, wire.RecordHeaderSize+wire.MaxRecordLength)
	return &b
}}

// setup installs the traffic key for this direction. It keeps a copy of
// key and iv, and erases key, best effort, so that no other copy outlives
// the handshake.
func (hc *halfConn) setup(c Cipher, key, iv []byte) error {
	defer clear(key)
	if len(key) != c.keySize() || len(iv) != len(hc.iv) {
		return fmt.Errorf("securepeer: a %v key of %d bytes and an IV of %d", c, len(key), len(iv))
	}
	aead, err := c.newAEAD(key)
	if err != nil {
		return err
	}
	hc.cipher, hc.aead = c, aead
	copy(hc.key[:], key)
	copy(hc.iv[:], iv)
	return nil
}

// nextNonce sets hc.nonce for record hc.seq, rotating the key first when the
// record starts a new rekey interval.
func (hc *halfConn) nextNonce() error {
	if hc.seq == maxSeq {
		return newError("record sequence number exhausted; open a new connection")
	}
	if hc.seq > 0 && hc.seq%rekeyInterval == 0 {
		key := hc.key[:hc.cipher.keySize()]
		next, err := hkdf.Expand(sha256.New, key, labelRekey, len(key))
		if err != nil {
			return err
		}
		defer clear(next)
		aead, err := hc.cipher.newAEAD(next)
		if err != nil {
			return err
		}
		hc.aead = aead
		copy(key, next)
	}
	hc.nonce = hc.iv
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], hc.seq)
	for i := range seq {
		hc.nonce[4+i] ^= seq[i]
	}
	return nil
}

// Handshake runs the handshake if it has not run yet, bounded by
// [Config.HandshakeTimeout]. Most uses need not call it: Read and Write do.
func (c *Conn) Handshake() error {
	return c.HandshakeContext(context.Background())
}

// HandshakeContext runs the handshake if it has not run yet, bounded by ctx
// and by [Config.HandshakeTimeout]. If ctx is canceled first, the handshake
// fails and the connection is unusable. A failed handshake's error is
// returned by every later call.
func (c *Conn) HandshakeContext(ctx context.Context) error {
	if c.handshakeDone.Load() {
		return nil
	}
	c.handshakeMutex.Lock()
	defer c.handshakeMutex.Unlock()
	if c.handshakeErr != nil || c.handshakeDone.Load() {
		return c.handshakeErr
	}
	if c.config == nil || c.config.Identity == nil {
		c.handshakeErr = newError("Config.Identity is required")
		return c.handshakeErr
	}

	ctx, cancel := context.WithTimeout(ctx, c.config.handshakeTimeout())
	defer cancel()
	c.beginHandshakeDeadline(ctx)
	stop := context.AfterFunc(ctx, func() {
		// Wake up a handshake blocked in I/O: a deadline in the past makes
		// the blocked call return at once. Once the handshake has ended,
		// the deadlines are the user's again and are left alone.
		c.deadlineMu.Lock()
		defer c.deadlineMu.Unlock()
		if c.handshaking {
			c.conn.SetDeadline(time.Unix(1, 0))
		}
	})
	err := c.handshake(ctx)
	stop()
	if err != nil && handshakeOutOfTime(ctx, err) {
		// Report the context as the cause: the I/O error it provoked says
		// less.
		err = handshakeTimeoutError(ctx, c.config.handshakeTimeout(), err)
	}
	c.endHandshakeDeadline()
	if err != nil {
		err = ownError(err)
		c.handshakeErr = err
		c.in.err, c.out.err = err, err
		return err
	}
	c.handshakeDone.Store(true)
	return nil
}

// handshakeOutOfTime reports whether the handshake failed because ctx ended,
// including when the connection's deadline, which is ctx's, fired a moment
// before ctx's own timer.
func handshakeOutOfTime(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return true
	}
	var ne net.Error
	dl, ok := ctx.Deadline()
	return ok && errors.As(err, &ne) && ne.Timeout() && !time.Now().Before(dl)
}

func handshakeTimeoutError(ctx context.Context, d time.Duration, err error) error {
	cause := context.Cause(ctx)
	if cause == nil || errors.Is(cause, context.DeadlineExceeded) {
		return &timeoutError{errorf("%w (limit %v or the context's deadline): %w", ErrHandshakeTimeout, d, err)}
	}
	return errorf("handshake canceled: %w", cause)
}

// ownError returns err as an error of this package, whose text starts with
// "securepeer: ": as it is if it is one, else wrapped, as an error from
// another package that the handshake passes on unexplained would be.
func ownError(err error) error {
	switch err.(type) {
	case *pkgerr.Error, *timeoutError:
		return err
	}
	return errorf("%w", err)
}

// timeoutError marks a handshake that ran out of time as a net.Error with
// Timeout true, so code that checks for timeouts sees one, also without
// unwrapping it (os.IsTimeout). Its text is its error's, which wraps
// ErrHandshakeTimeout.
type timeoutError struct{ err error }

func (e *timeoutError) Error() string   { return e.err.Error() }
func (e *timeoutError) Unnamed() error  { return pkgerr.Unnamed(e.err) }
func (e *timeoutError) Unwrap() error   { return e.err }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }

var _ net.Error = (*timeoutError)(nil)

func (c *Conn) beginHandshakeDeadline(ctx context.Context) {
	c.deadlineMu.Lock()
	defer c.deadlineMu.Unlock()
	c.handshaking = true
	d, _ := ctx.Deadline()
	for _, u := range []time.Time{c.readDeadline, c.writeDeadline} {
		if !u.IsZero() && u.Before(d) {
			d = u
		}
	}
	c.conn.SetDeadline(d)
}

func (c *Conn) endHandshakeDeadline() {
	c.deadlineMu.Lock()
	defer c.deadlineMu.Unlock()
	c.handshaking = false
	c.conn.SetReadDeadline(c.readDeadline)
	c.conn.SetWriteDeadline(c.writeDeadline)
}

// Read reads application data, running the handshake first if needed. It
// returns io.EOF once the peer has ended its stream with [Conn.CloseWrite] or
// [Conn.Close], and an error wrapping io.ErrUnexpectedEOF if the underlying
// connection ends without that authenticated end. Any record that fails
// authentication ends the connection with an error; Read never returns data
// that was not sent by the peer in that order.
func (c *Conn) Read(p []byte) (int, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	hc := &c.in
	hc.Lock()
	defer hc.Unlock()
	for len(hc.plain) == 0 {
		if hc.err != nil {
			return 0, hc.err
		}
		n, err := c.readRecordLocked(p)
		if err != nil {
			return 0, err
		}
		if n > 0 {
			return n, nil // opened straight into p
		}
	}
	n := copy(p, hc.plain)
	hc.plain = hc.plain[n:]
	if len(hc.plain) == 0 {
		hc.releaseIfIdle()
	}
	return n, nil
}

func (hc *readHalf) release() {
	if hc.buf != nil {
		bufPool.Put(hc.buf)
		hc.buf, hc.plain = nil, nil
		hc.r, hc.w = 0, 0
	}
}

// releaseIfIdle returns the read buffer to the pool unless it holds the
// start of the next record.
func (hc *readHalf) releaseIfIdle() {
	if hc.r == hc.w {
		hc.release()
	}
}

// awaitRecord waits for the next record's first bytes without holding a
// record buffer, so that an idle connection with a Read blocked on it holds
// none, and puts them in a buffer from the pool. Where the connection
// exposes its descriptor (TCP on Unix) the wait costs no extra system
// call: the buffer is taken just before each attempt to read and given back
// if there is nothing to read. Elsewhere the first few bytes are read into
// a small array of the Conn's own. c.in must be locked, and c.in.buf nil.
func (c *Conn) awaitRecord() error {
	hc := &c.in
	if hc.raw != nil {
		if hc.readRaw == nil {
			hc.readRaw = hc.readFromFD
		}
		hc.rawErr = nil
		if err := hc.raw.Read(hc.readRaw); err != nil {
			return err
		}
		return hc.rawErr
	}
	n, err := c.conn.Read(hc.small[:])
	if n > 0 {
		hc.buf = bufPool.Get().(*[]byte)
		hc.r, hc.w = 0, copy(*hc.buf, hc.small[:n])
		return nil // an error comes back on the next read
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// readFromFD is the callback of awaitRecord's raw.Read: it takes a buffer
// from the pool just before it reads, and gives it back if there was
// nothing to read. hc must be locked.
func (hc *readHalf) readFromFD(fd uintptr) bool {
	bp := bufPool.Get().(*[]byte)
	n, err := readFD(fd, *bp)
	if err == errWouldBlock {
		bufPool.Put(bp)
		return false
	}
	if n > 0 {
		hc.buf, hc.r, hc.w = bp, 0, n
	} else {
		bufPool.Put(bp)
		hc.rawErr = err
	}
	return true
}

// fill reads from the connection until (*hc.buf)[hc.r:hc.w] holds at least
// need bytes, reading as much as the buffer has room for, so that small
// records arrive many per system call. c.in must be locked.
func (c *Conn) fill(need int) error {
	hc := &c.in
	if hc.w-hc.r >= need {
		return nil
	}
	b := *hc.buf
	if hc.r+need > len(b) {
		hc.w = copy(b, b[hc.r:hc.w])
		hc.r = 0
	}
	for hc.w-hc.r < need {
		n, err := c.conn.Read(b[hc.w:])
		hc.w += n
		if err != nil && hc.w-hc.r < need {
			return c.readError(err)
		}
	}
	return nil
}

// readRecordLocked reads and opens one record. A data record whose
// plaintext fits in p is opened into p, and its length returned; any other
// is left in hc.plain. c.in must be locked. A timeout leaves the partial
// record in place for the next call; every other error is permanent.
func (c *Conn) readRecordLocked(p []byte) (int, error) {
	hc := &c.in
	if hc.buf == nil {
		if err := c.awaitRecord(); err != nil {
			return 0, c.readError(err)
		}
	}
	if err := c.fill(wire.RecordHeaderSize); err != nil {
		return 0, err
	}
	b := *hc.buf
	typ, length, err := wire.ParseRecordHeader(b[hc.r : hc.r+wire.RecordHeaderSize])
	if err != nil {
		hc.release()
		hc.err = errorf("malformed record header (type %d, length %d); the connection was tampered with or corrupted", typ, length)
		return 0, hc.err
	}
	if err := c.fill(wire.RecordHeaderSize + length); err != nil {
		return 0, err
	}
	hdr := b[hc.r : hc.r+wire.RecordHeaderSize]
	body := b[hc.r+wire.RecordHeaderSize : hc.r+wire.RecordHeaderSize+length]
	hc.r += wire.RecordHeaderSize + length

	if err := hc.nextNonce(); err != nil {
		hc.release()
		hc.err = err
		return 0, err
	}
	dst := body[:0]
	direct := typ == wire.RecordData && len(p) >= length-wire.TagSize
	if direct {
		dst = p[:0]
	}
	plain, err := hc.aead.Open(dst, hc.nonce[:], body, hdr)
	if err != nil {
		hc.release()
		hc.err = errAuth
		return 0, errAuth
	}
	hc.seq++
	return c.takeRecordLocked(typ, plain, direct)
}

// takeRecordLocked acts on a record just opened, whose plaintext is plain
// (in p if direct): data is returned or kept for the next Read, an end of
// stream or an alert ends the stream, a ticket is taken. c.in must be
// locked.
func (c *Conn) takeRecordLocked(typ uint8, plain []byte, direct bool) (int, error) {
	hc := &c.in
	switch typ {
	case wire.RecordData:
		if direct {
			hc.releaseIfIdle()
			return len(plain), nil
		}
		hc.plain = plain
		if len(plain) == 0 {
			hc.releaseIfIdle()
		}
	case wire.RecordEnd:
		hc.release()
		if len(plain) != 0 {
			// Authentic, so the peer itself is broken: not tampering.
			hc.err = newError("the peer sent an end-of-stream record that carries data, which the protocol forbids")
			return 0, hc.err
		}
		hc.err = io.EOF
	case wire.RecordTicket:
		err := c.takeTicket(plain)
		hc.releaseIfIdle()
		if err != nil {
			hc.release()
			hc.err = err
			return 0, err
		}
	case wire.RecordAlert:
		// plain is in the pooled buffer: read the reason before giving it
		// back, or another connection may overwrite it first.
		reason := -1
		if len(plain) == 1 {
			reason = int(plain[0])
		}
		hc.release()
		switch reason {
		case wire.AlertRejected:
			hc.err = errorf("%w (it ended the connection after the handshake)", ErrRejected)
		case wire.AlertAborted:
			hc.err = errorf("%w", ErrAborted)
		default:
			hc.err = newError("the peer ended the connection with an unknown alert")
		}
		return 0, hc.err
	}
	return 0, nil
}

// readError classifies an error from the underlying connection while reading
// records. c.in must be locked.
func (c *Conn) readError(err error) error {
	hc := &c.in
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return err // not permanent: the partial record stays for the next Read
	}
	partial := hc.w > hc.r
	hc.release()
	if err == io.EOF {
		if !partial {
			hc.err = errorf("the connection ended without the peer's end of stream, so data may be missing: %w", io.ErrUnexpectedEOF)
		} else {
			hc.err = errorf("the connection ended in the middle of a record: %w", io.ErrUnexpectedEOF)
		}
		return hc.err
	}
	hc.err = err
	return err
}

// Write encrypts and sends p, running the handshake first if needed. Data is
// sent in records of at most 64 KiB. After an error, every later Write
// returns it: the stream cannot be resumed.
func (c *Conn) Write(p []byte) (int, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	hc := &c.out
	hc.Lock()
	defer hc.Unlock()
	if hc.err != nil {
		return 0, hc.err
	}
	n := 0
	for len(p) > 0 {
		m := min(len(p), wire.MaxRecordPayload)
		if err := c.writeRecordLocked(wire.RecordData, p[:m]); err != nil {
			return n, err
		}
		n += m
		p = p[m:]
	}
	return n, nil
}

// writeRecordLocked seals and sends one record. c.out must be locked. Every
// error is permanent: a record may have been partly written.
func (c *Conn) writeRecordLocked(typ uint8, payload []byte) error {
	hc := &c.out
	if hc.err != nil {
		return hc.err
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	b := (*bp)[:0]
	if hc.ticket != nil {
		// The ticket goes first, in the same write as the record when
		// both fit in the buffer, so it costs no system call of its own.
		t := hc.ticket
		hc.ticket = nil
		var err error
		if b, err = hc.sealLocked(b, wire.RecordTicket, t); err != nil {
			return err
		}
		if len(b)+wire.RecordHeaderSize+len(payload)+wire.TagSize > cap(b) {
			if err := c.sendLocked(b); err != nil {
				return err
			}
			b = b[:0]
		}
	}
	b, err := hc.sealLocked(b, typ, payload)
	if err != nil {
		return err
	}
	return c.sendLocked(b)
}

// sealLocked appends to b one sealed record. The header is the additional
// data, sealed in place after it, as crypto/tls does with TLS 1.3 records.
// hc must be locked.
func (hc *halfConn) sealLocked(b []byte, typ uint8, payload []byte) ([]byte, error) {
	if err := hc.nextNonce(); err != nil {
		hc.err = err
		return nil, err
	}
	start := len(b)
	b = b[:start+wire.RecordHeaderSize]
	hdr := b[start:]
	wire.PutRecordHeader(hdr, typ, len(payload)+wire.TagSize)
	b = hc.aead.Seal(b, hc.nonce[:], payload, hdr)
	hc.seq++
	return b, nil
}

// sendLocked writes sealed records. c.out must be locked.
func (c *Conn) sendLocked(b []byte) error {
	if _, err := c.conn.Write(b); err != nil {
		c.out.err = &permanentError{err}
		return c.out.err
	}
	return nil
}

// permanentError wraps a write error that ends the stream, keeping the
// net.Error behaviour of the original (a timeout still reports Timeout).
type permanentError struct{ err error }

func (e *permanentError) Error() string { return "securepeer: " + e.Unnamed().Error() }

// Unnamed is the error without the package's name (pkgerr.Unnamed).
func (e *permanentError) Unnamed() error {
	return fmt.Errorf("write failed, the connection is unusable: %w", e.err)
}
func (e *permanentError) Unwrap() error { return e.err }
func (e *permanentError) Timeout() bool {
	var ne net.Error
	return errors.As(e.err, &ne) && ne.Timeout()
}
func (e *permanentError) Temporary() bool { return false }

var errShutdown = newError("write after CloseWrite")

// CloseWrite ends this side's stream with an authenticated end-of-stream
// record: the peer's Read returns io.EOF once it has read everything before
// it. The peer can still write, and this side can still read. CloseWrite
// must be called after the handshake has completed.
func (c *Conn) CloseWrite() error {
	if !c.handshakeDone.Load() {
		return newError("CloseWrite called before the handshake completed")
	}
	hc := &c.out
	hc.Lock()
	defer hc.Unlock()
	return c.closeWriteLocked()
}

func (c *Conn) closeWriteLocked() error {
	if c.out.err == errShutdown {
		return nil
	}
	if err := c.writeRecordLocked(wire.RecordEnd, nil); err != nil {
		return err
	}
	c.out.err = errShutdown
	return nil
}

// Close ends the stream as [Conn.CloseWrite] does, unless a Write is in
// progress, and closes the underlying connection. Sending the end of stream
// waits at most five seconds for a peer that does not read.
func (c *Conn) Close() error {
	if c.closed.Swap(true) {
		return net.ErrClosed
	}
	var endErr error
	if c.handshakeDone.Load() && c.out.TryLock() {
		if c.out.err == nil {
			c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			endErr = c.closeWriteLocked()
		}
		c.out.Unlock()
	}
	if err := c.conn.Close(); err != nil {
		return err
	}
	if endErr != nil && !errors.Is(endErr, net.ErrClosed) {
		return endErr
	}
	return nil
}

// Abort ends the connection at once without an end of stream: it sends an
// authenticated alert, so that the peer's Read returns an error wrapping
// [ErrAborted] instead of io.EOF, and closes the underlying connection. Use
// it when this side fails or is interrupted before the end of what it
// meant to send, so that the peer never takes a partial stream for a whole
// one. A Write in progress is not waited for; the alert is then left out
// and the peer reads an error wrapping io.ErrUnexpectedEOF, which says as
// much. Sending the alert waits at most one second for a peer that does not
// read.
func (c *Conn) Abort() error {
	if c.closed.Swap(true) {
		return net.ErrClosed
	}
	if c.handshakeDone.Load() && c.out.TryLock() {
		if c.out.err == nil {
			// After CloseWrite the peer has the whole stream: nothing to
			// retract.
			c.alertLocked(wire.AlertAborted)
		}
		c.out.err = errAbortedLocally
		c.out.Unlock()
	}
	return c.conn.Close()
}

var errAbortedLocally = newError("write after Abort")

// alertLocked sends an alert record and makes the connection unusable.
// c.out must be locked.
func (c *Conn) alertLocked(reason byte) error {
	c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	err := c.writeRecordLocked(wire.RecordAlert, []byte{reason})
	c.conn.SetWriteDeadline(time.Time{})
	return err
}

// LocalAddr returns the local address of the underlying connection.
func (c *Conn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// RemoteAddr returns the remote address of the underlying connection.
func (c *Conn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// SetDeadline sets the read and write deadlines, as [net.Conn] describes.
// While the handshake runs, it is bounded by the earlier of these deadlines
// and the handshake's own. A Write that times out makes the connection
// unusable; a Read that times out can be retried.
func (c *Conn) SetDeadline(t time.Time) error { return c.setDeadline(&t, &t) }

// SetReadDeadline sets the read deadline, as [Conn.SetDeadline] describes.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.setDeadline(&t, nil) }

// SetWriteDeadline sets the write deadline, as [Conn.SetDeadline] describes.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.setDeadline(nil, &t) }

// setDeadline records the deadlines that are not nil and, unless the
// handshake runs (it applies them when it ends), sets them on the
// underlying connection.
func (c *Conn) setDeadline(read, write *time.Time) error {
	c.deadlineMu.Lock()
	defer c.deadlineMu.Unlock()
	if read != nil {
		c.readDeadline = *read
	}
	if write != nil {
		c.writeDeadline = *write
	}
	if c.handshaking {
		return nil
	}
	switch {
	case read != nil && write != nil:
		return c.conn.SetDeadline(*read)
	case read != nil:
		return c.conn.SetReadDeadline(*read)
	}
	return c.conn.SetWriteDeadline(*write)
}

// rawConn returns the descriptor the record layer may read from directly:
// that of the underlying connection once nothing the listener read ahead is
// left to replay, or nil.
func (c *Conn) rawConn() syscall.RawConn {
	nc := c.conn
	if ac, ok := nc.(admittedConn); ok {
		if ac.Buffered() > 0 {
			return nil
		}
		nc = ac.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok || !haveReadFD {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// NetConn returns the underlying connection. Writing to or reading from it
// corrupts the securepeer stream.
func (c *Conn) NetConn() net.Conn {
	if ac, ok := c.conn.(admittedConn); ok {
		// A listener's connection, which replays the first flight.
		return ac.NetConn()
	}
	return c.conn
}

// RemoteKey returns the peer's verified identity, or the zero PublicKey
// before the handshake has completed.
func (c *Conn) RemoteKey() PublicKey {
	if !c.handshakeDone.Load() {
		return PublicKey{}
	}
	return c.state.RemoteKey
}

// ConnectionState describes a connection.
type ConnectionState struct {
	// HandshakeComplete is true once the handshake has succeeded; the other
	// fields are set only then.
	HandshakeComplete bool
	// DidResume is true if the session was resumed from a ticket
	// ([Config.ClientSessionCache]) rather than set up by a full handshake.
	DidResume bool
	// RemoteKey is the peer's identity, proved in the handshake and accepted
	// by [Config.Verify].
	RemoteKey PublicKey
	// Cipher is the transport cipher both sides chose.
	Cipher Cipher
	// PostQuantum is true if the session keys include the ML-KEM-768
	// shared secret as well as X25519's.
	PostQuantum bool
	// Initiator is true if this side sent the first handshake message.
	Initiator bool
	// NegotiatedProtocol is the application protocol both sides chose from
	// their [Config.NextProtos], or empty if either set none.
	NegotiatedProtocol string
	// ChannelBinding is 32 bytes that are equal on both sides of this
	// connection and unique to it: a secret, derived from the session keys,
	// that an application can bind its own authentication to.
	ChannelBinding []byte
}

// ConnectionState returns the state of the connection. It does not run the
// handshake.
func (c *Conn) ConnectionState() ConnectionState {
	if !c.handshakeDone.Load() {
		return ConnectionState{}
	}
	s := c.state
	s.ChannelBinding = append([]byte(nil), s.ChannelBinding...)
	return s
}
