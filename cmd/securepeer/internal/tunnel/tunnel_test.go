package tunnel

// In-process tests of the tunnel protocol: what a
// hostile peer does with its streams costs this side a bounded amount,
// ends only the streams concerned, and leaves no goroutine behind; and
// each stream's verdict, clean or cut, is exact.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/frame"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/netutil"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/ratelog"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/testutil"
	"github.com/securepeer/securepeer/internal/testenv"
)

// activeStreams is the number of streams m holds, its accept loop's
// reservation aside.
func (m *Session) activeStreams() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.busy()
}

// muxPair returns two ends of a tunnel session over a loopback TCP pair,
// without the secure stream (the protocol under test is the tunnel's),
// and serves the server end's streams with targets until the test ends,
// as listen -to does (its notices through a ratelog.Log, as listen's).
func muxPair(t *testing.T, targets map[string]string) (client, server *Session, notes *testutil.NoteLog) {
	t.Helper()
	a, b := testenv.TCPPair(t)
	mk := func(c *net.TCPConn, client bool) *Session {
		return NewSession(tcpConn{c}, Config{Client: client, Addr: c.RemoteAddr().String()})
	}
	client, server = mk(a, true), mk(b, false)
	notes = new(testutil.NoteLog)
	sv := testServer(targets, ratelog.New(notes.Notef).Kind("stream notices"), notes.Notef)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		sv.Serve(ctx, ctx, server)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		client.Fail(io.EOF)
		<-done
	})
	return client, server, notes
}

// startEcho serves a TCP echo on a port of its own: each connection gets
// back what it sent, then the end. It returns the address.
func startEcho(t testing.TB) string {
	t.Helper()
	l := testutil.ListenLocal(t)
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				io.Copy(c, c)
			})
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	return l.Addr().String()
}

// startSink accepts TCP connections and never reads them, so that what
// is sent to them piles up. It returns the address.
func startSink(t testing.TB) string {
	t.Helper()
	l := testutil.ListenLocal(t)
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.(*net.TCPConn).SetReadBuffer(4096)
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	return l.Addr().String()
}

