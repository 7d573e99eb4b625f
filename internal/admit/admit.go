// Package admit is the admission control of securepeer's listeners, the
// library's and the command's, native and legacy alike. It accepts
// connections from an inner listener, reads each peer's first flight, runs
// the protocol's handshake on it, and hands completed connections to
// Accept, so that what an unauthenticated peer can make a server hold
// (descriptors, memory, goroutines, slots, handshake CPU) stays bounded and
// no one source address can starve the others.
//
// The rules, and why they hold up against a peer on the open internet:
//
//   - Accepting never stops. A listener that stops accepting while its
//     handshake slots are full leaves new peers in the kernel's queue
//     behind the attackers that fill the slots, for as long as the
//     attackers like. Instead every connection is accepted at once and, when
//     the table of pending connections is full, one already pending is
//     dropped to make room.
//
//   - Drop the heaviest source's oldest waiter. The connection dropped
//     belongs to the source address (an IPv4 address, or an IPv6 /64) that
//     holds the most pending connections, so a source can hold any number
//     of slots while slots are free and has to give them up, one for one,
//     to every other source that wants one: max-min fairness, with no
//     per-source quota to tune. Within that source the connection dropped
//     is the oldest one still waiting for its first flight, else its oldest
//     in the handshake. A legitimate peer sends its first flight the moment
//     it connects, so it stops waiting within a round trip, while a silent,
//     stalled or trickling attacker waits until it is dropped; so oldest
//     first drops attackers, including those that share the legitimate
//     peer's address. (sshd's random early drop protects the server; it
//     does not tell the peers apart.) Connections whose handshake has
//     completed, waiting for Accept, are never dropped: when only those
//     remain, new connections are closed until Accept takes some.
//
//   - The first flight has its own deadline (10 seconds by default),
//     shorter than the handshake's, which must allow for a slow Verify
//     (a user confirming a key on the other side). It is read here, before
//     the handshake runs, into a buffer that grows only as bytes arrive, by
//     a goroutine whose stack holds nothing else: a waiting connection costs
//     about what its socket and that goroutine cost.
//
//   - Handshake CPU is shared by source. A peer that has sent a complete
//     first flight makes the server compute (key agreement, encapsulation,
//     a signature), which a replayed first flight does at no cost to the
//     attacker. At most GOMAXPROCS handshakes compute at once; the others
//     queue per source and are served round robin across sources, so a
//     source that replays flights in a loop gets one turn in every round
//     and any other source waits for at most one turn of each. A handshake
//     gives its turn back when it next waits for the peer.
//
//   - Accept errors never end the listener. Running out of descriptors
//     (EMFILE, ENFILE), an aborted connection and the like are retried
//     after a pause that starts at 5 ms and doubles up to 1 s, as
//     net/http's Server does; running out of descriptors also drops one
//     waiting connection, to free one. Only a closed inner listener ends
//     Accept.
package admit

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults, as Config describes.
const (
	DefaultMaxPending         = 4096
	DefaultFirstFlightTimeout = 10 * time.Second
)

// maxFirstFlight bounds the bytes read before the handshake, whatever a
// FirstFlight function asks for.
const maxFirstFlight = 1 << 17

// Config configures a Listener.
type Config[T any] struct {
	// Handshake runs the protocol's handshake, as responder, over c, whose
	// first reads return the first flight already read. ctx ends when the
	// connection is dropped or the listener closed. On error the listener
	// closes the connection; on success the result owns it.
	Handshake func(ctx context.Context, c net.Conn) (T, error)

	// FirstFlight returns, from the bytes b received so far, the length
	// the peer's first flight has in all; a value no more than len(b)
	// means b holds it (or cannot begin a valid one, which the handshake
	// then reports). It must not retain b.
	FirstFlight func(b []byte) int

	// Failed, if not nil, is told of every connection that did not make it
	// to Accept, and why.
	Failed func(remote net.Addr, err error)

	// Logf, if not nil, is told of accept errors, which are retried.
	Logf func(format string, args ...any)

	// MaxPending bounds the connections accepted and not yet returned by
	// Accept: waiting for their first flight, in the handshake, or done
	// and waiting for Accept. If zero, DefaultMaxPending.
	MaxPending int

	// FirstFlightTimeout bounds the wait for the first flight, counted
	// from the accept. If zero, DefaultFirstFlightTimeout.
	FirstFlightTimeout time.Duration
}

