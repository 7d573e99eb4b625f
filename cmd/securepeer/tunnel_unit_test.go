package main

// In-process tests of the tunnel protocol (tunnel.go, forward.go): what a
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
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/testenv"
)

// noteLog collects notices.
type noteLog struct {
	mu    sync.Mutex
	lines []string
}

func (n *noteLog) notef(format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.lines = append(n.lines, strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (n *noteLog) String() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.lines, "\n")
}

func (n *noteLog) len() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.lines)
}

// count is the number of notices that contain s.
func (n *noteLog) count(s string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, l := range n.lines {
		if strings.Contains(l, s) {
			c++
		}
	}
	return c
}

// activeStreams is the number of streams m holds, its accept loop's
// reservation aside.
func (m *muxSession) activeStreams() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.busy()
}

// muxPair returns two ends of a tunnel session over a loopback TCP pair,
// without the secure stream (the protocol under test is the tunnel's),
// and serves the server end's streams with targets until the test ends,
// as listen -to does (its notices through a rateLog, as listen's).
func muxPair(t *testing.T, targets map[string]string) (client, server *muxSession, notes *noteLog) {
	t.Helper()
	a, b := testenv.TCPPair(t)
	id, err := securepeer.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	mk := func(c *net.TCPConn) *stream {
		return &stream{conn: c, raw: c, self: id.PublicKey(), peer: id.PublicKey(), remoteAddr: c.RemoteAddr().String()}
	}
	log := slog.New(slog.DiscardHandler)
	client = newMuxSession(mk(a), true, log)
	server = newMuxSession(mk(b), false, log)
	notes = new(noteLog)
	end := &tunnelEnd{targets: targets, log: log, notef: newRateLog(notes.notef).kindf("notices about the peers' tunnel streams")}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		serveStreams(ctx, ctx, server, end)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		client.fail(io.EOF)
		<-done
	})
	return client, server, notes
}

// listenLocal listens on a loopback port of its own, which it keeps until
// the test closes it.
func listenLocal(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// startEcho serves a TCP echo on a port of its own: each connection gets
// back what it sent, then the end. It returns the address.
func startEcho(t testing.TB) string {
	t.Helper()
	l := listenLocal(t)
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
	l := listenLocal(t)
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
func echoThrough(t testing.TB, m *muxSession, name string, msg []byte) {
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
	go func() { relayed <- relayTunnel(context.Background(), ts, far, true) }()
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
		waitFor(t, func() bool { return notes.count("more than securepeer-tunnel/1 allows") == 1 }, notes)
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
	if m.closed() {
		t.Errorf("the session ended: %v", m.err())
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
	waitFor(t, func() bool { return server.activeStreams() == 1 }, stringer(func() string { return "no stream taken" }))
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
	waitFor(t, func() bool { return server.activeStreams() == 0 }, stringer(func() string {
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
	target := listenLocal(t)
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
	clientNotes := new(noteLog)
	local := listenLocal(t)
	ctx, cancel := context.WithCancel(context.Background())
	forwarded := make(chan struct{})
	go func() {
		defer close(forwarded)
		localForward(ctx, ctx, local, forwardSpec{addr: local.Addr().String()}, func(context.Context) (*muxSession, error) { return client, nil }, clientNotes.notef, slog.New(slog.DiscardHandler))
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
	waitFor(t, func() bool { return client.activeStreams() == 0 }, stringer(func() string {
		return fmt.Sprintf("%d streams still held", client.activeStreams())
	}))
	if n := clientNotes.count("data may be missing"); n != cuts {
		t.Errorf("connect's side reported %d streams cut, want the %d whose target reset them:\n%s", n, cuts, clientNotes)
	}
	if n := clientNotes.len(); n != cuts {
		t.Errorf("connect's side gave %d notices, want %d (one per cut stream):\n%s", n, cuts, clientNotes)
	}
	// listen's side: a notice per target that reset its connection (as
	// "connection reset" when reading it, or "not connected" when passing
	// the client's end on), at most a rateLog's worth of them shown, and
	// none that says its peer cut a stream.
	if s := serverNotes.String(); serverNotes.count("peer cut") != 0 || serverNotes.count("forwarding a stream") != serverNotes.len() || serverNotes.len() > rateBurst {
		t.Errorf("listen's side said a peer cut a stream, or gave notices other than the targets' resets, or more than %d:\n%s", rateBurst, s)
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
		resetClose(c)
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
