package main

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/idle"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/netutil"
	"github.com/securepeer/securepeer/internal/pkgerr"
	"github.com/securepeer/securepeer/legacy"
)

// bufSize is the copy buffer: one full securepeer record.
const bufSize = 64 << 10

// closeTimeout bounds how long a clean close waits for a peer that does not
// read before cutting the connection.
const closeTimeout = 5 * time.Second

// hangupGrace is how long a stdio stream may still end on its own after a
// SIGHUP. ssh sends its ProxyCommand SIGHUP as it exits, just after closing
// the pipes (stdin's end) and about when the peer (sshd) ends its stream,
// which may take one round trip more: that is the normal end of a session,
// not a cut. The grace covers a round trip of a slow link.
const hangupGrace = 3 * time.Second

// copyStream copies src to dst in record-sized chunks. It hides ReadFrom and
// WriteTo, whose fallbacks copy in 32 KiB pieces.
func copyStream(dst io.Writer, src io.Reader) (int64, error) {
	buf := make([]byte, bufSize)
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf)
}

// joinStdio joins s to stdin and stdout, as nc does, reading what the peer
// sends from fromPeer (s.conn, or a reader of its framing): stdin's end half-closes
// the stream (the peer reads io.EOF and can still answer), and the join
// ends when both directions have ended. With peerEnds, the peer's end alone
// ends the join: the caller says so when stdin is a terminal and nobody is
// going to type an end of file to a transfer that is over (stdout is a
// file), or when the peer's end is a -exec command's. A conversation
// (stdin and stdout both a terminal) half-closes as pipes do: when the
// peer's end comes first, note, if not nil, says so, and this side can
// still answer until its own end (Ctrl-D). If ctx ends first (a signal), it aborts
// s, so the peer knows that data may be missing, and returns an error with
// the signal's exit code; after SIGHUP, only if the stream has not ended
// on its own within hangupGrace, which makes the end of an ssh
// ProxyCommand a clean one.
//
// A goroutine blocked reading stdin cannot be woken up; it is left behind,
// which is harmless as the program exits when joinStdio returns.
func joinStdio(ctx context.Context, s *stream, fromPeer io.Reader, stdin io.Reader, peerEnds bool, stdout io.Writer, m *meter, note func(format string, args ...any)) error {
	var received atomic.Bool // the peer's stream has ended cleanly
	sendDone := make(chan error, 1)
	go func() {
		_, err := copyStream(s, m.countSent(stdin))
		if err == nil {
			err = s.closeWrite()
			if err != nil && received.Load() {
				// Everything was sent; only the end marker could not be,
				// because the peer, done on its side, has closed.
				err = nil
			}
		}
		sendDone <- err
	}()
	recvDone := make(chan error, 1)
	go func() {
		_, err := copyStream(stdout, m.countReceived(fromPeer))
		if err == nil {
			received.Store(true)
		}
		recvDone <- err
	}()

	sent, ended := false, false
	done := ctx.Done()
	var graceOver <-chan time.Time
	for !ended || !(sent || peerEnds) {
		select {
		case err := <-recvDone:
			recvDone = nil
			if err != nil {
				s.abort()
				return streamError(s, err)
			}
			ended = true
			if !sent && !peerEnds && note != nil {
				note("the peer at %s has ended its stream; yours stays open until you end it (Ctrl-D)", s.remoteAddr)
			}
		case err := <-sendDone:
			sendDone = nil
			if err != nil {
				return sendFailed(s, err, recvDone, ended)
			}
			sent = true
		case <-done:
			done = nil
			if hungUp(ctx) {
				t := time.NewTimer(hangupGrace)
				defer t.Stop()
				graceOver = t.C
				continue
			}
			return interruptStdio(ctx, s, sent)
		case <-graceOver:
			return interruptStdio(ctx, s, sent)
		}
	}
	s.close()
	return nil
}

