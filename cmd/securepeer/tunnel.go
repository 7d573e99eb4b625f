package main

// Multiplexed tunnels: the securepeer-tunnel/1 application protocol.
//
// When both sides of a tunnel (connect or listen with -from or -to) offer
// tunnelProtocol in the handshake (securepeer.Config.NextProtos), the
// secure stream carries a yamux session (github.com/hashicorp/yamux; its
// spec.md): connect is the yamux client, listen the server, and either
// side opens a yamux stream for each local connection one of its -from
// addresses accepts. One handshake then serves every local connection in
// both directions, and a ping after tunnelKeepAlive of silence notices a
// peer that has gone away. PROTOCOL.md ("Tunnels") says the same for an
// implementer, with the reasons.
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

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/sanitize"
	"github.com/securepeer/securepeer/internal/wire"
)

// tunnelProtocol is the application protocol name of multiplexed tunnels.
const tunnelProtocol = "securepeer-tunnel/1"

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

// maxNameLen bounds a forward's name, in -from/-to and in a stream's
// header.
const maxNameLen = 64

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

// testOnlyKeepAlive, if set, replaces tunnelKeepAlive and
// tunnelPingTimeout, so tests notice a dead peer quickly.
var testOnlyKeepAlive time.Duration

// testOnlyNoMux makes listen and connect offer no application protocol, as
// securepeer before tunnelProtocol did: tests and benchmarks of the
// fallback to a connection per local connection.
var testOnlyNoMux bool

// streamProtocol is a plain secure stream, as when nothing is negotiated.
// Every side that offers an application protocol offers it too, so that a
// connect and a listen that want different things (say a stdio connect
// and a listen -to) still meet on a plain stream, as they did before
// either offered anything, instead of failing the handshake with
// securepeer.ErrNoCommonProtocol.
const streamProtocol = "securepeer-stream/1"

// tunnelProtos is what the sides of a native tunnel offer in NextProtos.
func tunnelProtos() []string {
	if testOnlyNoMux {
		return nil
	}
	return []string{tunnelProtocol, streamProtocol}
}

// errStreamCut is what a tunnel stream's reader gets when the peer cut it:
// it ended without its end frame.
var errStreamCut = errors.New("the peer cut the tunnel stream before its end; data may be missing")

// errPeerClosed is a tunnel session's end by the peer's clean end of
// stream, as listen does when it stops.
var errPeerClosed = errors.New("the peer closed the tunnel connection")

// errStreamReset is what the opener of a stream reads when the peer's yamux
// reset it before any status: the peer had as many streams from this side
// as it takes waiting already, or was stopping.
var errStreamReset = errors.New("the peer reset the stream before answering: it takes no more streams on this connection for now")

// errAfterEnd is a peer that sent a frame after its end frame other than
// the done mark.
var errAfterEnd = errors.New("the peer sent data after the end of its side of the tunnel stream, which securepeer-tunnel/1 does not allow; data may be missing")

// A muxSession is a yamux session over a secure stream.
type muxSession struct {
	s    *stream
	sess *yamux.Session
	conn *muxConn

	mu       sync.Mutex
	reason   error         // why the session ended, if this side knows better than yamux
	active   int           // streams this side holds, both directions, until yamux has forgotten them, and reserved
	reserved bool          // one of active is the accept loop's, taken for the stream it waits for
	stopping bool          // stop was called: no new streams; closeClean once idle
	freed    chan struct{} // closed, and replaced, when a stream counts out or stop is called
	full     bool          // the accept loop has had to wait for a slot

	streams map[*tunnelStream]struct{} // taken and not yet released, for wake

	discarded atomic.Int64 // bytes of the peer's that release discarded
}

// take makes st one of the session's streams, for a caller that holds a
// slot for it: the stream's release gives it back.
func (m *muxSession) take(st *yamux.Stream) *tunnelStream {
	t := &tunnelStream{st: st, m: m}
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
func (m *muxSession) wake() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for t := range m.streams {
		t.st.SetDeadline(time.Unix(1, 0))
	}
}