// echoThrough opens a stream for name on m, as connect -from does for a
// local connection, sends msg through it to an echo target and checks
// that msg comes back and the stream ends cleanly.
func echoThrough(t testing.TB, m *Session, name string, msg []byte) {
	t.Helper()
	if err := m.begin(); err != nil {
		t.Fatal(err)
	}
	ts, err := m.openForward(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ts.release()
	local, far := testenv.TCPPair(t)
	relayed := make(chan error, 1)
	go func() { relayed <- relay(context.Background(), ts, far, true) }()
	local.SetDeadline(time.Now().Add(testTimeout))
	if _, err := local.Write(msg); err != nil {
		t.Fatal(err)
	}
	local.CloseWrite()
	got, err := io.ReadAll(local)
	if !bytes.Equal(got, msg) || err != nil {
		t.Errorf("through the tunnel: %d bytes, %v; want the %d sent back", len(got), err, len(msg))
	}
	if err := <-relayed; err != nil {
		t.Errorf("a stream that ended cleanly: %v", err)
	}
}

// TestTunnelHostileStreams opens streams as a hostile peer would: a header
// longer than any name, and a name with no -to.
func TestTunnelHostileStreams(t *testing.T) {
	testenv.CheckNoLeaks(t, 10*time.Second)
	m, _, notes := muxPair(t, map[string]string{"web": startEcho(t)})

	t.Run("header too long", func(t *testing.T) {
		st, err := m.sess.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		var hdr [4]byte
		binary.BigEndian.PutUint32(hdr[:], 1<<31)
		st.Write(hdr[:])
		st.SetReadDeadline(time.Now().Add(testTimeout))
		if n, err := io.Copy(io.Discard, st); n != 0 || err != nil && !strings.Contains(err.Error(), "reset") {
			t.Errorf("a stream with a 2 GiB name read %d bytes, %v; want it cut", n, err)
		}
		testutil.WaitFor(t, func() bool { return notes.Count("more than securepeer-tunnel/1 allows") == 1 }, notes)
	})

	t.Run("no such name", func(t *testing.T) {
		if err := m.begin(); err != nil {
			t.Fatal(err)
		}
		ts, err := m.openForward("admin")
		if err != nil {
			t.Fatal(err)
		}
		defer ts.release()
		err = ts.readStatus()
		if err == nil || !strings.Contains(err.Error(), `no -to for "admin" on its side; it has "web"`) {
			t.Errorf("a stream for a name with no -to: %v", err)
		}
	})

	t.Run("still works", func(t *testing.T) {
		echoThrough(t, m, "web", []byte("after the hostile streams"))
	})
	if m.Closed() {
		t.Errorf("the session ended: %v", m.Err())
	}
}

// TestTunnelStreamsFreed checks that a stream counts against the limit
// until yamux has forgotten it, on the side that refused or closed it:
// the peer's FIN frees it; without one the slot stays taken, the peer's
// data is discarded meanwhile, and the session's end frees it.
func TestTunnelStreamsFreed(t *testing.T) {
	testenv.CheckNoLeaks(t, 10*time.Second)
	client, server, _ := muxPair(t, map[string]string{"web": startEcho(t)})
	hostile := func(name string) *yamux.Stream {
		st, err := client.sess.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		msg := make([]byte, 4+len(name))
		binary.BigEndian.PutUint32(msg, uint32(len(name)))
		copy(msg[4:], name)
		if _, err := st.Write(msg); err != nil {
			t.Fatal(err)
		}
		return st
	}

	// Refused, and never closed by the peer: the slot stays taken, and
	// what the peer sends after the refusal is discarded as it comes.
	st := hostile("nope")
	testutil.WaitFor(t, func() bool { return server.activeStreams() == 1 }, testutil.Stringer(func() string { return "no stream taken" }))
	status := make([]byte, 64)
	st.SetReadDeadline(time.Now().Add(testTimeout))
	if n, err := st.Read(status); err != nil || !strings.Contains(string(status[:n]), "no -to") {
		t.Fatalf("the refusal: %q, %v", status[:n], err)
	}
	if _, err := st.Write(make([]byte, 2*tunnelWindow)); err != nil {
		t.Errorf("writing twice the window to a refused stream, which discards it: %v", err)
	}
	if n := server.activeStreams(); n != 1 {
		t.Errorf("the server holds %d streams, want the refused one still", n)
	}
	// The peer's FIN frees it.
	st.Close()
	testutil.WaitFor(t, func() bool { return server.activeStreams() == 0 }, testutil.Stringer(func() string {
		return fmt.Sprintf("the server still holds %d streams after the peer closed", server.activeStreams())
	}))
	if n := server.sess.NumStreams(); n != 0 {
		t.Errorf("yamux still has %d streams after both sides closed", n)
	}
}

// TestTunnelShortStreams runs thousands of short streams, as curl does
// through a tunnel, in the shapes that raced before: the target answers and
// closes at once, the client half-closes first, and neither. None may be
// reported as cut (the false "data may be missing" of issue 17), every
// answer must arrive whole, and streams whose target resets them must be
// reported as cut, to the local client (a reset) and in a notice.
func TestTunnelShortStreams(t *testing.T) {
	testenv.CheckNoLeaks(t, 10*time.Second)
	const streams, parallel, cuts = 2000, 32, 100
	target := testutil.ListenLocal(t)
	var targets sync.WaitGroup
	go func() {
		for {
			c, err := target.Accept()
			if err != nil {
				return
			}
			targets.Go(func() { shortTarget(c) })
		}
	}()
	t.Cleanup(func() {
		target.Close()
		targets.Wait()
	})
	client, _, serverNotes := muxPair(t, map[string]string{"": target.Addr().String()})
	clientNotes := new(testutil.NoteLog)
	local := testutil.ListenLocal(t)
	ctx, cancel := context.WithCancel(context.Background())
	forwarded := make(chan struct{})
	go func() {
		defer close(forwarded)
		forwardAll(ctx, local, client, clientNotes.Notef)
	}()
	t.Cleanup(func() {
		cancel()
		<-forwarded
	})

	work := make(chan int)
	var wg sync.WaitGroup
	var wrong, notReset atomic.Int64
	for range parallel {
		wg.Go(func() {
			for i := range work {
				err := shortClient(local.Addr().String(), i, i%(streams/cuts) == 0)
				switch {
				case errors.Is(err, errNotReset):
					notReset.Add(1)
				case err != nil:
					wrong.Add(1)
					t.Errorf("stream %d: %v", i, err)
				}
			}
		})
	}
	for i := range streams {
		work <- i
	}
	close(work)
	wg.Wait()
	if n := notReset.Load(); n != 0 {
		t.Errorf("%d of %d streams whose target reset them ended cleanly for the local client", n, cuts)
	}
	testutil.WaitFor(t, func() bool { return client.activeStreams() == 0 }, testutil.Stringer(func() string {
		return fmt.Sprintf("%d streams still held", client.activeStreams())
	}))
	if n := clientNotes.Count("data may be missing"); n != cuts {
		t.Errorf("connect's side reported %d streams cut, want the %d whose target reset them:\n%s", n, cuts, clientNotes)
	}
	if n := clientNotes.Len(); n != cuts {
		t.Errorf("connect's side gave %d notices, want %d (one per cut stream):\n%s", n, cuts, clientNotes)
	}
	// listen's side: a notice per target that reset its connection (as
	// "connection reset" when reading it, or "not connected" when passing
	// the client's end on), as many as the rate log shows (TestRateLog
	// checks its limit; how many windows this test spans depends on the
	// machine) with its summaries of the others, and none that says its
	// peer cut a stream.
	resets, summaries := serverNotes.Count("forwarding a stream"), serverNotes.Count("were not shown")
	if s := serverNotes.String(); serverNotes.Count("peer cut") != 0 || resets+summaries != serverNotes.Len() || resets > cuts {
		t.Errorf("listen's side said a peer cut a stream, or gave notices other than the targets' resets and the rate log's summaries:\n%s", s)
	}
}

// errNotReset is a cut stream that its local client saw end cleanly.
var errNotReset = errors.New("the stream's target reset it, and the local client read a clean end")

// shortClient makes one local connection through the tunnel at addr, in
// shape i%3 (see shortTarget), and checks the answer. For a stream the
// target cuts, it returns errNotReset unless the connection was reset.
func shortClient(addr string, i int, cut bool) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	req := fmt.Sprintf("%c %d\n", "acr"[i%3], i)
	if cut {
		req = fmt.Sprintf("x %d\n", i)
	}
	if _, err := io.WriteString(c, req); err != nil {
		return err
	}
	if i%3 == 1 {
		c.(*net.TCPConn).CloseWrite()
	}
	got, err := io.ReadAll(c)
	switch {
	case cut && err == nil:
		return errNotReset
	case cut:
		return nil
	case err != nil:
		return fmt.Errorf("reading the answer: %v", err)
	}
	if want := shortAnswer(req); string(got) != want {
		return fmt.Errorf("answer %q, want %q", got, want)
	}
	return nil
}

