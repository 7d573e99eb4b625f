package execproto

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/frame"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/testutil"
	"github.com/securepeer/securepeer/internal/testenv"
)

// libConn is a securepeer.Conn as an Conn.
type libConn struct{ *securepeer.Conn }

func (c libConn) Abort() { c.Conn.Abort() }

// securePair returns the two ends of a securepeer connection over loopback
// TCP: the client's (initiator) and the server's.
func securePair(t testing.TB) (client, server libConn) {
	t.Helper()
	ids := make([]*securepeer.Identity, 2)
	for i := range ids {
		id, err := securepeer.GenerateIdentity()
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan *securepeer.Conn, 1)
	errc := make(chan error, 1)
	go func() {
		raw, err := l.Accept()
		if err != nil {
			errc <- err
			return
		}
		c := securepeer.Server(raw, &securepeer.Config{Identity: ids[1]})
		if err := c.Handshake(); err != nil {
			errc <- err
			return
		}
		accepted <- c
	}()
	raw, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := securepeer.Client(raw, &securepeer.Config{Identity: ids[0]})
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-accepted:
		t.Cleanup(func() { c.Close(); s.Close() })
		return libConn{c}, libConn{s}
	case err := <-errc:
		t.Fatal(err)
	}
	return
}

// testExecServer returns a server that runs command with sh, counting the
// commands it starts.
func testExecServer(command string, started *atomic.Int64) *Server {
	return &Server{
		Command: func() *exec.Cmd {
			if started != nil {
				started.Add(1)
			}
			return ShellCommand(command)
		},
		Name: command,
		Log:  slog.New(slog.DiscardHandler),
	}
}

// execRun is one session's outcome on both sides.
type execRun struct {
	status         Status
	clientErr      error
	serverErr      error
	stdout, stderr *testenv.SyncBuffer
}

// runExecSession runs command over a securepeer connection, the client
// with stdin and tty, and returns both sides' outcomes. during, if set,
// runs while the session does.
func runExecSession(t *testing.T, x *Server, stdin io.Reader, tty *TTYRequest, during func(*execRun, context.CancelFunc)) *execRun {
	t.Helper()
	return runExecSessionOver(t, x, stdin, tty, nil, during)
}

// runExecSessionOver is runExecSession with the client's side of the
// stream wrapped by wrap, if set.
func runExecSessionOver(t *testing.T, x *Server, stdin io.Reader, tty *TTYRequest, wrap func(Conn) Conn, during func(*execRun, context.CancelFunc)) *execRun {
	t.Helper()
	cc0, sc := securePair(t)
	var cc Conn = cc0
	if wrap != nil {
		cc = wrap(cc)
	}
	r := &execRun{stdout: new(testenv.SyncBuffer), stderr: new(testenv.SyncBuffer)}
	served := make(chan error, 1)
	go func() { served <- x.Serve(context.Background(), sc, Protocol2, "127.0.0.1:1") }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := &Client{Stdin: stdin, Stdout: r.stdout, Stderr: r.stderr, TTY: tty}
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		r.status, r.clientErr = client.Run(ctx, cc)
	}()
	if during != nil {
		during(r, cancel)
	}
	select {
	case <-ran:
	case <-time.After(testTimeout):
		t.Fatalf("the client did not finish within %v; stdout %q, stderr %q", testTimeout, r.stdout, r.stderr)
	}
	select {
	case r.serverErr = <-served:
	case <-time.After(testTimeout):
		t.Fatalf("the server did not finish within %v", testTimeout)
	}
	return r
}

