package p2p

import (
	"net"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/securepeer/securepeer/internal/pkgerr"
)

// listenBacklog bounds the streams that wait for Accept on one listener;
// past it, a new stream is refused (reset) rather than queued.
const listenBacklog = 64

// A Listener hands out the streams that peers open with one application
// protocol. It is a net.Listener whose Accept returns [*Stream]s.
type Listener struct {
	node *Node
	name string
	id   protocol.ID
	ch   chan *Stream
	done chan struct{}

	mu     sync.Mutex
	closed bool

	// testOnlyHandled, if set, is called with each stream the listener
	// has queued or refused, for the tests.
	testOnlyHandled func(queued bool)
}

var _ net.Listener = (*Listener)(nil)

// Listen starts accepting streams of the application protocol name from
// peers: from those that dial this node and pass [Config.Verify], and
// from those this node dialed. Streams from the node's relays are
// refused. The first Listen makes the node reserve a slot on each of its
// relays and keep it, so that peers can reach it through them; a
// reservation tells the relay this node's key ([Node.Ready] waits for
// one).
func (n *Node) Listen(name string) (*Listener, error) {
	id, err := protocolID(name)
	if err != nil {
		return nil, err
	}
	l := &Listener{node: n, name: name, id: id, ch: make(chan *Stream, listenBacklog), done: make(chan struct{})}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, ErrClosed
	}
	if _, ok := n.listeners[id]; ok {
		n.mu.Unlock()
		return nil, pkgerr.Errorf("p2p", "already listening for protocol %q", name)
	}
	n.listeners[id] = l
	n.mu.Unlock()
	n.host.SetStreamHandler(id, l.handle)
	n.startReservations()
	return l, nil
}

// handle queues a new stream for Accept, or refuses it.
func (l *Listener) handle(s network.Stream) {
	c := s.Conn()
	if c.Stat().Direction == network.DirOutbound && l.node.isRelay(c.RemotePeer()) {
		s.Reset()
		return
	}
	st, err := newStream(s, l.name)
	if err != nil {
		s.Reset()
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		s.Reset()
		return
	}
	queued := true
	select {
	case l.ch <- st:
	default:
		queued = false
		s.Reset()
	}
	if l.testOnlyHandled != nil {
		l.testOnlyHandled(queued)
	}
}

// Accept waits for the next stream, as a net.Conn.
func (l *Listener) Accept() (net.Conn, error) {
	s, err := l.AcceptStream()
	if err != nil {
		return nil, err
	}
	return s, nil
}

// AcceptStream waits for the next stream.
func (l *Listener) AcceptStream() (*Stream, error) {
	select {
	case s := <-l.ch:
		return s, nil
	case <-l.done:
		return nil, ErrClosed
	}
}

// Close stops the listener: streams not yet accepted are refused, and
// Accept returns ErrClosed.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.done)
	l.mu.Unlock()
	l.node.host.RemoveStreamHandler(l.id)
	l.node.mu.Lock()
	delete(l.node.listeners, l.id)
	l.node.mu.Unlock()
	for {
		select {
		case s := <-l.ch:
			s.Abort()
		default:
			return nil
		}
	}
}

// Addr returns the node's key and first direct address.
func (l *Listener) Addr() net.Addr {
	a := &Addr{Key: l.node.key}
	if addrs := l.node.host.Addrs(); len(addrs) > 0 {
		a.Multiaddr = addrs[0].String()
	}
	return a
}
