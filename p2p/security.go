package p2p

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/sec"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/libp2p/go-yamux/v5"
	manet "github.com/multiformats/go-multiaddr/net"
	mss "github.com/multiformats/go-multistream"
	"github.com/multiformats/go-varint"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/libp2psec"
)

// A secTransport is libp2psec's security transport, the host's only one,
// with each connection it secures tracked: the node reports how the
// connection runs, whether its handshake resumed, and, for a relayed
// one, why it ended.
type secTransport struct {
	*libp2psec.Transport
	node *Node
}

var _ sec.SecureTransport = (*secTransport)(nil)

// SecureInbound runs libp2psec's handshake as responder.
func (t *secTransport) SecureInbound(ctx context.Context, insecure net.Conn, p peer.ID) (sec.SecureConn, error) {
	return t.secure(ctx, insecure, p, false)
}

// SecureOutbound runs libp2psec's handshake as initiator, accepting only
// the peer ID p, that is, p's key.
func (t *secTransport) SecureOutbound(ctx context.Context, insecure net.Conn, p peer.ID) (sec.SecureConn, error) {
	return t.secure(ctx, insecure, p, true)
}

func (t *secTransport) secure(ctx context.Context, insecure net.Conn, p peer.ID, initiator bool) (sec.SecureConn, error) {
	c := &trackedConn{node: t.node, start: time.Now(), remote: remoteString(insecure)}
	if circuit, ok := insecure.(*client.Conn); ok {
		c.circuit(circuit)
		insecure = c.count
		// A responder may refuse the peer's key, and the refusal must
		// reach it (countingConn.Close).
		c.count.linger.Store(!initiator)
	}
	var (
		sc  sec.SecureConn
		err error
	)
	if initiator {
		sc, err = t.Transport.SecureOutbound(ctx, insecure, p)
	} else if err = awaitHandshakeFlight(ctx, insecure); err != nil {
		insecure.Close()
	} else {
		sc, err = t.Transport.SecureInbound(ctx, insecure, p)
	}
	if err != nil {
		return nil, err
	}
	if c.count != nil {
		c.count.linger.Store(false)
	}
	c.Conn = sc.(*libp2psec.Conn)
	c.local = &trackedAddr{Addr: c.Conn.LocalAddr(), conn: c}
	if !isProbe(ctx) { // port prediction's observation (observeVia) is no connection of the node's
		t.node.connected(c)
	}
	return c, nil
}

func remoteString(c net.Conn) string {
	if mc, ok := c.(manet.Conn); ok {
		return mc.RemoteMultiaddr().String()
	}
	return c.RemoteAddr().String()
}

// A trackedConn is a libp2psec connection that knows its path and, once
// it has ended, why.
type trackedConn struct {
	*libp2psec.Conn
	node   *Node
	start  time.Time
	remote string
	local  *trackedAddr

	// Set for a relayed connection only: the relay, its limits for the
	// circuit, and the circuit's byte counts.
	relay     peer.ID
	dataLimit uint64
	timeLimit time.Duration
	count     *countingConn

	mu     sync.Mutex
	failed error // the first read or write error, before any Close
	closed bool
	ended  error // why it ended, set once closed: nil if closed here
}

// circuit records that c runs through a relay, over circuit.
func (c *trackedConn) circuit(circuit *client.Conn) {
	if addr, ok := circuit.RemoteAddr().(*client.NetAddr); ok {
		c.relay, _ = peer.Decode(addr.Relay)
	}
	st := circuit.Stat()
	if d, ok := st.Extra[client.StatLimitData].(uint64); ok {
		c.dataLimit = d
	}
	if d, ok := st.Extra[client.StatLimitDuration].(time.Duration); ok {
		c.timeLimit = d
	}
	c.count = &countingConn{Conn: circuit}
	// The relay counts the multistream-select negotiation of the
	// security protocol too, which the upgrader ran before handing the
	// circuit over: the same messages each way.
	c.count.read.Store(negotiationBytes)
	c.count.written.Store(negotiationBytes)
}

// negotiationBytes is the size of the multistream-select messages that
// open a connection whose only security protocol is libp2psec's, each
// way: the multistream header and the protocol, each a length-prefixed
// line.
var negotiationBytes = mssMessageLen(mss.ProtocolID) + mssMessageLen(libp2psec.ID)

func mssMessageLen(s string) uint64 {
	n := uint64(len(s) + 1)
	return uint64(varint.UvarintSize(n)) + n
}

// path returns how c runs.
func (c *trackedConn) path() Path {
	p := Path{Remote: c.remote}
	if c.count != nil {
		p.Relayed = true
		p.Relay, _ = KeyOf(c.relay)
	}
	return p
}

