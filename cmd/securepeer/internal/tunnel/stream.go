package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/frame"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/netutil"
)

// A stream is one yamux stream of a tunnel, framed as the package's doc
// says. Read returns the data of the peer's frames and io.EOF at its end
// frame; any other end is errStreamCut or the session's error.
type stream struct {
	st *yamux.Stream
	m  *Session
	r  reader
	w  *frame.Writer
}

func newStream(st *yamux.Stream, m *Session) *stream {
	return &stream{st: st, m: m, r: reader{f: frame.NewReader(st)}, w: frame.NewWriter(st)}
}

func (t *stream) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		err = t.readError(err)
	}
	return n, err
}

// readHeader reads the header that starts a stream from the opener: the
// forward's name.
func (t *stream) readHeader() (string, error) {
	t.st.SetReadDeadline(time.Now().Add(tunnelHeaderTimeout))
	defer t.st.SetReadDeadline(time.Time{})
	name, err := t.r.header()
	if err != nil {
		return "", t.readError(err)
	}
	return name, nil
}

// readStatus reads the status frame that answers the opener's header, and
// returns a *RefusedError unless it is "ok".
func (t *stream) readStatus() error {
	err := t.r.status()
	if errors.Is(err, yamux.ErrConnectionReset) && !t.r.began && !t.m.Closed() {
		return ErrStreamReset
	}
	if err != nil && !errors.As(err, new(*RefusedError)) {
		return t.readError(err)
	}
	return err
}

// readDone reads what follows the peer's end frame: its done mark, the
// proof that it has everything this side sent. A FIN, a reset or the
// session's end instead means the stream was cut.
func (t *stream) readDone() error {
	if err := t.r.done(); err != nil {
		return t.readError(err)
	}
	return nil
}

// readError turns the yamux stream's end without an end frame into the
// reason. A peer that broke the protocol is said as such.
func (t *stream) readError(err error) error {
	if errors.As(err, new(*malformedError)) {
		return err
	}
	if t.m.Closed() {
		return t.m.Err()
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, frame.ErrCut) || errors.Is(err, yamux.ErrConnectionReset) {
		return errStreamCut
	}
	return err
}

// writeFrame sends p as one frame; an empty p is the end frame.
func (t *stream) writeFrame(p []byte) error { return t.w.WriteFrame(p, nil) }

// writeDone sends the done mark.
func (t *stream) writeDone() error { return t.w.WriteHeader(doneMark) }

