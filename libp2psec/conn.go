package libp2psec

import (
	"net"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/sec"

	"github.com/securepeer/securepeer"
)

// Conn is a securepeer connection whose handshake has completed, with the
// peer's libp2p identity. It implements [sec.SecureConn]. Read and Write
// may be called concurrently, as on a [securepeer.Conn].
type Conn struct {
	conn      *securepeer.Conn
	localID   peer.ID
	remoteID  peer.ID
	remoteKey crypto.PubKey
	state     network.ConnectionState
}

var _ sec.SecureConn = (*Conn)(nil)

// Read reads application data, as [securepeer.Conn.Read].
func (c *Conn) Read(p []byte) (int, error) { return c.conn.Read(p) }

// Write writes application data, as [securepeer.Conn.Write].
func (c *Conn) Write(p []byte) (int, error) { return c.conn.Write(p) }

// Close sends securepeer's authenticated end of stream and closes the
// underlying connection, as [securepeer.Conn.Close].
func (c *Conn) Close() error {
	secured.remove(c.remoteKey)
	return c.conn.Close()
}

// LocalAddr returns the local address of the underlying connection.
func (c *Conn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// RemoteAddr returns the remote address of the underlying connection.
func (c *Conn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// SetDeadline sets the read and write deadlines, as [securepeer.Conn.SetDeadline].
func (c *Conn) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }

// SetReadDeadline sets the read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// LocalPeer returns this host's peer ID.
func (c *Conn) LocalPeer() peer.ID { return c.localID }

// RemotePeer returns the peer's ID, derived from the Ed25519 key it proved
// in the handshake.
func (c *Conn) RemotePeer() peer.ID { return c.remoteID }

// RemotePublicKey returns the peer's Ed25519 public key.
func (c *Conn) RemotePublicKey() crypto.PubKey { return c.remoteKey }

// ConnState returns the security protocol ID and the stream multiplexer
// negotiated in the handshake, if any. A host's connection reports what
// its upgrader negotiated instead; [SecurepeerState] reaches this
// connection's securepeer state from there.
func (c *Conn) ConnState() network.ConnectionState { return c.state }

// SecurepeerState returns the securepeer state of the connection: the
// cipher, the post-quantum status (always true for a Conn this package
// returns), whether it resumed a session, the roles and the channel
// binding. From a host's [network.Conn], use the function
// [SecurepeerState].
func (c *Conn) SecurepeerState() securepeer.ConnectionState { return c.conn.ConnectionState() }