// shortTarget answers one local connection: "a": the answer, then close;
// "c": wait for the client's end, then the answer; "r": the answer, and
// a close after the client's end; "x": a part of the answer, then a
// reset.
func shortTarget(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	line, err := readLine(c)
	if err != nil {
		return
	}
	answer := shortAnswer(line)
	switch line[0] {
	case 'c':
		io.Copy(io.Discard, c)
		io.WriteString(c, answer)
	case 'r':
		io.WriteString(c, answer)
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
	case 'x':
		io.WriteString(c, answer[:len(answer)/2])
		netutil.ResetClose(c)
	default:
		io.WriteString(c, answer)
	}
}

// shortAnswer is the answer to req: a few KiB, so that it takes more than
// one frame now and then.
func shortAnswer(req string) string {
	sum := sha256.Sum256([]byte(req))
	return strings.Repeat(fmt.Sprintf("%x", sum), 1+int(sum[0])%128)
}

// readLine reads up to a newline, a byte at a time, so that nothing after
// it is consumed.
func readLine(c net.Conn) (string, error) {
	var b []byte
	var one [1]byte
	for {
		if _, err := c.Read(one[:]); err != nil {
			return "", err
		}
		b = append(b, one[0])
		if one[0] == '\n' {
			return string(b), nil
		}
	}
}

