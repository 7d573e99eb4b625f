//go:build unix

package main

// Tests and benchmarks of multiplexed tunnels (internal/tunnel): many local
// connections over one securepeer connection, a -to target that is down,
// a peer that does not multiplex, and a peer that stops answering. They
// run the securepeer installed by TestMain, as e2e_test.go does.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/testutil"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/tunnel"
	"github.com/securepeer/securepeer/internal/testenv"
)

// tunnelRig is a listen -to and a connect -from between them, with keys.
type tunnelRig struct {
	te        *testEnv
	server    *background // listen -v -to
	client    *background // connect -v -from
	peerAddr  string
	localAddr string
}

// newTunnelRig starts listen -v -to target and connect -v -from, with
// serverEnv and clientEnv added to their environments.
func newTunnelRig(t testing.TB, target string, serverEnv, clientEnv []string) *tunnelRig {
	t.Helper()
	te := newTestEnv(t)
	te.run("keygen", "-f", "server")
	te.run("keygen", "-f", "client")
	if err := os.WriteFile(filepath.Join(te.dir, "allowed"), []byte(te.readFile("client.pub")), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &tunnelRig{te: te}
	cmd := te.command("listen", "-v", "-i", "server", "-allow", "allowed", "-to", target, "127.0.0.1:0")
	cmd.Env = append(cmd.Env, serverEnv...)
	r.server, r.peerAddr = te.startCmd("server", cmd)
	cmd = te.command("connect", "-v", "-i", "client", "-expect", "server.pub", "-from", "127.0.0.1:0", r.peerAddr)
	cmd.Env = append(cmd.Env, clientEnv...)
	r.client, r.localAddr = te.startCmd("client", cmd)
	return r
}

// handshakes is the number of securepeer connections listen accepted.
func (r *tunnelRig) handshakes() int {
	return strings.Count(r.server.stderr.String(), "handshake complete")
}

func (r *tunnelRig) String() string {
	return fmt.Sprintf("listen:\n%s\nconnect:\n%s", r.server.stderr, r.client.stderr)
}

// bigBody is the large download: 16 MiB of pseudo-random bytes, 256
// records and more, reproducible from its seed.
func bigBody() []byte {
	b := make([]byte, 16<<20)
	rand.NewChaCha8([32]byte{1}).Read(b)
	return b
}

// startHTTP serves /n/ID (a short answer naming ID), /big (bigBody) and
// /slow (headers, then nothing until release is closed) on l.
func startHTTP(t testing.TB, l net.Listener, big []byte, release <-chan struct{}) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/big":
			w.Write(big)
		case r.URL.Path == "/slow":
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-release
		default:
			fmt.Fprintf(w, "answer to %s", r.URL.Path)
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

// newHTTPClient makes one local TCP connection per request, as separate
// curl runs do, so each request is a stream of its own.
func newHTTPClient() *http.Client {
	return &http.Client{
		Timeout:   testTimeout,
		Transport: &http.Transport{DisableKeepAlives: true, MaxConnsPerHost: 0},
	}
}

func httpGet(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// TestTunnelMultiplexed sends 100 requests at once and a 16 MiB download
// through a tunnel, and checks that one securepeer connection carried them
// all.
func TestTunnelMultiplexed(t *testing.T) {
	big := bigBody()
	l := testutil.ListenLocal(t)
	startHTTP(t, l, big, nil)
	r := newTunnelRig(t, l.Addr().String(), nil, nil)
	c := newHTTPClient()

	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			path := fmt.Sprintf("/n/%d", i)
			got, err := httpGet(c, "http://"+r.localAddr+path)
			if want := "answer to " + path; got != want || err != nil {
				t.Errorf("GET %s = %q, %v; want %q", path, got, err, want)
			}
		})
	}
	wg.Wait()
	got, err := httpGet(c, "http://"+r.localAddr+"/big")
	if err != nil {
		t.Fatalf("GET /big: %v\n%s", err, r)
	}
	if sha256.Sum256([]byte(got)) != sha256.Sum256(big) {
		t.Errorf("GET /big: %d bytes whose SHA-256 is not the body's (%d bytes)", len(got), len(big))
	}
	if n := r.handshakes(); n != 1 {
		t.Errorf("listen accepted %d securepeer connections, want 1\n%s", n, r)
	}
	if !strings.Contains(r.server.stderr.String(), "next_proto="+tunnel.Protocol) {
		t.Errorf("listen's log does not show %s negotiated\n%s", tunnel.Protocol, r)
	}
	if code := r.client.interrupt(); code != exitInterrupted {
		t.Errorf("connect -from exited %d after Ctrl-C, want %d\n%s", code, exitInterrupted, r)
	}
	if code := r.server.interrupt(); code != exitInterrupted {
		t.Errorf("listen -to exited %d after Ctrl-C, want %d\n%s", code, exitInterrupted, r)
	}
	if s := r.String(); strings.Contains(s, "panic") || strings.Contains(s, "DATA RACE") {
		t.Error(s)
	}
}

