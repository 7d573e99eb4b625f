//go:build unix

package main

// Tests of how streams, listeners and tunnels end (issue 7): signals abort
// rather than fake a clean end, listen stops gracefully, tunnels outlive a
// failed connection, and running out of file descriptors does not end a
// listener. They run the securepeer installed by TestMain, as e2e_test.go
// does.

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/testutil"
	"github.com/securepeer/securepeer/internal/testenv"
	"github.com/securepeer/securepeer/internal/wire"
)

// TestSignalAbortsSender interrupts a connect that is sending a large stdin
// to a listen that writes it to stdout: the receiver must exit 1 and say
// that data may be missing, never exit 0 with part of the data as if it
// were all, and the sender exits 128 plus the signal's number.
func TestSignalAbortsSender(t *testing.T) {
	for _, tc := range []struct {
		name   string
		legacy bool
		sig    syscall.Signal
		want   string // in the receiver's stderr
	}{
		{"SIGINT", false, syscall.SIGINT, "aborted the stream; data may be missing"},
		{"SIGTERM", false, syscall.SIGTERM, "aborted the stream; data may be missing"},
		{"SIGHUP", false, syscall.SIGHUP, "aborted the stream; data may be missing"},
		// The legacy protocol has no abort message: the connection is reset.
		{"legacy/SIGTERM", true, syscall.SIGTERM, "data may be missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			te := newTestEnv(t)
			var listenArgs, connectArgs []string
			if tc.legacy {
				for _, k := range []string{"a.json", "b.json"} {
					data, err := os.ReadFile(filepath.Join("..", "..", "legacy", "testdata", "keys", k))
					if err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(filepath.Join(te.dir, k), data, 0o600); err != nil {
						t.Fatal(err)
					}
				}
				listenArgs = []string{"listen", "-legacy", "-i", "a.json", "127.0.0.1:0"}
				connectArgs = []string{"connect", "-legacy", "-i", "b.json", "-expect", "a.json"}
			} else {
				te.run("keygen", "-f", "server")
				listenArgs = []string{"listen", "-i", "server", "127.0.0.1:0"}
				connectArgs = []string{"connect", "-expect", "server.pub"}
			}
			recvCmd := te.command(listenArgs...)
			// Counted, not kept: a buffer growing by a gigabyte during the
			// hang-up grace stalls the receiver long enough that the
			// sender's Write is still blocked when it aborts, and the abort
			// then cannot follow a whole record.
			var received byteCounter
			recvCmd.Stdout = &received
			receiver, addr := te.startCmd("receiver", recvCmd)

			sender := te.command(append(connectArgs, addr)...)
			stdin, err := sender.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			var senderErr testenv.SyncBuffer
			sender.Stderr = &senderErr
			if err := sender.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sender.Process.Kill() })
			// A large stdin that never ends: the transfer is in full flow
			// when the signal comes.
			go func() {
				chunk := []byte(strings.Repeat("0123456789abcdef", 4096))
				for {
					if _, err := stdin.Write(chunk); err != nil {
						return
					}
				}
			}()
			testutil.WaitFor(t, func() bool { return received.Len() >= 1<<20 }, &senderErr)
			sender.Process.Signal(tc.sig)
			if code, want := exitStatus(t, waitCmd(t, sender)), 128+int(tc.sig); code != want {
				t.Errorf("connect exited %d after %v, want %d\n%s", code, tc.sig, want, senderErr.String())
			}
			stdin.Close()
			if code := receiver.wait(); code != exitFailure {
				t.Errorf("listen exited %d after the sender's %v, want %d: a cut transfer must not look complete\n%s", code, tc.sig, exitFailure, receiver.stderr)
			}
			if s := receiver.stderr.String(); !strings.Contains(s, tc.want) {
				t.Errorf("listen does not say %q:\n%s", tc.want, s)
			}
			if s := senderErr.String(); !strings.Contains(s, "aborted the stream") {
				t.Errorf("connect does not say it aborted the stream:\n%s", s)
			}
		})
	}
}

