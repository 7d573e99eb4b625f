//go:build unix

package main

// Tests of forwarding in both directions (forward.go): several named
// forwards in one process, reverse forwarding (connect -to, listen -from),
// a name the peer has no -to for, and connect reconnecting after the
// listener restarts. They run the securepeer installed by TestMain.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/netutil"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/testutil"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/tunnel"
	"github.com/securepeer/securepeer/internal/testenv"
)

// startNamedHTTP serves "NAME PATH" on l, so a test sees which server a
// request reached.
func startNamedHTTP(t testing.TB, l net.Listener, name string) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

// TestForwardBothWays runs two named forwards from connect to listen's
// targets, one reverse forward from listen to connect's target, and a name
// that listen has no -to for, all over one securepeer connection.
func TestForwardBothWays(t *testing.T) {
	t.Parallel()
	te := newKeys(t)
	web, api, home := testutil.ListenLocal(t), testutil.ListenLocal(t), testutil.ListenLocal(t)
	startNamedHTTP(t, web, "web")
	startNamedHTTP(t, api, "api")
	startNamedHTTP(t, home, "home")

	server, addrs := te.start("server", "listen", "-v", "-i", "server", "-allow", "allowed",
		"-to", "web="+web.Addr().String(), "-to", "api="+api.Addr().String(),
		"-from", "home=127.0.0.1:0", "127.0.0.1:0")
	sa := strings.Split(addrs, "\n")
	if len(sa) != 2 {
		t.Fatalf("listen announced %q, want its address and one -from", addrs)
	}
	client, caddrs := te.start("client", "connect", "-i", "client", "-expect", "server.pub",
		"-from", "web=127.0.0.1:0", "-from", "api=127.0.0.1:0", "-from", "nope=127.0.0.1:0",
		"-to", "home="+home.Addr().String(), sa[0])
	ca := strings.Split(caddrs, "\n")
	if len(ca) != 3 {
		t.Fatalf("connect announced %q, want three -from addresses", caddrs)
	}
	logs := testutil.Stringer(func() string {
		return fmt.Sprintf("listen:\n%s\nconnect:\n%s", server.stderr, client.stderr)
	})
	c := newHTTPClient()
	for _, tc := range []struct{ local, want string }{
		{ca[0], "web /a"},
		{ca[1], "api /a"},
		{sa[1], "home /a"}, // reverse: from listen's side to connect's target
	} {
		if got, err := httpGet(c, "http://"+tc.local+"/a"); got != tc.want || err != nil {
			t.Errorf("GET via %s = %q, %v; want %q\n%s", tc.local, got, err, tc.want, logs)
		}
	}
	if got, err := httpGet(c, "http://"+ca[2]+"/a"); err == nil {
		t.Errorf("GET via -from nope=... reached %q; want a reset, as listen has no -to named nope", got)
	}
	testutil.WaitFor(t, func() bool {
		return strings.Contains(client.stderr.String(), `the peer refused the stream: no -to for "nope" on its side; it has "api", "web"`)
	}, logs)
	if n := strings.Count(server.stderr.String(), "handshake complete"); n != 1 {
		t.Errorf("listen accepted %d securepeer connections, want 1\n%s", n, logs)
	}
	if code := client.interrupt(); code != exitInterrupted {
		t.Errorf("connect exited %d after Ctrl-C, want %d\n%s", code, exitInterrupted, logs)
	}
	if code := server.interrupt(); code != exitInterrupted {
		t.Errorf("listen exited %d after Ctrl-C, want %d\n%s", code, exitInterrupted, logs)
	}
	if s := logs.String(); strings.Contains(s, "panic") || strings.Contains(s, "DATA RACE") {
		t.Error(s)
	}
}