// A tunnelServer is listen -to in process: it accepts securepeer
// connections on a loopback port of its own and serves each one's streams
// with its targets, its notices through a ratelog.Log, until the test ends.
type tunnelServer struct {
	addr   string
	client *securepeer.Config // a peer's side
	notes  *testutil.NoteLog

	mu       sync.Mutex
	sessions []*Session
}

func startTunnelServer(t testing.TB, targets map[string]string) *tunnelServer {
	t.Helper()
	identity := func() *securepeer.Identity {
		id, err := securepeer.GenerateIdentity()
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	ln := testutil.ListenLocal(t)
	server := &securepeer.Config{Identity: identity(), HandshakeTimeout: testTimeout, NextProtos: []string{Protocol}}
	ts := &tunnelServer{
		addr:   ln.Addr().String(),
		client: &securepeer.Config{Identity: identity(), HandshakeTimeout: testTimeout, NextProtos: []string{Protocol}},
		notes:  new(testutil.NoteLog),
	}
	// A window longer than any test, so that no summary line comes.
	rates := ratelog.New(ts.notes.Notef)
	rates.Window = time.Hour
	sv := testServer(targets, rates.Kind("notices about the peers' tunnel streams"), rates.Kind("notices about full tunnel connections"))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				c := securepeer.Server(raw, server)
				if err := c.HandshakeContext(ctx); err != nil {
					raw.Close()
					return
				}
				m := NewSession(secureConn{c}, Config{Addr: raw.RemoteAddr().String()})
				ts.mu.Lock()
				ts.sessions = append(ts.sessions, m)
				ts.mu.Unlock()
				sv.Serve(ctx, ctx, m)
			})
		}
	})
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	return ts
}

// dial makes a connection to ts, as a peer's connect does.
func (ts *tunnelServer) dial(t testing.TB) *securepeer.Conn {
	t.Helper()
	raw, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	c := securepeer.Client(raw, ts.client)
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != Protocol {
		t.Fatalf("negotiated %q, want %s", p, Protocol)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// held is the number of streams each of ts's connections holds.
func (ts *tunnelServer) held() []int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var n []int
	for _, m := range ts.sessions {
		n = append(n, m.activeStreams())
	}
	return n
}

// heldFrom is the number of streams that ts's connection from addr holds,
// or 0 before it has one.
func (ts *tunnelServer) heldFrom(addr string) int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, m := range ts.sessions {
		if m.addr == addr {
			return m.activeStreams()
		}
	}
	return 0
}

// liveMemory is the heap and stacks in use, after the garbage is gone.
func liveMemory() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc + ms.StackInuse)
}

// The figures of PROTOCOL.md's tunnel rows, per tunnel connection: what a
// peer can make this side hold with streams in each state. A stream's
// bookkeeping (yamux's stream, its goroutine, its timers) is at most
// streamState; a buffer that yamux grows by doubling holds at most twice
// what it was given. A refused stream's data is discarded as it comes:
// the figure is what is held once it has been.
const (
	streamState     = 24 << 10
	stateHeaderWait = (maxTunnelStreams + tunnelBacklog) * streamState
	stateRefused    = maxTunnelStreams*streamState + tunnelBacklog*(streamState+2*yamuxInitialWindow)
	stateOpen       = maxTunnelStreams*(streamState+2*tunnelWindow+4+maxFramePayload+bufSize) + tunnelBacklog*(streamState+2*yamuxInitialWindow)
)