// TestExecSession runs commands over securepeer-exec/2 without a
// terminal: stdout and stderr arrive on their own streams, the status is
// the command's, and the server says how the command ended.
func TestExecSession(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	for _, tc := range []struct {
		name           string
		command        string
		stdin          string
		stdout, stderr string // "" for nothing; a stderr is a substring
		status         Status
		serverErr      string // "" for none
	}{
		{"both streams", "echo out; echo err >&2; exit 3", "", "out\n", "err\n", Status{Kind: Exited, Code: 3}, "exited with status 3"},
		{"not found", "no-such-command-here", "", "", "not found", Status{Kind: Exited, Code: 127}, "exited with status 127"},
		{"killed by a signal", "kill -9 $$", "", "", "", Status{Kind: Signaled, Code: 137, Detail: "KILL"}, "was killed by signal KILL (status 137)"},
		{"input", "tr a-z A-Z", "beep boop\n", "BEEP BOOP\n", "", Status{}, ""},
		{"large input and output", "cat", big, big, "", Status{}, ""},
		{"input not read", "echo hi", big + big + big, "hi\n", "", Status{}, ""},
		{"both large", "head -c 300000 /dev/zero; head -c 200000 /dev/zero >&2", "", strings.Repeat("\x00", 300000), strings.Repeat("\x00", 200000), Status{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runExecSession(t, testExecServer(tc.command, nil), strings.NewReader(tc.stdin), nil, nil)
			if r.clientErr != nil {
				t.Fatalf("client: %v (server: %v)", r.clientErr, r.serverErr)
			}
			if r.status != tc.status {
				t.Errorf("status %+v, want %+v", r.status, tc.status)
			}
			if got := r.stdout.String(); got != tc.stdout {
				t.Errorf("stdout %q (%d bytes), want %d bytes", truncateForLog(got), len(got), len(tc.stdout))
			}
			if got := r.stderr.String(); (tc.stderr == "") != (got == "") || !strings.Contains(got, tc.stderr) {
				t.Errorf("stderr %q, want %q", truncateForLog(got), truncateForLog(tc.stderr))
			}
			switch {
			case tc.serverErr == "" && r.serverErr != nil:
				t.Errorf("server: %v", r.serverErr)
			case tc.serverErr != "" && (r.serverErr == nil || !strings.Contains(r.serverErr.Error(), tc.serverErr)):
				t.Errorf("server: %v, want %q", r.serverErr, tc.serverErr)
			}
		})
	}
}

// windowSpy closes sent once a window message has been written.
type windowSpy struct {
	Conn
	sent chan struct{}
}

func (c *windowSpy) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if len(p) > frame.HeaderLen && p[frame.HeaderLen] == execMsgWindow {
		close(c.sent)
	}
	return n, err
}

// spyConn tells when the server has sent its end of stream.
type spyConn struct {
	Conn
	closedWrite chan struct{}
}

func (c *spyConn) CloseWrite() error {
	err := c.Conn.CloseWrite()
	close(c.closedWrite)
	return err
}

// gatedWriter blocks its first Write until open closes.
type gatedWriter struct {
	open <-chan struct{}
	n    atomic.Int64
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	<-g.open
	g.n.Add(int64(len(p)))
	return len(p), nil
}

