package tunnel

import (
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// muxConn is the secure stream as yamux's connection. It sends each yamux
// data frame's header with its body in one Write, so in one record, and
// keeps the first read error, which says why the session ended.
type muxConn struct {
	c     Conn
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
	n, err := c.c.Read(p)
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
		if _, err := c.c.Write(c.buf); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	n, err := c.c.Write(p)
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
		c.c.Close()
	} else {
		c.c.Abort()
	}
	return nil
}