// TestTunnelTargetDown checks that a -to target that is down refuses the
// stream with its reason, shown by connect, that the tunnel stays up, and
// that the next request works once the target is up.
func TestTunnelTargetDown(t *testing.T) {
	// The target is down, at a port the test holds, bound but not
	// listening, so that it refuses connections and no one else can take
	// it; it comes up by listening on that same socket.
	target, up := reservePort(t)
	r := newTunnelRig(t, target, nil, nil)

	c, err := net.Dial("tcp", r.localAddr)
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		// The kernel completes the TCP handshake before connect accepts,
		// so connect's reset can come before the dial has returned.
	case err != nil:
		t.Fatal(err)
	default:
		c.SetDeadline(time.Now().Add(testTimeout))
		fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n")
		data, err := io.ReadAll(c)
		c.Close()
		if len(data) != 0 || err == nil {
			t.Errorf("a local connection to a tunnel whose target is down read %q, %v; want a reset\n%s", data, err, r)
		}
	}
	want := "connect failed: " + syscall.ECONNREFUSED.Error()
	testutil.WaitFor(t, func() bool { return strings.Contains(r.client.stderr.String(), want) }, r)
	testutil.WaitFor(t, func() bool { return strings.Contains(r.server.stderr.String(), "is the service running there?") }, r)

	startHTTP(t, up(), nil, nil)
	if got, err := httpGet(newHTTPClient(), "http://"+r.localAddr+"/up"); got != "answer to /up" || err != nil {
		t.Errorf("GET /up after the target came up = %q, %v\n%s", got, err, r)
	}
	if n := r.handshakes(); n != 1 {
		t.Errorf("listen accepted %d securepeer connections, want 1\n%s", n, r)
	}
}

// reservePort holds a loopback TCP port for the test: bound, not
// listening, so that connections to it are refused and nothing else can
// bind it (the socket does not set SO_REUSEADDR). up listens on that same
// socket, once. A test that needs an address where nothing listens uses
// it, never a port it closed, which another test may take meanwhile.
func reservePort(t testing.TB) (addr string, up func() net.Listener) {
	t.Helper()
	syscall.ForkLock.RLock() // no exec between the socket and its close-on-exec
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "reserved port")
	t.Cleanup(func() { f.Close() })
	addr = fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	return addr, func() net.Listener {
		t.Helper()
		if err := syscall.Listen(fd, 128); err != nil {
			t.Fatal(err)
		}
		l, err := net.FileListener(f) // a duplicate of the socket
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
}

