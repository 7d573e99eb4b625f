package securepeer

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/securepeer/securepeer/internal/wire"
)

// resumeEnv is a responder config and an initiator config with a session
// cache, and a way to connect them again and again at one address: over a
// listener for TCP, or over a fresh net.Pipe (whose address is always
// "pipe").
type resumeEnv struct {
	t      *testing.T
	client *Config
	server *Config
	pipe   bool
	ln     net.Listener
}

func newResumeEnv(t *testing.T, pipe bool) *resumeEnv {
	t.Helper()
	alice, bob := testIdentity(t, 1), testIdentity(t, 2)
	e := &resumeEnv{
		t:      t,
		pipe:   pipe,
		client: &Config{Identity: alice, Verify: pin(bob.PublicKey()), ClientSessionCache: NewLRUClientSessionCache(0)},
		server: &Config{Identity: bob, Verify: pin(alice.PublicKey())},
	}
	if !pipe {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		e.ln = ln
	}
	return e
}

// pair returns a fresh connection's two ends; the client's always has the
// same remote address.
func (e *resumeEnv) pair() (client, server net.Conn) {
	e.t.Helper()
	if e.pipe {
		return net.Pipe()
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := e.ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", e.ln.Addr().String())
	if err != nil {
		e.t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		e.t.Fatal("accept failed")
	}
	return c, s
}

// session runs one session, client to server, with an echo, and returns
// both sides' states and handshake errors.
func (e *resumeEnv) session() (cs, ss ConnectionState, cerr, serr error) {
	e.t.Helper()
	a, b := e.pair()
	x, y := Client(a, e.client), Server(b, e.server)
	other := run(y.Handshake)
	cerr = x.Handshake()
	serr = wait(e.t, other)
	if cerr == nil && serr == nil {
		echoOnce(e.t, x, y)
	}
	if cerr == nil && serr != nil {
		// A responder refuses after the handshake: the client reads why.
		_, cerr = x.Read(make([]byte, 1))
	}
	cs, ss = x.ConnectionState(), y.ConnectionState()
	closeBoth(x, y)
	return cs, ss, cerr, serr
}

// mustSession runs a session that must succeed and reports whether it was
// resumed, checking both sides agree.
func (e *resumeEnv) mustSession() bool {
	e.t.Helper()
	cs, ss, cerr, serr := e.session()
	if cerr != nil || serr != nil {
		e.t.Fatalf("session failed: client %v, server %v", cerr, serr)
	}
	if cs.DidResume != ss.DidResume {
		e.t.Fatalf("DidResume: client %v, server %v", cs.DidResume, ss.DidResume)
	}
	if cs.RemoteKey != e.server.Identity.PublicKey() || ss.RemoteKey != e.client.Identity.PublicKey() {
		e.t.Fatal("wrong remote keys")
	}
	if string(cs.ChannelBinding) != string(ss.ChannelBinding) || cs.Cipher != ss.Cipher || !cs.PostQuantum || !ss.PostQuantum {
		e.t.Fatalf("states differ or are not post-quantum: %+v / %+v", cs, ss)
	}
	return cs.DidResume
}

func TestResumption(t *testing.T) {
	eachTransport(t, func(t *testing.T, _ pairFunc) {
		e := newResumeEnv(t, t.Name() == "TestResumption/pipe")
		if e.mustSession() {
			t.Fatal("the first session was resumed")
		}
		for i := range 5 {
			if !e.mustSession() {
				t.Fatalf("session %d was not resumed", i+2)
			}
		}
	})
}

func TestResumptionDisabled(t *testing.T) {
	for _, side := range []string{"client", "server"} {
		t.Run(side, func(t *testing.T) {
			e := newResumeEnv(t, false)
			if side == "client" {
				e.client.SessionTicketsDisabled = true
			} else {
				e.server.SessionTicketsDisabled = true
			}
			for range 3 {
				if e.mustSession() {
					t.Fatal("resumed with tickets disabled")
				}
			}
		})
	}
}

// A responder that turns tickets off after giving one answers the
// resumption with a full handshake, in the same connection.
func TestResumptionFallsBack(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name  string
		setup func(e *resumeEnv)
	}{
		{"tickets turned off", func(e *resumeEnv) { e.server.SessionTicketsDisabled = true }},
		{"ticket keys replaced", func(e *resumeEnv) { e.server.SetSessionTicketKeys([][32]byte{{1}}) }},
		{"responder restarted", func(e *resumeEnv) {
			e.server = &Config{Identity: e.server.Identity, Verify: e.server.Verify}
		}},
		{"expired on the responder's clock", func(e *resumeEnv) {
			e.server.Time = func() time.Time { return now.Add(8 * 24 * time.Hour) }
		}},
		{"another identity sharing the ticket keys", func(e *resumeEnv) {
			e.server.Identity = testIdentity(e.t, 3)
			e.client.Verify = nil
		}},
		{"classical ticket, responder now wants the hybrid", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newResumeEnv(t, false)
			e.server.Time = func() time.Time { return now }
			e.server.SetSessionTicketKeys([][32]byte{{9}})
			if tt.setup == nil {
				e.server.DisablePostQuantum = true
				e.client.DisablePostQuantum = true
			}
			cs, _, cerr, serr := e.session()
			if cerr != nil || serr != nil || cs.DidResume {
				t.Fatal(cerr, serr, cs.DidResume)
			}
			if tt.setup == nil {
				e.server.DisablePostQuantum = false
				e.client.DisablePostQuantum = false
			} else {
				tt.setup(e)
			}
			cs, ss, cerr, serr := e.session()
			if cerr != nil || serr != nil {
				t.Fatalf("fallback failed: client %v, server %v", cerr, serr)
			}
			if cs.DidResume || ss.DidResume {
				t.Fatal("resumed, want a full handshake")
			}
			if cs.RemoteKey != e.server.Identity.PublicKey() {
				t.Fatal("wrong responder key after fallback")
			}
		})
	}
}