// TestExecSessionSlowClient checks that a server whose command has ended
// without reading its input, while the client still sends it, does not
// close the connection under the output and status it has yet to deliver
// (which a reset would discard): the client, which reads them only after
// the server has sent its end of stream, still gets them all.
func TestExecSessionSlowClient(t *testing.T) {
	t.Parallel()
	cc, sc := securePair(t)
	spy := &spyConn{sc, make(chan struct{})}
	x := testExecServer("head -c 2000000 /dev/zero", nil)
	served := make(chan error, 1)
	go func() { served <- x.Serve(context.Background(), spy, Protocol2, "127.0.0.1:1") }()
	out := &gatedWriter{open: spy.closedWrite}
	client := &Client{Stdin: io.LimitReader(zeros{}, 1<<30), Stdout: out, Stderr: io.Discard}
	st, err := client.Run(context.Background(), cc)
	if err != nil || st != (Status{}) || out.n.Load() != 2000000 {
		t.Errorf("status %+v, %v, %d bytes; want 0, nil, 2000000", st, err, out.n.Load())
	}
	if err := <-served; err != nil {
		t.Errorf("server: %v", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func truncateForLog(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// TestExecSessionInterrupted checks a client whose session is cut (a
// signal, in connect): the stream is aborted, the command terminated, and
// the server says so.
func TestExecSessionInterrupted(t *testing.T) {
	t.Parallel()
	stdin, feed := io.Pipe()
	defer feed.Close()
	r := runExecSession(t, testExecServer("echo ready; exec cat", nil), stdin, nil, func(r *execRun, cancel context.CancelFunc) {
		testutil.WaitFor(t, func() bool { return r.stdout.String() == "ready\n" }, r.stdout)
		cancel()
	})
	if !errors.Is(r.clientErr, context.Canceled) {
		t.Errorf("client: %v, want the context's end", r.clientErr)
	}
	if r.serverErr == nil || !strings.Contains(r.serverErr.Error(), `terminated "echo ready; exec cat": the peer at 127.0.0.1:1 aborted the stream; data may be missing`) {
		t.Errorf("server: %v", r.serverErr)
	}
}

// TestExecSessionTTY runs commands on a terminal: it has the size and TERM
// asked for, follows window changes, and is hung up when the client goes.
func TestExecSessionTTY(t *testing.T) {
	t.Parallel()
	t.Run("size and TERM", func(t *testing.T) {
		t.Parallel()
		stdin, feed := io.Pipe() // open: a terminal's end is a hangup
		defer feed.Close()
		r := runExecSession(t, testExecServer(`stty size; echo "$TERM"; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all three`, nil), stdin,
			&TTYRequest{Term: "xterm-test", Size: WinSize{Cols: 100, Rows: 30}}, nil)
		if r.clientErr != nil || r.serverErr != nil {
			t.Fatalf("client: %v; server: %v", r.clientErr, r.serverErr)
		}
		if got, want := r.stdout.String(), "30 100\r\nxterm-test\r\nall three\r\n"; got != want {
			t.Errorf("output %q, want %q", got, want)
		}
		if r.stderr.String() != "" {
			t.Errorf("stderr %q: a terminal's error output is its output", r.stderr)
		}
	})
	t.Run("window change", func(t *testing.T) {
		t.Parallel()
		stdin, feed := io.Pipe()
		defer feed.Close()
		resize := make(chan WinSize, 1)
		sent := make(chan struct{})
		spy := func(c Conn) Conn { return &windowSpy{Conn: c, sent: sent} }
		r := runExecSessionOver(t, testExecServer(`stty size; read x; stty size`, nil), stdin,
			&TTYRequest{Size: WinSize{Cols: 80, Rows: 24}, Resize: resize}, spy, func(r *execRun, _ context.CancelFunc) {
				testutil.WaitFor(t, func() bool { return strings.Contains(r.stdout.String(), "24 80") }, r.stdout)
				resize <- WinSize{Cols: 132, Rows: 43}
				// Once the window message is written, the newline below
				// follows it on the same stream.
				<-sent
				feed.Write([]byte("\r"))
			})
		if r.clientErr != nil || r.serverErr != nil {
			t.Fatalf("client: %v; server: %v", r.clientErr, r.serverErr)
		}
		if got := r.stdout.String(); !strings.HasSuffix(got, "43 132\r\n") {
			t.Errorf("output %q, want the new size last", got)
		}
	})
	t.Run("hangup", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		mark := filepath.Join(dir, "hup")
		stdin, feed := io.Pipe()
		defer feed.Close()
		command := `trap 'echo hung up > ` + mark + `; exit 9' HUP; echo ready; read x`
		r := runExecSession(t, testExecServer(command, nil), stdin, &TTYRequest{}, func(r *execRun, cancel context.CancelFunc) {
			testutil.WaitFor(t, func() bool { return strings.Contains(r.stdout.String(), "ready") }, r.stdout)
			cancel()
		})
		if !errors.Is(r.clientErr, context.Canceled) {
			t.Errorf("client: %v", r.clientErr)
		}
		if r.serverErr == nil || !strings.Contains(r.serverErr.Error(), "hung up") || !strings.Contains(r.serverErr.Error(), "aborted the stream") {
			t.Errorf("server: %v", r.serverErr)
		}
		if data, err := os.ReadFile(mark); err != nil || string(data) != "hung up\n" {
			t.Errorf("the command's HUP trap wrote %q, %v", data, err)
		}
	})
	// A command that has already taken the signal, or ignores it, and
	// then reads its terminal still sees the hangup: the read ends (EIO),
	// as when a real terminal goes away, rather than blocking until the
	// command is killed. A shell that takes SIGHUP just before it blocks
	// in a read is in that state.
	t.Run("hangup seen by a read", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		mark := filepath.Join(dir, "read")
		stdin, feed := io.Pipe()
		defer feed.Close()
		command := `trap '' HUP; echo ready; read x; echo read ended > ` + mark
		runExecSession(t, testExecServer(command, nil), stdin, &TTYRequest{}, func(r *execRun, cancel context.CancelFunc) {
			testutil.WaitFor(t, func() bool { return strings.Contains(r.stdout.String(), "ready") }, r.stdout)
			cancel()
		})
		if data, err := os.ReadFile(mark); err != nil || string(data) != "read ended\n" {
			t.Errorf("after the hangup, the command's read of its terminal did not end: %q, %v", data, err)
		}
	})
}

// rawClient runs a server session against a client that sends frames,
// then its end of stream if end is set, and reads whatever the server
// sends. It returns what the server sent and its error.
func rawClient(t *testing.T, x *Server, frames []byte, end bool) ([]byte, error) {
	t.Helper()
	cc, sc := securePair(t)
	served := make(chan error, 1)
	go func() { served <- x.Serve(context.Background(), sc, Protocol2, "127.0.0.1:1") }()
	if _, err := cc.Write(frames); err != nil {
		t.Fatal(err)
	}
	if end {
		cc.CloseWrite()
	}
	got, _ := io.ReadAll(cc)
	select {
	case err := <-served:
		return got, err
	case <-time.After(testTimeout):
		t.Fatal("the server did not finish")
	}
	return nil, nil
}

func msgFrame(m execMsg) []byte { return oneFrame(string(m.marshal(nil))) }

// TestExecServerProtocol checks the server against clients that break
// securepeer-exec/2: each is refused with an error saying how, the stream
// is aborted, and no command runs unless a valid start came first (then it
// is terminated).
func TestExecServerProtocol(t *testing.T) {
	t.Parallel()
	start := msgFrame(execMsg{typ: execMsgStart})
	for _, tc := range []struct {
		name    string
		frames  []byte
		end     bool
		err     string
		started int64
	}{
		{"end before start", nil, true, "without a start message", 0},
		{"stdin first", msgFrame(execMsg{typ: execMsgStdin, data: []byte("x")}), false, "the first message has type 0x03", 0},
		{"malformed first", oneFrame("\x02\x00"), false, "a start-tty message of 1 bytes", 0},
		{"too long", []byte{0xff, 0xff, 0xff, 0xff}, false, "a frame of 4294967295 bytes", 0},
		{"window without terminal", append(start, msgFrame(execMsg{typ: execMsgWindow, size: WinSize{1, 1}})...), false, "broke securepeer-exec/2: malformed securepeer-exec/2 message: a window size for a session without a terminal", 1},
		{"second start", append(start, start...), false, "a message of type 0x01 after the start", 1},
		{"server's message", append(start, msgFrame(execMsg{typ: execMsgExit})...), false, "a message of type 0x13 after the start", 1},
		{"cut in a frame", append(start, 0, 0, 0, 9, execMsgStdin), true, "ended its stream in the middle of a message", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var started atomic.Int64
			sent, err := rawClient(t, testExecServer("cat", &started), tc.frames, tc.end)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("server: %v, want %q", err, tc.err)
			}
			if started.Load() != tc.started {
				t.Errorf("%d commands started, want %d", started.Load(), tc.started)
			}
			if len(sent) != 0 {
				t.Errorf("the server sent %x", sent)
			}
		})
	}
}

