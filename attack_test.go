//go:build linux

// The attack tests and benchmarks are Linux only: they dial from many
// 127.0.0.0/8 source addresses, which Linux routes to the loopback
// interface (other systems configure 127.0.0.1 alone), and they use
// RLIMIT_NOFILE and /proc/self/fd.

package securepeer

// An attacker toolkit for the listener (issue 7), and scaled-down tests
// built on it that run in CI. The full figures come from
// BenchmarkUnderAttack in stress_test.go; BENCHMARKS.md, "Under attack",
// gives the command and the results.
//
// An attacker is a goroutine that dials the listener over loopback TCP
// from a chosen 127.0.0.0/8 source address, does what its kind does, and
// dials again when the server drops it, until the attack stops (explicitly,
// or by itself after a bounded time and a bounded number of connections).
// Attackers close with SO_LINGER 0 (a reset), as a flooding client would:
// a connection never lingers in TIME_WAIT, so the reconnecting loop does
// not run out of ephemeral ports.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/mlkem"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flynn/noise"

	"github.com/securepeer/securepeer/internal/testenv"
	"github.com/securepeer/securepeer/internal/wire"
)

// An attackKind is what an attacker does once connected.
type attackKind string

const (
	attackSilent  attackKind = "silent"  // sends nothing
	attackHello   attackKind = "hello"   // a valid hello, then nothing
	attackTrickle attackKind = "trickle" // a valid first flight, one byte per trickle interval
	attackReplay  attackKind = "replay"  // a recorded first flight; reads message 2, hangs up, again
	attackForge   attackKind = "forge"   // a forged first flight (flightForger); reads message 2, hangs up, again

	// Stalls (issue 16): each holds its connection in one of the states a
	// peer can reach without proving anything, until the server drops it.
	stallTicket  attackKind = "ticket"  // a resumption message 1 with a bogus ticket and a fresh key; reads 00 00 05; silent
	stallReplay  attackKind = "replay1" // one recorded first flight, replayed; reads message 2; never sends message 3
	stallPartial attackKind = "msg1"    // a hello and the length of the longest valid message 1; silent
	attackLen64K attackKind = "len64k"  // a hello and a message 1 length of 65535; silent (issue 16, item 5)
	stallNoMsg3  attackKind = "nomsg3"  // a real client's first flight, its own; reads message 2; never sends message 3
	stallFresh   attackKind = "fresh1"  // a forged first flight with a fresh key (flightForger); reads message 2; never sends message 3
	// Against demands for work (PROTOCOL.md, "Work under load"), with the
	// work signal in the forged flight's cipher list, which fresh1 leaves
	// out (and so is never asked):
	stallWork attackKind = "work1" // reads the demand, or message 2, and never answers
	stallPaid attackKind = "paid1" // does the work demanded, reads message 2; never sends message 3

	// attackComplete runs a real Client's handshake (classical, attackConfig.client) to its end
	// and holds the connection: the server has it in Verify or waiting for
	// Accept.
	attackComplete attackKind = "complete"
)

// stallKinds are the stalls, in the order of the table of PROTOCOL.md,
// "Servers on the open internet". Against a listener that refuses repeated
// first flights, replay1 and nomsg3 are refused at their first flight
// (after the first time the server sees each flight); fresh1 is what
// reaches the states past it.
var stallKinds = []attackKind{stallPartial, stallTicket, stallReplay, stallNoMsg3, stallFresh, stallWork}

// benchStallKinds are what BenchmarkUnderAttack runs: every stall, and
// attackers that pay for the work demanded of them, which reach no state
// of their own (they queue for CPU, then wait for message 3) and cost
// their own CPU too much for the tests' 5000.
var benchStallKinds = append(slices.Clone(stallKinds), stallPaid)

// stallSpreads are the source addresses of 5000 stalling attackers: all on
// one, or spread over 4500.
var stallSpreads = []struct {
	name   string
	source func(int) net.IP
	own    net.IP // an attacker's address, for a legitimate client
}{
	{"one-source", fromLocal, localIP},
	// 127.1.4.1, which one attacker uses (500 addresses have two).
	{"4500-sources", fromSources(4500), fromSources(4500)(1000)},
}

type attackConfig struct {
	kind   attackKind
	target string // the listener's address
	n      int    // attackers, each with one connection at a time
	// source returns attacker i's source address (nil: the kernel's
	// choice, 127.0.0.1 for a loopback target).
	source func(i int) net.IP
	// flight is a recorded first flight (hello, length, message 1), for
	// trickle and replay.
	flight []byte
	// flights are real first flights, one for each attacker in turn, for
	// nomsg3 (nil: flight).
	flights [][]byte
	// forger makes the first flights of forge and fresh1 (nil: a new one).
	forger   *flightForger
	trickle  time.Duration // pause between trickled bytes; 1 s if zero
	maxConns int           // connections per attacker; 1,000,000 if zero
	// pause bounds how long an attacker waits, a random time below it,
	// after the server has dropped it before it connects again (0: at
	// once, as fast as it can).
	pause time.Duration
	// client is the Config of attackComplete's handshakes.
	client *Config
	// ramp spreads the attackers' first connections over this long (0:
	// all at once).
	ramp time.Duration
	// concurrent, for attackComplete, is how many handshakes run at once
	// at most (0: no limit): attackers that pace themselves by the
	// server's answers, as a client pool does, so that a slow machine (the
	// race detector) never makes the server's queue drop their handshakes.
	concurrent int
	// legitDelay is how long after its connection a legitimate client's
	// first flight arrives, in testListenerUnderAttack (legitDialAway).
	legitDelay time.Duration
	// maxDuration stops the attack by itself; 10 minutes if zero.
	maxDuration time.Duration
}

// An attack is a running set of attackers.
type attack struct {
	cfg    attackConfig
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	slots chan struct{} // cfg.concurrent handshakes, if set
	// solver lets one paid1 attacker at a time do the work demanded: the
	// attack spends one core on work, as a machine of one core would. On
	// the tests' machine the attackers share the server's cores, so 5000
	// solving at once would measure that sharing, not the listener.
	solver chan struct{}

	connected  atomic.Int64 // attackers that have connected at least once
	live       atomic.Int64 // attacker connections open now
	dials      atomic.Int64 // connections made
	dialErrors atomic.Int64 // dials that failed
	drops      atomic.Int64 // connections the server ended
	replies    atomic.Int64 // message 2s received (replay)
	demands    atomic.Int64 // demands for work received
}