// A Verify that now refuses a key it accepted refuses the resumed session,
// on either side.
func TestResumptionVerifyStillDecides(t *testing.T) {
	for _, side := range []string{"client", "server"} {
		t.Run(side, func(t *testing.T) {
			e := newResumeEnv(t, false)
			e.mustSession()
			var calls int
			var mu sync.Mutex
			refuse := func(context.Context, PublicKey) error {
				mu.Lock()
				calls++
				mu.Unlock()
				return errNotAllowed
			}
			if side == "client" {
				e.client.Verify = refuse
			} else {
				e.server.Verify = refuse
			}
			_, _, cerr, serr := e.session()
			refuser, other := cerr, serr
			if side == "server" {
				refuser, other = serr, cerr
			}
			if !errors.Is(refuser, errNotAllowed) {
				t.Fatalf("refusing side: %v, want errNotAllowed", refuser)
			}
			if !errors.Is(other, ErrRejected) {
				t.Fatalf("refused side: %v, want ErrRejected", other)
			}
			if calls != 1 {
				t.Fatalf("Verify called %d times", calls)
			}
		})
	}
}

// ticketEnv is a pair of configs whose client cache ignores addresses, so
// that sessions can run over any pair of connections, with a recorder of
// what the client sends.
func ticketConfigs(t *testing.T) (client, server *Config) {
	alice, bob := testIdentity(t, 1), testIdentity(t, 2)
	client = &Config{Identity: alice, Verify: pin(bob.PublicKey()), ClientSessionCache: anyKeyCache{NewLRUClientSessionCache(0)}}
	server = &Config{Identity: bob, Verify: pin(alice.PublicKey())}
	server.SetSessionTicketKeys([][32]byte{{42}})
	return client, server
}

// pairSession runs one session over a and b, as resumeEnv.session does.
func pairSession(t *testing.T, a, b net.Conn, client, server *Config) (cs, ss ConnectionState, cerr, serr error) {
	t.Helper()
	x, y := Client(a, client), Server(b, server)
	other := run(y.Handshake)
	cerr = x.Handshake()
	serr = wait(t, other)
	if cerr == nil && serr == nil {
		echoOnce(t, x, y)
	}
	cs, ss = x.ConnectionState(), y.ConnectionState()
	closeBoth(x, y)
	return cs, ss, cerr, serr
}

// recordedSession runs a session over TCP and returns what the client sent.
func recordedSession(t *testing.T, client, server *Config) (sent []byte, cs ConnectionState) {
	t.Helper()
	a, b := tcpPair(t)
	rb := &recorder{Conn: b}
	cs, _, cerr, serr := pairSession(t, a, rb, client, server)
	if cerr != nil || serr != nil {
		t.Fatal(cerr, serr)
	}
	return rb.bytes(), cs
}

// Each session gets a new ticket and offers it once: no two resumption
// attempts carry the same ticket, so an observer cannot link them.
func TestTicketsAreNotReused(t *testing.T) {
	client, server := ticketConfigs(t)
	recordedSession(t, client, server)
	seen := map[string]bool{}
	for i := range 5 {
		sent, cs := recordedSession(t, client, server)
		if !cs.DidResume {
			t.Fatalf("session %d not resumed", i)
		}
		m, err := wire.ParseResumeMessage1(frameAfterHello(t, sent))
		if err != nil {
			t.Fatal(err)
		}
		if seen[string(m.Ticket)] {
			t.Fatal("a ticket was offered twice")
		}
		seen[string(m.Ticket)] = true
	}
	// With the cache empty, the next session is full.
	for {
		if _, ok := client.ClientSessionCache.Take(""); !ok {
			break
		}
	}
	if _, cs := recordedSession(t, client, server); cs.DidResume {
		t.Fatal("resumed without a ticket")
	}
}

// frameAfterHello returns the first handshake message after the hello.
func frameAfterHello(t *testing.T, b []byte) []byte {
	t.Helper()
	if len(b) < wire.HelloSize+2 {
		t.Fatal("short flight")
	}
	n := int(binary.BigEndian.Uint16(b[wire.HelloSize:]))
	return b[wire.HelloSize+2 : wire.HelloSize+2+n]
}