// TestTunnelStreamStates drives at least 5000 streams into each state that
// PROTOCOL.md's table lists for tunnels, from one connection and from
// several: waiting for their header; refused (a name with no -to) and
// never closed by the peer, which keeps sending; and open to a target that
// reads nothing, while the peer fills their window. The server must hold
// no more than the state's figure a connection, give a bounded number of
// notices, and a legitimate peer on a connection of its own must still
// get through.
func TestTunnelStreamStates(t *testing.T) {
	testenv.CheckNoLeaks(t, 10*time.Second)
	echo, sink := startEcho(t), startSink(t)
	const streams = 5000
	for _, row := range []struct {
		name  string
		to    string // the name in each stream's header; none: no header
		bound int64  // per connection
	}{
		{"header wait", "", stateHeaderWait},
		{"refused", "nope", stateRefused},
		{"open", "sink", stateOpen},
	} {
		for _, conns := range []int{1, 4} {
			// From one connection, the streams that get a slot or a place
			// in the backlog (and a few more, as eight open at once) send
			// a full initial window, and the open ones then fill their
			// window, so that the figure is reached; the rest, and the
			// streams of several connections, send a few bytes.
			msg := func(int) []byte { return nil }
			if row.to != "" {
				big, small := testutil.StreamMsg(row.to, yamuxInitialWindow), testutil.StreamMsg(row.to, 1024)
				msg = func(i int) []byte {
					if conns == 1 && i < maxTunnelStreams+tunnelBacklog+16 {
						return big
					}
					return small
				}
			}
			t.Run(fmt.Sprintf("%s/%d connections", row.name, conns), func(t *testing.T) {
				ts := startTunnelServer(t, map[string]string{"echo": echo, "sink": sink})
				before := liveMemory()
				var sessions []*yamux.Session
				var addrs []string
				for range conns {
					c := ts.dial(t)
					sess := testutil.HostileSession(t, c)
					defer sess.Close()
					sessions = append(sessions, sess)
					addrs = append(addrs, c.LocalAddr().String())
				}
				// Each connection opens its share of the streams, then more
				// until the server holds all it may on it: yamux resets each
				// stream beyond the backlog at once, also while slots are
				// free and the accept loop lags (each accept waits for its
				// acknowledgement to be sent, behind those resets), so a
				// share alone could leave slots free for good.
				perConn := min(maxTunnelStreams, streams/conns)
				kept := make([][]testutil.SentStream, conns)
				var wg sync.WaitGroup
				for i, sess := range sessions {
					short := func() bool { return ts.heldFrom(addrs[i]) < perConn }
					wg.Go(func() { _, kept[i] = testutil.FloodStreams(sess, streams/conns, short, msg, row.to != "") })
				}
				wg.Wait()
				testutil.WaitFor(t, func() bool {
					held := ts.held()
					return len(held) == conns && slices.Max(held) == perConn && slices.Min(held) == perConn
				}, testutil.Stringer(func() string { return fmt.Sprintf("streams held per connection: %v", ts.held()) }))
				var discarded int64
				for i, sess := range sessions {
					switch row.to {
					case "nope":
						for _, s := range answered(t, kept[i], perConn) {
							discarded += int64(s.Sent - 8) // all but the header
						}
					case "sink":
						if conns == 1 {
							fillWindows(t, answered(t, kept[i], perConn))
						}
					}
					if _, err := sess.Ping(); err != nil { // the server has read all before
						t.Fatal(err)
					}
				}
				kept = nil
				// Refused streams: until the server has discarded what they
				// sent, which it does as fast as it can.
				testutil.WaitFor(t, func() bool { return ts.discarded() == discarded }, testutil.Stringer(func() string {
					return fmt.Sprintf("discarded %d bytes, want %d", ts.discarded(), discarded)
				}))

				legit := NewSession(secureConn{ts.dial(t)}, Config{Client: true})
				defer legit.Fail(io.EOF)
				echoThrough(t, legit, "echo", []byte("a legitimate peer"))

				grown := liveMemory() - before
				t.Logf("%d streams from %d connections: %d KiB more held (figure: %d KiB a connection)", streams, conns, grown>>10, row.bound>>10)
				if grown > int64(conns)*row.bound {
					t.Errorf("the server holds %d KiB more, above the figure of %d KiB for %d connections", grown>>10, int64(conns)*row.bound>>10, conns)
				}
				// A notice a connection that the peer holds all it may,
				// and at most a ratelog.Log's worth about the streams.
				full := ts.notes.Count(fmt.Sprintf("holds %d streams on its tunnel connection", maxTunnelStreams))
				if n := ts.notes.Len(); full != conns || n > ratelog.Burst+conns {
					t.Errorf("%d notices, %d of them that a connection is full; want one of those a connection and at most %d others:\n%s", n, full, ratelog.Burst, ts.notes)
				}
			})
		}
	}
}

