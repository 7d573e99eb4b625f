package p2p

import (
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/pkgerr"
)

// ProtocolPrefix begins the libp2p protocol ID of every application
// protocol: a stream of protocol "securepeer-exec/1" is negotiated as
// "/securepeer/app/securepeer-exec/1", inside the authenticated
// connection. The prefix keeps applications apart from libp2p's own
// protocols.
const ProtocolPrefix = "/securepeer/app/"

// maxProtocolName bounds an application protocol's name, as securepeer
// bounds an application protocol (PROTOCOL.md, "Application protocol").
const maxProtocolName = 255

// protocolID returns the libp2p protocol ID of the application protocol
// name: 1 to 255 printable ASCII bytes, without spaces.
func protocolID(name string) (protocol.ID, error) {
	if len(name) == 0 || len(name) > maxProtocolName {
		return "", pkgerr.Errorf("p2p", "protocol name %q is not 1 to %d bytes", name, maxProtocolName)
	}
	for _, r := range name {
		if r <= ' ' || r > '~' {
			return "", pkgerr.Errorf("p2p", "protocol name %q is not printable ASCII without spaces", name)
		}
	}
	return protocol.ID(ProtocolPrefix + name), nil
}

// A Stream is a bidirectional stream with a peer whose key the securepeer
// handshake proved, inside a connection that is direct or relayed. It is
// a net.Conn. Read and Write may be called concurrently.
type Stream struct {
	s     network.Stream
	key   securepeer.PublicKey
	name  string
	path  Path
	conn  *trackedConn
	local *Addr
	peer  *Addr
}

var _ net.Conn = (*Stream)(nil)

// newStream wraps s, a stream of the application protocol name.
func newStream(s network.Stream, name string) (*Stream, error) {
	c := s.Conn()
	key, err := KeyOf(c.RemotePeer())
	if err != nil {
		return nil, err
	}
	tc := trackedOf(c)
	p := pathOf(c)
	if tc != nil {
		p = tc.path()
	}
	localKey, _ := KeyOf(c.LocalPeer())
	return &Stream{
		s:     s,
		key:   key,
		name:  name,
		path:  p,
		conn:  tc,
		local: &Addr{Key: localKey, Multiaddr: c.LocalMultiaddr().String()},
		peer:  &Addr{Key: key, Multiaddr: c.RemoteMultiaddr().String()},
	}, nil
}

// pathOf returns how c runs, from its address alone.
func pathOf(c network.Conn) Path {
	remote := c.RemoteMultiaddr()
	p := Path{Remote: remote.String()}
	if !isCircuit(remote) {
		return p
	}
	p.Relayed = true
	before, _ := ma.SplitFunc(remote, func(c ma.Component) bool { return c.Code() == ma.P_CIRCUIT })
	if _, id := peer.SplitAddr(before); id != "" {
		p.Relay, _ = KeyOf(id)
	}
	return p
}

// RemoteKey returns the peer's key, proved in the handshake.
func (s *Stream) RemoteKey() securepeer.PublicKey { return s.key }

// Protocol returns the stream's application protocol name.
func (s *Stream) Protocol() string { return s.name }

// Path returns how the stream's connection runs: directly or through
// which relay. A stream stays on the connection it was opened on.
func (s *Stream) Path() Path { return s.path }

// Resumed reports whether the handshake of the stream's connection
// resumed an earlier session.
func (s *Stream) Resumed() bool {
	return s.conn != nil && s.conn.SecurepeerState().DidResume
}

// Read reads data from the peer. At the end of the peer's data it
// returns io.EOF. If the connection ended, the error says why; for a
// relayed connection it wraps a [*CircuitError].
func (s *Stream) Read(b []byte) (int, error) {
	n, err := s.s.Read(b)
	return n, s.explain(err)
}

// Write writes data to the peer.
func (s *Stream) Write(b []byte) (int, error) {
	n, err := s.s.Write(b)
	return n, s.explain(err)
}

// explain adds to a stream error why the connection under it ended, if
// it has.
func (s *Stream) explain(err error) error {
	// A clean end of the peer's data is io.EOF itself; a reset's error
	// may wrap io.EOF (the connection under it ended), and is explained.
	if err == nil || err == io.EOF || s.conn == nil {
		return err
	}
	if why := s.conn.endErr(); why != nil {
		return fmt.Errorf("%w (%w)", why, err)
	}
	return err
}

// CloseWrite ends the data this side sends; the peer reads io.EOF. The
// stream can still be read.
func (s *Stream) CloseWrite() error { return s.s.CloseWrite() }

// CloseRead stops reading: data the peer sends from now on is discarded.
func (s *Stream) CloseRead() error { return s.s.CloseRead() }

// Close ends the stream both ways, as CloseWrite and CloseRead.
func (s *Stream) Close() error { return s.s.Close() }

// Abort ends the stream at once, both ways: the peer's reads and writes
// fail rather than end normally, so it cannot take the data it received
// for complete.
func (s *Stream) Abort() error { return s.s.Reset() }

// SetDeadline sets the read and write deadlines.
func (s *Stream) SetDeadline(t time.Time) error { return s.s.SetDeadline(t) }

// SetReadDeadline sets the read deadline.
func (s *Stream) SetReadDeadline(t time.Time) error { return s.s.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (s *Stream) SetWriteDeadline(t time.Time) error { return s.s.SetWriteDeadline(t) }

// LocalAddr returns this node's key and the local address of the
// stream's connection, as an [*Addr].
func (s *Stream) LocalAddr() net.Addr { return s.local }

// RemoteAddr returns the peer's key and its address as this node sees
// it, as an [*Addr].
func (s *Stream) RemoteAddr() net.Addr { return s.peer }

// An Addr is a node's address on a stream: its key and the multiaddr of
// the connection's end.
type Addr struct {
	Key       securepeer.PublicKey
	Multiaddr string
}

// Network returns "p2p".
func (a *Addr) Network() string { return "p2p" }

// String returns the multiaddr followed by the peer ID that names the
// key.
func (a *Addr) String() string {
	id, err := PeerID(a.Key)
	if err != nil || strings.HasSuffix(a.Multiaddr, "/p2p/"+id.String()) {
		return a.Multiaddr
	}
	return a.Multiaddr + "/p2p/" + id.String()
}