// TestExecServerStartTimeout checks that a client that sends no start
// message is dropped after the start timeout, without a command.
func TestExecServerStartTimeout(t *testing.T) {
	t.Parallel()
	var started atomic.Int64
	x := testExecServer("cat", &started)
	x.startTimeout = 50 * time.Millisecond
	_, err := rawClient(t, x, nil, false)
	if !errors.Is(err, errStartTimeout) || started.Load() != 0 {
		t.Errorf("server: %v, %d commands started", err, started.Load())
	}
}

// memConn is one end of an in-memory stream, for sessions by the
// thousand: a clean end is io.EOF, an abort securepeer.ErrAborted.
type memConn struct {
	r       *io.PipeReader
	w       *io.PipeWriter
	reading *atomic.Int64 // reads in progress, over all memConns
}

func memPair(reading *atomic.Int64) (a, b *memConn) {
	ar, bw := io.Pipe()
	br, aw := io.Pipe()
	return &memConn{ar, aw, reading}, &memConn{br, bw, reading}
}

func (c *memConn) Read(p []byte) (int, error) {
	c.reading.Add(1)
	defer c.reading.Add(-1)
	return c.r.Read(p)
}

func (c *memConn) Write(p []byte) (int, error) { return c.w.Write(p) }
func (c *memConn) CloseWrite() error           { return c.w.Close() }
func (c *memConn) Close() error {
	c.w.Close()
	return c.r.CloseWithError(net.ErrClosed)
}
func (c *memConn) Abort() {
	c.w.CloseWithError(securepeer.ErrAborted)
	c.r.CloseWithError(net.ErrClosed)
}