// answered waits until want of sts have the server's status, which it
// sends once it has accepted a stream (the others wait in its backlog, or
// were reset), and returns them.
func answered(t testing.TB, sts []testutil.SentStream, want int) []testutil.SentStream {
	t.Helper()
	var got []testutil.SentStream
	seen := map[*yamux.Stream]bool{}
	testutil.WaitFor(t, func() bool {
		for _, s := range sts {
			if !seen[s.St] && hasStatus(t, s.St) {
				seen[s.St] = true
				got = append(got, s)
			}
		}
		return len(got) >= want
	}, testutil.Stringer(func() string { return fmt.Sprintf("%d streams answered, want %d", len(got), want) }))
	return got
}

// hasStatus reads st's status frame if it has come.
func hasStatus(t testing.TB, st *yamux.Stream) bool {
	var hdr [4]byte
	st.SetReadDeadline(time.Now()) // only what has come already
	defer st.SetReadDeadline(time.Time{})
	n, _ := io.ReadFull(st, hdr[:])
	if n == 0 {
		return false
	}
	status := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if m, err := io.ReadFull(st, status); n != len(hdr) || err != nil {
		t.Fatalf("a status cut short: %d and %d bytes, %v", n, m, err)
	}
	return true
}

// fillWindows fills the window of each stream, which accepting raised to
// tunnelWindow: what a peer that sends without reading does.
func fillWindows(t testing.TB, sts []testutil.SentStream) {
	for _, s := range sts {
		rest := make([]byte, tunnelWindow-s.Sent)
		binary.BigEndian.PutUint32(rest, uint32(len(rest)-4))
		if _, err := s.St.Write(rest); err != nil {
			t.Errorf("filling an accepted stream's window: %v", err)
		}
	}
}

// discarded is what ts's sessions have discarded of their peers' data.
func (ts *tunnelServer) discarded() int64 {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var n int64
	for _, m := range ts.sessions {
		n += m.discarded.Load()
	}
	return n
}

// TestTunnelPingFlood has a peer send yamux pings as fast as it can and
// read none of the answers: yamux answers each in a goroutine of its own,
// and before the pingGate 8 MB of pings made it start 500,000. The server
// must stay within maxPendingPings and one read's worth of pings, and a
// legitimate peer must still get through.
func TestTunnelPingFlood(t *testing.T) {
	testenv.CheckNoLeaks(t, 10*time.Second)
	ts := startTunnelServer(t, map[string]string{"echo": startEcho(t)})
	s := ts.dial(t)
	testutil.WaitFor(t, func() bool { return len(ts.held()) == 1 }, testutil.Stringer(func() string { return "no session" }))
	before := runtime.NumGoroutine()
	const perWrite = 4096
	pings := make([]byte, yamuxHeaderLen*perWrite)
	for i := range perWrite {
		f := pings[yamuxHeaderLen*i:]
		f[1] = yamuxTypePing
		binary.BigEndian.PutUint16(f[2:], yamuxFlagSYN)
		binary.BigEndian.PutUint32(f[8:], uint32(i))
	}
	// Until the server stops reading, or 12 MB (a million pings).
	s.SetWriteDeadline(time.Now().Add(2 * time.Second))
	for range 256 {
		if _, err := s.Write(pings); err != nil {
			break
		}
	}
	// yamux reads 4 KiB at a time: at most 341 pings a read.
	if n, bound := runtime.NumGoroutine()-before, maxPendingPings+4096/yamuxHeaderLen; n > bound {
		t.Errorf("%d goroutines more with the peer's pings unanswered, want at most %d", n, bound)
	}
	legit := NewSession(secureConn{ts.dial(t)}, Config{Client: true})
	defer legit.Fail(io.EOF)
	echoThrough(t, legit, "echo", []byte("past the pings"))
	s.Close()
}