// TestForwardNoPeer checks that listen -from with no peer connected resets
// the local connection and says why.
func TestForwardNoPeer(t *testing.T) {
	t.Parallel()
	te := newKeys(t)
	server, addrs := te.start("server", "listen", "-i", "server", "-allow", "allowed", "-from", "127.0.0.1:0", "127.0.0.1:0")
	sa := strings.Split(addrs, "\n")
	if _, err := httpGet(newHTTPClient(), "http://"+sa[1]+"/"); err == nil {
		t.Error("a local connection with no peer connected was not reset")
	}
	testutil.WaitFor(t, func() bool {
		return strings.Contains(server.stderr.String(), "no peer is connected with a tunnel to carry it")
	}, server.stderr)
}

// TestTunnelReconnect kills the listener under a tunnel that forwards
// both ways and starts it again: connect reconnects by itself, and
// requests work again in both directions, the reverse one (listen -from
// to connect -to) included; with -no-reconnect, connect exits 1 instead.
// connect reaches listen through a proxy the test keeps for its whole run
// (a restarted listen cannot be sure to get its old port back: another
// test may have taken it), which the test points at each listen in turn.
func TestTunnelReconnect(t *testing.T) {
	t.Parallel()
	for _, noReconnect := range []bool{false, true} {
		t.Run(fmt.Sprintf("no-reconnect=%v", noReconnect), func(t *testing.T) {
			t.Parallel()
			te := newKeys(t)
			web, home := testutil.ListenLocal(t), testutil.ListenLocal(t)
			startNamedHTTP(t, web, "web")
			startNamedHTTP(t, home, "home")
			proxy := startProxy(t)
			listenArgs := []string{"listen", "-i", "server", "-allow", "allowed", "-to", web.Addr().String(), "-from", "back=127.0.0.1:0", "127.0.0.1:0"}
			server, addrs := te.start("server", listenArgs...)
			sa := strings.Split(addrs, "\n")
			proxy.set(sa[0])
			args := []string{"connect", "-i", "client", "-expect", "server.pub", "-from", "127.0.0.1:0", "-to", "back=" + home.Addr().String()}
			if noReconnect {
				args = append(args, "-no-reconnect")
			}
			client, local := te.start("client", append(args, proxy.addr())...)
			c := newHTTPClient()
			check := func(when, back string) {
				t.Helper()
				if got, err := httpGet(c, "http://"+local+"/"+when); got != "web /"+when || err != nil {
					t.Errorf("GET /%s forward = %q, %v\n%s", when, got, err, client.stderr)
				}
				// The reverse forward needs the peer to have met connect.
				testutil.WaitFor(t, func() bool {
					got, err := httpGet(c, "http://"+back+"/"+when)
					return got == "home /"+when && err == nil
				}, client.stderr)
			}
			check("before", sa[1])

			proxy.set("") // refuse while no listen runs
			server.cmd.Process.Signal(syscall.SIGKILL)
			server.wait()
			if noReconnect {
				if code := client.wait(); code != exitFailure {
					t.Errorf("connect -no-reconnect exited %d when its peer died, want %d\n%s", code, exitFailure, client.stderr)
				}
				if !strings.Contains(client.stderr.String(), "not reconnecting, as -no-reconnect asks") {
					t.Errorf("connect -no-reconnect did not say why it ended:\n%s", client.stderr)
				}
				return
			}
			_, addrs = te.start("server2", listenArgs...)
			sa = strings.Split(addrs, "\n")
			proxy.set(sa[0])
			testutil.WaitFor(t, func() bool { return strings.Contains(client.stderr.String(), "reconnected to "+proxy.addr()) }, client.stderr)
			check("after", sa[1])
			select {
			case <-client.done:
				t.Errorf("connect exited when its peer restarted\n%s", client.stderr)
			default:
			}
		})
	}
}

// A tcpProxy is a TCP proxy on a loopback port of its own, which it keeps
// until the test ends: it joins each connection to one it makes to the
// address set last, or closes it at once while none is set. Each
// direction's end is passed on as a half-close, and a failure either way
// resets both connections.
type tcpProxy struct {
	l net.Listener

	mu     sync.Mutex
	target string
}

func startProxy(t testing.TB) *tcpProxy {
	t.Helper()
	p := &tcpProxy{l: testutil.ListenLocal(t)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := p.l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { p.join(c.(*net.TCPConn)) })
		}
	})
	t.Cleanup(func() {
		p.l.Close()
		wg.Wait()
	})
	return p
}