// startAttack starts cfg.n attackers against cfg.target. They run until
// stop, ctx's end, or cfg.maxDuration.
func startAttack(ctx context.Context, cfg attackConfig) *attack {
	if cfg.trickle == 0 {
		cfg.trickle = time.Second
	}
	if cfg.maxConns == 0 {
		cfg.maxConns = 1_000_000
	}
	if cfg.maxDuration == 0 {
		cfg.maxDuration = 10 * time.Minute
	}
	if cfg.source == nil {
		cfg.source = func(int) net.IP { return nil }
	}
	if cfg.forger == nil && (cfg.kind == attackForge || cfg.kind == stallFresh) {
		cfg.forger = newFlightForger(false)
	}
	if cfg.forger == nil && (cfg.kind == stallWork || cfg.kind == stallPaid) {
		cfg.forger = newFlightForger(true)
	}
	a := &attack{cfg: cfg}
	if cfg.concurrent > 0 && cfg.kind == attackComplete {
		a.slots = make(chan struct{}, cfg.concurrent)
	}
	a.solver = make(chan struct{}, 1)
	a.ctx, a.cancel = context.WithTimeout(ctx, cfg.maxDuration)
	a.wg.Add(cfg.n)
	for i := range cfg.n {
		go a.attacker(i)
	}
	return a
}

// stop ends the attack and waits for every attacker to close its
// connection.
func (a *attack) stop() {
	a.cancel()
	a.wg.Wait()
}