// begin counts a new stream this side opens in, unless the session is
// stopping or has maxTunnelStreams already; the stream's release counts it
// out.
func (m *muxSession) begin() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.stopping:
		return fmt.Errorf("the tunnel connection with %s is stopping", m.s.remoteAddr)
	case m.active >= maxTunnelStreams:
		return fmt.Errorf("the tunnel connection with %s already carries %d streams, the most it may", m.s.remoteAddr, maxTunnelStreams)
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
func (m *muxSession) awaitSlot(full func()) error {
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

// claim makes the accept loop's reserved slot the accepted stream's,
// unless the session began stopping while the loop waited for it: then
// it gives the slot back and returns false.
func (m *muxSession) claim() bool {
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
func (m *muxSession) unreserve() {
	m.mu.Lock()
	m.reserved = false
	m.mu.Unlock()
	m.end()
}

// busy is the number of streams held, the reservation aside. m.mu is
// held.
func (m *muxSession) busy() int {
	if m.reserved {
		return m.active - 1
	}
	return m.active
}

// end counts a stream out.
func (m *muxSession) end() {
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

// stop tells the peer to open no more streams, and closes the session
// cleanly once the streams in progress have ended.
func (m *muxSession) stop() {
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
func (m *muxSession) openForward(name string) (*tunnelStream, error) {
	st, err := m.sess.OpenStream()
	if err != nil {
		m.end()
		if m.closed() {
			return nil, m.err()
		}
		return nil, fmt.Errorf("the peer at %s accepts no more streams on this connection: %v", m.s.remoteAddr, err)
	}
	t := m.take(st)
	if err := t.writeFrame([]byte(name)); err != nil {
		t.cut()
		t.release()
		return nil, err
	}
	return t, nil
}

// newMuxSession starts a yamux session over s, as client (the connect side)
// or server, with its keepalive.
func newMuxSession(s *stream, client bool, log *slog.Logger) *muxSession {
	keepAlive, pingTimeout := tunnelKeepAlive, tunnelPingTimeout
	if testOnlyKeepAlive != 0 {
		keepAlive, pingTimeout = testOnlyKeepAlive, testOnlyKeepAlive
	}
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
	// data is discarded meanwhile (tunnelStream.release).
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
	cfg.Logger = yamuxLogger{newRateLog(func(format string, args ...any) {
		log.Debug(strings.TrimSpace(fmt.Sprintf(format, args...)))
	})}
	m := &muxSession{s: s, conn: &muxConn{s: s}, freed: make(chan struct{}), streams: map[*tunnelStream]struct{}{}}
	m.conn.read.Store(time.Now().UnixNano())
	var err error
	if client {
		m.sess, err = yamux.Client(m.conn, cfg)
	} else {
		m.sess, err = yamux.Server(m.conn, cfg)
	}
	if err != nil {
		panic(err) // the configuration above is valid
	}
	go m.keepAlive(keepAlive, pingTimeout)
	return m
}

// keepAlive checks every third of idle whether something came from the
// peer in the last idle; if nothing did, it pings, and ends the session if
// still nothing has come timeout later. Any data counts, not only the ping's
// answer, which on a slow link full of data waits its turn behind that
// data, on both sides.
func (m *muxSession) keepAlive(idle, timeout time.Duration) {
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
			go m.fail(fmt.Errorf("the peer at %s did not answer a keepalive within %v", m.s.remoteAddr, timeout))
			<-m.sess.CloseChan() // then wake, while the session closes
			return
		}
	}
}

// fail ends the session, aborting the secure stream, and records why.
func (m *muxSession) fail(reason error) {
	m.mu.Lock()
	if m.reason == nil {
		m.reason = reason
	}
	m.mu.Unlock()
	m.sess.Close()
}

// closeClean ends the session with the secure stream's clean end.
func (m *muxSession) closeClean() {
	m.conn.clean.Store(true)
	m.sess.Close()
}

func (m *muxSession) closed() bool { return m.sess.IsClosed() }

// err says why the session ended.
func (m *muxSession) err() error {
	m.mu.Lock()
	reason := m.reason
	m.mu.Unlock()
	if reason != nil {
		return reason
	}
	if err := m.conn.readErr(); err != nil {
		switch {
		case errors.Is(err, errPeerClosed):
			return fmt.Errorf("the peer at %s closed the tunnel connection", m.s.remoteAddr)
		case errors.Is(err, io.ErrUnexpectedEOF):
			// streamError's "data may be missing" is said per stream.
			return fmt.Errorf("the connection with %s was cut (a crash, a restart, or the network)", m.s.remoteAddr)
		}
		return streamError(m.s, err)
	}
	return fmt.Errorf("the connection with %s was closed", m.s.remoteAddr)
}

// muxConn is the secure stream as yamux's connection. It sends each yamux
// data frame's header with its body in one Write, so in one record, and
// keeps the first read error, which says why the session ended.
type muxConn struct {
	s     *stream
	held  []byte // a data frame header waiting for its body
	buf   []byte
	clean atomic.Bool

	read atomic.Int64 // when something last came from the peer, in Unix nanoseconds

	pings pingGate

	mu    sync.Mutex
	rerr  error
	isSet bool
}

func (c *muxConn) lastRead() time.Time { return time.Unix(0, c.read.Load()) }

func (c *muxConn) Read(p []byte) (int, error) {
	c.pings.wait()
	n, err := c.s.conn.Read(p)
	c.pings.scan(p[:n])
	if n > 0 {
		c.read.Store(time.Now().UnixNano())
	}
	if err != nil {
		c.mu.Lock()
		if !c.isSet {
			c.rerr, c.isSet = err, true
		}
		c.mu.Unlock()
	}
	return n, err
}

func (c *muxConn) readErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if errors.Is(c.rerr, io.EOF) {
		return errPeerClosed // the peer ended the secure stream cleanly
	}
	return c.rerr
}

// yamux's frame header (spec.md): version, type, flags, stream id, length.
const (
	yamuxHeaderLen = 12
	yamuxTypeData  = 0
	yamuxTypePing  = 2
	yamuxFlagSYN   = 1
	yamuxFlagACK   = 2
)

// maxPendingPings bounds the peer's pings that yamux has read and not yet
// answered. yamux answers each in a goroutine of its own, which waits for
// its turn to send; a peer that sends pings and reads nothing would make
// it start goroutines without end (500,000 for 8 MB of pings). So once
// that many are pending, muxConn stops reading from the peer until
// answers have gone out: the peer's pings wait in its own buffers, and
// one that reads nothing at all is cut by the keepalive.
const maxPendingPings = 64

// A pingGate counts the peer's pings that have been read and not
// answered, and holds the reading back while there are too many. scan is
// called by the one reading goroutine only.
type pingGate struct {
	hdr  [yamuxHeaderLen]byte // of the frame being read
	hdrN int
	skip uint32 // bytes of a data frame's body still to come

	mu      sync.Mutex
	pending int
	closed  bool
	moved   chan struct{} // closed, and replaced, when pending falls or closed is set
}

// scan counts the ping requests in b, the next bytes from the peer.
func (g *pingGate) scan(b []byte) {
	for len(b) > 0 {
		if g.skip > 0 {
			n := min(uint32(len(b)), g.skip)
			g.skip -= n
			b = b[n:]
			continue
		}
		n := copy(g.hdr[g.hdrN:], b)
		g.hdrN += n
		b = b[n:]
		if g.hdrN < yamuxHeaderLen {
			return
		}
		g.hdrN = 0
		switch flags := binary.BigEndian.Uint16(g.hdr[2:]); g.hdr[1] {
		case yamuxTypeData:
			g.skip = binary.BigEndian.Uint32(g.hdr[8:])
		case yamuxTypePing:
			if flags&yamuxFlagSYN != 0 {
				g.mu.Lock()
				g.pending++
				g.mu.Unlock()
			}
		}
	}
}

// wait returns once fewer than maxPendingPings pings wait for their
// answer, or the connection is closing.
func (g *pingGate) wait() {
	for {
		g.mu.Lock()
		if g.pending < maxPendingPings || g.closed {
			g.mu.Unlock()
			return
		}
		if g.moved == nil {
			g.moved = make(chan struct{})
		}
		moved := g.moved
		g.mu.Unlock()
		<-moved
	}
}

// answered counts out a ping whose answer has been sent, if frame is one.
func (g *pingGate) answered(frame []byte) {
	if len(frame) != yamuxHeaderLen || frame[1] != yamuxTypePing || binary.BigEndian.Uint16(frame[2:])&yamuxFlagACK == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pending--
	g.wake()
}

// close lets wait return for good.
func (g *pingGate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	g.wake()
}

// wake releases the waiters. g.mu is held.
func (g *pingGate) wake() {
	if g.moved != nil {
		close(g.moved)
		g.moved = nil
	}
}

// Write is called by yamux's one sending goroutine only: a frame's header,
// then, for a data frame, its body.
func (c *muxConn) Write(p []byte) (int, error) {
	if c.held == nil && len(p) == yamuxHeaderLen && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:]) > 0 {
		c.held = append(c.buf[:0], p...)
		return len(p), nil
	}
	if c.held != nil {
		c.buf = append(c.held, p...)
		c.held = nil
		if _, err := c.s.Write(c.buf); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	n, err := c.s.Write(p)
	if err == nil {
		c.pings.answered(p)
	}
	return n, err
}