// A resumed session sends neither identity, nor anything derived from
// one, where an observer can see it.
func TestResumptionIdentityHiding(t *testing.T) {
	client, server := ticketConfigs(t)
	recordedSession(t, client, server)
	a, b := tcpPair(t)
	ra, rb := &recorder{Conn: a}, &recorder{Conn: b}
	cs, _, cerr, serr := pairSession(t, ra, rb, client, server)
	if cerr != nil || serr != nil || !cs.DidResume {
		t.Fatal(cerr, serr, cs.DidResume)
	}
	transcript := append(rb.bytes(), ra.bytes()...)
	for _, id := range []*Identity{client.Identity, server.Identity} {
		pub := id.PublicKey()
		for name, b := range map[string][]byte{
			"key":         pub.key[:],
			"fingerprint": []byte(pub.Fingerprint()),
			"static key":  id.static.PublicKey().Bytes(),
		} {
			if bytes.Contains(transcript, b) {
				t.Errorf("the transcript holds an identity's %s", name)
			}
		}
	}
}

// A recorded resumption attempt, replayed to the responder, never yields a
// session: the responder answers with a fresh ephemeral key, and the
// recorded finished message does not match it.
func TestResumptionReplay(t *testing.T) {
	client, server := ticketConfigs(t)
	recordedSession(t, client, server)
	sent, cs := recordedSession(t, client, server)
	if !cs.DidResume {
		t.Fatal("not resumed")
	}
	for i := range 3 {
		a, b := tcpPair(t)
		go func() {
			a.Write(sent)
			io.Copy(io.Discard, a)
		}()
		y := Server(b, server)
		err := y.Handshake()
		if err == nil {
			n, rerr := y.Read(make([]byte, 10))
			t.Fatalf("replay %d completed a handshake; read %d bytes, %v", i, n, rerr)
		}
		if !errors.Is(err, errAuth) {
			t.Fatalf("replay %d: %v, want the authentication error", i, err)
		}
		y.Close()
		a.Close()
	}
}

// tamperUnit flips one bit of one unit the proxy sees.
func tamperUnit(dir string, index, offset int) func(string, int, []byte) [][]byte {
	return func(d string, i int, unit []byte) [][]byte {
		if d == dir && i == index {
			unit = bytes.Clone(unit)
			unit[offset] ^= 0x10
		}
		return [][]byte{unit}
	}
}

// Tampering with a resumption either costs a full handshake (the ticket,
// which the responder then cannot open) or fails it; it never completes
// a session with altered bytes.
func TestResumptionTampering(t *testing.T) {
	resumed := map[string]int{"c2s": 2, "s2c": 1}
	fallback := map[string]int{"c2s": 3, "s2c": 2}
	tests := []struct {
		name     string
		dir      string
		index    int // the hello is unit 0
		offset   int
		frames   map[string]int
		complete bool // else both sides must fail
	}{
		{"ticket key name", "c2s", 1, 2 + 2, fallback, true},
		{"ticket body", "c2s", 1, 2 + 2 + 100, fallback, true},
		{"resume flag", "c2s", 0, 7, fallback, false},
		{"ephemeral key", "c2s", 1, 2 + 2 + ticketSize, resumed, false},
		{"message 1 payload", "c2s", 1, 2 + 2 + ticketSize + 33, resumed, false},
		{"responder hello", "s2c", 0, 6, resumed, false},
		{"message 2", "s2c", 1, 2 + 40, resumed, false},
		{"finished", "c2s", 2, 2 + 5, resumed, false},
		{"ticket record", "s2c", 2, 10, resumed, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := ticketConfigs(t)
			client.HandshakeTimeout, server.HandshakeTimeout = 5*time.Second, 5*time.Second
			recordedSession(t, client, server)
			p := &proxy{filter: tamperUnit(tt.dir, tt.index, tt.offset), handshakeMessages: tt.frames}
			a, b := p.start(t)
			x, y := Client(a, client), Server(b, server)
			// A side whose handshake fails closes its connection, as
			// Dial and the listener do, so that the other side learns
			// at once; nothing waits for a timeout.
			other := run(func() error {
				err := y.Handshake()
				if err != nil {
					b.Close()
				}
				return err
			})
			cerr := x.Handshake()
			if cerr != nil {
				a.Close()
			}
			serr := wait(t, other)
			if cerr == nil && serr == nil {
				// Data, and the ticket record before it, must get through.
				done := run(func() error { _, err := y.Write([]byte("pong")); y.CloseWrite(); return err })
				_, cerr = io.ReadAll(x)
				wait(t, done)
			}
			x.Close()
			y.Close()
			if tt.complete {
				if cerr != nil || serr != nil {
					t.Fatalf("client %v, server %v; want a full handshake", cerr, serr)
				}
				if x.ConnectionState().DidResume {
					t.Fatal("resumed with a damaged ticket")
				}
				return
			}
			if cerr == nil && serr == nil {
				t.Fatal("a tampered resumption completed")
			}
			t.Log(cerr, "/", serr)
		})
	}
}