// sendFailed aborts s, whose copy of stdin to the peer failed with err
// (reading stdin or writing to the peer), and says why: the peer may be
// missing data, so it must not see a clean end. recvDone, if not nil, is
// the copy from the peer, still running; ended is whether the peer's
// stream has ended.
func sendFailed(s *stream, err error, recvDone <-chan error, ended bool) error {
	if recvDone != nil && connectionGone(err) {
		// The peer closed or reset the connection. What the receiving
		// side reads says better why: a secure-peer 0.2 peer that refuses
		// this side's key just closes, which only a read can tell from
		// other failures. The read ends at once on a dead connection; the
		// deadline is a bound, not a wait.
		s.conn.SetReadDeadline(time.Now().Add(closeTimeout))
		rerr := <-recvDone
		recvDone = nil
		if errors.Is(rerr, legacy.ErrRejected) || errors.Is(rerr, securepeer.ErrRejected) {
			s.abort()
			return streamError(s, rerr)
		}
	}
	s.abort()
	if recvDone != nil {
		<-recvDone
	}
	if ended {
		return pkgerr.Plainf("the peer at %s closed the connection before it had all of stdin: %v", s.remoteAddr, err)
	}
	return streamError(s, err)
}

// hungUp reports whether ctx ended because of a SIGHUP.
func hungUp(ctx context.Context) bool {
	var se *signalError
	return errors.As(context.Cause(ctx), &se) && se.sig == syscall.SIGHUP
}

// interruptStdio aborts s, whose join to stdio ctx has ended (a signal, or
// -idle), and returns the error that says so. sent is whether all of stdin
// went out, with its end.
func interruptStdio(ctx context.Context, s *stream, sent bool) error {
	s.abort()
	var ie *idle.Error
	if errors.As(context.Cause(ctx), &ie) {
		return pkgerr.Plainf("%v with %s", ie, s.remoteAddr)
	}
	err := interruption(ctx)
	what := "sending"
	if sent {
		// Only what the peer sends is cut short.
		what = "receiving"
	}
	return &codeError{errorCode(err), pkgerr.Plainf("%v while %s; aborted the stream, so the peer at %s knows that data may be missing", err, what, s.remoteAddr)}
}

