package securepeer

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
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