// Ticket keys rotate: a ticket opens while its key is among the keys, and
// automatic keys are replaced daily and kept as long as tickets live.
func TestTicketKeyRotation(t *testing.T) {
	t.Run("set", func(t *testing.T) {
		client, server := ticketConfigs(t)
		k1, k2, k3 := [32]byte{1}, [32]byte{2}, [32]byte{3}
		server.SetSessionTicketKeys([][32]byte{k1})
		steps := []struct {
			keys [][32]byte
			want bool
		}{
			{[][32]byte{k1}, false},    // first contact
			{[][32]byte{k2, k1}, true}, // the k1 ticket still opens; a k2 ticket comes back
			{[][32]byte{k2}, true},     // k1 retired: the k2 ticket opens
			{[][32]byte{k3}, false},    // k2 retired too: full handshake
			{[][32]byte{k3, k2}, true}, // its ticket is k3's
			{nil, false},               // back to automatic keys
			{nil, true},
		}
		for i, s := range steps {
			server.SetSessionTicketKeys(s.keys)
			if _, cs := recordedSession(t, client, server); cs.DidResume != s.want {
				t.Fatalf("step %d: DidResume = %v, want %v", i, cs.DidResume, s.want)
			}
		}
	})
	t.Run("automatic", func(t *testing.T) {
		client, server := ticketConfigs(t)
		server.SetSessionTicketKeys(nil)
		now := time.Now()
		clock := func() time.Time { return now }
		client.Time, server.Time = clock, clock
		recordedSession(t, client, server)
		now = now.Add(25 * time.Hour) // a new key seals; yesterday's still opens
		if _, cs := recordedSession(t, client, server); !cs.DidResume {
			t.Fatal("a ticket of the previous key was not honoured")
		}
		if n := len(server.tickets().auto); n != 2 {
			t.Fatalf("%d automatic keys, want 2", n)
		}
		now = now.Add(9 * 24 * time.Hour) // every key and ticket is past its life
		if _, cs := recordedSession(t, client, server); cs.DidResume {
			t.Fatal("resumed after every key expired")
		}
		if n := len(server.tickets().auto); n != 1 {
			t.Fatalf("%d automatic keys, want the new one alone", n)
		}
	})
}

// A ticket past its lifetime on the client's clock is not offered: a full
// handshake, with no round trip lost to a refused ticket.
func TestExpiredTicketNotOffered(t *testing.T) {
	client, server := ticketConfigs(t)
	now := time.Now()
	client.Time = func() time.Time { return now }
	recordedSession(t, client, server)
	now = now.Add(7*24*time.Hour + time.Minute)
	sent, cs := recordedSession(t, client, server)
	if cs.DidResume || sent[7] != 0 {
		t.Fatalf("DidResume %v, hello flags %#x; want a full handshake without an offer", cs.DidResume, sent[7])
	}
}

// The chain of resumptions ends 7 days after the full handshake it started
// from, however often the peer comes back.
func TestResumptionChainEnds(t *testing.T) {
	client, server := ticketConfigs(t)
	now := time.Now()
	clock := func() time.Time { return now }
	client.Time, server.Time = clock, clock
	recordedSession(t, client, server)
	for day := 1; day <= 8; day++ {
		now = now.Add(24 * time.Hour)
		_, cs := recordedSession(t, client, server)
		if want := day < 7; cs.DidResume != want {
			t.Fatalf("day %d: DidResume = %v, want %v", day, cs.DidResume, want)
		}
		if !cs.DidResume {
			return
		}
	}
}

// countingCache reports whether the last Take found a session.
type countingCache struct {
	ClientSessionCache
	mu    sync.Mutex
	found bool
}

func (c *countingCache) Take(key string) (*ClientSession, bool) {
	s, ok := c.ClientSessionCache.Take(key)
	c.mu.Lock()
	c.found = ok
	c.mu.Unlock()
	return s, ok
}

