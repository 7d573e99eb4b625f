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
//   - Rank by what a connection has proved, not by its phase. Until the
//     handshake has authenticated the peer (securepeer: message 3, or
//     finished in a resumption), a connection has proved nothing: a message
//     1 can be replayed, a ticket forged, and a stall after either costs the
//     attacker nothing, whatever phase it leaves the connection in. So every
//     unproved connection is dropped before any whose peer did the work
//     demanded of it ("Work under load", below: it cost the peer many
//     times what the server spends on it), those before any proved one
//     (whose peer has done a handshake's work and whose Verify may be
//     running), and every proved one before any completed one (waiting
//     for Accept, which the application is slow to call).
//
//   - Within a rank, drop the heaviest source's oldest, from the older
//     half. A rank's connections are ordered by when they took it: their
//     accept, or the moment the handshake sent them back to waiting for a
//     first flight (securepeer's 00 00 05 after a refused ticket), whatever
//     their phase since. Only the older half is dropped from, and the
//     connection dropped belongs to the source address (an IPv4 address,
//     or an IPv6 /64) that holds the most connections in that half: its
//     oldest. So a source can hold any number of slots while slots are
//     free and has to give them up, one for one, to every other source
//     that wants one (max-min fairness, with no per-source quota to tune),
//     and every connection keeps its place until half of its rank has
//     arrived after it, however crowded its address: an attacker that
//     shares a legitimate peer's address and reconnects as soon as it is
//     dropped makes that address look heavy only with connections younger
//     than the peer's, which do not count. A legitimate peer sends its
//     first flight the moment it connects and answers each message within
//     a round trip, so it leaves the unproved rank quickly; a silent,
//     stalled, trickling or replaying attacker stays in it until it is
//     dropped. Ties between sources go to the one whose oldest is older.
//     Each source sits in a heap per rank, keyed by its count in the older
//     half and its oldest connection, and the boundary between the halves
//     moves by one connection per change, so choosing takes O(1) and
//     keeping the heaps O(log sources) per change: accepting under attack
//     never scans the sources.
//
//   - The first flight has its own deadline (10 seconds by default, or
//     Config.HandshakeTimeout if shorter), shorter than the handshake's,
//     which must allow for a slow Verify (a user confirming a key on the
//     other side). It is read here, before the handshake runs, into a
//     buffer that grows only with the bytes received (never to what a
//     length field promises), by a goroutine whose stack holds nothing
//     else: a waiting connection costs about what its socket and that
//     goroutine cost. A handshake that sends its peer back to a first
//     flight waits for it the same way ([Conn.AwaitFirstFlight]): the same
//     deadline, a new rank, and a buffer that grows as bytes arrive.
//     A protocol whose peer sends its handshake message only once the
//     server has answered its first bytes (libp2p: multistream-select's
//     proposal, then the security handshake's message 1) reads that
//     message as the rest of the same first flight
//     ([Conn.ReadMoreFirstFlight]): under the deadline counted from the
//     accept, in the same rank.
//
//   - Handshake CPU is shared by source. A peer that has sent a complete
//     first flight makes the server compute (key agreement, encapsulation,
//     a signature), which a replayed first flight does at no cost to the
//     attacker. At most GOMAXPROCS handshakes compute at once, and with
//     Config.CPUOnDemand a handshake asks for its turn only when it is
//     about to compute, so a refusal or a stall before that holds none.
//     The others queue per source and are served round robin across
//     sources, so a source that replays flights in a loop gets one turn in
//     every round; a source that starts queueing goes to the front, so a
//     peer from a fresh address is served next rather than behind every
//     address already queued. Within a source the newest handshake goes
//     first: an attacker's old replays do not stand in front of a
//     legitimate peer who shares its address, and the oldest, which wait
//     longest, are the first dropped anyway. (A source's queue is bounded
//     by its pending connections, and leaving it is O(1).) A handshake
//     gives its turn back when it next waits for the peer. What no order
//     can do is tell a made-up first flight from a peer's: while such
//     flights arrive faster than the machine answers them, which message
//     1 is answered before its connection's turn to be dropped comes
//     would be a matter of chance. Work tells them apart:
//
//   - Work under load. With Config.DemandWork, while more than 64
//     handshakes per turn wait without work, a handshake about to queue
//     may ask its peer for work first (Conn.WorkDemand: WorkBits, one
//     more for each doubling of the handshakes that proved work and wait,
//     up to MaxWorkBits), read the answer as the rest of the first flight
//     (Conn.ReadWork: its deadline, its rank, a buffer that grows with the
//     bytes), and check it. A handshake whose peer proved work
//     (Conn.Worked) waits apart and is served before every one whose peer
//     did not, the most work first, then the earliest; the others are
//     served round robin as above. A flood of made-up flights that does
//     no work then waits behind every peer that does, and one that does
//     the work pays for each flight many times what the server pays to
//     answer it. The protocol's work (securepeer: leading zero bits of a
//     hash bound to the first flight) is the handshake's to define and
//     check; the listener only ranks by it.
//
//   - Exact replays are refused. With Config.ReplayKey, the listener
//     remembers a key of each first flight (securepeer: the initiator's
//     ephemeral key, which an honest initiator draws afresh for every
//     handshake) and closes, before its handshake starts, a connection
//     whose first flight repeats a key seen recently; a flight that a
//     handshake asks for again (AwaitFirstFlight) is checked and
//     remembered alike. So a recorded flight replayed in a loop is
//     answered once, then costs a read and a hash. The keys are kept as
//     32-bit fingerprints, 16 to a bucket in 65,536 buckets (4 MiB,
//     allocated with the listener and never more); bucket and fingerprint
//     come from HMAC-SHA256 under a random key of the listener's, so no one
//     can aim keys at a bucket, and a key evicts the least recently seen
//     of its bucket. A key is therefore remembered across the next 2^18
//     distinct first flights but with probability 5e-6, across 2^19 but
//     with 0.8%, about 2^20 on average, and forgotten after 2^21 but with
//     0.07%. An honest key matches a fingerprint of its bucket with
//     probability at most 16 in 2^32 (3.7e-9); that handshake fails as a
//     replay, and the client's next attempt has a fresh key. A replay
//     older than the window is answered again, once: to age it out the
//     attacker sent about a million fresh first flights, each of which
//     could have cost the server as much as the replay does. What the
//     cache cannot do is make a fresh first flight cost its sender
//     anything: in securepeer, anyone can make a valid-looking message 1
//     (32 random bytes as the key, and an AEAD under keys from public
//     values) in microseconds, and against such flights handshake CPU is
//     the lottery above.
//
//   - Accept errors never end the listener. Running out of descriptors
//     (EMFILE, ENFILE), an aborted connection and the like are retried
//     after a pause that starts at 5 ms and doubles up to 1 s, as
//     net/http's Server does; running out of descriptors also drops one
//     unproved connection, to free one. Only a closed inner listener ends
//     Accept.
package admit