// TestTunnelOldPeer runs connect -from against a listen -to that offers no
// application protocol, as securepeer's before multiplexing: connect says
// so once and gives each local connection its own securepeer connection.
func TestTunnelOldPeer(t *testing.T) {
	l := testutil.ListenLocal(t)
	startHTTP(t, l, nil, nil)
	r := newTunnelRig(t, l.Addr().String(), []string{"SECUREPEER_TESTONLY_NO_MUX=1"}, nil)
	c := newHTTPClient()
	for i := range 3 {
		path := fmt.Sprintf("/old/%d", i)
		if got, err := httpGet(c, "http://"+r.localAddr+path); got != "answer to "+path || err != nil {
			t.Errorf("GET %s = %q, %v\n%s", path, got, err, r)
		}
	}
	if n := strings.Count(r.client.stderr.String(), "does not multiplex tunnels"); n != 1 {
		t.Errorf("connect said %d times that the peer does not multiplex, want once\n%s", n, r)
	}
	// One connection to meet the peer, then one per request.
	testutil.WaitFor(t, func() bool { return r.handshakes() == 4 }, r)
	if strings.Contains(r.server.stderr.String(), "next_proto") {
		t.Errorf("a protocol was negotiated with a peer that offers none\n%s", r)
	}
}

// TestTunnelOldPeerNamed checks that connect with a named -from refuses a
// peer that does not multiplex, before it binds: a plain connection cannot
// say which forward it is for, and would reach the peer's unnamed -to, as
// -from db=... reached a web server before.
func TestTunnelOldPeerNamed(t *testing.T) {
	te := newKeys(t)
	l := testutil.ListenLocal(t)
	startHTTP(t, l, nil, nil)
	cmd := te.command("listen", "-i", "server", "-allow", "allowed", "-to", l.Addr().String(), "127.0.0.1:0")
	cmd.Env = append(cmd.Env, "SECUREPEER_TESTONLY_NO_MUX=1")
	server, peerAddr := te.startCmd("server", cmd)
	defer server.interrupt()
	addrFile := filepath.Join(te.dir, "client.addr")
	client := te.command("connect", "-i", "client", "-expect", "server.pub", "-from", "127.0.0.1:0", "-from", "db=127.0.0.1:0", peerAddr)
	client.Env = append(client.Env, "SECUREPEER_TESTONLY_ADDR_FILE="+addrFile)
	var stderr testenv.SyncBuffer
	client.Stderr = &stderr
	if code := exitStatus(t, waitCmd(t, startCmd(t, client))); code != exitFailure {
		t.Errorf("connect -from db=... exited %d with a peer that does not multiplex, want %d\n%s", code, exitFailure, stderr.String())
	}
	if want := "cannot be told which forward a connection is for: -from db=127.0.0.1:0 would reach whatever its unnamed -to is"; !strings.Contains(stderr.String(), want) {
		t.Errorf("connect does not say %q:\n%s", want, stderr.String())
	}
	if _, err := os.Stat(addrFile); err == nil {
		t.Errorf("connect listened on its -from addresses before refusing the peer")
	}
}