// Simultaneous open with tickets on one side or both: the handshake
// completes whichever side wins the tie-break, resumed exactly when the
// side that initiates holds a ticket of the other.
func TestResumptionSimultaneousOpen(t *testing.T) {
	for _, both := range []bool{false, true} {
		t.Run(map[bool]string{false: "one side", true: "both sides"}[both], func(t *testing.T) {
			alice, bob := testIdentity(t, 1), testIdentity(t, 2)
			ca, cb := &countingCache{ClientSessionCache: anyKeyCache{NewLRUClientSessionCache(0)}}, &countingCache{ClientSessionCache: anyKeyCache{NewLRUClientSessionCache(0)}}
			cfgA := &Config{Identity: alice, Verify: pin(bob.PublicKey()), ClientSessionCache: ca}
			cfgB := &Config{Identity: bob, Verify: pin(alice.PublicKey())}
			if both {
				cfgB.ClientSessionCache = cb
			}
			resumed := 0
			for i := range 12 {
				// Top up the tickets: Alice (and Bob) as clients.
				eachPipe := func(client, server *Config) {
					a, b := net.Pipe()
					if _, _, cerr, serr := pairSession(t, a, b, client, server); cerr != nil || serr != nil {
						t.Fatal(cerr, serr)
					}
				}
				eachPipe(cfgA, cfgB)
				if both {
					eachPipe(cfgB, cfgA)
				}
				a, b := net.Pipe()
				x, y := NewConn(a, cfgA), NewConn(b, cfgB)
				other := run(y.Handshake)
				if err := x.Handshake(); err != nil {
					t.Fatal(i, err)
				}
				if err := wait(t, other); err != nil {
					t.Fatal(i, err)
				}
				xs, ys := x.ConnectionState(), y.ConnectionState()
				if xs.DidResume != ys.DidResume || xs.Initiator == ys.Initiator {
					t.Fatalf("sides disagree: %+v / %+v", xs, ys)
				}
				initiatorHadTicket := (xs.Initiator && ca.found) || (ys.Initiator && both && cb.found)
				if xs.DidResume != initiatorHadTicket {
					t.Fatalf("round %d: DidResume = %v, but the initiator had a ticket: %v", i, xs.DidResume, initiatorHadTicket)
				}
				if xs.DidResume {
					resumed++
				}
				echoOnce(t, x, y)
				closeBoth(x, y)
			}
			if resumed == 0 {
				t.Fatal("no round was resumed")
			}
		})
	}
}

// Resumption through Listen and Dial, with fallback through the listener's
// admission (which gives the fallback's full handshake a CPU turn of its
// own).
func TestResumptionListener(t *testing.T) {
	alice, bob := testIdentity(t, 1), testIdentity(t, 2)
	client := &Config{Identity: alice, Verify: pin(bob.PublicKey()), ClientSessionCache: NewLRUClientSessionCache(0)}
	server := &Config{Identity: bob, Verify: pin(alice.PublicKey())}
	ln, err := Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	for i, want := range []bool{false, true, true, false, true} {
		if i == 3 {
			server.SetSessionTicketKeys([][32]byte{{7}}) // the fallback
		}
		c, err := Dial(context.Background(), "tcp", ln.Addr().String(), client)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		if got := c.ConnectionState().DidResume; got != want {
			t.Fatalf("dial %d: DidResume = %v, want %v", i, got, want)
		}
		c.Close()
	}
}

// A ticket given to another identity of the same client is not used.
func TestTicketOfAnotherLocalIdentity(t *testing.T) {
	client, server := ticketConfigs(t)
	server.Verify = nil
	recordedSession(t, client, server)
	other := &Config{Identity: testIdentity(t, 5), Verify: client.Verify, ClientSessionCache: client.ClientSessionCache}
	if sent, cs := recordedSession(t, other, server); cs.DidResume || sent[7] != 0 {
		t.Fatal("a ticket of another identity was offered")
	}
}

// A responder sends a ticket only to an initiator that asked for one; an
// initiator that did not ask refuses one.
func TestUnaskedTicket(t *testing.T) {
	client, server := ticketConfigs(t)
	client.ClientSessionCache = nil
	a, b := tcpPair(t)
	x, y := Client(a, client), Server(b, server)
	other := run(y.Handshake)
	if err := x.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, other); err != nil {
		t.Fatal(err)
	}
	// Make the responder send one anyway, as a broken peer would.
	y.out.Lock()
	y.out.ticket = (&wire.TicketRecord{Lifetime: 60, Ticket: []byte{1}}).Marshal(nil)
	y.out.Unlock()
	go y.Write([]byte("x"))
	_, err := x.Read(make([]byte, 1))
	if err == nil || !strings.Contains(err.Error(), "ticket") {
		t.Fatalf("read %v, want a refused ticket", err)
	}
	x.Close()
	y.Close()
}

func TestLRUClientSessionCache(t *testing.T) {
	c := NewLRUClientSessionCache(2)
	s := func(n byte) *ClientSession { return &ClientSession{ticket: []byte{n}} }
	for n := range byte(6) {
		c.Put("a", s(n))
	}
	c.Put("b", s(10))
	c.Put("c", s(20)) // "a" is the least recently used: dropped
	if _, ok := c.Take("a"); ok {
		t.Fatal("the least recently used key was kept")
	}
	c.Put("b", s(11))
	for _, want := range []byte{11, 10} { // newest first
		got, ok := c.Take("b")
		if !ok || got.ticket[0] != want {
			t.Fatalf("Take = %v, %v; want ticket %d", got, ok, want)
		}
	}
	if _, ok := c.Take("b"); ok {
		t.Fatal("a session was returned twice")
	}
	for range sessionsPerKey + 2 {
		c.Put("d", s(1))
	}
	n := 0
	for {
		if _, ok := c.Take("d"); !ok {
			break
		}
		n++
	}
	if n != sessionsPerKey {
		t.Fatalf("%d sessions kept for one key, want %d", n, sessionsPerKey)
	}
}

