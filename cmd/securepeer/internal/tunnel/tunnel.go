// Package tunnel is the command's multiplexed tunnels: the
// securepeer-tunnel/1 application protocol.
//
// When both sides of a tunnel (connect or listen with -from or -to) offer
// [Protocol] in the handshake (securepeer.Config.NextProtos), the
// secure stream carries a yamux session (github.com/hashicorp/yamux; its
// spec.md): connect is the yamux client, listen the server, and either
// side opens a yamux stream for each local connection one of its -from
// addresses accepts. One handshake then serves every local connection in
// both directions, and a ping after tunnelKeepAlive of silence notices a
// peer that has gone away. PROTOCOL.md ("Tunnels") says the same for an
// implementer, with the reasons, and testdata/vectors/tunnel1.txt has the
// bytes of a session's streams.
//
// The package knows nothing of the command line: a [Session] runs over a
// [Conn] (a secure stream that can end cleanly or be aborted), a [Server]
// connects the peer's streams to what its Route says, and
// [Session.Forward] carries a local connection over a new stream.
//
// Each yamux stream starts with the opener's header: one frame (framing
// below) whose data is the name of the forward, as -from NAME=ADDR gave it,
// or empty for an unnamed -from; at most maxNameLen bytes. The accepting
// side connects the stream only to its own -to of that name: the side that
// opens the connection to a target decides which targets exist, as
// sshd's PermitOpen does, and a peer can never name an address.
//
// The accepting side answers with a status frame, at most maxStatusLen
// bytes: "ok" once it has connected to its target, and the data follows;
// otherwise a reason, and it closes the stream: "connect failed: REASON"
// when the target cannot be reached (REASON as "connection refused", as
// ssh's "channel open failed: connect failed: Connection refused"), or
// "no -to named ..." when it has no target of that name. The opener shows
// the reason in a notice and resets the local connection; the tunnel stays
// up. The opener sends its data at once, without waiting for the status,
// so a stream costs no round trip; the accepting side discards that data
// if it refuses the stream.
//
// After the header, each direction is a sequence of frames: a 4-byte
// big-endian length n, then n bytes of data. A frame with n = 0 is the
// clean end of that direction (the local side's end of data, passed on as
// a half-close). Once a side has sent its own end frame, and has received
// the peer's and passed it on (the half-close succeeded), it sends one more
// header, the done mark FF FF FF FF with no data: "I have all you sent".
// A side closes the yamux stream (FIN) only after the peer's done mark, or
// to cut the stream. So a stream ended cleanly exactly when its done mark
// came before the FIN: a FIN, or the loss of the session, without it means
// the stream was cut, and the side that sees that resets its local
// connection, so a broken transfer never looks complete; with it, nothing
// this side sent can have been lost, whatever order the two sides'
// goroutines run in. (yamux alone cannot say this: hashicorp/yamux has no
// per-stream reset, and it ends the streams of a lost session with a plain
// end of file.)
//
// Limits, since either peer may be hostile. A stream counts against the
// connection's maxTunnelStreams from the moment this side takes it (opens
// it, or accepts it from yamux) until yamux has forgotten it: this side
// has closed it and the peer has too (its FIN, a reset, or the session's
// end). While the peer has not, this side reads and discards whatever it
// still sends, so a closed stream holds a slot but none of the peer's
// data. While every slot is taken, this side accepts no stream: the peer's
// new streams wait in yamux's backlog, at most tunnelBacklog of them with
// at most yamux's initial window (256 KiB) each, and yamux resets the
// ones beyond. A header must arrive within tunnelHeaderTimeout. So what a
// peer can make one tunnel connection hold is bounded: at most the window
// for each of maxTunnelStreams streams and yamux's initial window for each
// of tunnelBacklog, in buffers that yamux grows by doubling, and this
// side's copy buffers for each stream that relays (PROTOCOL.md's table of
// states gives the figures, and TestTunnelStreamStates checks them).
//
// The protocol was changed before any release (named forwards, streams
// opened by either side, the done mark), so it keeps its /1.
package tunnel

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/ratelog"
	"github.com/securepeer/securepeer/internal/pkgerr"
	"github.com/securepeer/securepeer/internal/wire"
)