func (p *tcpProxy) addr() string { return p.l.Addr().String() }

// set points the proxy at target; "" refuses new connections. It leaves
// those in progress alone.
func (p *tcpProxy) set(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
}

func (p *tcpProxy) join(c *net.TCPConn) {
	defer c.Close()
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	if target == "" {
		return
	}
	b, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer b.Close()
	errs := make(chan error, 2)
	pipe := func(dst, src *net.TCPConn) {
		_, err := io.Copy(dst, src)
		if err == nil {
			err = dst.CloseWrite()
		}
		errs <- err
	}
	go pipe(b.(*net.TCPConn), c)
	go pipe(c, b.(*net.TCPConn))
	for range 2 {
		if err := <-errs; err != nil {
			netutil.ResetClose(c)
			netutil.ResetClose(b)
		}
	}
}

// runTool runs a real client and returns its stdout.
func runTool(env []string, path string, args ...string) (string, error) {
	cmd := exec.Command(path, args...)
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v: %s", filepath.Base(path), err, stderr.String())
	}
	return string(out), nil
}

// TestTimeouts checks connect -w against a peer that accepts TCP but never
// answers, and -idle on a stdio stream where neither side sends.
func TestTimeouts(t *testing.T) {
	t.Parallel()
	te := newKeys(t)
	t.Run("w", func(t *testing.T) {
		t.Parallel()
		silent := testutil.ListenLocal(t) // the kernel accepts; nobody answers
		defer silent.Close()
		cmd := te.command("connect", "-w", "300ms", "-i", "client", "-expect", "server.pub", silent.Addr().String())
		var stderr testenv.SyncBuffer
		cmd.Stderr = &stderr
		if code := exitStatus(t, waitCmd(t, startCmd(t, cmd))); code != exitFailure {
			t.Errorf("connect -w exited %d, want %d\n%s", code, exitFailure, stderr.String())
		}
		if !strings.Contains(stderr.String(), "timed out") {
			t.Errorf("connect -w does not say it timed out:\n%s", stderr.String())
		}
	})
	t.Run("idle", func(t *testing.T) {
		t.Parallel()
		lcmd := te.command("listen", "-idle", "500ms", "-i", "server", "127.0.0.1:0")
		lin, err := lcmd.StdinPipe() // open and silent
		if err != nil {
			t.Fatal(err)
		}
		defer lin.Close()
		server, addr := te.startCmd("idle", lcmd)
		ccmd := te.command("connect", "-i", "client", "-expect", "server.pub", addr)
		cin, err := ccmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		defer cin.Close()
		var cerr testenv.SyncBuffer
		ccmd.Stderr = &cerr
		startCmd(t, ccmd)
		if code := server.wait(); code != exitFailure {
			t.Errorf("listen -idle exited %d, want %d\n%s", code, exitFailure, server.stderr)
		}
		if !strings.Contains(server.stderr.String(), "no data either way for 500ms (-idle)") {
			t.Errorf("listen -idle does not say why it ended:\n%s", server.stderr)
		}
		if code := exitStatus(t, waitCmd(t, ccmd)); code != exitFailure {
			t.Errorf("connect exited %d after its peer's -idle, want %d\n%s", code, exitFailure, cerr.String())
		}
		if !strings.Contains(cerr.String(), "aborted the stream") {
			t.Errorf("connect does not say the stream was aborted:\n%s", cerr.String())
		}
	})
}