// connectionGone reports whether a write failed because the peer closed or
// reset the connection.
func connectionGone(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// streamError explains a failure in the middle of a stream.
func streamError(s *stream, err error) error {
	if errors.Is(err, legacy.ErrRejected) {
		// secure-peer 0.2 has no rejection message: a peer that refuses a
		// key closes the connection before its first frame.
		return rejectedErrorf("the peer at %s closed the connection without sending anything, which is how secure-peer 0.2 refuses a key; ask its owner to allow this legacy key (%s, securepeer id -legacy prints it)", s.remoteAddr, s.self.Fingerprint())
	}
	if errors.Is(err, securepeer.ErrRejected) {
		// The initiator finishes its handshake before the responder has
		// checked its key, so a refusal may arrive as the first read.
		return rejectedErrorf("the peer at %s refused this identity (%s); ask its owner to allow the key that securepeer id prints", s.remoteAddr, s.self.Fingerprint())
	}
	if ce := circuitError(err); ce != nil {
		// Through a relay, whose end is why the stream failed.
		return circuitFailure(s, ce)
	}
	if errors.Is(err, securepeer.ErrAborted) {
		return pkgerr.Plainf("the peer at %s aborted the stream; data may be missing", s.remoteAddr)
	}
	if errors.Is(err, syscall.ECONNRESET) {
		// How a -legacy peer aborts, and how a crash may look.
		return pkgerr.Plainf("the connection with %s was reset before the peer's end of stream; data may be missing", s.remoteAddr)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		// The library's error says the same, so it is not repeated.
		return pkgerr.Plainf("the connection with %s ended without the peer's end of stream, so data may be missing", s.remoteAddr)
	}
	return pkgerr.Plainf("stream with %s: %w", s.remoteAddr, err)
}

// proxy copies between the secure stream s and a plain connection c in both
// directions, passing each direction's end on as a half-close, until both
// are done, one fails, or ctx ends. A failure or ctx ending cuts both
// connections without a clean end (s aborted, c reset), so neither side
// mistakes a broken transfer for a complete one.
func proxy(ctx context.Context, s *stream, c net.Conn) error {
	type result struct {
		err      error
		toStream bool // writing to s failed, not reading c
	}
	toPeer := make(chan result, 1)
	go func() { // c → s
		w := &failWriter{w: s}
		_, err := copyStream(w, c)
		if err == nil {
			err = s.closeWrite()
			w.failed = err != nil
		}
		toPeer <- result{err, w.failed}
	}()
	fromPeer := make(chan error, 1)
	go func() { // s → c
		_, err := copyStream(c, s.conn)
		if err == nil {
			err = netutil.CloseWrite(c)
		}
		fromPeer <- err
	}()

	var first error
	cut := false
	fail := func(err error) {
		if err != nil && !cut {
			cut = true
			first = streamError(s, err)
			s.abort()
			netutil.ResetClose(c)
		}
	}
	done := ctx.Done()
	for toPeer != nil || fromPeer != nil {
		select {
		case r := <-toPeer:
			toPeer = nil
			if r.toStream && connectionGone(r.err) && fromPeer != nil && !cut {
				// The peer closed the connection. What it sent before
				// says better why: a peer that refuses this side's key
				// says so in the first record, which the initiator reads
				// only after its handshake (see joinStdio). The read ends
				// at once on a dead connection; the deadline is a bound.
				s.conn.SetReadDeadline(time.Now().Add(closeTimeout))
				rerr := <-fromPeer
				fromPeer = nil
				if errors.Is(rerr, legacy.ErrRejected) || errors.Is(rerr, securepeer.ErrRejected) {
					r.err = rerr
				}
			}
			fail(r.err)
		case err := <-fromPeer:
			fromPeer = nil
			fail(err)
		case <-done:
			done = nil
			if !cut {
				cut = true
				s.abort()
				netutil.ResetClose(c)
			}
		}
	}
	s.conn.Close()
	c.Close()
	return first
}

// failWriter records whether a Write to w failed.
type failWriter struct {
	w      io.Writer
	failed bool
}

func (f *failWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err != nil {
		f.failed = true
	}
	return n, err
}

// A stdinPump lets one stdin serve one session after another (listen
// -keep-open): a read that a session gave up on, because it ended, keeps
// its data for the next session, and the end of stdin is sticky.
type stdinPump struct {
	r io.Reader

	mu      sync.Mutex
	pending chan pumpRead // a read in flight, if any
	buf     []byte        // data read and not yet taken
	err     error         // stdin's error or end, once read
}

type pumpRead struct {
	b   []byte
	err error
}

// errTurnOver is what a session's stdin reader returns once the session
// has ended.
var errTurnOver = errors.New("the session ended")

// reader returns the stdin of one session, which ends when done closes.
func (p *stdinPump) reader(done <-chan struct{}) io.Reader { return &pumpReader{p, done} }

type pumpReader struct {
	p    *stdinPump
	done <-chan struct{}
}

func (r *pumpReader) Read(q []byte) (int, error) {
	p := r.p
	p.mu.Lock()
	if len(p.buf) == 0 && p.err == nil {
		if p.pending == nil {
			ch := make(chan pumpRead, 1)
			p.pending = ch
			go func() {
				b := make([]byte, bufSize)
				n, err := p.r.Read(b)
				ch <- pumpRead{b[:n], err}
			}()
		}
		ch := p.pending
		p.mu.Unlock()
		select {
		case res := <-ch:
			p.mu.Lock()
			p.pending = nil
			p.buf, p.err = res.b, res.err
		case <-r.done:
			return 0, errTurnOver
		}
	}
	defer p.mu.Unlock()
	n := copy(q, p.buf)
	p.buf = p.buf[n:]
	if n == 0 {
		return 0, p.err
	}
	return n, nil
}