// waitConnected waits until every attacker has connected at least once,
// or for timeout, and reports whether they all did.
func (a *attack) waitConnected(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for a.connected.Load() < int64(a.cfg.n) {
		if time.Now().After(deadline) || a.ctx.Err() != nil {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

func (a *attack) String() string {
	return fmt.Sprintf("%d %s attackers: %d connected at least once, %d open now, %d connections, %d dropped by the server, %d failed dials, %d message 2s, %d demands for work",
		a.cfg.n, a.cfg.kind, a.connected.Load(), a.live.Load(), a.dials.Load(), a.drops.Load(), a.dialErrors.Load(), a.replies.Load(), a.demands.Load())
}

func (a *attack) attacker(i int) {
	defer a.wg.Done()
	if a.cfg.ramp > 0 {
		sleepContext(a.ctx, a.cfg.ramp*time.Duration(i)/time.Duration(a.cfg.n))
	}
	var d net.Dialer
	if src := a.cfg.source(i); src != nil {
		d.LocalAddr = &net.TCPAddr{IP: src}
	}
	first := true
	for range a.cfg.maxConns {
		if a.ctx.Err() != nil {
			return
		}
		if !a.takeSlot() {
			return
		}
		c, err := d.DialContext(a.ctx, "tcp", a.cfg.target)
		if err != nil {
			a.giveSlot()
			if a.ctx.Err() != nil {
				return
			}
			a.dialErrors.Add(1)
			sleepContext(a.ctx, 10*time.Millisecond) // no busy loop on a refused dial
			continue
		}
		a.dials.Add(1)
		if first {
			a.connected.Add(1)
			first = false
		}
		a.live.Add(1)
		tc := c.(*net.TCPConn)
		dropped := a.hold(tc)
		if dropped {
			a.drops.Add(1)
		}
		a.live.Add(-1)
		tc.SetLinger(0)
		tc.Close()
		if dropped && a.cfg.pause > 0 {
			sleepContext(a.ctx, rand.N(a.cfg.pause))
		}
	}
}

// takeSlot waits for one of cfg.concurrent places for a handshake, if
// that is set, and reports false if the attack stopped meanwhile.
func (a *attack) takeSlot() bool {
	if a.slots == nil {
		return true
	}
	select {
	case a.slots <- struct{}{}:
		return true
	case <-a.ctx.Done():
		return false
	}
}

// settled reports whether every attacker has made its connections and
// none is in the middle of a handshake: for attackers that connect once
// and complete (the Verify and Accept rows), the state is then the one
// the attack leaves, with no attacker arriving to compete with the
// legitimate client that comes next. (An authenticated connection ranks
// above a newcomer, so newcomers arriving together take each other's
// places, the legitimate one's too; a table full of connections that
// proved their keys gives way to one newcomer at a time.)
func (a *attack) settled() bool {
	return a.dials.Load()+a.dialErrors.Load() >= int64(a.cfg.n*a.cfg.maxConns) && len(a.slots) == 0
}

// giveSlot gives back the place takeSlot took.
func (a *attack) giveSlot() {
	if a.slots != nil {
		<-a.slots
	}
}

// exchangeFlight writes flight, a first flight, on c and reads the
// responder's hello and message 2, counting the reply; it reports whether
// they came.
func (a *attack) exchangeFlight(c net.Conn, flight []byte) bool {
	if _, err := c.Write(flight); err != nil {
		return false
	}
	if _, err := readN(c, wire.HelloSize); err != nil {
		return false
	}
	if _, err := readPrefixed(c, 2); err != nil {
		return false
	}
	a.replies.Add(1)
	return true
}

// hold does what the attacker's kind does on c, and returns when the
// server has ended the connection (reporting true), when a replay got its
// answer, or when the attack stops.
func (a *attack) hold(c *net.TCPConn) (dropped bool) {
	var mu sync.Mutex
	stopped := false
	stop := context.AfterFunc(a.ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		c.SetDeadline(time.Unix(1, 0)) // wakes a blocked Read or Write
	})
	defer stop()
	// setReadDeadline sets a read deadline unless the attack has stopped,
	// so that it never overrides the stopping deadline.
	setReadDeadline := func(t time.Time) bool {
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			c.SetReadDeadline(t)
		}
		return !stopped
	}
	serverEnded := func() bool { return a.ctx.Err() == nil }

	switch a.cfg.kind {
	case attackSilent:
	case attackHello:
		h := wire.Hello{Version: wire.Version, Mode: wire.ModeInitiator}.Marshal()
		if _, err := c.Write(h[:]); err != nil {
			return serverEnded()
		}
	case attackTrickle:
		for i := range a.cfg.flight {
			if _, err := c.Write(a.cfg.flight[i : i+1]); err != nil {
				return serverEnded()
			}
			// Read (and discard the server's hello) until the next byte is
			// due; anything but the deadline means the server hung up.
			if !setReadDeadline(time.Now().Add(a.cfg.trickle)) {
				return false
			}
			_, err := io.Copy(io.Discard, c)
			if !isTimeout(err) || a.ctx.Err() != nil {
				return serverEnded()
			}
		}
		if !setReadDeadline(time.Time{}) {
			return false
		}
	case attackReplay:
		if _, err := c.Write(a.cfg.flight); err != nil {
			return serverEnded()
		}
		if _, err := readN(c, wire.HelloSize); err != nil {
			return serverEnded()
		}
		if _, err := readPrefixed(c, 2); err != nil {
			return serverEnded()
		}
		a.replies.Add(1)
		return false // hang up and replay again
	case stallTicket:
		if _, err := c.Write(bogusTicketFlight()); err != nil {
			return serverEnded()
		}
		// The server's hello, then 00 00 05.
		if b, err := readN(c, wire.HelloSize+3); err != nil || !bytes.Equal(b[wire.HelloSize:], []byte{0, 0, wire.RetryFull}) {
			return serverEnded()
		}
		a.replies.Add(1)
	case stallWork, stallPaid:
		flight := a.cfg.forger.flight()
		if _, err := c.Write(flight); err != nil {
			return serverEnded()
		}
		if !a.workOrMessage2(c, flight) {
			return serverEnded()
		}
	case stallReplay, stallFresh, attackForge:
		flight := a.cfg.flight
		if a.cfg.kind != stallReplay {
			flight = a.cfg.forger.flight()
		}
		if !a.exchangeFlight(c, flight) {
			return serverEnded()
		}
		if a.cfg.kind == attackForge {
			return false // hang up and forge again
		}
	case stallPartial, attackLen64K:
		n := uint16(wire.MaxMessage1)
		if a.cfg.kind == attackLen64K {
			n = 0xffff
		}
		h := wire.Hello{Version: wire.Version, Mode: wire.ModeInitiator}.Marshal()
		if _, err := c.Write(binary.BigEndian.AppendUint16(h[:], n)); err != nil {
			return serverEnded()
		}
	case attackComplete:
		sc := Client(c, a.cfg.client)
		err := sc.HandshakeContext(a.ctx)
		a.giveSlot()
		if err != nil {
			return serverEnded()
		}
		a.replies.Add(1)
	case stallNoMsg3:
		flight := a.cfg.flight
		if n := len(a.cfg.flights); n > 0 {
			flight = a.cfg.flights[int(a.dials.Load())%n]
		}
		if !a.exchangeFlight(c, flight) {
			return serverEnded()
		}
	default:
		panic("unknown attack kind " + string(a.cfg.kind))
	}
	io.Copy(io.Discard, c) // until the server drops the connection, or the attack stops
	return serverEnded()
}

// workOrMessage2 reads the server's hello and its answer to flight, for
// work1 and paid1: message 2, or a demand for work, which paid1 answers
// before it reads message 2. It reports whether the server has not ended
// the connection.
func (a *attack) workOrMessage2(c net.Conn, flight []byte) bool {
	b, err := readN(c, wire.HelloSize+2)
	if err != nil {
		return false
	}
	if n := binary.BigEndian.Uint16(b[wire.HelloSize:]); n > 0 {
		_, err := readN(c, int(n))
		a.replies.Add(1)
		return err == nil
	}
	d, err := readN(c, 1+wire.WorkDemandSize)
	if err != nil || d[0] != wire.DemandWork {
		return false
	}
	a.demands.Add(1)
	if a.cfg.kind == stallWork {
		return true
	}
	bits, seed, ok := wire.ParseWorkDemand(d[1:])
	if !ok {
		return false
	}
	e := flight[wire.HelloSize+2:][:wire.EphemeralKeySize]
	select {
	case a.solver <- struct{}{}:
	case <-a.ctx.Done():
		return false
	}
	nonce, err := wire.SolveWork(a.ctx, bits, &seed, e)
	<-a.solver
	if err != nil {
		return false
	}
	if _, err := c.Write(wire.AppendHandshakeMessage(nil, binary.BigEndian.AppendUint64(nil, nonce))); err != nil {
		return false
	}
	if _, err := readPrefixed(c, 2); err != nil {
		return false
	}
	a.replies.Add(1)
	return true
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func sleepContext(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// Source addresses. Linux routes all of 127.0.0.0/8 to the loopback
// interface, so any of them can be bound and dialed from.
var (
	localIP = net.IPv4(127, 0, 0, 1)
	otherIP = net.IPv4(127, 0, 1, 1) // the legitimate client's "other" address
)

// fromLocal puts every attacker on 127.0.0.1.
func fromLocal(int) net.IP { return localIP }

// fromSpread puts half the attackers on 127.0.0.1 and spreads the other
// half over 127.0.2.1 to 127.0.2.64.
func fromSpread(i int) net.IP {
	if i%2 == 0 {
		return localIP
	}
	return net.IPv4(127, 0, 2, byte(1+(i/2)%64))
}

// fromEven spreads the attackers evenly over 127.0.4.1 to 127.0.4.250.
func fromEven(i int) net.IP { return net.IPv4(127, 0, 4, byte(1+i%250)) }

// bogusTicketFlight returns a first flight offering a ticket no server
// issued: a hello with FlagResume and a well-formed resumption message 1,
// whose ticket opens under no key. The server answers 00 00 05 at no cost.
// Its ephemeral key is fresh, 32 random bytes, so that a listener that
// refuses repeated first flights does not refuse it.
func bogusTicketFlight() []byte {
	h := wire.Hello{Version: wire.Version, Mode: wire.ModeInitiator, Resume: true}.Marshal()
	noise := bytes.Repeat([]byte{0x90}, 32+wire.TagSize+8)
	crand.Read(noise[:32])
	m := wire.ResumeMessage1{Ticket: bytes.Repeat([]byte{0xb0}, 100), Noise: noise}
	return wire.AppendHandshakeMessage(h[:], m.Marshal(nil))
}

// A flightForger makes full first flights that a responder answers with
// message 2, each with a fresh ephemeral key, at the least cost to an
// attacker that never means to finish: 32 random bytes as the key (no
// scalar multiplication: nothing checks that anyone knows its private
// key), and payload1 encrypted under keys derived from public values, as
// message 1 always is, with one ML-KEM encapsulation key for every flight
// (nothing checks that it is new either). Each costs a few microseconds
// (BenchmarkFirstFlightCost); the responder's message 2, an ML-KEM
// encapsulation and three X25519 operations.
type flightForger struct {
	hello   [wire.HelloSize]byte
	payload []byte
}

// newFlightForger returns a forger whose flights list the work signal if
// work.
func newFlightForger(work bool) *flightForger {
	dk, err := mlkem.GenerateKey768()
	if err != nil {
		panic(err)
	}
	p := wire.InitPayload{Ciphers: cipherIDs([]Cipher{ChaCha20Poly1305, AES256GCM}), KEMKey: dk.EncapsulationKey().Bytes()}
	if work {
		p.Ciphers = append(p.Ciphers, wire.WorkSignal)
	}
	return &flightForger{
		hello:   wire.Hello{Version: wire.Version, Mode: wire.ModeInitiator}.Marshal(),
		payload: p.Marshal(nil),
	}
}

// flight returns a new first flight: the hello and message 1.
func (f *flightForger) flight() []byte {
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:           noise.NewCipherSuite(randomKeyDH{new(x25519)}, noise.CipherChaChaPoly, noise.HashSHA256),
		Random:                crand.Reader,
		Pattern:               noise.HandshakeXX,
		Initiator:             true,
		Prologue:              append([]byte(labelPrologue), f.hello[:]...),
		PresharedKeyPlacement: 3,
	})
	if err != nil {
		panic(err)
	}
	msg1, _, _, err := hs.WriteMessage(nil, f.payload)
	if err != nil {
		panic(err)
	}
	return wire.AppendHandshakeMessage(slices.Clone(f.hello[:]), msg1)
}

// randomKeyDH "generates" an ephemeral key pair whose public key is 32
// random bytes, with no private key behind it: all a forged message 1
// needs.
type randomKeyDH struct{ *x25519 }

func (randomKeyDH) GenerateKeypair(r io.Reader) (noise.DHKey, error) {
	pub := make([]byte, 32)
	if _, err := io.ReadFull(r, pub); err != nil {
		return noise.DHKey{}, err
	}
	return noise.DHKey{Private: make([]byte, 32), Public: pub}, nil
}

// fromSources spreads attackers over n source addresses, 127.1.0.1 and
// up, 250 to a /24: attacker i on the (i mod n)th.
func fromSources(n int) func(int) net.IP {
	return func(i int) net.IP {
		i %= n
		return net.IPv4(127, 1, byte(i/250), byte(1+i%250))
	}
}

// recordFirstFlights returns n first flights of real Clients, each with its
// own keys.
func recordFirstFlights(tb testing.TB, n int) [][]byte {
	flights := make([][]byte, n)
	for i := range flights {
		flights[i] = recordFirstFlight(tb)
	}
	return flights
}

// recordFirstFlight returns what a real Client sends before it reads
// anything: its hello, then message 1 with its 2-byte length.
func recordFirstFlight(tb testing.TB) []byte {
	tb.Helper()
	a, b := tcpPair(tb)
	hs := run(func() error { return Client(a, &Config{Identity: testIdentity(tb, 0x41)}).Handshake() })
	hello, err := readN(b, wire.HelloSize)
	if err != nil {
		tb.Fatal(err)
	}
	msg1, err := readPrefixed(b, 2)
	if err != nil {
		tb.Fatal(err)
	}
	a.Close()
	b.Close()
	if err := wait(tb, hs); err == nil {
		tb.Fatal("a handshake with nobody answering succeeded")
	}
	if _, err := wire.ParseHello(hello); err != nil {
		tb.Fatal(err)
	}
	return append(hello, msg1...)
}

// An acceptWatch runs an application's Accept loop on a listener and
// hands out what Accept returns, with the time it returned.
type acceptWatch struct {
	ln   net.Listener
	ch   chan acceptedConn
	done chan struct{}
}

type acceptedConn struct {
	c  net.Conn
	at time.Time
}

// watchAccept starts the Accept loop. onError, if not nil, sees every
// error Accept returns but the closed listener's.
func watchAccept(ln net.Listener, onError func(error)) *acceptWatch {
	w := &acceptWatch{ln: ln, ch: make(chan acceptedConn, 1024), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		// A patient application: it retries after an error, and stops only
		// when the listener is closed. Bounded by count as well.
		for range 10_000_000 {
			c, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				if onError != nil {
					onError(err)
				}
				time.Sleep(10 * time.Millisecond)
				continue
			}
			select {
			case w.ch <- acceptedConn{c, time.Now()}:
			default:
				c.Close() // nobody is looking
			}
		}
	}()
	return w
}