// startPythonHTTP serves dir with python3's http.server on a port of its
// own, which it picks (port 0) and prints, and returns its address.
func startPythonHTTP(t *testing.T, python, dir string) string {
	t.Helper()
	cmd := exec.Command(python, "-u", "-m", "http.server", "--bind", "127.0.0.1", "--directory", dir, "0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// "Serving HTTP on 127.0.0.1 port 43567 (http://127.0.0.1:43567/) ..."
	line, err := bufio.NewReader(out).ReadString('\n')
	m := regexp.MustCompile(`port (\d+) `).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("python3 -m http.server said %q, %v; want the port it serves on", line, err)
	}
	go io.Copy(io.Discard, out)
	return "127.0.0.1:" + m[1]
}

// TestRealClients puts curl and python3's http.server on both ends of a
// tunnel: 100 parallel requests and a large download checked by hash,
// forward (listen -to, connect -from) and reverse (connect -to, listen
// -from), named, in one pair of processes over one connection.
func TestRealClients(t *testing.T) {
	t.Parallel()
	curl := testenv.RequireTool(t, "curl")
	python := testenv.RequireTool(t, "python3")
	te := newKeys(t)
	dir := t.TempDir()
	big := bigBody()
	if err := os.WriteFile(filepath.Join(dir, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), []byte(fmt.Sprintf("file %d\n", i)), 0o644)
	}
	serverSite := startPythonHTTP(t, python, dir) // behind listen
	clientSite := startPythonHTTP(t, python, dir) // behind connect

	server, addrs := te.start("server", "listen", "-v", "-i", "server", "-allow", "allowed",
		"-to", "site="+serverSite, "-from", "back=127.0.0.1:0", "127.0.0.1:0")
	sa := strings.Split(addrs, "\n")
	client, local := te.start("client", "connect", "-i", "client", "-expect", "server.pub",
		"-from", "site=127.0.0.1:0", "-to", "back="+clientSite, sa[0])
	logs := testutil.Stringer(func() string {
		return fmt.Sprintf("listen:\n%s\nconnect:\n%s", server.stderr, client.stderr)
	})
	for _, dir := range []struct{ name, local string }{{"forward", local}, {"reverse", sa[1]}} {
		var wg sync.WaitGroup
		for i := range 100 {
			wg.Go(func() {
				want := fmt.Sprintf("file %d\n", i)
				got, err := runTool(nil, curl, "-sS", "--max-time", "60", fmt.Sprintf("http://%s/f%d", dir.local, i))
				if got != want || err != nil {
					t.Errorf("%s: curl /f%d = %q, %v; want %q", dir.name, i, got, err, want)
				}
			})
		}
		wg.Wait()
		got, err := runTool(nil, curl, "-sS", "--max-time", "60", "http://"+dir.local+"/big")
		if err != nil || sha256.Sum256([]byte(got)) != sha256.Sum256(big) {
			t.Errorf("%s: curl /big: %d bytes whose SHA-256 is not the file's (%d bytes), %v\n%s", dir.name, len(got), len(big), err, logs)
		}
	}
	if n := strings.Count(server.stderr.String(), "handshake complete"); n != 1 {
		t.Errorf("listen accepted %d securepeer connections, want 1\n%s", n, logs)
	}
	// Every transfer was complete: neither side may say otherwise (issue
	// 17: 10 to 22 curls in 100 were reported cut).
	if s := logs.String(); strings.Contains(s, "data may be missing") || strings.Contains(s, "cut") {
		t.Errorf("a side reported a complete transfer as cut:\n%s", s)
	}
}

