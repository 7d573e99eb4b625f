package tunnel

// The accepting side of streams, and the opening side: a Server takes the
// streams the peer opens, and Session.Forward opens one for a local
// connection.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/netutil"
	"github.com/securepeer/securepeer/internal/pkgerr"
)

// A Server takes the streams the peer opens on a session and connects
// each to what Route gives for the forward's name in its header.
type Server struct {
	// Route connects the stream for the forward name, opened by the
	// peer at from, to its target: it returns the connection and the
	// target's address, for messages. To refuse the stream it returns a
	// *Refusal, whose Status the peer reads.
	Route func(ctx context.Context, name, from string) (c net.Conn, to string, err error)
	// Log receives the streams connected, at level Info.
	Log *slog.Logger
	// Notef says what happened to one of the peer's streams, and Fullf
	// that the peer holds as many as it may (once a session). A peer can
	// cause them as fast as it likes: they must be rate-limited.
	Notef, Fullf func(format string, args ...any)
}

// A Refusal is a stream that a Route refuses: Status is the reason the
// peer reads, as "connect failed: connection refused"; Err is what this
// side says.
type Refusal struct {
	Status string
	Err    error
}

func (r *Refusal) Error() string { return r.Err.Error() }

func (r *Refusal) Unwrap() error { return r.Err }

// Serve takes the streams the peer opens on m and connects each to the
// target of the name in its header, until the session ends. When ctx
// ends, the session stops (no new streams; it closes cleanly once the
// streams in progress, both directions, have ended); when cutCtx ends, it
// is cut. It returns the number of streams the session's end cut.
func (sv *Server) Serve(ctx, cutCtx context.Context, m *Session) int {
	stopped := context.AfterFunc(ctx, m.stop)
	defer stopped()
	cut := context.AfterFunc(cutCtx, func() { m.Fail(context.Cause(cutCtx)) })
	defer cut()

	full := func() {
		sv.Fullf("the peer at %s holds %d streams on its tunnel connection, the most it may; its next streams wait until it closes some, and yamux resets those beyond %d", m.addr, maxTunnelStreams, tunnelBacklog)
	}
	var handlers sync.WaitGroup
	var cutStreams atomic.Int64
	for {
		if err := m.awaitSlot(full); errors.Is(err, errStopping) {
			refuseStopping(m, &handlers, nil)
			break
		} else if err != nil {
			break // the session has ended
		}
		st, err := m.sess.AcceptStream()
		if err != nil {
			m.unreserve()
			break // the session has ended
		}
		if !m.claim() {
			refuseStopping(m, &handlers, st)
			break
		}
		t := m.take(st)
		handlers.Go(func() {
			defer t.release()
			err := sv.connect(cutCtx, t)
			switch {
			case err == nil || cutCtx.Err() != nil:
			case m.Closed(): // said once for the session
				cutStreams.Add(1)
			default:
				sv.Notef("%v", err)
			}
		})
	}
	handlers.Wait()
	return int(cutStreams.Load())
}

// refuseStopping refuses first, if not nil, and every other stream the
// peer opened before it learnt that the session is stopping (GoAway),
// until the session ends, as it does once the streams in progress have:
// it says so, without waiting on a peer that does not read, and takes no
// slot, since the session's end frees them.
func refuseStopping(m *Session, handlers *sync.WaitGroup, first *yamux.Stream) {
	if first != nil {
		refuseOne(m, handlers, first)
	}
	for {
		st, err := m.sess.AcceptStream()
		if err != nil {
			return
		}
		refuseOne(m, handlers, st)
	}
}

// refuseOne refuses st, on a goroutine of handlers, as stopping.
func refuseOne(m *Session, handlers *sync.WaitGroup, st *yamux.Stream) {
	handlers.Go(func() {
		st.SetWriteDeadline(time.Now().Add(time.Second))
		newStream(st, m).writeFrame([]byte(fmt.Sprintf("refused: the tunnel connection with %s is stopping", m.addr)))
		st.Close()
	})
}

// connect connects one stream the peer opened to the target that Route
// gives for the name in its header, or refuses it with the reason. The
// caller releases t.
func (sv *Server) connect(ctx context.Context, t *stream) error {
	m := t.m
	name, err := t.readHeader()
	if err != nil {
		t.cut()
		return pkgerr.Plainf("a tunnel stream from %s: %v", m.addr, err)
	}
	if name == refusalName {
		return m.refused(t)
	}
	c, to, err := sv.Route(ctx, name, m.addr)
	if err != nil {
		var r *Refusal
		if !errors.As(err, &r) {
			r = &Refusal{Status: "refused", Err: err}
		}
		t.writeFrame([]byte(r.Status))
		return r.Err
	}
	if err := t.writeFrame([]byte("ok")); err != nil {
		netutil.ResetClose(c)
		t.cut()
		return err
	}
	sv.Log.Info("forwarding", "peer", m.peer, "stream", t.st.StreamID(), "name", name, "to", to)
	if err := relay(ctx, t, c, false); err != nil {
		return pkgerr.Plainf("forwarding a stream from %s to %s: %v", m.addr, to, err)
	}
	return nil
}

// An OpenError is a local connection for which no stream could be opened:
// the session was stopping, or held as many streams as it may, or the
// peer took no more.
type OpenError struct{ Err error }

func (e *OpenError) Error() string { return e.Err.Error() }

func (e *OpenError) Unwrap() error { return e.Err }

// Forward carries the local connection c over a new stream for the
// forward name, until both sides have ended, one fails, or ctx ends (which
// cuts the stream). A failure resets c, but for a session that stops
// ([ErrStopping]: c is left as it was, for a newer session to carry). The
// error is an *[OpenError] if no stream could be opened, a
// *[RefusedError] if the peer refused it, or [ErrStreamReset] if the
// peer's yamux reset it before any status.
func (m *Session) Forward(ctx context.Context, c net.Conn, name string) error {
	if err := m.begin(); err != nil {
		if !errors.Is(err, ErrStopping) {
			netutil.ResetClose(c)
		}
		return &OpenError{err}
	}
	t, err := m.openForward(name)
	if err != nil {
		netutil.ResetClose(c)
		return &OpenError{err}
	}
	defer t.release()
	return relay(ctx, t, c, true)
}