// Protocol is the application protocol name of multiplexed tunnels.
const Protocol = "securepeer-tunnel/1"

// A tunnel's keepalive: when nothing has come from the peer for
// tunnelKeepAlive (checked every third of it), a yamux ping, after which
// something must come within tunnelPingTimeout; so a peer that has gone
// away (crashed, stopped, or cut off by a NAT that dropped the mapping) is
// noticed within 30 seconds. The pings also keep NAT mappings alive.
const (
	tunnelKeepAlive   = 15 * time.Second
	tunnelPingTimeout = 10 * time.Second
	tunnelSendTimeout = time.Minute
)

// maxFramePayload is the most data sendFrom puts in a frame: with the
// frame's length and yamux's header, four full securepeer records (muxConn
// sends the header with its body, so no record holds a header alone).
// Each frame costs two goroutine handoffs on each side (yamux's send and
// receive loops), which on a busy machine weigh more than the copies: one
// bulk stream moved about 0.6 times as fast as a connection of its own
// with one record a frame, and about 0.85 times with four (BENCHMARKS.md,
// "Tunnels").
const maxFramePayload = 4*wire.MaxRecordPayload - yamuxHeaderLen - 4

// maxStatusLen bounds the status frame that answers each stream's header.
const maxStatusLen = 1024

// MaxNameLen bounds a forward's name, in -from/-to and in a stream's
// header.
const MaxNameLen = 64

// maxTunnelStreams bounds the streams of one tunnel connection, both
// directions together, from the moment this side takes one until yamux
// has forgotten it, so that one peer's memory and goroutines on this side
// are bounded.
const maxTunnelStreams = 128

// tunnelWindow is each stream's yamux receive window: the most of the
// peer's data that a stream buffers while its local side does not read.
const tunnelWindow = 1 << 20

// tunnelBacklog is how many streams the peer has opened may wait for this
// side to accept them (yamux's AcceptBacklog), each buffering at most
// yamux's initial window, 256 KiB, since the larger window is granted only
// on accepting; yamux resets the streams beyond. It also bounds the
// streams this side has opened that the peer has not yet acknowledged.
const tunnelBacklog = 16

// yamuxInitialWindow is yamux's initial stream window (its spec.md), what a
// stream waiting in the backlog may buffer.
const yamuxInitialWindow = 256 << 10

// tunnelHeaderTimeout bounds the wait for a stream's header, which the
// opener sends at once.
const tunnelHeaderTimeout = 30 * time.Second

// errStreamCut is what a tunnel stream's reader gets when the peer cut it:
// it ended without its end frame.
var errStreamCut = errors.New("the peer cut the tunnel stream before its end; data may be missing")

// errPeerClosed is a tunnel session's end by the peer's clean end of
// stream, as listen does when it stops.
var errPeerClosed = errors.New("the peer closed the tunnel connection")

// ErrStreamReset is what the opener of a stream reads when the peer's yamux
// reset it before any status: the peer had as many streams from this side
// as it takes waiting already, or was stopping.
var ErrStreamReset = errors.New("the peer reset the stream before answering: it takes no more streams on this connection for now")

// A Session is a yamux session over a secure stream.
type Session struct {
	addr     string            // the peer's address, for messages
	peer     string            // the peer's fingerprint, for the log
	describe func(error) error // what an error of the secure stream means
	sess     *yamux.Session
	conn     *muxConn

	mu       sync.Mutex
	reason   error         // why the session ended, if this side knows better than yamux
	active   int           // streams this side holds, both directions, until yamux has forgotten them, and reserved
	reserved bool          // one of active is the accept loop's, taken for the stream it waits for
	stopping bool          // stop was called: no new streams; closeClean once idle
	freed    chan struct{} // closed, and replaced, when a stream counts out or stop is called
	full     bool          // the accept loop has had to wait for a slot

	streams map[*stream]struct{} // taken and not yet released, for wake

	discarded atomic.Int64 // bytes of the peer's that release discarded
}