// Read reads, as libp2psec's Conn, and records the first error.
func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil {
		c.fail(err)
	}
	return n, err
}

// Write writes, as libp2psec's Conn, and records the first error.
func (c *trackedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err != nil {
		c.fail(err)
	}
	return n, err
}

// LocalAddr returns the connection's local address, as a *trackedAddr
// that leads back to c: the stream multiplexer hands it out, and it is
// how a stream finds the connection it runs on (see trackedOf).
func (c *trackedConn) LocalAddr() net.Addr { return c.local }

func (c *trackedConn) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed == nil && !c.closed {
		c.failed = err
	}
}

// Close closes the connection and reports that it ended, and why.
func (c *trackedConn) Close() error {
	c.mu.Lock()
	first := !c.closed
	c.closed = true
	if first && c.failed != nil {
		c.ended = c.why(c.failed)
	}
	ended := c.ended
	c.mu.Unlock()
	err := c.Conn.Close()
	if first {
		c.node.disconnected(c, ended)
	}
	return err
}

// endErr returns why c ended, or nil if it has not, or was closed here.
func (c *trackedConn) endErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended != nil {
		return c.ended
	}
	if c.failed != nil {
		return c.why(c.failed)
	}
	return nil
}

// timeSlack is how early, before a relay's time limit, a circuit that
// ends is still taken to have reached it: the relay's clock starts when
// it opens the circuit, a round trip before this side's.
const timeSlack = time.Second

// why says why c failed with err. For a relayed connection: the relay's
// data limit if as many bytes crossed either way, its time limit if the
// circuit lasted that long, the relay lost if this node's connections to
// it are all closed, else the circuit ended. For a direct one, err; and
// for either, the peer's authenticated refusal of this node's key
// (securepeer.ErrRejected), which is why the connection ended whatever
// carried it.
func (c *trackedConn) why(err error) error {
	if c.count == nil || errors.Is(err, securepeer.ErrRejected) {
		return err
	}
	e := &CircuitError{
		Peer:      c.peerKey(),
		DataLimit: c.dataLimit,
		TimeLimit: c.timeLimit,
		Sent:      c.count.written.Load(),
		Received:  c.count.read.Load(),
		Lasted:    time.Since(c.start),
	}
	e.Relay, _ = KeyOf(c.relay)
	switch {
	case c.dataLimit > 0 && (e.Sent >= c.dataLimit || e.Received >= c.dataLimit):
		e.Err = ErrCircuitDataLimit
	case c.timeLimit > 0 && e.Lasted >= c.timeLimit-timeSlack:
		e.Err = ErrCircuitTimeLimit
	case !c.node.liveConn(c.relay):
		e.Err = ErrRelayLost
	default:
		e.Err = ErrCircuitEnded
	}
	return e
}

func (c *trackedConn) peerKey() securepeer.PublicKey {
	k, _ := KeyOf(c.RemotePeer())
	return k
}

// A trackedAddr is a connection's local address that leads back to the
// connection.
type trackedAddr struct {
	net.Addr
	conn *trackedConn
}

// trackedOf returns the trackedConn under a libp2p connection, or nil.
// go-libp2p keeps the security connection out of reach; its yamux
// session, which network.Conn.As gives, reports the local address of the
// connection it runs on, which for a trackedConn leads back to it.
func trackedOf(c network.Conn) *trackedConn {
	var sess *yamux.Session
	if c == nil || !c.As(&sess) {
		return nil
	}
	if a, ok := sess.LocalAddr().(*trackedAddr); ok {
		return a.conn
	}
	return nil
}

// A countingConn counts the bytes read and written on a connection: a
// circuit.
type countingConn struct {
	net.Conn
	read, written atomic.Uint64
	// linger, while the handshake of a responder runs, makes Close wait
	// for the peer to close first.
	linger atomic.Bool
}

// circuitLinger bounds how long a responder whose handshake failed waits
// for the peer to close the circuit, and lingerMax what it reads
// meanwhile.
const (
	circuitLinger = 2 * time.Second
	lingerMax     = 64 << 10
)

// Close closes the circuit. go-libp2p closes a circuit by resetting its
// stream, and a reset drops the data still on its way through the relay:
// the refusal that a responder's handshake sends last (securepeer's
// authenticated rejection) would not reach the peer, which would see only
// that the circuit ended. So a responder whose handshake failed waits
// until the peer, having read it, closes the circuit, for at most
// circuitLinger.
func (c *countingConn) Close() error {
	if c.linger.Load() {
		c.Conn.SetReadDeadline(time.Now().Add(circuitLinger))
		io.Copy(io.Discard, io.LimitReader(c.Conn, lingerMax))
	}
	return c.Conn.Close()
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read.Add(uint64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.written.Add(uint64(n))
	return n, err
}