// TestTunnelKeepAlive stops the listen process: connect must notice within
// the keepalive bound, reset the local connection in progress, and connect
// again for the next one once listen runs again.
func TestTunnelKeepAlive(t *testing.T) {
	l := testutil.ListenLocal(t)
	release := make(chan struct{})
	defer close(release)
	startHTTP(t, l, nil, release)
	const keepAlive = 500 * time.Millisecond
	env := []string{"SECUREPEER_TESTONLY_KEEPALIVE=" + keepAlive.String()}
	r := newTunnelRig(t, l.Addr().String(), env, env)

	// A request in progress: headers received, the body still to come.
	c, err := net.Dial("tcp", r.localAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	fmt.Fprintf(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	if line, err := br.ReadString('\n'); !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("GET /slow: %q, %v\n%s", line, err, r)
	}

	if err := r.server.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			r.server.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	// A ping after 500 ms of silence, unanswered: noticed (in about 1.2 s,
	// which is a timing claim for a benchmark, not this test).
	testutil.WaitFor(t, func() bool { return strings.Contains(r.client.stderr.String(), "did not answer a keepalive") }, r)
	rest, err := io.ReadAll(br)
	if err == nil {
		t.Errorf("the local connection in progress ended cleanly after %q; want a reset", rest)
	}

	r.server.cmd.Process.Signal(syscall.SIGCONT)
	resumed = true
	// listen, running again, finds its tunnel connection aborted and says
	// that it cut the request in progress.
	testutil.WaitFor(t, func() bool {
		return strings.Contains(r.server.stderr.String(), "ended with 1 stream in progress, which were cut")
	}, r)
	if got, err := httpGet(newHTTPClient(), "http://"+r.localAddr+"/again"); got != "answer to /again" || err != nil {
		t.Errorf("GET /again after the peer came back = %q, %v\n%s", got, err, r)
	}
	if n := r.handshakes(); n != 2 {
		t.Errorf("listen accepted %d securepeer connections, want 2 (one before the stop, one after)\n%s", n, r)
	}
	// The same listen process honours the ticket of the first connection:
	// the reconnect is a resumed session.
	if n := strings.Count(r.client.stderr.String(), "resumed=true"); n != 1 {
		t.Errorf("connect resumed %d sessions, want 1 (the reconnect)\n%s", n, r)
	}
}

// BenchmarkTunnel compares multiplexed tunnels with a handshake per local
// connection (what connect -from did before, and still does with a peer
// that does not multiplex): 1,000 short HTTP requests, 50 at a time, each
// on a local connection of its own, and the bulk throughput of one stream
// next to a plain securepeer stream.
//
//	go test -run '^$' -bench Tunnel -benchtime 3x ./cmd/securepeer
func BenchmarkTunnel(b *testing.B) {
	for _, mode := range []struct {
		name string
		env  []string
	}{
		{"multiplexed", nil},
		{"per-connection", []string{"SECUREPEER_TESTONLY_NO_MUX=1"}},
	} {
		b.Run("requests/"+mode.name, func(b *testing.B) {
			l := testutil.ListenLocal(b)
			startHTTP(b, l, nil, nil)
			r := newTunnelRig(b, l.Addr().String(), nil, mode.env)
			c := newHTTPClient()
			const requests, parallel = 1000, 50
			b.ResetTimer()
			for b.Loop() {
				work := make(chan int)
				var wg sync.WaitGroup
				for range parallel {
					wg.Go(func() {
						for i := range work {
							path := fmt.Sprintf("/n/%d", i)
							if got, err := httpGet(c, "http://"+r.localAddr+path); got != "answer to "+path || err != nil {
								b.Errorf("GET %s = %q, %v", path, got, err)
							}
						}
					})
				}
				for i := range requests {
					work <- i
				}
				close(work)
				wg.Wait()
			}
			b.ReportMetric(float64(requests*b.N)/b.Elapsed().Seconds(), "req/s")
			b.ReportMetric(0, "ns/op")
			if mode.env == nil && r.handshakes() != 1 {
				b.Errorf("listen accepted %d securepeer connections, want 1", r.handshakes())
			}
		})
	}
	const bulk = 256 << 20
	for _, mode := range []struct {
		name string
		env  []string
	}{
		{"multiplexed", nil},
		{"per-connection", []string{"SECUREPEER_TESTONLY_NO_MUX=1"}},
	} {
		b.Run("bulk/tunnel-"+mode.name, func(b *testing.B) {
			// A TCP service that sends bulk bytes to each connection.
			l := testutil.ListenLocal(b)
			chunk := make([]byte, bufSize)
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						for n := 0; n < bulk; n += len(chunk) {
							if _, err := c.Write(chunk); err != nil {
								return
							}
						}
					}()
				}
			}()
			b.Cleanup(func() { l.Close() })
			r := newTunnelRig(b, l.Addr().String(), nil, mode.env)
			b.SetBytes(bulk)
			b.ResetTimer()
			for b.Loop() {
				c, err := net.Dial("tcp", r.localAddr)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, c)
				c.Close()
				if n != bulk || err != nil {
					b.Fatalf("read %d bytes, %v; want %d\n%s", n, err, bulk, r)
				}
			}
		})
	}
	b.Run("bulk/plain-stream", func(b *testing.B) {
		te := newTestEnv(b)
		te.run("keygen", "-f", "server")
		te.run("keygen", "-f", "client")
		b.SetBytes(bulk)
		b.ResetTimer()
		for b.Loop() {
			// listen sends bulk bytes from its stdin; connect's stdout is
			// read here, as the tunnel's local connection is above.
			b.StopTimer()
			cmd := te.command("listen", "-i", "server", "127.0.0.1:0")
			cmd.Stdin = io.LimitReader(zeroReader{}, bulk)
			server, addr := te.startCmd("plain", cmd)
			client := te.command("connect", "-i", "client", "-expect", "server.pub", addr)
			out, err := client.StdoutPipe()
			if err != nil {
				b.Fatal(err)
			}
			client.Stdin = bytes.NewReader(nil)
			b.StartTimer()
			if err := client.Start(); err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, out)
			if n != bulk || err != nil {
				b.Fatalf("read %d bytes, %v; want %d", n, err, bulk)
			}
			if err := client.Wait(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			server.wait()
			os.Remove(filepath.Join(te.dir, "plain.addr"))
			b.StartTimer()
		}
	})
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestTunnelStartupRefused checks that a listen -to that multiplexes but
// refuses this side's key ends connect -from before it binds, with exit
// 3, as a listen -exec does in TestTunnelStartup.
func TestTunnelStartupRefused(t *testing.T) {
	te := newRefusingEnv(t)
	l := testutil.ListenLocal(t)
	startHTTP(t, l, nil, nil)
	server, peerAddr := te.start("server", "listen", "-i", "server", "-allow", "allowed", "-to", l.Addr().String(), "127.0.0.1:0")
	defer server.interrupt()
	addrFile := filepath.Join(te.dir, "client.addr")
	cmd := te.command("connect", "-i", "client", "-expect", "server.pub", "-from", "127.0.0.1:0", peerAddr)
	cmd.Env = append(cmd.Env, "SECUREPEER_TESTONLY_ADDR_FILE="+addrFile)
	var stderr testenv.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if code := exitStatus(t, waitCmd(t, cmd)); code != exitRejected {
		t.Errorf("connect -from exited %d, want %d\n%s", code, exitRejected, stderr.String())
	}
	if !strings.Contains(stderr.String(), "refused this identity") {
		t.Errorf("stderr does not say the peer refused this identity:\n%s", stderr.String())
	}
	if _, err := os.Stat(addrFile); err == nil {
		t.Errorf("connect -from listened on its local address before the peer was checked")
	}
}