// take makes st one of the session's streams, for a caller that holds a
// slot for it: the stream's release gives it back.
func (m *Session) take(st *yamux.Stream) *stream {
	t := newStream(st, m)
	m.mu.Lock()
	m.streams[t] = struct{}{}
	m.mu.Unlock()
	return t
}

// wake ends the waits of every stream's readers and writers once the
// session is closing. yamux wakes them when it begins to close the
// session, but they find their streams open until it has closed the
// connection, which for an aborted secure stream can take a second or
// two, and spin meanwhile; a deadline in the past stops them.
func (m *Session) wake() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for t := range m.streams {
		t.st.SetDeadline(time.Unix(1, 0))
	}
}

// begin counts a new stream this side opens in, unless the session is
// stopping or has maxTunnelStreams already; the stream's release counts it
// out.
func (m *Session) begin() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.stopping:
		return &stoppingError{m.addr}
	case m.active >= maxTunnelStreams:
		return pkgerr.Plainf("the tunnel connection with %s already carries %d streams, the most it may", m.addr, maxTunnelStreams)
	}
	m.active++
	return nil
}

// awaitSlot waits until this side may accept another stream from the
// peer, and reserves a slot for it: meanwhile the peer's new streams wait
// in yamux's backlog. The first time in the session that it has to wait,
// it calls full. It returns an error once the session has ended or is
// stopping. The accept loop then either claims the slot for the stream it
// accepts, or gives it back with unreserve.
func (m *Session) awaitSlot(full func()) error {
	for {
		m.mu.Lock()
		switch {
		case m.stopping:
			m.mu.Unlock()
			return errStopping
		case m.active < maxTunnelStreams:
			m.active++
			m.reserved = true
			m.mu.Unlock()
			return nil
		}
		freed := m.freed
		first := !m.full
		m.full = true
		m.mu.Unlock()
		if first {
			full()
		}
		select {
		case <-freed:
		case <-m.sess.CloseChan():
			return yamux.ErrSessionShutdown
		}
	}
}

// errStopping is awaitSlot's answer once the session is stopping.
var errStopping = errors.New("the tunnel connection is stopping")

// ErrStopping is what opening a stream on a session that stops returns,
// wrapped in an *[OpenError]: the caller may open it on a newer session.
var ErrStopping = errStopping

// A stoppingError says that a session stops, and with whom.
type stoppingError struct{ addr string }

func (e *stoppingError) Error() string {
	return fmt.Sprintf("the tunnel connection with %s is stopping", e.addr)
}

func (e *stoppingError) Is(target error) bool { return target == errStopping }

// claim makes the accept loop's reserved slot the accepted stream's,
// unless the session began stopping while the loop waited for it: then
// it gives the slot back and returns false.
func (m *Session) claim() bool {
	m.mu.Lock()
	m.reserved = false
	stopping := m.stopping
	m.mu.Unlock()
	if stopping {
		m.end()
	}
	return !stopping
}

// unreserve gives the accept loop's reserved slot back.
func (m *Session) unreserve() {
	m.mu.Lock()
	m.reserved = false
	m.mu.Unlock()
	m.end()
}

// busy is the number of streams held, the reservation aside. m.mu is
// held.
func (m *Session) busy() int {
	if m.reserved {
		return m.active - 1
	}
	return m.active
}

// end counts a stream out.
func (m *Session) end() {
	m.mu.Lock()
	m.active--
	idle := m.stopping && m.busy() == 0
	close(m.freed)
	m.freed = make(chan struct{})
	m.mu.Unlock()
	if idle {
		m.closeClean()
	}
}

// Stop tells the peer to open no more streams, and closes the session
// cleanly once the streams in progress, both ways, have ended: for a
// session that a newer one replaces (connect moves its tunnel to a
// direct connection). Opening a stream on it fails with [ErrStopping].
func (m *Session) Stop() { m.stop() }