// Close ends the secure stream: cleanly after closeClean, aborted otherwise
// (a lost peer, a signal), so that the peer knows streams were cut.
func (c *muxConn) Close() error {
	c.pings.close()
	if c.clean.Load() {
		c.s.close()
	} else {
		c.s.abort()
	}
	return nil
}

// A tunnelStream is one yamux stream of a tunnel, framed as the comment at
// the top of this file says. Read returns the data of the peer's frames
// and io.EOF at its end frame; any other end is errStreamCut or the
// session's error.
type tunnelStream struct {
	st *yamux.Stream
	m  *muxSession

	left  int // bytes left in the frame being read
	ended bool
	hdr   [4]byte
}

func (t *tunnelStream) Read(p []byte) (int, error) {
	if t.ended {
		return 0, io.EOF
	}
	for t.left == 0 {
		if _, err := io.ReadFull(t.st, t.hdr[:]); err != nil {
			return 0, t.readError(err)
		}
		n := binary.BigEndian.Uint32(t.hdr[:])
		switch n {
		case 0:
			t.ended = true
			return 0, io.EOF
		case doneMark:
			return 0, errEarlyDone
		}
		t.left = int(n)
	}
	if len(p) > t.left {
		p = p[:t.left]
	}
	n, err := t.st.Read(p)
	t.left -= n
	if err != nil {
		return n, t.readError(err)
	}
	return n, nil
}