// close closes the listener, waits for the Accept loop, and closes what it
// accepted that nobody took.
func (w *acceptWatch) close() {
	w.ln.Close()
	<-w.done
	for {
		select {
		case a := <-w.ch:
			a.c.Close()
		default:
			return
		}
	}
}

// legitDial connects as a legitimate client from src (nil: the kernel's
// choice) and runs the handshake, as Dial does; Dial itself cannot pick a
// source address.
func legitDial(ctx context.Context, src net.IP, addr string, cfg *Config) (*Conn, error) {
	return legitDialAway(ctx, src, addr, cfg, 0)
}

// legitDialAway is legitDial for a client whose first flight reaches the
// server delay after its connection does, as from a peer delay/2 away
// whose handshake's SYN-ACK and first flight each cross the network.
func legitDialAway(ctx context.Context, src net.IP, addr string, cfg *Config, delay time.Duration) (*Conn, error) {
	if src == nil && delay == 0 {
		return Dial(ctx, "tcp", addr, cfg)
	}
	var d net.Dialer
	if src != nil {
		d.LocalAddr = &net.TCPAddr{IP: src}
	}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if delay > 0 {
		raw = &delayedConn{Conn: raw, delay: delay}
	}
	c := Client(raw, cfg)
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// delayedConn holds its first write for delay.
type delayedConn struct {
	net.Conn
	delay time.Duration
	once  sync.Once
}

func (c *delayedConn) Write(p []byte) (int, error) {
	c.once.Do(func() { time.Sleep(c.delay) })
	return c.Conn.Write(p)
}

// A legitResult is one legitimate client's outcome: the time from the
// start of its dial to the server's Accept returning its connection.
type legitResult struct {
	src     net.IP
	latency time.Duration
	err     error
}

// measureLegit dials one legitimate client from each of srcs at once and
// waits, at most limit, for both its handshake and the server's Accept to
// return it.
func measureLegit(w *acceptWatch, srcs []net.IP, cfg *Config, limit time.Duration) []legitResult {
	return measureLegitAway(w, srcs, cfg, limit, 0)
}

// measureLegitAway is measureLegit for clients whose first flight
// arrives delay after their connection (legitDialAway).
func measureLegitAway(w *acceptWatch, srcs []net.IP, cfg *Config, limit, delay time.Duration) []legitResult {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	type dialed struct {
		i   int
		c   *Conn
		err error
	}
	dch := make(chan dialed, len(srcs))
	start := time.Now()
	for i, src := range srcs {
		go func() {
			c, err := legitDialAway(ctx, src, w.ln.Addr().String(), cfg, delay)
			dch <- dialed{i, c, err}
		}()
	}
	results := make([]legitResult, len(srcs))
	clients := make([]*Conn, len(srcs)) // dialed, not yet seen by Accept
	var accepted []acceptedConn         // accepted, not yet matched
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
		for _, a := range accepted {
			a.c.Close()
		}
	}()
	dialsLeft, open := len(srcs), len(srcs)
	for i, src := range srcs {
		results[i].src = src
	}
	for open > 0 {
		select {
		case d := <-dch:
			dialsLeft--
			if d.err != nil {
				results[d.i].err = fmt.Errorf("dial from %v: %w", srcName(srcs[d.i]), d.err)
				open--
				continue
			}
			clients[d.i] = d.c
		case a := <-w.ch:
			accepted = append(accepted, a)
		case <-ctx.Done():
			for dialsLeft > 0 { // they end at once with ctx
				if d := <-dch; d.err == nil {
					clients[d.i] = d.c
				}
				dialsLeft--
			}
			for i, c := range clients {
				if c != nil {
					results[i].err = fmt.Errorf("from %v: the client's handshake completed but Accept did not return it within %v", srcName(srcs[i]), limit)
				} else if results[i].err == nil {
					results[i].err = fmt.Errorf("from %v: no handshake within %v", srcName(srcs[i]), limit)
				}
			}
			return results
		}
		// Match what Accept returned with the dialed clients by address.
		for i, c := range clients {
			if c == nil {
				continue
			}
			j := slices.IndexFunc(accepted, func(a acceptedConn) bool {
				return a.c.RemoteAddr().String() == c.LocalAddr().String()
			})
			if j < 0 {
				continue
			}
			results[i].latency = accepted[j].at.Sub(start)
			c.Close()
			accepted[j].c.Close()
			clients[i] = nil
			accepted = slices.Delete(accepted, j, j+1)
			open--
		}
	}
	return results
}