import (
	"container/heap"
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

// minFlightBuffer is the first flight buffer's smallest size: a peer that
// sends a few bytes holds this much, and the buffer doubles from it as
// bytes arrive.
const minFlightBuffer = 64

// Config configures a Listener.
type Config[T any] struct {
	// Handshake runs the protocol's handshake, as responder, over c, whose
	// first reads return the first flight already read. c is a *Conn. ctx
	// ends when the connection is dropped or the listener closed, and at
	// the HandshakeTimeout deadline if set. On error the listener closes
	// the connection; on success the result owns it.
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

	// Discard, if not nil, is given each result of a successful handshake
	// that will not reach Accept (its connection was dropped, or the
	// listener closed, before Accept took it), for a result that holds
	// more than the connection, which the listener closes.
	Discard func(T)

	// MaxPending bounds the connections accepted and not yet returned by
	// Accept: waiting for their first flight, in the handshake, or done
	// and waiting for Accept. If zero, DefaultMaxPending.
	MaxPending int

	// FirstFlightTimeout bounds the wait for the first flight, counted
	// from the accept, and for a first flight the handshake asks for again
	// (Conn.AwaitFirstFlight), counted from the request. If zero,
	// DefaultFirstFlightTimeout; never more than HandshakeTimeout, if set.
	FirstFlightTimeout time.Duration

	// HandshakeTimeout, if not zero, bounds each connection from its
	// accept to the end of its handshake, first flight included: the
	// context given to Handshake has that deadline.
	HandshakeTimeout time.Duration

	// CPUOnDemand, if true, starts each handshake without a turn of
	// handshake CPU: it asks for one with Conn.AcquireCPU before it
	// computes, so that a handshake that fails or stalls before computing
	// anything (a refused ticket) never holds one. If false, each
	// handshake gets a turn before it starts.
	CPUOnDemand bool

	// ReplayKey, if not nil, returns what identifies a first flight, so
	// that the listener refuses a flight whose key it has seen recently
	// (the package comment, "Exact replays are refused"): the connection
	// is closed before the handshake starts, and Failed is told
	// ErrReplayed. The key must be one that an honest peer never repeats
	// (securepeer: the initiator's ephemeral key). again is true for a
	// flight a handshake asked for with Conn.AwaitFirstFlight, whose
	// format may differ; ok is false for a flight with nothing to key
	// it by, which is not checked. It must not retain flight.
	ReplayKey func(flight []byte, again bool) (key []byte, ok bool)

	// DemandWork, if true, lets a handshake ask its peer for work before
	// it queues for CPU behind many others (Conn.WorkDemand), and queues
	// a handshake whose peer proved work ahead of those whose peers did
	// not (Conn.Worked): the package comment's "Work under load".
	DemandWork bool
}

// Errors given to Config.Failed.
var (
	ErrDropped        = errors.New("dropped to make room for other peers: the listener's pending connections were full")
	ErrFirstFlight    = errors.New("the peer sent no complete first handshake message in time")
	ErrReplayed       = errors.New("the peer's first handshake message repeats one received before: a replay")
	errListenerClosed = errors.New("the listener was closed")
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
	seen   *replayCache // nil without Config.ReplayKey

	closeOnce sync.Once
	closeErr  error

	mu      sync.Mutex
	sources map[netip.Prefix]*source
	ranks   [numRanks]rankSet // the connections of each rank
	pending int               // connections of any rank
	seq     uint64            // order of arrival, and of each change of rank
	closed  bool
	err     error // why the accept loop ended, if not Close
}

// accepted is a completed connection on its way to Accept, which stops
// counting it, so that the slot is free when Accept returns.
type accepted[T any] struct {
	e *entry
	v T
}

// A rank is what a pending connection has proved, which orders drops: all
// unproved connections go before any that did the work demanded of them,
// those before any proved one, and those before any completed one.
type rank uint8

const (
	unproved  rank = iota // waiting for a first flight, or in the handshake before the peer's proof
	worked                // the peer did the work demanded of it (Conn.Worked), and has proved nothing else
	proved                // the peer has authenticated; Verify may be running
	completed             // the handshake succeeded; waiting for Accept
	numRanks
)

// entry is one pending connection. Its fields are guarded by Listener.mu.
type entry struct {
	src      *source
	raw      net.Conn
	rank     rank
	seq      uint64        // when it took its place in its rank: the older go first
	elem     *list.Element // in src.conns[rank]; nil once gone
	order    *list.Element // in Listener.ranks[rank].order
	older    bool          // in the older half of its rank
	deadline time.Time     // of the handshake, from Config.HandshakeTimeout; zero if none
	cancel   context.CancelCauseFunc
	cause    error // why it was dropped
}

func (e *entry) gone() bool { return e.elem == nil }

// source is one source address's pending connections.
type source struct {
	key   netip.Prefix
	conns [numRanks]list.List // of *entry, by rank, oldest (lowest seq) first
	older [numRanks]int       // of which in the older half of their rank
	index [numRanks]int       // in Listener.ranks[r].srcs, or -1

	// Guarded by cpuGate.mu.
	cpuq list.List     // of *waiter, oldest first
	ring *list.Element // in cpuGate.ring while cpuq is not empty
}

func (s *source) empty() bool {
	for r := range numRanks {
		if s.conns[r].Len() > 0 {
			return false
		}
	}
	return true
}

// oldest returns the source's oldest connection of rank r.
func (s *source) oldest(r rank) *entry { return s.conns[r].Front().Value.(*entry) }

// A rankSet is the pending connections of one rank, in the order they took
// it, split into an older and a younger half (the older has the extra one),
// with a heap of the sources that hold connections in the older half: the
// one to drop from on top, the most such connections first, then the
// oldest. Only the older half is dropped from, so that every connection
// keeps its place until half of its rank has arrived after it, however
// crowded its address is, and the choice of source looks at who holds the
// older connections, not at whose newcomers are arriving.
type rankSet struct {
	r          rank
	order      list.List     // of *entry, oldest first
	firstYoung *list.Element // the younger half's first, or nil
	older      int           // entries in the older half: (order.Len()+1)/2
	srcs       []*source     // heap
}

// add puts e, which has just taken the rank, last.
func (rs *rankSet) add(e *entry) {
	e.order = rs.order.PushBack(e)
	e.older = false
	if rs.firstYoung == nil {
		rs.firstYoung = e.order
	}
	rs.balance()
}

// remove takes e out; its source's list no longer holds it.
func (rs *rankSet) remove(e *entry) {
	switch {
	case e.older:
		rs.older--
		e.src.older[rs.r]--
	case rs.firstYoung == e.order:
		rs.firstYoung = e.order.Next()
	}
	rs.order.Remove(e.order)
	e.order = nil
	rs.fix(e.src)
	rs.balance()
}

// balance moves the boundary between the halves back in place.
func (rs *rankSet) balance() {
	want := (rs.order.Len() + 1) / 2
	for rs.older < want {
		el := rs.firstYoung
		rs.firstYoung = el.Next()
		rs.setOlder(el.Value.(*entry), true)
	}
	for rs.older > want {
		el := rs.order.Back()
		if rs.firstYoung != nil {
			el = rs.firstYoung.Prev()
		}
		rs.firstYoung = el
		rs.setOlder(el.Value.(*entry), false)
	}
}

func (rs *rankSet) setOlder(e *entry, older bool) {
	e.older = older
	d := 1
	if !older {
		d = -1
	}
	rs.older += d
	e.src.older[rs.r] += d
	rs.fix(e.src)
}

// victim returns the connection to drop: the oldest of the source on top,
// which is in the older half. Nil if the rank is empty.
func (rs *rankSet) victim() *entry {
	if len(rs.srcs) == 0 {
		return nil
	}
	return rs.srcs[0].oldest(rs.r)
}

// fix restores the heap after s's connections of the rank changed.
func (rs *rankSet) fix(s *source) {
	i := s.index[rs.r]
	switch {
	case s.older[rs.r] == 0:
		if i >= 0 {
			heap.Remove(rs, i)
		}
	case i < 0:
		heap.Push(rs, s)
	default:
		heap.Fix(rs, i)
	}
}

// The heap of sources, for container/heap.

func (rs *rankSet) Len() int { return len(rs.srcs) }

func (rs *rankSet) Less(i, j int) bool {
	a, b := rs.srcs[i], rs.srcs[j]
	if na, nb := a.older[rs.r], b.older[rs.r]; na != nb {
		return na > nb
	}
	return a.oldest(rs.r).seq < b.oldest(rs.r).seq
}

func (rs *rankSet) Swap(i, j int) {
	rs.srcs[i], rs.srcs[j] = rs.srcs[j], rs.srcs[i]
	rs.srcs[i].index[rs.r] = i
	rs.srcs[j].index[rs.r] = j
}

func (rs *rankSet) Push(x any) {
	s := x.(*source)
	s.index[rs.r] = len(rs.srcs)
	rs.srcs = append(rs.srcs, s)
}

func (rs *rankSet) Pop() any {
	n := len(rs.srcs) - 1
	s := rs.srcs[n]
	rs.srcs[n] = nil
	rs.srcs = rs.srcs[:n]
	s.index[rs.r] = -1
	return s
}

// NewListener starts accepting from inner.
func NewListener[T any](inner net.Listener, cfg Config[T]) *Listener[T] {
	l := newListener(inner, cfg)
	go l.serve()
	return l
}

// newListener returns a listener that has not started accepting.
func newListener[T any](inner net.Listener, cfg Config[T]) *Listener[T] {
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.FirstFlightTimeout <= 0 {
		cfg.FirstFlightTimeout = DefaultFirstFlightTimeout
	}
	if cfg.HandshakeTimeout > 0 {
		cfg.FirstFlightTimeout = min(cfg.FirstFlightTimeout, cfg.HandshakeTimeout)
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
	for r := range l.ranks {
		l.ranks[r].r = rank(r)
	}
	l.cpu.turns = runtime.GOMAXPROCS(0)
	l.cpu.free = l.cpu.turns
	if cfg.ReplayKey != nil {
		l.seen = newReplayCache(replayBuckets)
	}
	return l
}

// Accept returns the next connection whose handshake has completed. After
// Close, or once the inner listener has failed for good, it returns an
// error wrapping net.ErrClosed or the inner listener's error.
func (l *Listener[T]) Accept() (T, error) {
	for {
		select {
		case a := <-l.ready:
			l.mu.Lock()
			dropped := a.e.gone() // as it was handed over
			l.removeLocked(a.e)
			l.mu.Unlock()
			if dropped {
				if l.cfg.Discard != nil {
					l.cfg.Discard(a.v)
				}
				continue
			}
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
		for r := range s.conns {
			for el := s.conns[r].Front(); el != nil; el = el.Next() {
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
	return l.ranks[completed].order.Len()
}

// Unproved returns the number of pending connections whose peer has not
// yet proved anything: waiting for a first flight, or in the handshake
// before the peer authenticates.
func (l *Listener[T]) Unproved() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ranks[unproved].order.Len()
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
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errListenerClosed
	}
	if l.pending >= l.cfg.MaxPending {
		l.dropLocked(l.victimLocked(completed), ErrDropped)
	}
	s := l.sources[key]
	if s == nil {
		s = &source{key: key, index: [numRanks]int{-1, -1, -1, -1}}
		l.sources[key] = s
	}
	e := &entry{src: s, raw: raw}
	if l.cfg.HandshakeTimeout > 0 {
		e.deadline = now.Add(l.cfg.HandshakeTimeout)
	}
	l.placeLocked(e, unproved)
	l.pending++
	return e, nil
}

// victimLocked picks the connection to drop, of rank at most up to: the
// heaviest source's oldest of the lowest rank present, as the package
// comment argues, or nil.
func (l *Listener[T]) victimLocked(upTo rank) *entry {
	for r := unproved; r <= upTo; r++ {
		if v := l.ranks[r].victim(); v != nil {
			return v
		}
	}
	return nil
}

// placeLocked puts e last in rank r: the youngest of its source's
// connections of that rank.
func (l *Listener[T]) placeLocked(e *entry, r rank) {
	l.seq++
	e.rank, e.seq = r, l.seq
	e.elem = e.src.conns[r].PushBack(e)
	l.ranks[r].add(e)
}

// unplaceLocked takes e out of its rank.
func (l *Listener[T]) unplaceLocked(e *entry) {
	e.src.conns[e.rank].Remove(e.elem)
	e.elem = nil
	l.ranks[e.rank].remove(e)
}

// moveLocked gives e rank r, as a newcomer to it, unless e is gone.
func (l *Listener[T]) moveLocked(e *entry, r rank) bool {
	if e.gone() {
		return false
	}
	l.unplaceLocked(e)
	l.placeLocked(e, r)
	return true
}

// dropOne drops an unproved connection, if there is one, to free its
// descriptor.
func (l *Listener[T]) dropOne() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dropLocked(l.victimLocked(unproved), ErrDropped)
}

// dropLocked ends a pending connection, if e is not nil: its goroutine sees
// the closed connection or the canceled context, and reports cause.
func (l *Listener[T]) dropLocked(e *entry, cause error) {
	if e == nil {
		return
	}
	e.cause = cause
	l.removeLocked(e)
	if e.cancel != nil {
		e.cancel(cause)
	}
	e.raw.Close()
}

// removeLocked stops counting e.
func (l *Listener[T]) removeLocked(e *entry) {
	if e.gone() {
		return
	}
	l.unplaceLocked(e)
	l.pending--
	if s := e.src; s.empty() {
		delete(l.sources, s.key)
	}
}

// run runs one connection from its first flight to Accept. It is small,
// so that the goroutine waiting for a first flight, as most attackers' do,
// fits in the smallest stack.
func (l *Listener[T]) run(e *entry) {
	defer l.wg.Done()
	deadline := l.firstFlightDeadline(e)
	flight, err := readFirstFlight(e.raw, l.cfg.FirstFlight, nil, deadline)
	l.handle(e, flight, deadline, err)
}

// firstFlightDeadline is the deadline of a first flight awaited from now.
func (l *Listener[T]) firstFlightDeadline(e *entry) time.Time {
	d := time.Now().Add(l.cfg.FirstFlightTimeout)
	if !e.deadline.IsZero() && e.deadline.Before(d) {
		return e.deadline
	}
	return d
}

// handle runs the handshake after the first flight, which had until
// deadline to arrive, and hands the result to Accept.
func (l *Listener[T]) handle(e *entry, flight []byte, deadline time.Time, err error) {
	if err != nil {
		l.fail(e, err)
		return
	}
	if l.replayed(flight, false) {
		l.fail(e, ErrReplayed)
		return
	}
	// dropped ends when the connection is dropped or the listener closed;
	// the handshake's context also ends at its deadline.
	dropped, cancel := context.WithCancelCause(l.ctx)
	defer cancel(nil)
	ctx := dropped
	if !e.deadline.IsZero() {
		var stop context.CancelFunc
		ctx, stop = context.WithDeadline(dropped, e.deadline)
		defer stop()
	}
	if !l.started(e, cancel) {
		l.fail(e, nil)
		return
	}
	c := &Conn{Conn: e.raw, flight: flight, deadline: deadline, release: l.cpu.release,
		acquire:  func(ctx context.Context, bits int) error { return l.cpu.acquire(ctx, e.src, bits) },
		restart:  func() (time.Time, bool) { return l.restart(e) },
		prove:    func() { l.promote(e, proved) },
		worked:   func() { l.promote(e, worked) },
		replayed: func(flight []byte) bool { return l.replayed(flight, true) },
	}
	if l.cfg.DemandWork {
		c.demand = l.cpu.demand
	}
	c.released.Store(true)
	if !l.cfg.CPUOnDemand {
		if err := c.AcquireCPU(ctx); err != nil {
			l.fail(e, err)
			return
		}
	}
	v, err := l.cfg.Handshake(ctx, c)
	c.releaseCPU()
	if err != nil {
		l.fail(e, err)
		return
	}
	if !l.promote(e, completed) {
		l.discard(e, v)
		return
	}
	select {
	case l.ready <- accepted[T]{e, v}:
	case <-dropped.Done():
		l.discard(e, v)
	}
}

// discard ends a connection whose handshake succeeded but which will not
// reach Accept, and gives its result to Config.Discard.
func (l *Listener[T]) discard(e *entry, v T) {
	e.raw.Close()
	if l.cfg.Discard != nil {
		l.cfg.Discard(v)
	}
	l.fail(e, nil)
}

// replayed reports whether flight repeats the key of a first flight seen
// before, and records its key (Config.ReplayKey).
func (l *Listener[T]) replayed(flight []byte, again bool) bool {
	if l.seen == nil {
		return false
	}
	k, ok := l.cfg.ReplayKey(flight, again)
	return ok && l.seen.seen(k)
}

// started records that e's handshake begins, with the function that
// cancels it when e is dropped, unless e is gone already.
func (l *Listener[T]) started(e *entry, cancel context.CancelCauseFunc) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.gone() {
		return false
	}
	e.cancel = cancel
	return true
}

// promote gives e rank r, unless e is gone or has it already.
func (l *Listener[T]) promote(e *entry, r rank) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.gone() {
		return false
	}
	if e.rank < r {
		l.moveLocked(e, r)
	}
	return true
}

// restart sends e back to waiting for a first flight: unproved, and ranked
// as a newcomer. It returns the flight's deadline, or false if e is gone.
func (l *Listener[T]) restart(e *entry) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.moveLocked(e, unproved) {
		return time.Time{}, false
	}
	return l.firstFlightDeadline(e), true
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

// readFirstFlight reads the peer's first flight by deadline, after the
// bytes b already received. Its buffer grows only with the bytes received,
// doubling from minFlightBuffer, never to the length need announces, so a
// silent or trickling peer holds next to nothing; the function is a leaf
// but for need, so the goroutine that waits in it holds a small stack.
func readFirstFlight(c net.Conn, need func([]byte) int, b []byte, deadline time.Time) ([]byte, error) {
	if err := c.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	for {
		n := min(need(b), maxFirstFlight)
		if n <= len(b) {
			break
		}
		if len(b) == cap(b) {
			nb := make([]byte, len(b), max(min(n, 2*cap(b)), minFlightBuffer))
			copy(nb, b)
			b = nb
		}
		m, err := c.Read(b[len(b):cap(b)])
		b = b[:len(b)+m]
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, fmt.Errorf("%w (%d bytes received)", ErrFirstFlight, len(b))
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
	deadline time.Time // of the first flight being read, or last read
	released atomic.Bool

	// The listener's side.
	release  func()
	acquire  func(ctx context.Context, bits int) error
	demand   func() int // nil unless Config.DemandWork
	work     int        // bits of work the peer proved (Conn.Worked)
	worked   func()     // ranks the connection as worked
	restart  func() (deadline time.Time, ok bool)
	prove    func()
	replayed func(flight []byte) bool
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

// ReleaseCPU gives the handshake's CPU turn back, if it holds one, as a
// read past the first flight does: for a handshake about to wait for the
// peer without reading through c (on the socket's descriptor).
func (c *Conn) ReleaseCPU() { c.releaseCPU() }

func (c *Conn) releaseCPU() {
	if !c.released.Load() && !c.released.Swap(true) {
		c.release()
	}
}

// AcquireCPU waits for a turn of handshake CPU, unless the handshake holds
// one: a handshake calls it before it computes, with Config.CPUOnDemand for
// its first turn, or after it has waited for the peer. The next read past
// the first flight gives the turn back.
func (c *Conn) AcquireCPU(ctx context.Context) error {
	if !c.released.Load() {
		return nil // the turn is still held
	}
	if err := c.acquire(ctx, c.work); err != nil {
		return err
	}
	c.released.Store(false)
	return nil
}

// Proved tells the listener that the handshake has authenticated the peer
// (securepeer: message 3 or finished checked), so that the connection no
// longer ranks with those that cost their sender nothing (the package
// comment, "Rank by what a connection has proved"). Later calls do nothing.
func (c *Conn) Proved() {
	if c.prove != nil {
		c.prove()
	}
}

// AwaitFirstFlight waits for a new first flight, for a handshake that has
// asked its peer to start over (securepeer: 00 00 05 after a refused
// ticket), and makes the next reads return it. It gives the CPU turn back,
// and the connection ranks as a newcomer from now. The flight is read as
// the listener reads a first flight: need says how long it is, as
// Config.FirstFlight; the deadline is Config.FirstFlightTimeout from now,
// or ctx's if sooner; the buffer grows only with the bytes received; a
// flight that repeats one seen before is refused, as a first flight is
// (Config.ReplayKey, with again true). On success the read deadline is
// ctx's again (none if ctx has none). An error wraps ErrFirstFlight if the
// deadline passed, is ErrReplayed for a replay, or is ctx's cause.
func (c *Conn) AwaitFirstFlight(ctx context.Context, need func([]byte) int) error {
	c.releaseCPU()
	if c.restart == nil {
		return errors.New("the connection is not a listener's")
	}
	deadline, ok := c.restart()
	if !ok {
		return ErrDropped
	}
	hs, hasDeadline := ctx.Deadline()
	if hasDeadline && hs.Before(deadline) {
		deadline = hs
	}
	c.deadline = deadline
	return c.readFlight(ctx, need, deadline, true)
}

// ReadMoreFirstFlight reads the next part of a first flight that comes in
// parts, for a protocol whose peer sends its handshake message only once
// the server has answered its first bytes (libp2p's multistream-select
// proposal, then the security handshake's message 1), and makes the next
// reads return it, after what is left unread of the flight. It is read as
// a first flight is, and counts as the same one: need says how long the
// part is, given what is left unread and the bytes received since; the
// deadline is that of the first flight (Config.FirstFlightTimeout from the
// accept, or from the last AwaitFirstFlight), or ctx's if sooner; the
// buffer grows only with the bytes received. The connection keeps its
// rank, and gives its CPU turn back. On success the read deadline is
// ctx's (none if ctx has none). An error wraps ErrFirstFlight if the
// deadline passed, or is ctx's cause.
func (c *Conn) ReadMoreFirstFlight(ctx context.Context, need func([]byte) int) error {
	return c.readRest(ctx, need, true)
}

// readRest reads more of the current first flight, under its deadline
// or ctx's if sooner, for ReadMoreFirstFlight and ReadWork; it refuses a
// repeated one if checkReplay.
func (c *Conn) readRest(ctx context.Context, need func([]byte) int, checkReplay bool) error {
	c.releaseCPU()
	if c.deadline.IsZero() {
		return errors.New("the connection is not a listener's")
	}
	deadline := c.deadline
	if hs, ok := ctx.Deadline(); ok && hs.Before(deadline) {
		deadline = hs
	}
	return c.readFlight(ctx, need, deadline, checkReplay)
}

// WorkDemand returns the bits of work to ask of the peer before the
// handshake queues for CPU, or 0 to ask for none: none unless
// Config.DemandWork, and none while the queue is short (the package
// comment, "Work under load").
func (c *Conn) WorkDemand() int {
	if c.demand == nil {
		return 0
	}
	return c.demand()
}

// ReadWork reads the peer's answer to a demand for work as the rest of its
// first flight, and makes the next reads return it: need says how long the
// answer is, as Config.FirstFlight; the deadline is the first flight's, or
// ctx's if sooner; the buffer grows only with the bytes received; the
// connection keeps its rank. Replays are not checked: the answer is bound
// to the first flight, which was. Errors are as ReadMoreFirstFlight's.
func (c *Conn) ReadWork(ctx context.Context, need func([]byte) int) error {
	return c.readRest(ctx, need, false)
}

// Worked tells the listener that the peer proved bits of work, checked by
// the handshake: the connection ranks above every unproved one, as a
// newcomer to its rank, and its waits for CPU queue ahead of handshakes
// whose peers proved less.
func (c *Conn) Worked(bits int) {
	c.work = bits
	if c.worked != nil {
		c.worked()
	}
}

// readFlight reads a first flight, after what is left of the last, by
// deadline, and makes the next reads return it; if checkReplay, it
// refuses one whose key was seen (Config.ReplayKey).
func (c *Conn) readFlight(ctx context.Context, need func([]byte) int, deadline time.Time, checkReplay bool) error {
	hs, _ := ctx.Deadline()
	flight, err := readFirstFlight(c.Conn, need, c.flight, deadline)
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if err != nil {
		return err
	}
	if err := c.Conn.SetReadDeadline(hs); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if checkReplay && c.replayed != nil && c.replayed(flight) {
		return ErrReplayed
	}
	c.flight = flight
	return nil
}

// Buffered returns the number of bytes of the first flight not yet read.
func (c *Conn) Buffered() int { return len(c.flight) }

// NetConn returns the connection under c.
func (c *Conn) NetConn() net.Conn { return c.Conn }
