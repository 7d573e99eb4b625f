package securepeer

import (
	"context"
	"errors"
	"net"
	"sync"

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
		return nil, errors.New("securepeer: Config.Identity is required")
	}
	inner, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	return NewListener(inner, config), nil
}

// maxPendingHandshakes bounds the connections a listener holds before Accept
// returns them: those in the handshake and those waiting for Accept. When
// that many are pending the listener stops accepting from the inner
// listener, so that a flood of connections queues in the kernel instead of
// in memory.
var maxPendingHandshakes = 256 // a variable so tests can shrink it

// NewListener returns a listener that accepts connections from inner and
// runs the responder side of the handshake on each, concurrently and each
// bounded by [Config.HandshakeTimeout]. Accept returns only connections
// whose handshake has completed, as *[Conn]; a peer that fails the
// handshake is dropped, and a slow or hostile one never delays Accept for
// others. Closing the listener closes inner and every connection not yet
// returned by Accept.
func NewListener(inner net.Listener, config *Config) net.Listener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &listener{
		inner:  inner,
		config: config,
		ctx:    ctx,
		cancel: cancel,
		ready:  make(chan *Conn),
		slots:  make(chan struct{}, maxPendingHandshakes),
		done:   make(chan struct{}),
	}
	go l.serve()
	return l
}

type listener struct {
	inner  net.Listener
	config *Config
	ctx    context.Context
	cancel context.CancelFunc
	ready  chan *Conn    // completed handshakes, handed to Accept
	slots  chan struct{} // one token per handshake in progress
	done   chan struct{} // closed when serve returns
	wg     sync.WaitGroup

	mu  sync.Mutex
	err error // why serve stopped
}

func (l *listener) serve() {
	defer close(l.done)
	for {
		select {
		case l.slots <- struct{}{}:
		case <-l.ctx.Done():
			return
		}
		raw, err := l.inner.Accept()
		if err != nil {
			<-l.slots
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			l.mu.Lock()
			l.err = err
			l.mu.Unlock()
			return
		}
		l.wg.Add(1)
		go l.handshake(raw)
	}
}

func (l *listener) handshake(raw net.Conn) {
	defer l.wg.Done()
	// The slot is held until Accept takes the connection, so that peers
	// an application does not accept yet wait in the kernel's backlog, not
	// in goroutines here.
	defer func() { <-l.slots }()
	c := Server(raw, l.config)
	err := c.HandshakeContext(l.ctx)
	if err != nil {
		raw.Close()
		return
	}
	select {
	case l.ready <- c:
	case <-l.ctx.Done():
		raw.Close()
	}
}

// Accept waits for and returns the next connection whose handshake has
// completed. It returns a *Conn.
func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
	}
	// serve has stopped; hand out what finished meanwhile, then its error.
	select {
	case c := <-l.ready:
		return c, nil
	default:
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil || l.ctx.Err() != nil {
		return nil, net.ErrClosed
	}
	return nil, l.err
}

// Close stops the listener, closes inner, and ends the handshakes in
// progress. It waits for their goroutines to finish.
func (l *listener) Close() error {
	l.cancel()
	err := l.inner.Close()
	<-l.done
	l.wg.Wait()
	return err
}

func (l *listener) Addr() net.Addr { return l.inner.Addr() }
