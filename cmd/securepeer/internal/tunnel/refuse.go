package tunnel

// Refusing a whole tunnel connection: what a side that will not serve it
// (listen at its limit of sessions) says, and how the other side hears it.

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/frame"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/netutil"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/sanitize"
	"github.com/securepeer/securepeer/internal/pkgerr"
)

// refusalName is the header of the stream on which a side refuses the
// whole connection: never a forward's name, which has no '!'.
const refusalName = "!"

// A SessionRefusedError is a peer that refused the tunnel connection, with
// its reason.
type SessionRefusedError struct{ Addr, Reason string }

func (e *SessionRefusedError) Error() string {
	return fmt.Sprintf("the peer at %s refused the tunnel connection: %s", e.Addr, sanitize.Text(e.Reason))
}

// Refuse tells the peer on c, whose tunnel connection this side will not
// serve, why: it opens one stream, whose header is refusalName and whose
// one frame after it is reason, of 1 to maxStatusLen bytes. It never reads
// the peer's yamux frames, and so answers none of its pings: a peer that
// waits for a ping's answer before it takes the connection for accepted
// (connect does) reads the reason first. It then reads and drops what the
// peer sends until the peer ends the connection, which it does once it has
// read the reason, for at most wait, and ends c: cleanly if the peer ended
// it first, aborted otherwise.
func Refuse(c Conn, reason string, wait time.Duration) error {
	if reason == "" || len(reason) > maxStatusLen {
		return pkgerr.Plainf("a refusal of %d bytes; securepeer-tunnel/1 allows 1 to %d", len(reason), maxStatusLen)
	}
	q := &quietConn{Conn: c, closed: make(chan struct{})}
	sess, err := yamux.Server(q, yamuxConfig(nil))
	if err != nil {
		panic(err) // the configuration is valid
	}
	st, err := sess.OpenStream()
	if err == nil {
		w := frame.NewWriter(st)
		if err = w.WriteFrame([]byte(refusalName), nil); err == nil {
			err = w.WriteFrame([]byte(reason), nil)
		}
	}
	drained := netutil.Drain(c)
	t := time.NewTimer(wait)
	defer t.Stop()
	if err == nil {
		select {
		case <-drained:
		case <-t.C:
			err = errors.New("the peer did not end the connection after the refusal")
		}
	}
	sess.Close()
	if err != nil {
		c.Abort()
	} else {
		c.Close()
	}
	<-drained
	return err
}

// quietConn is a Conn whose reads wait until it is closed: a yamux session
// over it sends, and never reads.
type quietConn struct {
	Conn
	once   sync.Once
	closed chan struct{}
}

func (q *quietConn) Read([]byte) (int, error) {
	<-q.closed
	return 0, io.EOF
}

func (q *quietConn) Close() error {
	q.once.Do(func() { close(q.closed) })
	return nil
}

// refused ends m, whose peer refused it on the stream t: the reason is the
// frame after its header.
func (m *Session) refused(t *stream) error {
	t.st.SetReadDeadline(time.Now().Add(tunnelHeaderTimeout))
	reason, err := t.r.refusal()
	if err != nil {
		t.cut()
		return pkgerr.Plainf("a tunnel stream from %s: %v", m.addr, t.readError(err))
	}
	m.Fail(&SessionRefusedError{Addr: m.addr, Reason: reason})
	return nil
}

// refusal reads the reason of a refusal, after its header.
func (r *reader) refusal() (string, error) {
	return r.text("the peer refused the tunnel connection with a reason of %d bytes, which securepeer-tunnel/1 does not allow")
}