// stop tells the peer to open no more streams, and closes the session
// cleanly once the streams in progress have ended.
func (m *Session) stop() {
	m.sess.GoAway()
	m.mu.Lock()
	m.stopping = true
	idle := m.busy() == 0
	close(m.freed)
	m.freed = make(chan struct{})
	m.mu.Unlock()
	if idle {
		m.closeClean()
	}
}

// openForward opens a stream for the forward named name, sending its
// header, for a caller that holds a slot (begin): the stream's release
// gives it back, and so does openForward if it fails.
func (m *Session) openForward(name string) (*stream, error) {
	st, err := m.sess.OpenStream()
	if err != nil {
		m.end()
		if m.Closed() {
			return nil, m.Err()
		}
		return nil, pkgerr.Plainf("the peer at %s accepts no more streams on this connection: %v", m.addr, err)
	}
	t := m.take(st)
	if err := t.writeFrame([]byte(name)); err != nil {
		t.cut()
		t.release()
		return nil, err
	}
	return t, nil
}

// A Conn is the secure stream a session runs over: its end says that
// everything was sent, and it can be aborted instead, so that the peer
// knows that streams were cut.
type Conn interface {
	io.Reader
	io.Writer
	// Close ends the stream cleanly, then the connection.
	Close() error
	// Abort ends the connection without an end of stream.
	Abort()
}

// A Config says how a Session runs, and what it says.
type Config struct {
	// Client makes this side yamux's client (connect); otherwise it is
	// the server (listen).
	Client bool
	// Addr is the peer's address, and Peer its key's fingerprint, for
	// messages and the log.
	Addr, Peer string
	// Log receives yamux's own messages, at level Debug and a bounded
	// rate, and the streams this side connects, at level Info.
	Log *slog.Logger
	// Describe says what an error of the secure stream means (nil: the
	// error as it is).
	Describe func(error) error
	// KeepAlive and PingTimeout replace tunnelKeepAlive and
	// tunnelPingTimeout if set (tests that notice a dead peer quickly).
	KeepAlive, PingTimeout time.Duration
}

// NewSession starts a yamux session over c, with its keepalive.
func NewSession(c Conn, cfg Config) *Session {
	keepAlive, pingTimeout := tunnelKeepAlive, tunnelPingTimeout
	if cfg.KeepAlive != 0 {
		keepAlive = cfg.KeepAlive
	}
	if cfg.PingTimeout != 0 {
		pingTimeout = cfg.PingTimeout
	}
	m := &Session{
		addr: cfg.Addr, peer: cfg.Peer, describe: cfg.Describe,
		conn:  &muxConn{c: c},
		freed: make(chan struct{}), streams: map[*stream]struct{}{},
	}
	m.conn.read.Store(time.Now().UnixNano())
	var err error
	if cfg.Client {
		m.sess, err = yamux.Client(m.conn, yamuxConfig(cfg.Log))
	} else {
		m.sess, err = yamux.Server(m.conn, yamuxConfig(cfg.Log))
	}
	if err != nil {
		panic(err) // the configuration is valid
	}
	go m.keepAlive(keepAlive, pingTimeout)
	return m
}

// yamuxConfig is the configuration of a tunnel's yamux session, its
// messages going to log.
func yamuxConfig(log *slog.Logger) *yamux.Config {
	cfg := yamux.DefaultConfig()
	cfg.EnableKeepAlive = false // keepAlive below, which knows why it failed
	// How long a frame may wait for its turn to be sent, on a slow link
	// busy with other streams, before its stream fails. A peer that has
	// gone away is keepAlive's to notice.
	cfg.ConnectionWriteTimeout = tunnelSendTimeout
	// yamux may free a stream this side has closed, with a reset, only
	// once the peer has had all of it, which takes as long as the peer's
	// local side takes to read the last window of it: no timeout fits.
	// Instead every stream holds a slot until the peer's FIN, and its
	// data is discarded meanwhile (stream.release).
	cfg.StreamCloseTimeout = 0
	// The peer's streams that wait for a slot: bounded, and yamux resets
	// the rest at once, so opening streams faster than this side takes
	// them costs the peer its streams, not this side memory.
	cfg.AcceptBacklog = tunnelBacklog
	// yamux's default window, 256 KiB, leaves one bulk stream waiting
	// for window updates: 1 MiB makes it as fast as a plain securepeer
	// stream (BENCHMARKS.md, "Tunnels"), at a cost that maxTunnelStreams
	// bounds.
	cfg.MaxStreamWindowSize = tunnelWindow
	cfg.LogOutput = nil
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.Logger = yamuxLogger{ratelog.New(func(format string, args ...any) {
		log.Debug(strings.TrimSpace(fmt.Sprintf(format, args...)))
	})}
	return cfg
}