// fuzzTicketKey is the key FuzzOpenTicket's seeds are sealed with.
func fuzzTicketKey(t testing.TB) ticketKey {
	k, err := newTicketKey([32]byte{0xf0}, time.Unix(1_800_000_000, 0))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// ticketSeeds are real tickets and session states, for the fuzzers' seed
// corpora.
func ticketSeeds(t testing.TB) (tickets, states map[string][]byte) {
	st := &sessionState{
		authTime:    time.Unix(1_800_000_000, 0),
		expires:     time.Unix(1_800_000_000+7*24*3600, 0),
		postQuantum: true,
		responder:   testIdentity(t, 2).PublicKey(),
		initiator:   testIdentity(t, 1).PublicKey(),
		secret:      [32]byte{1, 2, 3},
	}
	classical := *st
	classical.postQuantum = false
	k := fuzzTicketKey(t)
	tickets, states = map[string][]byte{}, map[string][]byte{}
	for name, s := range map[string]*sessionState{"hybrid": st, "classical": &classical} {
		tk, err := sealTicket(k, s, bytes.NewReader(make([]byte, ticketNonceSize)))
		if err != nil {
			t.Fatal(err)
		}
		tickets[name], states[name] = tk, s.marshal()
	}
	return tickets, states
}

func FuzzOpenTicket(f *testing.F) {
	fzRequireSeeds(f)
	k := fuzzTicketKey(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := openTicket([]ticketKey{k}, b)
		if err != nil {
			return
		}
		if again, err := parseSessionState(st.marshal()); err != nil || *again != *st {
			t.Fatalf("an opened ticket's state does not survive marshal and parse: %v", err)
		}
	})
}

func FuzzParseSessionState(f *testing.F) {
	fzRequireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseSessionState(b)
		if err != nil {
			return
		}
		if enc := st.marshal(); !bytes.Equal(enc, b) {
			t.Fatalf("parseSessionState(%x) marshals to %x", b, enc)
		}
	})
}

// TestTicketFuzzSeeds writes the ticket fuzzers' seed corpora with
// -update-fuzz, and otherwise checks them, as TestFuzzSeeds does.
func TestTicketFuzzSeeds(t *testing.T) {
	tickets, states := ticketSeeds(t)
	k := fuzzTicketKey(t)
	for name, tk := range tickets {
		if _, err := openTicket([]ticketKey{k}, tk); err != nil {
			t.Fatalf("seed ticket %s does not open: %v", name, err)
		}
	}
	captures := resumeCaptures(t)
	// The fallback with its (unhonoured) ticket damaged completes the same
	// full handshake: nothing of the resumption message 1 is bound.
	damaged := bytes.Clone(captures["fallback"])
	damaged[wire.HelloSize+2+2+40] ^= 1
	captures["fallback-damaged-ticket"] = damaged
	for name, in := range captures {
		if err := Server(newFzConn(in), fzResumeServer()).Handshake(); err != nil {
			t.Fatalf("the %s capture does not replay: %v", name, err)
		}
	}
	sess, answers := initiatorCaptures(t)
	for name, in := range answers {
		if err := Client(newFzConn(in), resumingClient(sess)).Handshake(); err != nil {
			t.Fatalf("the %s answer does not replay: %v", name, err)
		}
	}
	for target, seeds := range map[string]map[string][]byte{"FuzzOpenTicket": tickets, "FuzzParseSessionState": states, "FuzzResumingResponder": captures, "FuzzResumingInitiator": answers} {
		dir := filepath.Join("testdata", "fuzz", target)
		for name, data := range seeds {
			path := filepath.Join(dir, name)
			file := fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", data)
			if *updateFuzzSeeds {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, file, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, file) {
				t.Errorf("%s is missing or stale (go test -run TestTicketFuzzSeeds -update-fuzz rewrites it)", path)
			}
		}
	}
}