// TestExecStartWaiters drives 5000 peers into the state a stranger can
// reach first (PROTOCOL.md: a server waiting for the start message): all
// wait at once, each holding one goroutine and no buffer, none starts a
// command, and the start timeout ends every one of them.
func TestExecStartWaiters(t *testing.T) {
	const peers = 5000
	var started, reading atomic.Int64
	var fire sync.WaitGroup // released to fire every start timer
	fire.Add(1)
	x := testExecServer("cat", &started)
	x.afterFunc = func(_ time.Duration, f func()) func() bool {
		var stopped atomic.Bool
		go func() {
			fire.Wait()
			if !stopped.Swap(true) {
				f()
			}
		}()
		return func() bool { return !stopped.Swap(true) }
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()

	errs := make(chan error, peers)
	var peerEnds []*memConn
	for range peers {
		client, server := memPair(&reading)
		peerEnds = append(peerEnds, client)
		go func() { errs <- x.Serve(context.Background(), server, Protocol2, "127.0.0.1:1") }()
	}
	testutil.WaitFor(t, func() bool { return reading.Load() == peers }, testutil.Stringer(func() string { return "not all sessions are waiting" }))
	runtime.GC()
	var during runtime.MemStats
	runtime.ReadMemStats(&during)
	// The timer stand-ins hold a goroutine each; a real timer holds none.
	perPeer := float64(runtime.NumGoroutine()-goroutines-peers) / peers
	heap := (int64(during.HeapAlloc) - int64(before.HeapAlloc)) / peers
	t.Logf("%d peers waiting for their start message: %.2f goroutines and %d heap bytes each (pipes and test fakes included)", peers, perPeer, heap)
	if perPeer > 1 {
		t.Errorf("%.2f goroutines per waiting peer, want 1", perPeer)
	}
	if heap > 4<<10 {
		t.Errorf("%d heap bytes per waiting peer: a frame buffer allocated before any frame?", heap)
	}

	fire.Done()
	for range peers {
		if err := <-errs; !errors.Is(err, errStartTimeout) {
			t.Fatalf("a waiting session ended with %v, want errStartTimeout", err)
		}
	}
	if n := started.Load(); n != 0 {
		t.Errorf("%d commands started", n)
	}
	for _, c := range peerEnds {
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, securepeer.ErrAborted) {
			t.Fatalf("a peer read %v, want the abort", err)
		}
	}
	testutil.WaitFor(t, func() bool { return runtime.NumGoroutine() <= goroutines }, testutil.Stringer(func() string {
		return "goroutines left behind"
	}))
}

// TestExecServerClientCut cuts the client's connection in the middle of a
// session, without its end of stream: the command is terminated, and the
// server says that the connection ended without the peer's end.
func TestExecServerClientCut(t *testing.T) {
	t.Parallel()
	cc, sc := securePair(t)
	x := testExecServer("echo ready; exec cat", nil)
	served := make(chan error, 1)
	go func() { served <- x.Serve(context.Background(), sc, Protocol2, "127.0.0.1:1") }()
	cc.Write(msgFrame(execMsg{typ: execMsgStart}))
	r := newExecMsgReader(cc)
	if m, err := r.read(); err != nil || string(m.data) != "ready\n" {
		t.Fatalf("read %+v, %v", m, err)
	}
	cc.NetConn().Close()
	select {
	case err := <-served:
		if err == nil || !strings.Contains(err.Error(), `terminated "echo ready; exec cat": the connection with 127.0.0.1:1 ended without the peer's end of stream, so data may be missing`) {
			t.Errorf("server: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("the server did not end the session")
	}
}