// startSSHD serves each TCP connection to the address it returns with its
// own OpenSSH sshd -i (inetd mode), unprivileged, as inetd or systemd's
// socket activation do, so that sshd needs no port of its own (none is
// picked, freed and bound again). The host key and a user's key are made
// here; it returns the address and the user's private key file.
func startSSHD(t *testing.T) (addr, userKey string) {
	t.Helper()
	sshd := testenv.RequireTool(t, "/usr/sbin/sshd") // sshd wants its absolute path
	keygen := testenv.RequireTool(t, "ssh-keygen")
	dir := t.TempDir()
	for _, k := range []string{"host", "user"} {
		if _, err := runTool(nil, keygen, "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)); err != nil {
			t.Fatal(err)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "user.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`HostKey %s
AuthorizedKeysFile %s
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
PidFile none
`, filepath.Join(dir, "host"), filepath.Join(dir, "authorized_keys"))
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// sshd run by root insists on its privilege separation directory,
		// which the package's tmpfiles.d makes at boot, not in a container.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatal(err)
		}
	}
	l := testutil.ListenLocal(t)
	var stderr testenv.SyncBuffer
	var mu sync.Mutex
	var running []*exec.Cmd
	var wg sync.WaitGroup
	accepting := make(chan struct{})
	go func() {
		defer close(accepting)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			f, err := c.(*net.TCPConn).File()
			c.Close()
			if err != nil {
				t.Error(err)
				continue
			}
			cmd := exec.Command(sshd, "-i", "-e", "-f", filepath.Join(dir, "sshd_config"))
			cmd.Stdin, cmd.Stdout, cmd.Stderr = f, f, &stderr
			err = cmd.Start()
			f.Close()
			if err != nil {
				t.Error(err)
				continue
			}
			mu.Lock()
			running = append(running, cmd)
			mu.Unlock()
			wg.Go(func() { cmd.Wait() })
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-accepting
		mu.Lock()
		for _, cmd := range running {
			cmd.Process.Kill()
		}
		mu.Unlock()
		wg.Wait()
		if t.Failed() {
			t.Logf("sshd:\n%s", stderr.String())
		}
	})
	return l.Addr().String(), filepath.Join(dir, "user")
}

// sshLoginArgs are the ssh options that log in to startSSHD's sshd as its
// user, with userKey, asking nothing and keeping no host key.
func sshLoginArgs(t *testing.T, userKey string) []string {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return []string{"-F", "/dev/null", "-i", userKey, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-l", u.Username}
}

// TestSSHThroughTunnel logs in to a real sshd through securepeer: with
// ssh's ProxyCommand running connect (a plain stream to listen -to), and
// through a connect -from forward.
func TestSSHThroughTunnel(t *testing.T) {
	t.Parallel()
	ssh := testenv.RequireTool(t, "ssh")
	sshdAddr, userKey := startSSHD(t)
	te := newKeys(t)
	server, peerAddr := te.start("server", "listen", "-i", "server", "-allow", "allowed", "-to", sshdAddr, "127.0.0.1:0")
	sshArgs := sshLoginArgs(t, userKey)

	proxy := fmt.Sprintf("securepeer connect -i %s -expect %s %s",
		filepath.Join(te.dir, "client"), filepath.Join(te.dir, "server.pub"), peerAddr)
	out, err := runTool(te.env, ssh, append(sshArgs, "-o", "ProxyCommand="+proxy, "sshd.invalid", "echo logged in via ProxyCommand")...)
	if out != "logged in via ProxyCommand\n" || err != nil {
		t.Errorf("ssh with ProxyCommand: %q, %v\n%s", out, err, server.stderr)
	}

	client, local := te.start("client", "connect", "-i", "client", "-expect", "server.pub", "-from", "127.0.0.1:0", peerAddr)
	host, port, _ := net.SplitHostPort(local)
	out, err = runTool(te.env, ssh, append(sshArgs, "-p", port, host, "echo logged in via a forward")...)
	if out != "logged in via a forward\n" || err != nil {
		t.Errorf("ssh through connect -from: %q, %v\n%s\n%s", out, err, server.stderr, client.stderr)
	}
}

// fakeTunnelPeer is a tunnel connection from the peer with key, as
// tunnelPeers sees it; ending its session is the peer leaving.
func fakeTunnelPeer(t *testing.T, key peerKey, addr string) *tunnelConn {
	t.Helper()
	a, b := net.Pipe()
	m := tunnel.NewSession(pipeConn{a}, tunnel.Config{Client: true, Addr: addr})
	t.Cleanup(func() {
		m.Fail(io.EOF)
		b.Close()
	})
	return &tunnelConn{s: &stream{peer: key, remoteAddr: addr}, m: m}
}

// pipeConn is one end of a net.Pipe as a tunnel.Conn.
type pipeConn struct{ net.Conn }

func (c pipeConn) Abort() { c.Close() }

// TestTunnelPeersBinding checks which tunnel connection listen -from's
// connections take: the first peer's, by key, over its newest connection,
// until the last of that key leaves; then the one connected longest; and
// that every change is said.
func TestTunnelPeersBinding(t *testing.T) {
	keys := make([]securepeer.PublicKey, 3)
	for i := range keys {
		id, err := securepeer.GenerateIdentity()
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = id.PublicKey()
	}
	notes := new(testutil.NoteLog)
	p := &tunnelPeers{notef: notes.Notef}
	a1 := fakeTunnelPeer(t, keys[0], "10.0.0.1:1")
	b1 := fakeTunnelPeer(t, keys[1], "10.0.0.2:1")
	a2 := fakeTunnelPeer(t, keys[0], "10.0.0.1:2")
	c1 := fakeTunnelPeer(t, keys[2], "10.0.0.3:1")
	leave := func(c *tunnelConn) {
		c.m.Fail(io.EOF)
		p.remove(c)
	}
	for _, step := range []struct {
		name string
		do   func()
		want *tunnelConn // nil: none
		note string      // in the notice the step gives, if any
	}{
		{"none yet", func() {}, nil, ""},
		{"the first binds", func() { p.add(a1) }, a1, "now go to " + keys[0].Fingerprint() + ", which connected from 10.0.0.1:1"},
		{"another key does not take over", func() { p.add(b1) }, a1, keys[1].Fingerprint() + " connected a tunnel from 10.0.0.2:1; -from connections still go to " + keys[0].Fingerprint()},
		{"the same key reconnects", func() { p.add(a2) }, a2, ""},
		{"its newest connection leaves", func() { leave(a2) }, a1, ""},
		{"the bound key leaves", func() { leave(a1) }, b1, keys[0].Fingerprint() + ", which -from connections went to, has left; they now go to " + keys[1].Fingerprint()},
		{"the last leaves", func() { leave(b1) }, nil, "they are reset until a tunnel peer connects"},
		{"the next binds", func() { p.add(c1) }, c1, "now go to " + keys[2].Fingerprint()},
	} {
		before := notes.Len()
		step.do()
		got, err := p.carrier(context.Background())
		if want := step.want; (want == nil) != (got == nil) || want != nil && got != want.m || (err == nil) != (want != nil) {
			t.Errorf("%s: carrier %p, %v; want %p", step.name, got, err, step.want)
		}
		switch n := notes.Len() - before; {
		case step.note == "" && n != 0:
			t.Errorf("%s: a notice where none is due:\n%s", step.name, notes)
		case step.note != "" && (n != 1 || notes.Count(step.note) != 1):
			t.Errorf("%s: no notice %q:\n%s", step.name, step.note, notes)
		}
	}
}

// background starts securepeer with args, which listens on nothing (a
// connect -to), and returns it at once.
func (te *testEnv) background(args ...string) *background {
	te.t.Helper()
	return te.startBackground(te.command(args...))
}

// TestForwardFromFirstPeer runs listen -from with two connect -to peers of
// different keys: the first keeps the -from connections while a second
// connects, and they go to the second, with a notice, once the first
// leaves. Before, whichever connected last took them.
func TestForwardFromFirstPeer(t *testing.T) {
	t.Parallel()
	te := newKeys(t)
	te.run("keygen", "-f", "other")
	one, two := testutil.ListenLocal(t), testutil.ListenLocal(t)
	startNamedHTTP(t, one, "one")
	startNamedHTTP(t, two, "two")
	server, addrs := te.start("server", "listen", "-i", "server", "-from", "127.0.0.1:0", "127.0.0.1:0")
	sa := strings.Split(addrs, "\n")
	first := te.background("connect", "-i", "client", "-expect", "server.pub", "-to", one.Addr().String(), sa[0])
	logs := testutil.Stringer(func() string { return fmt.Sprintf("listen:\n%s\nfirst:\n%s", server.stderr, first.stderr) })
	c := newHTTPClient()
	get := func(want string) {
		t.Helper()
		if got, err := httpGet(c, "http://"+sa[1]+"/x"); got != want+" /x" || err != nil {
			t.Errorf("GET via listen -from = %q, %v; want %q\n%s", got, err, want, logs)
		}
	}
	testutil.WaitFor(t, func() bool { return strings.Contains(server.stderr.String(), "-from connections now go to") }, logs)
	get("one")

	second := te.background("connect", "-i", "other", "-expect", "server.pub", "-to", two.Addr().String(), sa[0])
	testutil.WaitFor(t, func() bool { return strings.Contains(server.stderr.String(), "-from connections still go to") }, logs)
	get("one")

	if code := first.interrupt(); code != exitInterrupted {
		t.Errorf("the first connect exited %d, want %d\n%s", code, exitInterrupted, logs)
	}
	testutil.WaitFor(t, func() bool { return strings.Contains(server.stderr.String(), "has left; they now go to") }, logs)
	get("two")
	second.interrupt()
}

// TestForwardUnixSockets runs -to and -from with Unix sockets (unix:PATH),
// as ssh -L does: a web server on a socket behind listen -to, reached
// through a socket connect -from makes, with mode 0600, and removes on
// exit; a -to socket that does not exist refuses the stream with its
// reason; and a -from socket that exists already is not taken over.
func TestForwardUnixSockets(t *testing.T) {
	t.Parallel()
	te := newKeys(t)
	dir := t.TempDir()
	webSock, local := filepath.Join(dir, "web.sock"), filepath.Join(dir, "local.sock")
	wl, err := net.Listen("unix", webSock)
	if err != nil {
		t.Fatal(err)
	}
	startNamedHTTP(t, wl, "web")
	server, peerAddr := te.start("server", "listen", "-i", "server", "-allow", "allowed",
		"-to", "web=unix:"+webSock, "-to", "gone=unix:"+filepath.Join(dir, "missing.sock"), "127.0.0.1:0")
	client, announced := te.start("client", "connect", "-i", "client", "-expect", "server.pub",
		"-from", "web=unix:"+local, "-from", "gone=127.0.0.1:0", peerAddr)
	logs := testutil.Stringer(func() string { return fmt.Sprintf("listen:\n%s\nconnect:\n%s", server.stderr, client.stderr) })
	addrs := strings.Split(announced, "\n")
	if len(addrs) != 2 || addrs[0] != local {
		t.Fatalf("connect announced %q, want %s and a TCP address", announced, local)
	}

	fi, err := os.Stat(local)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("connect's socket: %v, %v; want a socket with mode 0600", fi, err)
	}
	overUnix := &http.Client{Timeout: testTimeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", local)
		},
	}}
	if got, err := httpGet(overUnix, "http://socket/a"); got != "web /a" || err != nil {
		t.Errorf("GET through the sockets = %q, %v\n%s", got, err, logs)
	}

	if got, err := httpGet(newHTTPClient(), "http://"+addrs[1]+"/a"); err == nil {
		t.Errorf("GET to a -to socket that does not exist = %q; want a reset", got)
	}
	testutil.WaitFor(t, func() bool {
		return strings.Contains(client.stderr.String(), "the peer refused the stream: connect failed: no such file or directory")
	}, logs)

	again := te.command("connect", "-i", "client", "-expect", "server.pub", "-from", "unix:"+local, peerAddr)
	var stderr testenv.SyncBuffer
	again.Stderr = &stderr
	if code := exitStatus(t, waitCmd(t, startCmd(t, again))); code != exitFailure {
		t.Errorf("a second connect -from on the same socket exited %d, want %d\n%s", code, exitFailure, stderr.String())
	}
	if want := local + " exists; if no program uses it any more"; !strings.Contains(stderr.String(), want) {
		t.Errorf("the second connect does not say %q:\n%s", want, stderr.String())
	}
	if got, err := httpGet(overUnix, "http://socket/b"); got != "web /b" || err != nil {
		t.Errorf("GET through the sockets after the second connect = %q, %v\n%s", got, err, logs)
	}

	if code := client.interrupt(); code != exitInterrupted {
		t.Errorf("connect exited %d after Ctrl-C, want %d\n%s", code, exitInterrupted, logs)
	}
	if _, err := os.Stat(local); !os.IsNotExist(err) {
		t.Errorf("connect left its socket behind: %v", err)
	}
}