// TestListenGracefulStop checks listen -exec's stop: the first signal stops
// accepting and lets the session in progress finish; a second signal, or
// the grace period running out, cuts it, and its peer is told so.
func TestListenGracefulStop(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sig   syscall.Signal
		grace string // SECUREPEER_TESTONLY_GRACE; "" is the default, 10s
		end   string // "finish": the session ends on its own; "second": a second signal; "grace": wait
	}{
		// A grace period no test outlasts, so that a slow machine cannot
		// cut the session the test lets finish.
		{"session finishes/SIGTERM", syscall.SIGTERM, "1h", "finish"},
		{"session finishes/SIGINT", syscall.SIGINT, "1h", "finish"},
		{"second signal cuts", syscall.SIGINT, "", "second"},
		{"grace period cuts", syscall.SIGTERM, "200ms", "grace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			te := newTestEnv(t)
			te.run("keygen", "-f", "server")
			te.env = append(te.env, "SECUREPEER_TESTONLY_GRACE="+tc.grace)
			pidFile := filepath.Join(te.dir, "pids")
			te.env = append(te.env, "PIDS="+pidFile)
			// When the session is cut: the command and a child of its own
			// that holds its output open, both recorded, so that the cut
			// can be seen to end them.
			script, npids := `echo $$ >> "$PIDS"; cat`, 1
			if tc.end != "finish" {
				script, npids = `sleep 1000 & echo $! >> "$PIDS"; echo $$ >> "$PIDS"; cat`, 2
			}
			server, addr := te.start("server", "listen", "-i", "server", "-insecure-exec-any-key", "-exec", script, "127.0.0.1:0")
			s := te.openSession(addr)
			pids := readPIDs(t, pidFile, npids)

			server.cmd.Process.Signal(tc.sig)
			testutil.WaitFor(t, func() bool {
				return strings.Contains(server.stderr.String(), "stopping: no new connections; waiting up to")
			}, server.stderr)
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				t.Errorf("listen still accepts connections after %v", tc.sig)
			}

			switch tc.end {
			case "finish":
				s.echo("still here")
				s.stdin.Close()
				if rest, err := io.ReadAll(s.out); err != nil || len(rest) != 0 {
					t.Errorf("output after the end: %q, %v", rest, err)
				}
				if err := waitCmd(t, s.cmd); err != nil {
					t.Errorf("connect whose session was let finish: %v\n%s", err, s.stderr)
				}
			case "second":
				server.cmd.Process.Signal(tc.sig)
			case "grace":
			}
			if code, want := server.wait(), 128+int(tc.sig); code != want {
				t.Errorf("listen exited %d, want %d\n%s", code, want, server.stderr)
			}
			if tc.end != "finish" {
				// The peer reads the abort, not a clean end, even though
				// its own stdin is still open.
				if code := exitStatus(t, waitCmd(t, s.cmd)); code != exitFailure {
					t.Errorf("connect whose session was cut exited %d, want %d\n%s", code, exitFailure, s.stderr)
				}
				if !strings.Contains(s.stderr.String(), "aborted the stream; data may be missing") {
					t.Errorf("connect does not say that its session was cut:\n%s", s.stderr)
				}
			}
			for _, pid := range pids {
				if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) && !isZombie(pid) {
					t.Errorf("process %d of -exec is still there after listen exited (kill: %v)", pid, err)
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		})
	}
}

// newRefusingEnv makes the keys server, client and other, and an allow
// file "allowed" that admits only other: a server started with it refuses
// client.
func newRefusingEnv(t *testing.T) *testEnv {
	t.Helper()
	te := newTestEnv(t)
	te.run("keygen", "-f", "server")
	te.run("keygen", "-f", "client")
	te.run("keygen", "-f", "other")
	if err := os.WriteFile(filepath.Join(te.dir, "allowed"), []byte(te.readFile("other.pub")), 0o644); err != nil {
		t.Fatal(err)
	}
	return te
}

// TestTunnelStartup checks that connect -from meets and checks the peer
// before it binds its local address, and exits with the usual code if that
// fails.
func TestTunnelStartup(t *testing.T) {
	te := newRefusingEnv(t)
	server, peerAddr := te.start("server", "listen", "-i", "server", "-allow", "allowed", "-exec", "cat", "127.0.0.1:0")
	defer server.interrupt()
	// An address where nothing listens, and nothing else can.
	deadAddr, _ := reservePort(t)

	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"unreachable", []string{"-i", "client", "-expect", "server.pub", deadAddr}, exitFailure, "refused; is securepeer listen running there"},
		{"key mismatch", []string{"-i", "other", "-expect", "client.pub", peerAddr}, exitRejected, "not the"},
		{"refused by the peer", []string{"-i", "client", "-expect", "server.pub", peerAddr}, exitRejected, "refused this identity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addrFile := filepath.Join(te.dir, strings.ReplaceAll(tc.name, " ", "-")+".addr")
			cmd := te.command(append([]string{"connect", "-from", "127.0.0.1:0"}, tc.args...)...)
			cmd.Env = append(cmd.Env, "SECUREPEER_TESTONLY_ADDR_FILE="+addrFile)
			var stderr testenv.SyncBuffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if code := exitStatus(t, waitCmd(t, cmd)); code != tc.code {
				t.Errorf("connect -from exited %d, want %d\n%s", code, tc.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stderr does not say %q:\n%s", tc.stderr, stderr.String())
			}
			if _, err := os.Stat(addrFile); err == nil {
				t.Errorf("connect -from listened on its local address before the peer was checked")
			}
		})
	}
}