// TestListenerUnderAttack: 300 attackers on 127.0.0.1, each reconnecting
// when dropped, must not lock legitimate clients out of a listener at the
// default configuration, from the attackers' address or another one.
// Before the admission rework, the 257th connection waited in the kernel's
// backlog for a whole HandshakeTimeout (30 s).
func TestListenerUnderAttack(t *testing.T) {
	flight := recordFirstFlight(t)
	for _, kind := range []attackKind{attackSilent, attackHello, attackTrickle} {
		t.Run(string(kind), func(t *testing.T) {
			checkNoLeaks(t)
			testListenerUnderAttack(t, attackConfig{kind: kind, n: 300, source: fromLocal, flight: flight},
				[]net.IP{nil, net.IPv4(127, 0, 0, 2)})
		})
	}
}

// TestListenerReplayFlood: one address sending first flights over 100
// connections in a loop must not keep a client from another address out.
// A recorded flight replayed is answered once, then refused before any
// computation; forged flights with fresh keys each cost the server a
// message 2, which the CPU's round robin by source keeps from starving the
// other address.
func TestListenerReplayFlood(t *testing.T) {
	flight := recordFirstFlight(t)
	for _, kind := range []attackKind{attackReplay, attackForge} {
		t.Run(string(kind), func(t *testing.T) {
			checkNoLeaks(t)
			testListenerUnderAttack(t, attackConfig{kind: kind, n: 100, source: fromLocal, flight: flight},
				[]net.IP{net.IPv4(127, 0, 0, 2)})
		})
	}
}

// TestListenerUnderStall (issue 16): 5000 attackers of each stall kind,
// each holding its connection in the state its kind reaches and
// reconnecting when dropped, from one source address and from 4500, must
// not keep legitimate clients out of a default listener, from another
// address or from an attacker's own. Before the ranking by proof, a stall
// after a refused ticket or a replayed message 1 outranked a fresh
// connection, which the next arrival dropped. Success only: the latency is
// BenchmarkUnderAttack's (BENCHMARKS.md, "Under attack").
func TestListenerUnderStall(t *testing.T) {
	flights := recordFirstFlights(t, 16)
	for _, kind := range stallKinds {
		for _, sp := range stallSpreads {
			t.Run(string(kind)+"/"+sp.name, func(t *testing.T) {
				checkNoLeaks(t)
				// The attackers reconnect within 30 s of a drop, at random:
				// about 60 connections a second (5000 attackers for 4096
				// slots), so that a legitimate peer ranked below them is
				// dropped while its first flight crosses the network (300
				// ms here), while the machine keeps the time to answer
				// every replay and run the legitimate handshake under
				// -race. The server does not offer the hybrid, whose
				// ML-KEM the race detector slows tenfold. The test checks
				// the ranking, not how fast the machine computes:
				// BenchmarkUnderAttack measures the default listener
				// against attackers that reconnect at once.
				cfg := attackConfig{kind: kind, n: 5000, source: sp.source, flight: flights[0], flights: flights,
					pause: 30 * time.Second, legitDelay: 300 * time.Millisecond}
				testListenerUnder(t, &Config{DisablePostQuantum: true}, cfg, []net.IP{otherIP, sp.own})
			})
		}
	}
}

// testListenerUnderAttack runs the attack cfg against a default listener,
// waits until every attacker has connected, then dials a legitimate client
// from each of legit at once: each must be accepted within a generous
// bound, while the attack still runs.
func testListenerUnderAttack(t *testing.T, cfg attackConfig, legit []net.IP) {
	testListenerUnder(t, &Config{}, cfg, legit)
}