// TestTunnelGracefulStop stops a listen -to whose tunnel carries a request
// in progress: listen takes no new streams, lets the request finish and
// then exits, or cuts it when the grace period runs out, and connect
// resets the local connection then rather than end it cleanly.
func TestTunnelGracefulStop(t *testing.T) {
	for _, tc := range []struct {
		name   string
		grace  string // SECUREPEER_TESTONLY_GRACE
		finish bool   // the request finishes within the grace period
	}{
		// A grace period no test outlasts: listen must exit once the
		// request ends, or the test fails waiting for it.
		{"request finishes", "1h", true},
		{"grace period cuts", "200ms", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := testutil.ListenLocal(t)
			release := make(chan struct{})
			released := false
			defer func() {
				if !released {
					close(release)
				}
			}()
			startHTTP(t, l, nil, release)
			r := newTunnelRig(t, l.Addr().String(), []string{"SECUREPEER_TESTONLY_GRACE=" + tc.grace}, nil)

			c, err := net.Dial("tcp", r.localAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(testTimeout))
			fmt.Fprintf(c, "GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			br := bufio.NewReader(c)
			if line, err := br.ReadString('\n'); !strings.HasPrefix(line, "HTTP/1.1 200") {
				t.Fatalf("GET /slow: %q, %v\n%s", line, err, r)
			}

			r.server.cmd.Process.Signal(syscall.SIGTERM)
			testutil.WaitFor(t, func() bool {
				return strings.Contains(r.server.stderr.String(), "stopping: no new connections; waiting up to")
			}, r)
			if got, err := httpGet(newHTTPClient(), "http://"+r.localAddr+"/new"); err == nil {
				t.Errorf("a new request while listen stops got %q", got)
			}

			if tc.finish {
				close(release)
				released = true
				if _, err := io.ReadAll(br); err != nil {
					t.Errorf("the request in progress did not finish cleanly: %v\n%s", err, r)
				}
			} else if _, err := io.ReadAll(br); err == nil {
				t.Errorf("the request cut by the end of the grace period ended cleanly\n%s", r)
			}
			c.Close()
			if code, want := r.server.wait(), 128+int(syscall.SIGTERM); code != want {
				t.Errorf("listen exited %d, want %d\n%s", code, want, r)
			}
			if tc.finish && strings.Contains(r.server.stderr.String(), "stopping: cutting") {
				t.Errorf("listen cut the request it was to let finish\n%s", r)
			}
			testutil.WaitFor(t, func() bool { return strings.Contains(r.client.stderr.String(), "the tunnel connection to") }, r)
			select {
			case <-r.client.done:
				t.Errorf("connect -from exited when its peer stopped\n%s", r)
			default:
			}
		})
	}
}