// Errors given to Config.Failed.
var (
	ErrDropped          = errors.New("dropped to make room for other peers: the listener's pending connections were full")
	ErrFirstFlight      = errors.New("the peer sent no complete first handshake message in time")
	errListenerClosed   = errors.New("the listener was closed")
	errTooManyCompleted = errors.New("refused: every pending slot holds a completed connection waiting for Accept")
)

// A Listener accepts connections from an inner listener and hands out the
// results of their handshakes, as the package comment describes.
type Listener[T any] struct {
	inner  net.Listener
	cfg    Config[T]
	ctx    context.Context
	cancel context.CancelFunc
	ready  chan accepted[T]
	done   chan struct{} // closed when the accept loop returns
	wg     sync.WaitGroup
	cpu    cpuGate

	closeOnce sync.Once
	closeErr  error

	mu      sync.Mutex
	sources map[netip.Prefix]*source
	pending int    // entries in any phase
	seq     uint64 // arrival order
	closed  bool
	err     error // why the accept loop ended, if not Close
}

// accepted is a completed connection on its way to Accept, which stops
// counting it, so that the slot is free when Accept returns.
type accepted[T any] struct {
	e *entry
	v T
}

// phase is where a pending connection stands.
type phase uint8

const (
	waiting     phase = iota // for the first flight
	handshaking              // or queued for the CPU
	completed                // waiting for Accept; never dropped
	gone                     // dropped or failed; no longer counted
)

// entry is one pending connection. Its fields are guarded by Listener.mu.
type entry struct {
	src    *source
	raw    net.Conn
	seq    uint64
	phase  phase
	elem   *list.Element // in src.waiting or src.busy
	cancel context.CancelCauseFunc
	cause  error // why it was dropped
}

// source is one source address's pending connections, oldest first.
type source struct {
	key           netip.Prefix
	waiting, busy list.List
	completed     int

	// Guarded by cpuGate.mu.
	cpuq   []chan struct{}
	inRing bool
}

func (s *source) evictable() int { return s.waiting.Len() + s.busy.Len() }

// victim returns the connection a full source gives up: its oldest waiting
// for a first flight, else its oldest in the handshake.
func (s *source) victim() *entry {
	if f := s.waiting.Front(); f != nil {
		return f.Value.(*entry)
	}
	if f := s.busy.Front(); f != nil {
		return f.Value.(*entry)
	}
	return nil
}

// NewListener starts accepting from inner.
func NewListener[T any](inner net.Listener, cfg Config[T]) *Listener[T] {
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.FirstFlightTimeout <= 0 {
		cfg.FirstFlightTimeout = DefaultFirstFlightTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Listener[T]{
		inner:   inner,
		cfg:     cfg,
		ctx:     ctx,
		cancel:  cancel,
		ready:   make(chan accepted[T]),
		done:    make(chan struct{}),
		sources: make(map[netip.Prefix]*source),
	}
	l.cpu.free = runtime.GOMAXPROCS(0)
	go l.serve()
	return l
}

// Accept returns the next connection whose handshake has completed. After
// Close, or once the inner listener has failed for good, it returns an
// error wrapping net.ErrClosed or the inner listener's error.
func (l *Listener[T]) Accept() (T, error) {
	select {
	case a := <-l.ready:
		l.mu.Lock()
		l.removeLocked(a.e)
		l.mu.Unlock()
		return a.v, nil
	case <-l.done:
	}
	var zero T
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return zero, l.err
	}
	return zero, net.ErrClosed
}

// Close closes the inner listener and every connection not yet returned by
// Accept, and waits for their goroutines to end.
func (l *Listener[T]) Close() error {
	l.closeOnce.Do(func() {
		l.cancel()
		l.closeErr = l.inner.Close()
		l.shutdown()
	})
	<-l.done
	l.wg.Wait()
	return l.closeErr
}