// testListenerUnder is testListenerUnderAttack with the server's Config,
// whose Identity it sets.
func testListenerUnder(t *testing.T, serverCfg *Config, cfg attackConfig, legit []net.IP) {
	const bound = 20 * time.Second // the target is 1 s; CI machines are slow, and so is -race
	server, client := testIdentity(t, 2), testIdentity(t, 1)
	serverCfg.Identity = server
	ln, err := Listen("tcp", "127.0.0.1:0", serverCfg)
	if err != nil {
		t.Fatal(err)
	}
	w := watchAccept(ln, nil)
	defer w.close()
	cfg.target = ln.Addr().String()
	cfg.maxDuration = time.Minute
	a := startAttack(context.Background(), cfg)
	defer a.stop()
	if !a.waitConnected(time.Minute) {
		t.Fatalf("the attack did not start: %v", a)
	}
	// distinct is how many different first flights the attack sends, for
	// the kinds that replay them: the server answers each once at most.
	distinct := map[attackKind]int{attackReplay: 1, stallReplay: 1, stallNoMsg3: max(len(cfg.flights), 1)}[cfg.kind]
	switch cfg.kind {
	case stallReplay, stallNoMsg3, attackReplay:
		// Wait until the server has refused (or, if it computes for
		// replays, answered) most attackers' flights.
		deadline := time.Now().Add(time.Minute)
		for a.drops.Load()+a.replies.Load() < int64(min(cfg.n, 4000)) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	case stallFresh, stallWork, stallPaid:
		// Wait until the server has answered the first flights of the
		// attackers' first connections, most of which it holds, with
		// message 2 or a demand for work.
		deadline := time.Now().Add(time.Minute)
		for a.replies.Load()+a.demands.Load() < 4000 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	case attackForge:
		// Wait until the flood costs the server something.
		deadline := time.Now().Add(10 * time.Second)
		for a.replies.Load() < int64(cfg.n) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if a.replies.Load() == 0 {
			t.Fatalf("the server answered no forged flight: %v", a)
		}
	}
	results := measureLegitAway(w, legit, &Config{Identity: client, Verify: pin(server.PublicKey()), HandshakeTimeout: bound}, bound, cfg.legitDelay)
	if a.ctx.Err() != nil {
		t.Fatal("the attack stopped before the measurement ended")
	}
	for _, r := range results {
		if r.err != nil {
			t.Errorf("locked out: %v", r.err)
		} else {
			t.Logf("client from %v accepted after %v", srcName(r.src), r.latency.Round(time.Millisecond))
		}
	}
	t.Log(a)
	if distinct > 0 && a.replies.Load() > int64(distinct) {
		t.Errorf("the server answered %d replayed flights, of %d distinct ones: it computed for replays", a.replies.Load(), distinct)
	}
}

func srcName(ip net.IP) string {
	if ip == nil {
		return localIP.String()
	}
	return ip.String()
}

// TestListenerSurvivesFDExhaustion: a listener in a process limited to 64
// open files, hit by 60 connections at once (more than it has descriptors
// for), accepts new peers once they have closed. Before, Accept returned
// EMFILE forever.
func TestListenerSurvivesFDExhaustion(t *testing.T) {
	checkNoLeaks(t)
	latency, err := fdExhaustion(t, 60, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("accepted %v after the burst", latency.Round(time.Millisecond))
}

// fdExhaustion starts a listener in a helper process limited to 64 open
// files, connects peers raw TCP connections at once, holds them a moment
// and closes them, then dials a real client. It returns the time from that
// dial's start until the client has read what the helper sends to each
// connection its Accept returns.
func fdExhaustion(tb testing.TB, peers int, limit time.Duration) (time.Duration, error) {
	const serverSeed, clientSeed = 0x54, 0x55
	h := startHelper(tb, helperArgs{Mode: "fdlimit-listener", NoFile: 64, ServerSeed: serverSeed, Duration: 5 * time.Minute})
	defer h.stop()
	addr, err := h.expect("addr ", 30*time.Second)
	if err != nil {
		return 0, err
	}

	conns := make([]net.Conn, peers)
	errs := make([]error, peers)
	var wg sync.WaitGroup
	for i := range peers {
		wg.Go(func() { conns[i], errs[i] = net.DialTimeout("tcp", addr, 10*time.Second) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		return 0, fmt.Errorf("raw peers: %w", err)
	}
	time.Sleep(500 * time.Millisecond) // the listener runs out of descriptors meanwhile
	for _, c := range conns {
		c.Close()
	}

	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	start := time.Now()
	cfg := &Config{Identity: testIdentity(tb, clientSeed), Verify: pin(testIdentity(tb, serverSeed).PublicKey()), HandshakeTimeout: limit}
	c, err := Dial(ctx, "tcp", addr, cfg)
	if err != nil {
		return 0, fmt.Errorf("no handshake after the burst of %d: %w (helper: %s)", peers, err, h.transcript())
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.SetReadDeadline(dl)
	got, err := readN(c, 2)
	if err != nil || string(got) != "ok" {
		return 0, fmt.Errorf("the handshake completed but Accept did not return the connection: read %q, %v (helper: %s)", got, err, h.transcript())
	}
	return time.Since(start), nil
}

// Helper processes: the test binary re-executed with helperEnv set runs
// TestAttackHelperProcess, which does one job given by helperArgs, talks
// to the parent in lines starting with "helper: " on stdout, and ends when
// its stdin closes or after Duration.
const helperEnv = "SECUREPEER_ATTACK_HELPER"

type helperArgs struct {
	Mode       string // "fdlimit-listener" or "server"
	Duration   time.Duration
	NoFile     uint64 // RLIMIT_NOFILE to set, if not zero
	ServerSeed byte   // testIdentity seed of the server, to pin its key
	Hold       string // "server": "verify" or "accept", as helperServer says
	LegitSeed  byte   // "server" with Hold "verify": the key its Verify accepts
}

type helperProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string   // "helper: " lines, prefix removed
	eof    chan struct{} // closed when the helper's stdout ends
	stderr testenv.SyncBuffer
	mu     sync.Mutex
	seen   []string // every line, for error messages
	once   sync.Once
}

func startHelper(tb testing.TB, args helperArgs) *helperProc {
	tb.Helper()
	js, err := json.Marshal(args)
	if err != nil {
		tb.Fatal(err)
	}
	h := &helperProc{lines: make(chan string, 1024), eof: make(chan struct{})}
	h.cmd = exec.Command(os.Args[0], "-test.run=^TestAttackHelperProcess$", "-test.count=1", "-test.timeout=30m")
	h.cmd.Env = append(os.Environ(), helperEnv+"="+string(js))
	h.cmd.Stderr = &h.stderr
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		tb.Fatal(err)
	}
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() {
		defer close(h.eof)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "helper: ")
			if !ok {
				continue
			}
			h.mu.Lock()
			h.seen = append(h.seen, line)
			h.mu.Unlock()
			select {
			case h.lines <- line:
			default: // nobody reads that many: dropped, still in seen
			}
		}
	}()
	tb.Cleanup(h.stop)
	return h
}