// ticketSession runs a session over a net.Pipe in which the client takes
// the server's ticket (with the server's first byte), and returns the
// client's end and what each side sent.
func ticketSession(t testing.TB, client, server *Config) (x *Conn, clientSent, serverSent []byte) {
	a, b := net.Pipe()
	ra, rb := &recorder{Conn: a}, &recorder{Conn: b}
	x, y := Client(ra, client), Server(rb, server)
	other := run(y.Handshake)
	if err := x.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-other; err != nil {
		t.Fatal(err)
	}
	done := run(func() error { _, err := y.Write([]byte("x")); return err })
	if _, err := io.ReadFull(x, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	<-done
	a.Close() // no end of stream: on a net.Pipe it would wait for a reader
	b.Close()
	return x, rb.bytes(), ra.bytes()
}

// fzResumeServer is the victim of FuzzResumingResponder: fixed identity,
// randomness, clock and ticket key, so that a captured resumption replays.
func fzResumeServer() *Config {
	cfg := fzConfig(fzResponderID, "resume-server")
	cfg.Time = func() time.Time { return time.Unix(1_800_000_000, 0) }
	cfg.SetSessionTicketKeys([][32]byte{{0xfe}})
	return cfg
}

// resumeCaptures returns what a client sent in a resumed session ("resumed")
// and in one whose ticket the victim does not honour ("fallback"), each to
// a fresh fzResumeServer.
func resumeCaptures(t testing.TB) map[string][]byte {
	out := map[string][]byte{}
	for _, name := range []string{"resumed", "fallback"} {
		client := fzConfig(fzInitiatorID, "resume-client-"+name)
		client.ClientSessionCache = anyKeyCache{NewLRUClientSessionCache(1)}
		first := fzResumeServer()
		first.Rand = newFzRand("resume-first-server")
		if name == "fallback" {
			first.SetSessionTicketKeys([][32]byte{{0xfd}})
		}
		for i, server := range []*Config{first, fzResumeServer()} {
			x, sent, _ := ticketSession(t, client, server)
			if i == 1 {
				if x.ConnectionState().DidResume != (name == "resumed") {
					t.Fatalf("%s capture: DidResume = %v", name, x.ConnectionState().DidResume)
				}
				out[name] = sent
			}
		}
	}
	return out
}

// FuzzResumingResponder feeds arbitrary bytes, as the initiator's side, to
// a Server that honours tickets. It must fail, or succeed only on a
// captured session, and never panic, hang or leak a goroutine. A session
// that falls back may carry any resumption message 1 the responder does
// not honour: nothing of it enters the full handshake (PROTOCOL.md,
// "Falling back to a full handshake"), so only the hello and what follows
// that message must be the capture's.
func FuzzResumingResponder(f *testing.F) {
	fzRequireSeeds(f)
	captures := resumeCaptures(f)
	fallback := captures["fallback"]
	afterFirst := func(b []byte) ([]byte, bool) {
		if len(b) < wire.HelloSize+2 {
			return nil, false
		}
		n := wire.HelloSize + 2 + int(binary.BigEndian.Uint16(b[wire.HelloSize:]))
		if n > len(b) {
			return nil, false
		}
		return b[n:], true
	}
	fallbackRest, _ := afterFirst(fallback)
	f.Fuzz(func(t *testing.T, in []byte) {
		base := runtime.NumGoroutine()
		c := Server(newFzConn(in), fzResumeServer())
		if err := fzHandshake(t, c, base); err == nil {
			rest, ok := afterFirst(in)
			fellBack := ok && bytes.Equal(in[:wire.HelloSize], fallback[:wire.HelloSize]) && bytes.HasPrefix(rest, fallbackRest)
			if c.ConnectionState().DidResume || !fellBack {
				if !bytes.HasPrefix(in, captures["resumed"]) {
					t.Fatalf("Server completed a handshake that is not a captured one:\n%x", in)
				}
			}
			if c.RemoteKey() != fzInitiatorID.PublicKey() {
				t.Fatal("Server completed a handshake with a key that no test identity holds")
			}
		}
	})
}

// A responder whose clock was set back since the full handshake still gives
// a ticket the initiator accepts.
func TestTicketLifetimeWithClockSetBack(t *testing.T) {
	client, server := ticketConfigs(t)
	now := time.Now()
	server.Time = func() time.Time { return now }
	recordedSession(t, client, server)
	now = now.Add(-time.Hour)
	if _, cs := recordedSession(t, client, server); !cs.DidResume {
		t.Fatal("not resumed")
	}
	if _, cs := recordedSession(t, client, server); !cs.DidResume {
		t.Fatal("the ticket given with the clock set back was not usable")
	}
}

// SessionCacheKey replaces the address as the cache key: a ticket follows
// the name, not the address.
func TestSessionCacheKey(t *testing.T) {
	client, server := ticketConfigs(t)
	client.ClientSessionCache = NewLRUClientSessionCache(0)
	client.SessionCacheKey = "bob"
	recordedSession(t, client, server) // over one address
	if _, cs := recordedSession(t, client, server); !cs.DidResume {
		t.Fatal("a ticket kept under SessionCacheKey was not used at another address")
	}
	client.SessionCacheKey = "carol"
	if _, cs := recordedSession(t, client, server); cs.DidResume {
		t.Fatal("a ticket kept for bob was offered for carol")
	}
}

// Clones share their ticket keys: a ticket one clone issued, another
// honours, including after the automatic keys rotate.
func TestCloneSharesTicketKeys(t *testing.T) {
	client, _ := ticketConfigs(t)
	now := time.Now()
	base := &Config{Identity: testIdentity(t, 2), Time: func() time.Time { return now }}
	recordedSession(t, client, base.Clone())
	if _, cs := recordedSession(t, client, base.Clone()); !cs.DidResume {
		t.Fatal("a clone did not honour another clone's ticket")
	}
	now = now.Add(25 * time.Hour) // rotation, seen by every clone
	if _, cs := recordedSession(t, client, base.Clone()); !cs.DidResume {
		t.Fatal("not resumed across the rotation")
	}
	if n := len(base.tickets().auto); n != 2 {
		t.Fatalf("the base has %d automatic keys, want 2 after the clones rotated them", n)
	}
	if _, cs := recordedSession(t, client, &Config{Identity: base.Identity}); cs.DidResume {
		t.Fatal("a Config that is not a clone honoured the ticket")
	}
}

// Clone copies every exported field, so that a field added later cannot be
// forgotten in it.
func TestCloneCopiesEveryField(t *testing.T) {
	var c Config
	v := reflect.ValueOf(&c).Elem()
	for i := range v.NumField() {
		f, sf := v.Field(i), v.Type().Field(i)
		if !sf.IsExported() {
			continue
		}
		switch sf.Name {
		case "Identity":
			c.Identity = testIdentity(t, 1)
		case "Verify":
			c.Verify = rejectAll
		case "Ciphers":
			c.Ciphers = []Cipher{AES128GCM}
		case "NextProtos":
			c.NextProtos = []string{"x"}
		case "ClientSessionCache":
			c.ClientSessionCache = NewLRUClientSessionCache(1)
		case "Time":
			c.Time = time.Now
		case "Rand":
			c.Rand = bytes.NewReader(nil)
		default:
			switch f.Kind() {
			case reflect.Bool:
				f.SetBool(true)
			case reflect.String:
				f.SetString("x")
			case reflect.Int64:
				f.SetInt(1)
			default:
				t.Fatalf("field %s of kind %v: teach this test (and Clone) about it", sf.Name, f.Kind())
			}
		}
	}
	w := reflect.ValueOf(c.Clone()).Elem()
	for i := range v.NumField() {
		sf := v.Type().Field(i)
		if !sf.IsExported() {
			continue
		}
		a, b := v.Field(i), w.Field(i)
		if a.Kind() == reflect.Func {
			if b.IsNil() {
				t.Errorf("Clone dropped %s", sf.Name)
			}
			continue
		}
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			t.Errorf("Clone did not copy %s", sf.Name)
		}
	}
}