// shutdown stops admitting and closes every pending connection.
func (l *Listener[T]) shutdown() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for _, s := range l.sources {
		for _, lst := range []*list.List{&s.waiting, &s.busy} {
			for el := lst.Front(); el != nil; el = el.Next() {
				el.Value.(*entry).raw.Close()
			}
		}
	}
}

// Addr returns the inner listener's address.
func (l *Listener[T]) Addr() net.Addr { return l.inner.Addr() }

// Pending returns the number of connections accepted and not yet returned
// by Accept.
func (l *Listener[T]) Pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pending
}

// Completed returns the number of connections whose handshake has
// completed and that wait for Accept.
func (l *Listener[T]) Completed() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.sources {
		n += s.completed
	}
	return n
}

func (l *Listener[T]) serve() {
	defer close(l.done)
	var delay time.Duration
	timer := time.NewTimer(0)
	<-timer.C
	defer timer.Stop()
	for {
		raw, err := l.inner.Accept()
		if err != nil {
			if l.ctx.Err() != nil {
				return
			}
			if errors.Is(err, net.ErrClosed) {
				l.mu.Lock()
				l.err = fmt.Errorf("the inner listener was closed: %w", err)
				l.mu.Unlock()
				l.cancel()
				l.shutdown()
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				l.dropOne()
			}
			if l.cfg.Logf != nil {
				l.cfg.Logf("accepting connections: %v; retrying in %v", err, delay)
			}
			timer.Reset(delay)
			select {
			case <-timer.C:
			case <-l.ctx.Done():
				return
			}
			continue
		}
		delay = 0
		e, err := l.admit(raw)
		if err != nil {
			raw.Close()
			l.failed(raw.RemoteAddr(), err)
			continue
		}
		l.wg.Add(1)
		go l.run(e)
	}
}

// sourceOf returns the source a connection counts against: its IPv4
// address, or its IPv6 /64 (one subscriber's usual allocation). Peers
// without an IP address share one source.
func sourceOf(a net.Addr) netip.Prefix {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return netip.Prefix{}
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// admit records a new connection, dropping another if the table is full.
func (l *Listener[T]) admit(raw net.Conn) (*entry, error) {
	key := sourceOf(raw.RemoteAddr())
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errListenerClosed
	}
	if l.pending >= l.cfg.MaxPending {
		v := l.victimLocked()
		if v == nil {
			return nil, errTooManyCompleted
		}
		l.dropLocked(v, ErrDropped)
	}
	s := l.sources[key]
	if s == nil {
		s = &source{key: key}
		l.sources[key] = s
	}
	l.seq++
	e := &entry{src: s, raw: raw, seq: l.seq, phase: waiting}
	e.elem = s.waiting.PushBack(e)
	l.pending++
	return e, nil
}

// victimLocked picks the connection to drop: the heaviest source's
// oldest, as the package comment argues. Ties between sources go to the
// one whose victim arrived first.
func (l *Listener[T]) victimLocked() *entry {
	var best *source
	var bestVictim *entry
	for _, s := range l.sources {
		n := s.evictable()
		if n == 0 {
			continue
		}
		v := s.victim()
		switch {
		case best == nil, n > best.evictable():
		case n == best.evictable() && better(v, bestVictim):
		default:
			continue
		}
		best, bestVictim = s, v
	}
	return bestVictim
}

// better reports whether a should be dropped before b within tied sources:
// one still waiting before one in the handshake, then the older.
func better(a, b *entry) bool {
	if a.phase != b.phase {
		return a.phase == waiting
	}
	return a.seq < b.seq
}

// dropOne drops a connection still waiting for its first flight, if there
// is one, to free its descriptor.
func (l *Listener[T]) dropOne() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if v := l.victimLocked(); v != nil && v.phase == waiting {
		l.dropLocked(v, ErrDropped)
	}
}

