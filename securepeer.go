package securepeer

import (
	"context"
	"net"

	"github.com/securepeer/securepeer/internal/wire"
)

// Client returns a new securepeer connection over conn in which this side
// initiates the handshake. The config must not be nil and must set
// Identity. Client does no I/O: the handshake runs on the first Read or
// Write, or on [Conn.Handshake].
func Client(conn net.Conn, config *Config) *Conn {
	return &Conn{conn: conn, config: config, mode: wire.ModeInitiator}
}

// Server returns a new securepeer connection over conn in which this side
// responds to the peer's handshake. It does no I/O, as [Client].
func Server(conn net.Conn, config *Config) *Conn {
	return &Conn{conn: conn, config: config, mode: wire.ModeResponder}
}

// NewConn returns a new securepeer connection over conn in which either side
// may initiate: the protocol settles the roles, also when both peers call
// NewConn at once (simultaneous open), at no extra round trip. It does no
// I/O, as [Client].
func NewConn(conn net.Conn, config *Config) *Conn {
	return &Conn{conn: conn, config: config, mode: wire.ModeEither}
}

// Dial connects to addr on the named network, as [net.Dialer.DialContext],
// and runs the handshake as initiator. ctx bounds both the dial and the
// handshake.
func Dial(ctx context.Context, network, addr string, config *Config) (*Conn, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c := Client(raw, config)
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// Listen announces on the local network address, as [net.Listen], and
// returns a listener whose Accept returns securepeer connections, as
// [NewListener] describes.
func Listen(network, addr string, config *Config) (net.Listener, error) {
	if config == nil || config.Identity == nil {
		return nil, newError("Config.Identity is required")
	}
	inner, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	return NewListener(inner, config), nil
}