// TestTunnelStop stops a session that a newer one replaces, as connect
// does when its tunnel moves to a direct connection: a stream in progress
// finishes, a new one is refused with ErrStopping and leaves its local
// connection untouched, for the newer session to carry, and the session
// closes cleanly once its last stream has ended.
func TestTunnelStop(t *testing.T) {
	testenv.CheckNoLeaks(t, 10*time.Second)
	client, _, _ := muxPair(t, map[string]string{"": startEcho(t)})
	local, peer := testenv.TCPPair(t)
	forwarded := make(chan error, 1)
	go func() { forwarded <- client.Forward(context.Background(), peer, "") }()
	roundTrip := func(msg string) {
		t.Helper()
		local.SetDeadline(time.Now().Add(testTimeout))
		if _, err := io.WriteString(local, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(local, got); err != nil || string(got) != msg {
			t.Fatalf("echo of %q: %q, %v", msg, got, err)
		}
	}
	roundTrip("before")

	client.Stop()
	other, otherPeer := testenv.TCPPair(t)
	if err := client.Forward(context.Background(), otherPeer, ""); !errors.Is(err, ErrStopping) {
		t.Fatalf("Forward on a stopped session: %v, want ErrStopping", err)
	}
	// The refused local connection is left as it was.
	otherPeer.SetDeadline(time.Now().Add(testTimeout))
	go io.WriteString(other, "x")
	if _, err := io.ReadFull(otherPeer, make([]byte, 1)); err != nil {
		t.Errorf("the local connection that ErrStopping refused was touched: %v", err)
	}
	other.Close()
	otherPeer.Close()

	roundTrip("during") // the stream in progress goes on
	if client.Closed() {
		t.Fatal("the session closed with a stream in progress")
	}
	local.CloseWrite()
	if _, err := io.ReadAll(local); err != nil {
		t.Fatalf("the end of the stream in progress: %v", err)
	}
	if err := <-forwarded; err != nil {
		t.Errorf("the stream in progress: %v", err)
	}
	select {
	case <-client.Done():
	case <-time.After(testTimeout):
		t.Fatal("the stopped session did not close once its last stream ended")
	}
	local.Close()
}

// TestTunnelStopRefusesWaiting stops a session whose peer holds every
// stream it may and has more waiting in yamux's backlog: each waiting
// stream gets its own refusal, in turn, while the streams in progress go
// on. Several refusals in a row are what once raced (refuseStopping
// handed its loop variable to the goroutines; -race saw it).
func TestTunnelStopRefusesWaiting(t *testing.T) {
	testenv.CheckNoLeaks(t, 10*time.Second)
	const waiting = 3
	sv := testServer(map[string]string{"": startEcho(t)}, t.Logf, func(string, ...any) {})
	a, b := testenv.TCPPair(t)
	server := NewSession(tcpConn{b}, Config{Addr: "the peer", Log: testLog})
	ctx, stop := context.WithCancel(context.Background())
	cutCtx, cut := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		sv.Serve(ctx, cutCtx, server)
		close(served)
	}()
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	peer, err := yamux.Client(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop()
		cut()
		peer.Close()
		<-served
	})
	open := func() (*yamux.Stream, *reader) {
		t.Helper()
		st, err := peer.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		st.SetDeadline(time.Now().Add(testTimeout))
		if err := frame.NewWriter(st).WriteFrame(nil, nil); err != nil { // the unnamed forward
			t.Fatal(err)
		}
		return st, &reader{f: frame.NewReader(st)}
	}
	held := make([]*yamux.Stream, maxTunnelStreams)
	for i := range held {
		st, r := open()
		if err := r.status(); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		held[i] = st
	}
	var refused []*reader
	for range waiting {
		_, r := open()
		refused = append(refused, r)
	}
	testutil.WaitFor(t, func() bool { return server.sess.NumStreams() == maxTunnelStreams+waiting }, testutil.Stringer(func() string {
		return fmt.Sprintf("the server has %d streams, want %d", server.sess.NumStreams(), maxTunnelStreams+waiting)
	}))

	stop()
	for i, r := range refused {
		var re *RefusedError
		if err := r.status(); !errors.As(err, &re) || !strings.Contains(re.Reason, "is stopping") {
			t.Errorf("waiting stream %d: %v, want a refusal saying the connection is stopping", i, err)
		}
	}
	for i, st := range held { // the streams in progress still echo
		msg := fmt.Appendf(nil, "stream %d", i)
		if err := frame.NewWriter(st).WriteFrame(msg, nil); err != nil {
			t.Fatalf("stream %d after the stop: %v", i, err)
		}
	}
	for i, st := range held {
		r := &reader{f: frame.NewReader(st)}
		got := make([]byte, 64)
		n, err := r.Read(got)
		if want := fmt.Sprintf("stream %d", i); err != nil || string(got[:n]) != want {
			t.Fatalf("stream %d's echo after the stop: %q, %v; want %q", i, got[:n], err, want)
		}
	}
}
