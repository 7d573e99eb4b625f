package legacy

import (
	"context"
	"net"
)

// Dial connects to addr on the named network, as [net.Dialer.DialContext],
// and runs the handshake. ctx bounds both the dial and the handshake.
func Dial(ctx context.Context, network, addr string, config *Config) (*Conn, error) {
	if err := config.check(); err != nil {
		return nil, err
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c := NewConn(raw, config)
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// Listen announces on the local network address, as [net.Listen], and
// returns a listener whose Accept returns *[Conn] values, as [NewListener]
// describes.
func Listen(network, addr string, config *Config) (net.Listener, error) {
	if err := config.check(); err != nil {
		return nil, err
	}
	inner, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	return NewListener(inner, config), nil
}

// NewListener returns a listener whose Accept wraps each connection from
// inner with [NewConn], as crypto/tls's NewListener does. Accept does no
// I/O: run the handshake in the connection's own goroutine, bounded by
// [Config.HandshakeTimeout], so that a slow peer holds up only itself.
func NewListener(inner net.Listener, config *Config) net.Listener {
	return &listener{Listener: inner, config: config}
}

type listener struct {
	net.Listener
	config *Config
}

// Accept waits for the next connection and returns it as a *Conn.
func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return NewConn(c, l.config), nil
}