// readError turns the yamux stream's end without an end frame into the
// reason.
func (t *tunnelStream) readError(err error) error {
	if t.m.closed() {
		return t.m.err()
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, yamux.ErrConnectionReset) {
		return errStreamCut
	}
	return err
}

// doneMark is the frame header a side sends after its end frame once it
// has the peer's end frame too: see the top of this file.
const doneMark = 0xFFFF_FFFF

// errEarlyDone is a done mark before its sender's end frame.
var errEarlyDone = errors.New("the peer sent its done mark before the end of its data, which securepeer-tunnel/1 does not allow; data may be missing")

// writeFrame sends p as one frame; an empty p is the end frame.
func (t *tunnelStream) writeFrame(p []byte) error {
	buf := make([]byte, 4+len(p))
	binary.BigEndian.PutUint32(buf, uint32(len(p)))
	copy(buf[4:], p)
	_, err := t.st.Write(buf)
	return err
}

// writeDone sends the done mark.
func (t *tunnelStream) writeDone() error {
	var mark [4]byte
	binary.BigEndian.PutUint32(mark[:], doneMark)
	_, err := t.st.Write(mark[:])
	return err
}

// readDone reads what follows the peer's end frame: its done mark, the
// proof that it has everything this side sent. A FIN, a reset or the
// session's end instead means the stream was cut.
func (t *tunnelStream) readDone() error {
	if _, err := io.ReadFull(t.st, t.hdr[:]); err != nil {
		return t.readError(err)
	}
	if binary.BigEndian.Uint32(t.hdr[:]) != doneMark {
		return errAfterEnd
	}
	return nil
}