// TestTunnelPlainPeer checks that a peer that wants a plain stream, here
// connect without -from (securepeer-exec/1 or a plain stream), still reaches a multiplexing listen -to's target
// over a plain stream, as before.
func TestTunnelPlainPeer(t *testing.T) {
	l := testutil.ListenLocal(t)
	startHTTP(t, l, nil, nil)
	r := newTunnelRig(t, l.Addr().String(), nil, nil)
	cmd := r.te.command("connect", "-i", "client", "-expect", "server.pub", r.peerAddr)
	cmd.Stdin = strings.NewReader("GET /plain HTTP/1.0\r\n\r\n")
	var stderr testenv.SyncBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("connect: %v\n%s\n%s", err, stderr.String(), r)
	}
	if !strings.HasPrefix(string(out), "HTTP/1.0 200") || !strings.HasSuffix(string(out), "answer to /plain") {
		t.Errorf("connect's stdout: %q", out)
	}
	if n := strings.Count(r.server.stderr.String(), "next_proto="+tunnel.Protocol); n != 1 {
		t.Errorf("listen negotiated %s %d times, want once (the tunnel, not the plain peer)\n%s", tunnel.Protocol, n, r)
	}
}

// floodBin is the securepeer that BenchmarkTunnelStreamFlood attacks: by
// default this test binary, installed as securepeer by TestMain; a build
// of another commit to compare with.
var floodBin = flag.String("flood.bin", "", "BenchmarkTunnelStreamFlood: the securepeer binary to attack (default: this test binary)")