// expect returns the rest of the next line that starts with prefix.
func (h *helperProc) expect(prefix string, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case line := <-h.lines:
			if rest, ok := strings.CutPrefix(line, prefix); ok {
				return rest, nil
			}
		case <-h.eof:
			return "", fmt.Errorf("the helper ended before saying %q: %s", prefix, h.transcript())
		case <-t.C:
			return "", fmt.Errorf("the helper did not say %q within %v: %s", prefix, timeout, h.transcript())
		}
	}
}

func (h *helperProc) send(line string) error {
	_, err := io.WriteString(h.stdin, line+"\n")
	return err
}

func (h *helperProc) transcript() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return fmt.Sprintf("said %q; stderr %q", h.seen, h.stderr.String())
}

// stop closes the helper's stdin, which ends it, and waits for it; a helper
// that does not end within 20 s is killed.
func (h *helperProc) stop() {
	h.once.Do(func() {
		h.stdin.Close()
		t := time.NewTimer(20 * time.Second)
		defer t.Stop()
		select {
		case <-h.eof:
		case <-t.C:
			h.cmd.Process.Kill()
			<-h.eof
		}
		h.cmd.Wait()
	})
}

// TestAttackHelperProcess is not a test: it is the entry point of the
// helper processes that startHelper starts, and returns at once in a normal
// test run.
func TestAttackHelperProcess(t *testing.T) {
	js := os.Getenv(helperEnv)
	if js == "" {
		return
	}
	var args helperArgs
	if err := json.Unmarshal([]byte(js), &args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if args.NoFile != 0 {
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		rl.Cur = args.NoFile
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	// The job ends when the parent closes stdin, or after Duration.
	ctx, cancel := context.WithTimeout(context.Background(), args.Duration)
	defer cancel()
	stdin := make(chan string, 16)
	go func() {
		defer cancel()
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			stdin <- sc.Text()
		}
	}()
	var err error
	switch args.Mode {
	case "fdlimit-listener":
		err = helperFDLimitListener(ctx, t, args)
	case "server":
		err = helperServer(ctx, t, args, stdin)
	default:
		err = fmt.Errorf("unknown helper mode %q", args.Mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func helperSay(format string, args ...any) {
	fmt.Printf("helper: "+format+"\n", args...)
}

// helperFDLimitListener runs a listener, says "addr ADDR", and accepts:
// to every connection Accept returns it writes "ok" and closes it. It
// retries Accept after an error, as a patient server would, and reports
// the first error as "accept-error".
func helperFDLimitListener(ctx context.Context, tb testing.TB, args helperArgs) error {
	ln, err := Listen("tcp", "127.0.0.1:0", &Config{Identity: testIdentity(tb, args.ServerSeed)})
	if err != nil {
		return err
	}
	helperSay("addr %s", ln.Addr())
	var errOnce sync.Once
	w := watchAccept(ln, func(err error) {
		errOnce.Do(func() { helperSay("accept-error %v", err) })
	})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case a := <-w.ch:
				a.c.Write([]byte("ok"))
				a.c.Close()
				helperSay("accepted %s", a.c.RemoteAddr())
			case <-ctx.Done():
				return
			}
		}
	})
	<-ctx.Done()
	wg.Wait()
	w.close()
	return nil
}

// A pendingRow is a row of the table of states in PROTOCOL.md, "Servers on
// the open internet": a state in which a peer that has proved nothing, or
// has only just been admitted, makes the listener hold a connection.
type pendingRow struct {
	state string
	kind  attackKind
	hold  string // helperServer's Hold
	// reached reports whether the attack has brought the server's
	// connections into the state.
	reached func(a *attack, c serverCount) bool
	// perConn is the row's figure: the server's runtime memory per held
	// connection at most, in bytes (socket buffers are the kernel's).
	perConn int64
}

// serverCount is what a "server" helper process says when told to count.
type serverCount struct {
	sockets, pending, unproved, completed int
}

func (c serverCount) proved() int { return c.pending - c.unproved - c.completed }

func (h *helperProc) count() (serverCount, error) {
	var c serverCount
	if err := h.send("count"); err != nil {
		return c, err
	}
	out, err := h.expect("count ", time.Minute)
	if err != nil {
		return c, err
	}
	_, err = fmt.Sscan(out, &c.sockets, &c.pending, &c.unproved, &c.completed)
	return c, err
}

// pendingRows are the handshake rows of the table. Their figures are the
// memory measured on the machine of BENCHMARKS.md without the race
// detector, with a margin; TestPendingStates allows twice as much under
// the race detector, whose own bookkeeping makes every goroutine and
// allocation larger.
var pendingRows = []pendingRow{
	{"first flight", stallPartial, "", func(a *attack, c serverCount) bool { return c.unproved >= 4000 }, 4 << 10},
	{"refused ticket", stallTicket, "", func(a *attack, c serverCount) bool { return c.unproved >= 4000 && a.replies.Load() >= 4000 }, 12 << 10},
	// Queued for CPU: the server keeps computing message 2 for some of
	// them while it is measured, whose work in progress counts too.
	{"queued for CPU", stallFresh, "", func(a *attack, c serverCount) bool { return c.unproved >= 4000 }, 28 << 10},
	{"waiting for message 3", stallFresh, "", func(a *attack, c serverCount) bool { return c.unproved >= 4000 && a.replies.Load() >= 4000 }, 20 << 10},
	// Asked for work: those the server answered before its queue was long
	// wait for message 3 instead.
	{"asked for work", stallWork, "", func(a *attack, c serverCount) bool {
		return c.unproved >= 4000 && a.demands.Load()+a.replies.Load() >= 4000
	}, 20 << 10},
	{"Verify running", attackComplete, "verify", func(a *attack, c serverCount) bool { return a.settled() && c.proved() >= 4000 }, 20 << 10},
	{"completed, waiting for Accept", attackComplete, "accept", func(a *attack, c serverCount) bool { return a.settled() && c.completed >= 4000 }, 16 << 10},
}