// dropLocked ends a pending connection: its goroutine sees the closed
// connection or the canceled context, and reports cause.
func (l *Listener[T]) dropLocked(e *entry, cause error) {
	e.cause = cause
	l.removeLocked(e)
	if e.cancel != nil {
		e.cancel(cause)
	}
	e.raw.Close()
}

// removeLocked stops counting e.
func (l *Listener[T]) removeLocked(e *entry) {
	s := e.src
	switch e.phase {
	case waiting:
		s.waiting.Remove(e.elem)
	case handshaking:
		s.busy.Remove(e.elem)
	case completed:
		s.completed--
	case gone:
		return
	}
	e.phase, e.elem = gone, nil
	l.pending--
	if s.evictable() == 0 && s.completed == 0 {
		delete(l.sources, s.key)
	}
}

// run runs one connection from its first flight to Accept. It is small,
// so that the goroutine waiting for a first flight, as most attackers' do,
// fits in the smallest stack.
func (l *Listener[T]) run(e *entry) {
	defer l.wg.Done()
	flight, err := readFirstFlight(e.raw, l.cfg.FirstFlight, l.cfg.FirstFlightTimeout)
	l.handle(e, flight, err)
}

// handle runs the handshake after the first flight, and hands the result to
// Accept.
func (l *Listener[T]) handle(e *entry, flight []byte, err error) {
	if err != nil {
		l.fail(e, err)
		return
	}
	ctx, cancel := context.WithCancelCause(l.ctx)
	defer cancel(nil)
	if !l.promote(e, cancel) {
		l.fail(e, nil)
		return
	}
	if err := l.cpu.acquire(ctx, e.src); err != nil {
		l.fail(e, err)
		return
	}
	c := &Conn{Conn: e.raw, flight: flight, release: l.cpu.release,
		acquire: func(ctx context.Context) error { return l.cpu.acquire(ctx, e.src) }}
	v, err := l.cfg.Handshake(ctx, c)
	c.releaseCPU()
	if err != nil {
		l.fail(e, err)
		return
	}
	if !l.complete(e) {
		e.raw.Close()
		l.fail(e, nil)
		return
	}
	select {
	case l.ready <- accepted[T]{e, v}:
	case <-l.ctx.Done():
		e.raw.Close()
		l.mu.Lock()
		l.removeLocked(e)
		l.mu.Unlock()
	}
}

// promote moves e from waiting to handshaking, unless it was dropped.
func (l *Listener[T]) promote(e *entry, cancel context.CancelCauseFunc) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.phase != waiting {
		return false
	}
	e.src.waiting.Remove(e.elem)
	e.phase, e.cancel = handshaking, cancel
	e.elem = e.src.busy.PushBack(e)
	return true
}

// complete moves e from handshaking to completed, unless it was dropped.
func (l *Listener[T]) complete(e *entry) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.phase != handshaking {
		return false
	}
	e.src.busy.Remove(e.elem)
	e.phase, e.elem = completed, nil
	e.src.completed++
	return true
}

// fail ends a connection that will not reach Accept and reports why: the
// cause it was dropped for, if it was, else err.
func (l *Listener[T]) fail(e *entry, err error) {
	l.mu.Lock()
	if e.cause != nil {
		err = e.cause
	} else if l.closed {
		err = errListenerClosed
	}
	l.removeLocked(e)
	l.mu.Unlock()
	e.raw.Close()
	if err != nil && !errors.Is(err, errListenerClosed) {
		l.failed(e.raw.RemoteAddr(), err)
	}
}

func (l *Listener[T]) failed(remote net.Addr, err error) {
	if l.cfg.Failed != nil {
		l.cfg.Failed(remote, err)
	}
}