// keepAlive checks every third of idle whether something came from the
// peer in the last idle; if nothing did, it pings, and ends the session if
// still nothing has come timeout later. Any data counts, not only the ping's
// answer, which on a slow link full of data waits its turn behind that
// data, on both sides.
func (m *Session) keepAlive(idle, timeout time.Duration) {
	t := time.NewTicker(idle / 3)
	defer t.Stop()
	defer m.wake() // keepAlive ends only once the session is closing
	for {
		select {
		case <-m.sess.CloseChan():
			return
		case <-t.C:
		}
		if time.Since(m.conn.lastRead()) < idle {
			continue
		}
		sent := time.Now()
		go m.sess.Ping() // returns after at most ConnectionWriteTimeout
		select {
		case <-m.sess.CloseChan():
			return
		case <-time.After(timeout):
		}
		if m.conn.lastRead().Before(sent) {
			go m.Fail(pkgerr.Plainf("the peer at %s did not answer a keepalive within %v", m.addr, timeout))
			<-m.sess.CloseChan() // then wake, while the session closes
			return
		}
	}
}

// Fail ends the session, aborting the secure stream, and records why.
func (m *Session) Fail(reason error) {
	m.mu.Lock()
	if m.reason == nil {
		m.reason = reason
	}
	m.mu.Unlock()
	m.sess.Close()
}

// closeClean ends the session with the secure stream's clean end.
func (m *Session) closeClean() {
	m.conn.clean.Store(true)
	m.sess.Close()
}

// Closed reports whether the session has ended, or begun to.
func (m *Session) Closed() bool { return m.sess.IsClosed() }

// Done is closed once the session has ended.
func (m *Session) Done() <-chan struct{} { return m.sess.CloseChan() }

// Ping sends a yamux ping and waits for its answer: on a new session, it
// shows that the peer has accepted this side.
func (m *Session) Ping() error {
	_, err := m.sess.Ping()
	return err
}

// Err says why the session ended.
func (m *Session) Err() error {
	m.mu.Lock()
	reason := m.reason
	m.mu.Unlock()
	if reason != nil {
		return reason
	}
	if err := m.conn.readErr(); err != nil {
		switch {
		case errors.Is(err, errPeerClosed):
			return pkgerr.Plainf("the peer at %s closed the tunnel connection", m.addr)
		case errors.Is(err, io.ErrUnexpectedEOF):
			// Describe's "data may be missing" is said per stream.
			return pkgerr.Plainf("the connection with %s was cut (a crash, a restart, or the network)", m.addr)
		case m.describe != nil:
			return m.describe(err)
		}
		return err
	}
	return pkgerr.Plainf("the connection with %s was closed", m.addr)
}

// yamuxLogger passes yamux's own messages to the -v log, at a bounded
// rate: yamux logs some for each frame a peer sends on a stream it reset.
type yamuxLogger struct{ l *ratelog.Log }

const yamuxKind = "yamux messages"

func (l yamuxLogger) Print(v ...any) { l.l.Printf(yamuxKind, "%s", fmt.Sprint(v...)) }

func (l yamuxLogger) Printf(format string, v ...any) { l.l.Printf(yamuxKind, format, v...) }

func (l yamuxLogger) Println(v ...any) { l.l.Printf(yamuxKind, "%s", fmt.Sprintln(v...)) }