// TestPendingStates drives, for each handshake row of the table of pending
// states (PROTOCOL.md, "Servers on the open internet"), 5000 peers from
// 4500 source addresses into that state against a default listener in a
// helper process, so that the memory measured is the server's alone;
// checks the server's runtime memory per connection it holds against the
// row's figure; and checks that a legitimate client from another address
// still gets through, to the application's Accept and back.
func TestPendingStates(t *testing.T) {
	flights := recordFirstFlights(t, 16)
	for _, row := range pendingRows {
		t.Run(row.state, func(t *testing.T) {
			testPendingState(t, row, flights)
		})
	}
}

func testPendingState(t *testing.T, row pendingRow, flights [][]byte) {
	const serverSeed, legitSeed, attackerSeed = 0x61, 0x62, 0x63
	h := startHelper(t, helperArgs{Mode: "server", ServerSeed: serverSeed, Hold: row.hold, LegitSeed: legitSeed, Duration: 5 * time.Minute})
	defer h.stop()
	addr, err := h.expect("addr ", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	base, err := h.measure()
	if err != nil {
		t.Fatal(err)
	}
	cfg := attackConfig{
		kind: row.kind, target: addr, n: 5000, source: fromSources(4500), maxDuration: 5 * time.Minute,
		flight: flights[0], flights: flights, pause: 30 * time.Second,
		// The attackers wait as long as the server: thousands of handshakes
		// queue for its CPU under the race detector.
		client: &Config{Identity: testIdentity(t, attackerSeed), DisablePostQuantum: true, HandshakeTimeout: 5 * time.Minute},
	}
	if row.kind == attackComplete {
		cfg.maxConns = 1 // each a full handshake: none again
		// Each client builds its message 1 once connected, and the server
		// computes its message 2: 5000 at once under the race detector on
		// a busy machine would miss the first-flight deadline or overflow
		// the table before any completes. Paced by the server's answers,
		// they arrive as fast as it can take them, however fast that is.
		cfg.concurrent = 64
	}
	a := startAttack(context.Background(), cfg)
	defer a.stop()
	var c serverCount
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if c, err = h.count(); err != nil {
			t.Fatal(err)
		}
		if row.reached(a, c) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server's connections did not reach the state: %+v; %v", c, a)
		}
	}
	m, err := h.measure()
	if err != nil {
		t.Fatal(err)
	}
	held := m.sockets - base.sockets
	per := (m.mem - base.mem) / int64(max(held, 1))
	t.Logf("%v; server: %d sockets, %d pending (%d unproved, %d completed), %+d B, %d B per connection", a, held, m.pending, m.unproved, m.completed, m.mem-base.mem, per)
	limit := row.perConn
	if raceEnabled {
		limit *= 2
	}
	if per > limit {
		t.Errorf("%d B per connection, more than the %d B of the table (twice that under the race detector)", per, row.perConn)
	}

	// A legitimate client, from another address: its byte comes back
	// once the application has accepted it.
	errc := make(chan error, 1)
	handshook := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cfg := &Config{Identity: testIdentity(t, legitSeed), Verify: pin(testIdentity(t, serverSeed).PublicKey())}
		c, err := legitDial(ctx, otherIP, addr, cfg)
		close(handshook)
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Minute))
		if _, err := c.Write([]byte{1}); err != nil {
			errc <- err
			return
		}
		_, err = readN(c, 1)
		errc <- err
	}()
	if row.hold == "accept" {
		// The client's handshake completes, in place of the oldest
		// completed one if every slot holds one; the application, stuck
		// so far, then accepts what the listener holds, the client's among
		// them once the server has completed it too.
		<-handshook
		want := min(c.completed+1, 4096)
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
			c, err := h.count()
			if err != nil {
				t.Fatal(err)
			}
			if c.completed >= want || time.Now().After(deadline) {
				break
			}
		}
		if err := h.send("accept"); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-errc; err != nil {
		t.Errorf("the legitimate client did not get through: %v", err)
	}
}

// BenchmarkFirstFlightCost compares what a first flight costs whoever
// makes it with what answering it costs the responder, the figures of
// PROTOCOL.md, "Servers on the open internet": forged (flightForger:
// a random key and the AEAD of message 1), honest (an X25519 key pair, an
// ML-KEM-768 key pair and the same AEAD, as a Client does), and the
// responder's message 2 to a forged flight over net.Pipe, from the
// flight's arrival to the message written (a hybrid answer: ML-KEM
// encapsulation, three X25519 operations, the handshake's setup).
func BenchmarkFirstFlightCost(b *testing.B) {
	f := newFlightForger(false)
	b.Run("forged", func(b *testing.B) {
		for b.Loop() {
			f.flight()
		}
	})
	b.Run("honest", func(b *testing.B) {
		hello := wire.Hello{Version: wire.Version, Mode: wire.ModeInitiator}.Marshal()
		for b.Loop() {
			dk, err := mlkem.GenerateKey768()
			if err != nil {
				b.Fatal(err)
			}
			hs, err := noise.NewHandshakeState(noise.Config{
				CipherSuite:           noise.NewCipherSuite(new(x25519), noise.CipherChaChaPoly, noise.HashSHA256),
				Random:                crand.Reader,
				Pattern:               noise.HandshakeXX,
				Initiator:             true,
				Prologue:              append([]byte(labelPrologue), hello[:]...),
				PresharedKeyPlacement: 3,
			})
			if err != nil {
				b.Fatal(err)
			}
			p := wire.InitPayload{Ciphers: cipherIDs([]Cipher{ChaCha20Poly1305, AES256GCM}), KEMKey: dk.EncapsulationKey().Bytes()}
			if _, _, _, err := hs.WriteMessage(nil, p.Marshal(nil)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("message2", func(b *testing.B) {
		cfg := &Config{Identity: testIdentity(b, 2), HandshakeTimeout: 10 * time.Second}
		flights := make([][]byte, 0, 1024)
		for b.Loop() {
			b.StopTimer()
			if len(flights) == 0 {
				for range cap(flights) {
					flights = append(flights, f.flight())
				}
			}
			flight := flights[len(flights)-1]
			flights = flights[:len(flights)-1]
			a, c := net.Pipe()
			done := run(func() error { return Server(c, cfg).Handshake() })
			go a.Write(flight)
			b.StartTimer()
			if _, err := readN(a, wire.HelloSize); err != nil {
				b.Fatal(err)
			}
			if _, err := readPrefixed(a, 2); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			a.Close()
			<-done
			c.Close()
			b.StartTimer()
		}
	})
}