// sendFrom sends what it reads from c as frames, then the end frame. It
// returns a *sendError if writing to the stream failed, and reading c's
// error otherwise.
func (t *tunnelStream) sendFrom(c io.Reader) error {
	bp := frameBufs.Get().(*[]byte)
	defer frameBufs.Put(bp)
	buf := *bp
	for {
		n, err := c.Read(buf[4:])
		if n > 0 {
			binary.BigEndian.PutUint32(buf, uint32(n))
			if _, werr := t.st.Write(buf[:4+n]); werr != nil {
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

// frameBufs holds sendFrom's buffers, and copyBufs those of relayTunnel's
// copies to the local connection, which a tunnel with many short streams
// would otherwise allocate (and clear) for each stream.
var (
	frameBufs = sync.Pool{New: func() any {
		b := make([]byte, 4+maxFramePayload)
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

// readStatus reads the status frame that answers the opener's header, and
// returns a *refusedError unless it is "ok".
func (t *tunnelStream) readStatus() error {
	if _, err := io.ReadFull(t.st, t.hdr[:]); err != nil {
		if errors.Is(err, yamux.ErrConnectionReset) && !t.m.closed() {
			return errStreamReset
		}
		return t.readError(err)
	}
	n := binary.BigEndian.Uint32(t.hdr[:])
	if n == 0 || n > maxStatusLen {
		return fmt.Errorf("the peer began the tunnel stream with a status of %d bytes, which securepeer-tunnel/1 does not allow", n)
	}
	status := make([]byte, n)
	if _, err := io.ReadFull(t.st, status); err != nil {
		return t.readError(err)
	}
	if string(status) == "ok" {
		return nil
	}
	return &refusedError{reason: strings.ToValidUTF8(string(status), "?")}
}

// readHeader reads the header that starts a stream from the opener: the
// forward's name.
func (t *tunnelStream) readHeader() (string, error) {
	t.st.SetReadDeadline(time.Now().Add(tunnelHeaderTimeout))
	defer t.st.SetReadDeadline(time.Time{})
	if _, err := io.ReadFull(t.st, t.hdr[:]); err != nil {
		return "", t.readError(err)
	}
	n := binary.BigEndian.Uint32(t.hdr[:])
	if n > maxNameLen {
		return "", fmt.Errorf("the peer began a tunnel stream with a name of %d bytes, more than securepeer-tunnel/1 allows", n)
	}
	name := make([]byte, n)
	if _, err := io.ReadFull(t.st, name); err != nil {
		return "", t.readError(err)
	}
	return string(name), nil
}

// refusedError is the peer's refusal of a stream, with its reason.
type refusedError struct{ reason string }

func (e *refusedError) Error() string {
	return "the peer refused the stream: " + sanitize.Text(e.reason)
}

// cut ends the stream at once: the FIN without the done mark tells the
// peer, and the deadlines wake this side's reader and writer.
func (t *tunnelStream) cut() {
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
func (t *tunnelStream) release() {
	defer func() {
		t.m.mu.Lock()
		delete(t.m.streams, t)
		t.m.mu.Unlock()
		t.m.end()
	}()
	t.st.SetDeadline(time.Time{})
	t.st.Close()
	if t.m.closed() {
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

// relayTunnel copies between the tunnel stream t and the local connection
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
func relayTunnel(ctx context.Context, t *tunnelStream, c net.Conn, status bool) error {
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
			resetClose(c)
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
func (t *tunnelStream) recvTo(c net.Conn, status bool) error {
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
	return closeWrite(c)
}