// sendFrom sends what it reads from c as frames, then the end frame. It
// returns a *sendError if writing to the stream failed, and reading c's
// error otherwise.
func (t *stream) sendFrom(c io.Reader) error {
	bp := frameBufs.Get().(*[]byte)
	defer frameBufs.Put(bp)
	buf := *bp
	for {
		n, err := c.Read(buf[frame.HeaderLen:])
		if n > 0 {
			if werr := t.w.WriteFramed(buf[:frame.HeaderLen+n]); werr != nil {
				return &sendError{werr}
			}
		}
		if errors.Is(err, io.EOF) {
			if werr := t.writeFrame(nil); werr != nil {
				return &sendError{werr}
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// bufSize is a copy buffer to the local connection: one full securepeer
// record.
const bufSize = 64 << 10

// frameBufs holds sendFrom's buffers, and copyBufs those of relay's
// copies to the local connection, which a tunnel with many short streams
// would otherwise allocate (and clear) for each stream.
var (
	frameBufs = sync.Pool{New: func() any {
		b := make([]byte, frame.HeaderLen+maxFramePayload)
		return &b
	}}
	copyBufs = sync.Pool{New: func() any {
		b := make([]byte, bufSize)
		return &b
	}}
)

// sendError is a failed write to a tunnel stream.
type sendError struct{ err error }

func (e *sendError) Error() string { return e.err.Error() }
func (e *sendError) Unwrap() error { return e.err }

// cut ends the stream at once: the FIN without the done mark tells the
// peer, and the deadlines wake this side's reader and writer.
func (t *stream) cut() {
	t.st.SetDeadline(time.Now())
	t.st.Close()
}

// release gives the stream back once this side is done with it: it closes
// the stream, if this side has not yet, then reads and discards whatever
// the peer still sends until the peer's FIN, a reset or the session's end,
// so the stream holds none of the peer's data meanwhile; only then, when
// yamux has forgotten the stream, does its slot count out. An honest peer
// closes at once after a refusal or a cut, and after the done marks; one
// that never does keeps the slot, and nothing more, until the session
// ends. Every stream this side takes is released exactly once.
func (t *stream) release() {
	defer func() {
		t.m.mu.Lock()
		delete(t.m.streams, t)
		t.m.mu.Unlock()
		t.m.end()
	}()
	t.st.SetDeadline(time.Time{})
	t.st.Close()
	if t.m.Closed() {
		return // yamux has forgotten it, or is about to; wake may have come
	}
	var buf [2048]byte
	for {
		n, err := t.st.Read(buf[:])
		t.m.discarded.Add(int64(n))
		t.st.Shrink() // let the emptied buffer go
		if err != nil {
			return
		}
	}
}

// relay copies between the tunnel stream t and the local connection
// c in both directions, passing each direction's clean end on (an end
// frame, a half-close) and exchanging done marks, until both ends and both
// marks have passed, one fails, or ctx ends. A failure cuts both: t without
// its done mark, c with a reset. If status, the peer's status frame comes
// first (on the side that opened t). The caller releases t afterwards.
//
// The verdict never depends on which goroutine reports first: the stream
// ended cleanly exactly when this side's end frame and done mark were
// sent, and the peer's end frame and done mark received, in whatever
// order those reports arrive.
func relay(ctx context.Context, t *stream, c net.Conn, status bool) error {
	sent := make(chan error, 1)
	go func() { sent <- t.sendFrom(c) }()
	recv := make(chan error, 1)
	go func() { recv <- t.recvTo(c, status) }()
	var markSent, markRecv chan error // after both ends: the done marks

	var first error
	cut := false
	fail := func(err error) {
		if !cut {
			cut = true
			first = err
			t.cut()
			netutil.ResetClose(c)
		}
	}
	sendDone, recvDone, marked := false, false, false
	done := ctx.Done()
	for sent != nil || recv != nil || markSent != nil || markRecv != nil {
		select {
		case err := <-sent:
			sent = nil
			if err != nil {
				fail(err)
				break
			}
			sendDone = true
		case err := <-recv:
			recv = nil
			if err != nil {
				fail(err)
				break
			}
			recvDone = true
			// The peer's done mark, or its FIN if it cuts the stream
			// (say, because it no longer reads): watched from now on, as
			// this side may still be sending.
			markRecv = make(chan error, 1)
			go func() { markRecv <- t.readDone() }()
		case err := <-markSent:
			markSent = nil
			if err != nil {
				fail(&sendError{err})
			}
		case err := <-markRecv:
			markRecv = nil
			if err != nil {
				fail(err)
			}
		case <-done:
			done = nil
			fail(context.Cause(ctx))
		}
		if sendDone && recvDone && !marked && !cut {
			marked = true
			markSent = make(chan error, 1)
			go func() { markSent <- t.writeDone() }()
		}
	}
	if !cut {
		c.Close()
	}
	return first
}

// recvTo copies the peer's data to c, after its status if status, then
// passes its end on.
func (t *stream) recvTo(c net.Conn, status bool) error {
	if status {
		if err := t.readStatus(); err != nil {
			return err
		}
	}
	bp := copyBufs.Get().(*[]byte)
	_, err := io.CopyBuffer(struct{ io.Writer }{c}, t, *bp)
	copyBufs.Put(bp)
	if err != nil {
		return err
	}
	return netutil.CloseWrite(c)
}