// BenchmarkTunnelStreamFlood is issue 16's stream flood, against the
// built command: one admitted connection to listen -to (without -allow)
// opens 4000 streams for a name listen has no -to for, sends 256 KiB on
// each and never closes them. It reports listen's resident memory before
// and at its peak (/proc's VmRSS and VmHWM), the lines it wrote on stderr
// (notices are level=WARN under -v, which tells the benchmark listen's
// address for any build), and the time a legitimate request through
// another connection takes afterwards.
//
//	go test -run '^$' -bench TunnelStreamFlood -benchtime 1x ./cmd/securepeer
//	go test -run '^$' -bench TunnelStreamFlood -benchtime 1x -flood.bin /tmp/securepeer-f0d4ddc ./cmd/securepeer
func BenchmarkTunnelStreamFlood(b *testing.B) {
	const streams, perStream = 4000, 256 << 10
	for b.Loop() {
		te := newKeys(b)
		target := testutil.ListenLocal(b)
		startHTTP(b, target, nil, nil)
		bin := "securepeer"
		if *floodBin != "" {
			bin = *floodBin
		}
		cmd := exec.Command(bin, "listen", "-v", "-i", "server", "-to", target.Addr().String(), "127.0.0.1:0")
		cmd.Dir, cmd.Env = te.dir, te.env
		var stderr testenv.SyncBuffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
		addrRE := regexp.MustCompile(`msg=listening .*addr=(\S+)`)
		var addr string
		testutil.WaitFor(b, func() bool {
			m := addrRE.FindStringSubmatch(stderr.String())
			if m != nil {
				addr = m[1]
			}
			return m != nil
		}, &stderr)
		before := procStatus(b, cmd.Process.Pid, "VmRSS")

		id, err := securepeer.GenerateIdentity()
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		conn, err := securepeer.Dial(ctx, "tcp", addr, &securepeer.Config{Identity: id, NextProtos: []string{tunnel.Protocol}})
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		sess := testutil.HostileSession(b, conn)
		start := time.Now()
		msg := testutil.StreamMsg("nope", perStream)
		refusedAtOpen, _ := testutil.FloodStreams(sess, streams, nil, func(int) []byte { return msg }, false)
		if _, err := sess.Ping(); err != nil { // listen has read every frame before it
			b.Fatalf("ping after the flood: %v\n%s", err, stderr.String())
		}
		flood := time.Since(start)
		settle(&stderr)
		peak := procStatus(b, cmd.Process.Pid, "VmHWM")
		after := procStatus(b, cmd.Process.Pid, "VmRSS")

		// A legitimate peer, on a connection of its own, still gets through.
		client, local := te.start("client", "connect", "-i", "client", "-expect", "server.pub", "-from", "127.0.0.1:0", addr)
		legit := time.Now()
		got, err := httpGet(newHTTPClient(), "http://"+local+"/legit")
		legitTook := time.Since(legit)
		if got != "answer to /legit" || err != nil {
			b.Errorf("a legitimate request after the flood: %q, %v\n%s\n%s", got, err, stderr.String(), client.stderr)
		}
		sess.Close()
		conn.Close()

		lines := strings.Count(stderr.String(), "\n")
		warns := strings.Count(stderr.String(), "level=WARN")
		b.ReportMetric(float64(before)/(1<<20), "MiB-rss-before")
		b.ReportMetric(float64(peak)/(1<<20), "MiB-rss-peak")
		b.ReportMetric(float64(peak-before)/(1<<20), "MiB-growth")
		b.ReportMetric(float64(after)/(1<<20), "MiB-rss-after")
		b.ReportMetric(float64(warns), "notice-lines")
		b.ReportMetric(float64(lines), "stderr-lines")
		b.ReportMetric(float64(refusedAtOpen), "writes-failed")
		b.ReportMetric(flood.Seconds(), "s-flood")
		b.ReportMetric(float64(legitTook.Microseconds())/1000, "ms-legit")
		b.ReportMetric(0, "ns/op")
	}
}

// settle waits until nothing has been written to log for a second, for at
// most testTimeout: a process that has finished its reaction to a flood.
func settle(log *testenv.SyncBuffer) {
	deadline := time.Now().Add(testTimeout)
	for n := -1; n != log.Len() && time.Now().Before(deadline); {
		n = log.Len()
		time.Sleep(time.Second)
	}
}

// procStatus is a field of /proc/PID/status in bytes, as VmRSS.
func procStatus(tb testing.TB, pid int, field string) int64 {
	tb.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		testenv.Unavailable(tb, fmt.Sprintf("no /proc/%d/status: %v", pid, err))
	}
	m := regexp.MustCompile(`(?m)^` + field + `:\s+(\d+) kB$`).FindSubmatch(data)
	if m == nil {
		tb.Fatalf("no %s in /proc/%d/status", field, pid)
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb << 10
}