// TestTunnelSurvivesRefusal checks that after startup, a local connection
// the peer refuses ends alone: the tunnel stays up and the next connection
// works.
func TestTunnelSurvivesRefusal(t *testing.T) {
	te := newTestEnv(t)
	te.run("keygen", "-f", "server")
	te.run("keygen", "-f", "client")
	te.run("keygen", "-f", "other")
	allowed := filepath.Join(te.dir, "allowed")
	if err := os.WriteFile(allowed, []byte(te.readFile("client.pub")), 0o644); err != nil {
		t.Fatal(err)
	}
	server, peerAddr := te.start("server", "listen", "-i", "server", "-allow", "allowed", "-exec", "cat", "127.0.0.1:0")
	defer server.interrupt()
	client, localAddr := te.start("client", "connect", "-i", "client", "-expect", "server.pub", "-from", "127.0.0.1:0", peerAddr)

	// through sends line through the tunnel and returns what comes back
	// before the end.
	through := func(line string) (string, error) {
		c, err := net.Dial("tcp", localAddr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(testTimeout))
		if _, err := io.WriteString(c, line); err != nil {
			return "", err
		}
		c.(*net.TCPConn).CloseWrite()
		data, err := io.ReadAll(c)
		return string(data), err
	}
	if got, err := through("first\n"); got != "first\n" || err != nil {
		t.Fatalf("through the tunnel: %q, %v\n%s", got, err, client.stderr)
	}
	// The server now refuses the client (the allow file is read again when
	// its size changes).
	if err := os.WriteFile(allowed, []byte(te.readFile("other.pub")+"# the client is out for now\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := through("refused\n"); got != "" {
		t.Errorf("through a refused tunnel: %q, %v", got, err)
	}
	testutil.WaitFor(t, func() bool { return strings.Contains(client.stderr.String(), "refused this identity") }, client.stderr)
	select {
	case <-client.done:
		t.Fatalf("connect -from exited after one refused connection\n%s", client.stderr)
	default:
	}
	if err := os.WriteFile(allowed, []byte(te.readFile("client.pub")), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := through("again\n"); got != "again\n" || err != nil {
		t.Errorf("through the tunnel after a refusal: %q, %v\n%s", got, err, client.stderr)
	}
	if code := client.interrupt(); code != exitInterrupted {
		t.Errorf("connect -from exited %d after Ctrl-C, want %d\n%s", code, exitInterrupted, client.stderr)
	}
}

// TestListenSurvivesEMFILE runs listen under a limit of 64 file descriptors
// and opens 60 connections at once, so that accepting fails with EMFILE.
// listen must keep going and serve a peer once the connections are gone.
func TestListenSurvivesEMFILE(t *testing.T) {
	te := newTestEnv(t)
	te.run("keygen", "-f", "server")
	cmd := exec.Command("/bin/sh", "-c", `ulimit -n 64 && exec securepeer listen -i server -insecure-exec-any-key -exec cat 127.0.0.1:0`)
	cmd.Dir = te.dir
	cmd.Env = te.env
	server, addr := te.startCmd("server", cmd)

	var conns []net.Conn
	for range 60 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	testutil.WaitFor(t, func() bool { return strings.Contains(server.stderr.String(), "retrying in") }, server.stderr)
	for _, c := range conns {
		c.Close()
	}
	echo := te.command("connect", "-expect", "server.pub", addr)
	echo.Stdin = strings.NewReader("still serving\n")
	var stderr testenv.SyncBuffer
	echo.Stderr = &stderr
	out, err := echo.Output()
	if err != nil || string(out) != "still serving\n" {
		t.Errorf("connect after EMFILE: %q, %v\n%s\nlisten:\n%s", out, err, stderr.String(), server.stderr)
	}
	select {
	case <-server.done:
		t.Fatalf("listen exited: %v\n%s", server.err, server.stderr)
	default:
	}
	if s := server.stderr.String(); !strings.Contains(s, "too many open files") {
		t.Errorf("the notice does not name the accept error:\n%s", s)
	}
	if code := server.interrupt(); code != exitInterrupted {
		t.Errorf("listen exited %d after Ctrl-C, want %d\n%s", code, exitInterrupted, server.stderr)
	}
}

// TestListenSilentPeers holds 100 connections to listen that never send a
// byte, more than it ever had handshake slots, and checks that a real peer
// still gets through while they stay open.
func TestListenSilentPeers(t *testing.T) {
	te := newTestEnv(t)
	te.run("keygen", "-f", "server")
	server, addr := te.start("server", "listen", "-i", "server", "-insecure-exec-any-key", "-exec", "cat", "127.0.0.1:0")
	for range 100 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	echo := te.command("connect", "-expect", "server.pub", addr)
	echo.Stdin = strings.NewReader("past the silent ones\n")
	var out, stderr testenv.SyncBuffer
	echo.Stdout, echo.Stderr = &out, &stderr
	if err := echo.Start(); err != nil {
		t.Fatal(err)
	}
	if err := waitCmd(t, echo); err != nil || out.String() != "past the silent ones\n" {
		t.Errorf("connect past 100 silent peers: %q, %v\n%s\nlisten:\n%s", out.String(), err, stderr.String(), server.stderr)
	}
	if code := server.interrupt(); code != exitInterrupted {
		t.Errorf("listen exited %d after Ctrl-C, want %d\n%s", code, exitInterrupted, server.stderr)
	}
}

// TestListenStalledPeers floods listen -exec with peers that offer a
// ticket no server issued, get 00 00 05, and stall, more of them than it
// has slots, each reconnecting as soon as it is dropped; connect, from the
// same address, must still get its line echoed. Before the admission
// ranked connections by what they had proved, a stall after 00 00 05
// outranked a connection still waiting for its first message, which the
// next arrival dropped. Each flight has a fresh ephemeral key: listen
// refuses a repeated one before answering it.
func TestListenStalledPeers(t *testing.T) {
	te := newTestEnv(t)
	te.run("keygen", "-f", "server")
	server, addr := te.start("server", "listen", "-i", "server", "-insecure-exec-any-key", "-exec", "cat", "127.0.0.1:0")
	h := wire.Hello{Version: wire.Version, Mode: wire.ModeInitiator, Resume: true}.Marshal()
	newFlight := func() []byte {
		m := wire.ResumeMessage1{Ticket: bytes.Repeat([]byte{0xb0}, 100), Noise: bytes.Repeat([]byte{0x90}, 64)}
		rand.Read(m.Noise[:32])
		return wire.AppendHandshakeMessage(h[:], m.Marshal(nil))
	}

	const stallers = 4200 // over the 4096 slots: the ones dropped come back at once
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var refused, dials atomic.Int64
	for range stallers {
		wg.Go(func() {
			for range 100 { // bounded: a handful of reconnections each
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.Dial("tcp", addr)
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				dials.Add(1)
				closed := make(chan struct{})
				go func() {
					select {
					case <-stop:
						c.Close()
					case <-closed:
					}
				}()
				c.Write(newFlight())
				var answer [wire.HelloSize + 3]byte
				if _, err := io.ReadFull(c, answer[:]); err == nil && answer[wire.HelloSize+2] == wire.RetryFull {
					refused.Add(1)
				}
				io.Copy(io.Discard, c) // until listen drops it
				close(closed)
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	testutil.WaitFor(t, func() bool { return refused.Load() >= stallers }, testutil.Stringer(func() string { return server.stderr.String() }))

	echo := te.command("connect", "-expect", "server.pub", addr)
	echo.Stdin = strings.NewReader("past the stalled ones\n")
	var out, stderr testenv.SyncBuffer
	echo.Stdout, echo.Stderr = &out, &stderr
	if err := echo.Start(); err != nil {
		t.Fatal(err)
	}
	if err := waitCmd(t, echo); err != nil || out.String() != "past the stalled ones\n" {
		t.Errorf("connect past %d stalled peers (%d connections): %q, %v\n%s", stallers, dials.Load(), out.String(), err, stderr.String())
	}
	t.Logf("%d connections of %d stalled peers, %d refused tickets", dials.Load(), stallers, refused.Load())
}