// readFirstFlight reads the peer's first flight within timeout. Its buffer
// grows only as bytes arrive, so a silent or trickling peer holds next to
// nothing; the function is a leaf, so the goroutine that waits in it holds
// a small stack.
func readFirstFlight(c net.Conn, need func([]byte) int, timeout time.Duration) ([]byte, error) {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	var b []byte
	for {
		n := min(need(b), maxFirstFlight)
		if n <= len(b) {
			break
		}
		if n > cap(b) {
			nb := make([]byte, len(b), max(n, 2*cap(b), 16))
			copy(nb, b)
			b = nb
		}
		m, err := c.Read(b[len(b):cap(b)])
		b = b[:len(b)+m]
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, fmt.Errorf("%w (%v, %d bytes received)", ErrFirstFlight, timeout, len(b))
			}
			if err == io.EOF {
				return nil, fmt.Errorf("the peer closed the connection before its first handshake message (%d bytes received): %w", len(b), io.ErrUnexpectedEOF)
			}
			return nil, err
		}
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return nil, err
	}
	return b, nil
}

// Conn is a connection whose first reads return the first flight read by
// the listener. Reading past it gives the handshake's CPU turn back: the
// handshake is waiting for the peer. Writes do not: a handshake writes
// before its first read past the flight only a few kilobytes (its hello and
// its answer), which fit in an empty socket's send buffer whatever the peer
// does, so no peer can make a handshake hold its turn by not reading.
type Conn struct {
	net.Conn
	flight   []byte
	release  func()
	acquire  func(context.Context) error
	released atomic.Bool
}

// Read returns what is left of the first flight, then reads from the
// connection.
func (c *Conn) Read(p []byte) (int, error) {
	if len(c.flight) > 0 {
		n := copy(p, c.flight)
		c.flight = c.flight[n:]
		if len(c.flight) == 0 {
			c.flight = nil
		}
		return n, nil
	}
	c.releaseCPU()
	return c.Conn.Read(p)
}

func (c *Conn) releaseCPU() {
	if !c.released.Load() && !c.released.Swap(true) {
		c.release()
	}
}

// Reacquire waits for another turn of handshake CPU, for a handshake that
// starts computing again after waiting for the peer (a responder that asked
// for a full handshake in place of a resumption). The next read gives it
// back, as the first turn.
func (c *Conn) Reacquire(ctx context.Context) error {
	if !c.released.Load() {
		return nil // the turn is still held
	}
	if err := c.acquire(ctx); err != nil {
		return err
	}
	c.released.Store(false)
	return nil
}

// Buffered returns the number of bytes of the first flight not yet read.
func (c *Conn) Buffered() int { return len(c.flight) }

// NetConn returns the connection under c.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// cpuGate shares the handshake CPU between sources, as the package comment
// describes.
type cpuGate struct {
	mu   sync.Mutex
	free int       // turns not taken
	ring []*source // sources with handshakes queued, served in turn
}

// acquire waits for a turn for a handshake of s.
func (g *cpuGate) acquire(ctx context.Context, s *source) error {
	g.mu.Lock()
	if g.free > 0 && len(g.ring) == 0 {
		g.free--
		g.mu.Unlock()
		return nil
	}
	w := make(chan struct{})
	s.cpuq = append(s.cpuq, w)
	if !s.inRing {
		s.inRing = true
		g.ring = append(g.ring, s)
	}
	g.mu.Unlock()

	select {
	case <-w:
		return nil
	case <-ctx.Done():
	}
	g.mu.Lock()
	for i, x := range s.cpuq {
		if x == w {
			s.cpuq = append(s.cpuq[:i], s.cpuq[i+1:]...)
			if len(s.cpuq) == 0 {
				g.unringLocked(s)
			}
			g.mu.Unlock()
			return context.Cause(ctx)
		}
	}
	g.mu.Unlock()
	// The turn came as the context ended: pass it on.
	g.release()
	return context.Cause(ctx)
}

func (g *cpuGate) unringLocked(s *source) {
	s.inRing = false
	for i, x := range g.ring {
		if x == s {
			g.ring = append(g.ring[:i], g.ring[i+1:]...)
			return
		}
	}
}

// release gives a turn back: to the next source in the ring, if any.
func (g *cpuGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.ring) == 0 {
		g.free++
		return
	}
	s := g.ring[0]
	g.ring = g.ring[1:]
	w := s.cpuq[0]
	s.cpuq = s.cpuq[1:]
	if len(s.cpuq) > 0 {
		g.ring = append(g.ring, s)
	} else {
		s.inRing = false
	}
	close(w)
}