// resumingClient returns a Client config that holds a copy of sess, with
// fixed randomness, as FuzzResumingInitiator's victim and its captures use.
func resumingClient(sess *ClientSession) *Config {
	cfg := fzConfig(fzInitiatorID, "resume-initiator-victim")
	cfg.Time = func() time.Time { return time.Unix(1_800_000_000, 0) }
	cache := anyKeyCache{NewLRUClientSessionCache(1)}
	s := *sess
	cache.Put("", &s)
	cfg.ClientSessionCache = cache
	return cfg
}

// initiatorCaptures returns a session the victim offers, and what
// responders sent it: resumed ("resumed"), and refusing the ticket, then a
// full handshake ("fallback"), each up to the end of the responder's
// handshake messages.
func initiatorCaptures(t testing.TB) (*ClientSession, map[string][]byte) {
	client := fzConfig(fzInitiatorID, "resume-initiator-first")
	client.Time = func() time.Time { return time.Unix(1_800_000_000, 0) }
	cache := anyKeyCache{NewLRUClientSessionCache(1)}
	client.ClientSessionCache = cache
	ticketSession(t, client, fzResumeServer())
	sess, ok := cache.Take("")
	if !ok {
		t.Fatal("no ticket")
	}
	out := map[string][]byte{}
	for _, name := range []string{"resumed", "fallback"} {
		server := fzResumeServer()
		frames := 1 // message 2
		if name == "fallback" {
			server.SetSessionTicketKeys([][32]byte{{0xfc}})
			frames = 2 // 00 00 05, then message 2
		}
		x, _, got := ticketSession(t, resumingClient(sess), server)
		if x.ConnectionState().DidResume != (name == "resumed") {
			t.Fatalf("%s capture: DidResume = %v", name, x.ConnectionState().DidResume)
		}
		n := wire.HelloSize
		for range frames {
			l := int(binary.BigEndian.Uint16(got[n:]))
			n += 2 + max(l, 1)
		}
		out[name] = got[:n]
	}
	return sess, out
}

// FuzzResumingInitiator feeds arbitrary bytes, as the responder's side, to
// a Client that offers a ticket. It must fail, or succeed only on a
// captured answer, and never panic, hang or leak a goroutine.
func FuzzResumingInitiator(f *testing.F) {
	fzRequireSeeds(f)
	sess, captures := initiatorCaptures(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		base := runtime.NumGoroutine()
		c := Client(newFzConn(in), resumingClient(sess))
		if err := fzHandshake(t, c, base); err == nil {
			if !bytes.HasPrefix(in, captures["resumed"]) && !bytes.HasPrefix(in, captures["fallback"]) {
				t.Fatalf("Client completed a handshake that is not a captured one:\n%x", in)
			}
			if c.RemoteKey() != fzResponderID.PublicKey() {
				t.Fatal("Client completed a handshake with a key that no test identity holds")
			}
		}
	})
}

// Handshakes read the ticket keys they were given without the lock while
// others rotate them: the slice they hold must never be written.
func TestTicketKeysConcurrentUse(t *testing.T) {
	cfg := &Config{Identity: testIdentity(t, 1)}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				_, open, err := cfg.currentTicketKeys()
				if err != nil {
					t.Error(err)
					return
				}
				for _, k := range open {
					_ = k.created
				}
			}
		})
	}
	wg.Wait()
}
