//go:build linux

package main

// The command through NATs: securepeer relay on a public host of the NAT
// lab (internal/natlab), listen -p2p behind one kind of NAT and connect
// behind another, each the built command (this test binary, as
// TestMain installs it) in its host's network namespace. The p2p module's
// tests cover every pair of NAT kinds at the engine's level; these show
// that each way a user takes works: stdio, -exec and its exit status, a
// tunnel with curl and ssh, the notices of how a connection runs, each
// failure's sentence, and a relay lost mid-session. They need root, as
// the lab does, and skip without it (fail, with SECUREPEER_REQUIRE_NETNS=1).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/testutil"
	"github.com/securepeer/securepeer/internal/natlab"
	"github.com/securepeer/securepeer/internal/testenv"
)

// A natEnv is a NAT lab whose hosts run the command, sharing a test
// directory for their keys and files.
type natEnv struct {
	t   *testing.T
	lab *natlab.Lab
	te  *testEnv
}

func newNATEnv(t *testing.T) *natEnv {
	t.Helper()
	lab := natlab.New(t)
	return &natEnv{t: t, lab: lab, te: newTestEnv(t)}
}

// sub is ne for the subtest t.
func (ne *natEnv) sub(t *testing.T) *natEnv {
	te := *ne.te
	te.t = t
	return &natEnv{t: t, lab: ne.lab, te: &te}
}

// command returns securepeer with args, to run in h's namespace.
func (ne *natEnv) command(h *natlab.Host, args ...string) *exec.Cmd {
	cmd := h.Command(context.Background(), "securepeer", args...)
	cmd.Dir = ne.te.dir
	cmd.Env = append([]string(nil), ne.te.env...)
	return cmd
}

// key makes an identity file called name (and name.pub), once.
func (ne *natEnv) key(name string) string {
	if _, err := os.Stat(filepath.Join(ne.te.dir, name)); err != nil {
		ne.te.run("keygen", "-f", name, "-C", name)
	}
	return name
}

// relay starts securepeer relay on a new public host, and returns it
// with its address.
func (ne *natEnv) relay(name string) (*background, string) {
	ne.t.Helper()
	h := ne.lab.AddPublicHost(name)
	b, addrs := ne.te.startCmd(name, ne.command(h, "relay", "-i", ne.key(name), net.JoinHostPort(h.Addr().String(), "4001")))
	addr, _, _ := strings.Cut(addrs, "\n")
	return b, addr
}

// listen starts listen -p2p as name on h, with args, and returns it once
// it holds a reservation.
func (ne *natEnv) listen(h *natlab.Host, name string, args ...string) *background {
	ne.t.Helper()
	b, _ := ne.te.startCmd(name, ne.command(h, append([]string{"listen", "-i", ne.key(name)}, args...)...))
	return b
}

// run runs connect (or any subcommand) on h to its end, with stdin.
func (ne *natEnv) run(h *natlab.Host, stdin string, args ...string) (stdout, stderr string, code int) {
	ne.t.Helper()
	cmd := ne.command(h, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		ne.t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(testTimeout):
		cmd.Process.Kill()
		<-done
		ne.t.Fatalf("securepeer %s did not end within %v\n%s", strings.Join(args, " "), testTimeout, errOut.String())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		ne.t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// A natSession is a connect whose stdin and stdout the test holds, line
// by line.
type natSession struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Reader
	stderr *testenv.SyncBuffer
	done   chan struct{}
	err    error
}

// open starts a connect on h with args, whose stdin and stdout the test
// drives.
func (ne *natEnv) open(h *natlab.Host, args ...string) *natSession {
	ne.t.Helper()
	cmd := ne.command(h, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		ne.t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		ne.t.Fatal(err)
	}
	s := &natSession{t: ne.t, cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout), stderr: new(testenv.SyncBuffer), done: make(chan struct{})}
	cmd.Stderr = s.stderr
	if err := cmd.Start(); err != nil {
		ne.t.Fatal(err)
	}
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	ne.t.Cleanup(func() {
		cmd.Process.Kill()
		<-s.done
	})
	return s
}

// echo sends a line and waits for it to come back as the peer's -exec
// returns it (transform), and returns how long that took.
func (s *natSession) echo(line, want string) time.Duration {
	s.t.Helper()
	start := time.Now()
	if _, err := io.WriteString(s.stdin, line+"\n"); err != nil {
		s.t.Fatalf("sending %q: %v\n%s", line, err, s.stderr)
	}
	type read struct {
		s   string
		err error
	}
	ch := make(chan read, 1)
	go func() {
		got, err := s.out.ReadString('\n')
		ch <- read{got, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil || r.s != want+"\n" {
			s.t.Fatalf("echo of %q: %q, %v, want %q\n%s", line, r.s, r.err, want, s.stderr)
		}
	case <-time.After(testTimeout):
		s.t.Fatalf("no echo of %q within %v\n%s", line, testTimeout, s.stderr)
	}
	return time.Since(start)
}

// upperLines is a -exec command that answers each line at once, upper
// case (tr alone would wait for the end of its input to flush), and
// exits 7.
const upperLines = `while read -r l; do printf '%s\n' "$l" | tr a-z A-Z; done; exit 7`

// wait waits for the session to end, and returns its exit code.
func (s *natSession) wait() int {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(testTimeout):
		s.t.Fatalf("connect did not end within %v\n%s", testTimeout, s.stderr)
	}
	var ee *exec.ExitError
	if errors.As(s.err, &ee) {
		return ee.ExitCode()
	}
	if s.err != nil {
		s.t.Fatal(s.err)
	}
	return 0
}

// says waits until the session's stderr matches re.
func (s *natSession) says(re string) {
	s.t.Helper()
	rx := regexp.MustCompile(re)
	testutil.WaitFor(s.t, func() bool { return rx.MatchString(s.stderr.String()) }, testutil.Stringer(func() string {
		return fmt.Sprintf("connect's stderr does not match %q:\n%s", re, s.stderr)
	}))
}

// Notices of how a connection runs.
const (
	sayDirect  = `(?m)^securepeer: connected to SHA256:\S+ directly \(\S+\)`
	sayRelayed = `(?m)^securepeer: connected to SHA256:\S+ through relay /ip4/\S+ \(relayed\)$`
	sayNowDir  = `(?m)^securepeer: the connection to SHA256:\S+ is now direct`
)

// noDirectWait makes connect open its first stream on the relay at once,
// without the engine's DirectWait for a hole punch: every punch in the
// lab completes within DirectWait, as one on a short path does, so this
// is how the lab shows a punch that completes after the session began on
// the relay, as one on a slower path does (or on a later attempt).
const noDirectWait = "SECUREPEER_TESTONLY_DIRECT_WAIT=-1ns"

// TestNATStdio connects, by key, to a listen -p2p -exec behind a NAT from
// behind another, for pairs that go direct at once, that stay relayed,
// and that go direct only once the session runs on the relay: each says
// how it runs, the stream carries the command's input and output both
// ways, and connect exits with the command's status. It logs the time to
// the first byte back.
func TestNATStdio(t *testing.T) {
	ne := newNATEnv(t)
	_, relay := ne.relay("relay")
	for i, tc := range []struct {
		name             string
		listener, dialer natlab.Kind
		env              []string // connect's
		say              []string // the notices, in order
		full             bool     // the punched connection is a full handshake
	}{
		{"", natlab.PortRestricted, natlab.PortRestricted, nil, []string{sayDirect}, false},
		{"", natlab.Symmetric, natlab.Symmetric, nil, []string{sayRelayed}, false},
		// A symmetric NAT that picks ports at random defeats port
		// prediction (p2p/PROTOCOL.md, "Relayed, then direct").
		{"", natlab.Firewall, natlab.SymmetricRandom, nil, []string{sayRelayed}, false},
		// Only the symmetric NAT's dial gets through, to the full
		// cone's listening port, on the first attempt; the listener
		// speaks first (p2p/PROTOCOL.md, "Who is the client"). A NAT
		// that picks ports at random, because against one that counts
		// them the full cone's dial to a predicted port may meet the
		// listener's in a simultaneous open instead.
		{"", natlab.SymmetricRandom, natlab.FullCone, nil, []string{sayDirect}, true},
		{"-late", natlab.PortRestricted, natlab.PortRestricted, []string{noDirectWait}, []string{sayRelayed, sayNowDir}, false},
	} {
		t.Run(fmt.Sprintf("%s-%s%s", tc.listener, tc.dialer, tc.name), func(t *testing.T) {
			ne := ne.sub(t)
			lh := ne.lab.AddHost(fmt.Sprintf("l%d", i), tc.listener)
			dh := ne.lab.AddHost(fmt.Sprintf("d%d", i), tc.dialer)
			server := ne.key(fmt.Sprintf("server%d", i))
			client := ne.key(fmt.Sprintf("client%d", i))
			l := ne.listen(lh, server, "-v", "-relay", relay, "-allow", client+".pub", "-exec", upperLines)
			start := time.Now()
			ne.te.env = append(slices.Clip(ne.te.env), tc.env...)
			s := ne.open(dh, "connect", "-i", client, "-relay", relay, server+".pub")
			s.echo("hello", "HELLO")
			t.Logf("%s listener, %s dialer: first byte back %v after connect started", tc.listener, tc.dialer, time.Since(start).Round(time.Millisecond))
			for _, re := range tc.say {
				s.says(re)
			}
			s.echo("again", "AGAIN")
			s.stdin.Close()
			if code := s.wait(); code != 7 {
				t.Errorf("connect exited %d, want the command's 7\n%s", code, s.stderr)
			}
			t.Logf("connect said:\n%s", s.stderr)
			l.interrupt()
			if !strings.Contains(l.stderr.String(), "reachable as SHA256:") || !strings.Contains(l.stderr.String(), "accepted SHA256:") {
				t.Errorf("listen did not say where it is reachable and whom it accepted:\n%s", l.stderr)
			}
			// The dialer opens a punched connection with the ticket of
			// the relayed one: one round trip, no signatures. A listener
			// whose dial alone gets through initiates, with no ticket of
			// the dialer's: a full handshake.
			resumed := regexp.MustCompile(`msg=p2p event=connected peer=\S+ path="directly \(\S+\)" resumed=true`)
			direct := tc.say[len(tc.say)-1] != sayRelayed
			if got := resumed.MatchString(l.stderr.String()); got != (direct && !tc.full) {
				t.Errorf("the hole-punched connection resumed the relayed one's session: %v, want %v\n%s", got, direct && !tc.full, l.stderr)
			}
		})
	}
}

// serveHTTP serves, in h's namespace on its loopback, a page that says
// its path, and returns its address.
func serveHTTP(t *testing.T, h *natlab.Host) string {
	t.Helper()
	var l net.Listener
	if err := h.Do(func() (err error) {
		l, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "page %s\n", r.URL.Path)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// curl fetches path from the -from address addr, with curl in h's
// namespace.
func (ne *natEnv) curl(h *natlab.Host, addr, path string) {
	ne.t.Helper()
	curl := requireTool(ne.t, "curl")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	out, err := h.Command(ctx, curl, "-sS", "http://"+addr+path).CombinedOutput()
	if err != nil || string(out) != "page "+path+"\n" {
		ne.t.Fatalf("curl %s: %q, %v", path, out, err)
	}
}

// TestNATTunnel reaches a web server behind a NAT with curl, through
// connect -from and listen -p2p -to, both behind NATs: for a pair that
// stays relayed, and for one whose connection goes direct only after the
// tunnel began on the relay (noDirectWait), where the tunnel moves to it
// and says so, new local connections going direct.
func TestNATTunnel(t *testing.T) {
	ne := newNATEnv(t)
	_, relay := ne.relay("relay")
	for i, tc := range []struct {
		name             string
		listener, dialer natlab.Kind
		env              []string // connect's
		moves            bool
	}{
		{"", natlab.SymmetricRandom, natlab.PortRestricted, nil, false},
		{"-late", natlab.PortRestricted, natlab.PortRestricted, []string{noDirectWait}, true},
	} {
		t.Run(fmt.Sprintf("%s-%s%s", tc.listener, tc.dialer, tc.name), func(t *testing.T) {
			ne := ne.sub(t)
			lh := ne.lab.AddHost(fmt.Sprintf("l%d", i), tc.listener)
			dh := ne.lab.AddHost(fmt.Sprintf("d%d", i), tc.dialer)
			server := ne.key(fmt.Sprintf("server%d", i))
			client := ne.key(fmt.Sprintf("client%d", i))
			web := serveHTTP(t, lh)
			l := ne.listen(lh, server, "-v", "-relay", relay, "-allow", client+".pub", "-to", web)
			ne.te.env = append(slices.Clip(ne.te.env), tc.env...)
			c, local := ne.te.startCmd(fmt.Sprintf("client%d", i), ne.command(dh, "connect", "-i", client, "-relay", relay, "-from", "127.0.0.1:0", server+".pub"))
			ne.curl(dh, local, "/first")
			s := &natSession{t: t, stderr: c.stderr}
			s.says(sayRelayed)
			if tc.moves {
				s.says(sayNowDir)
				s.says(`(?m)^securepeer: the tunnel to SHA256:\S+ now runs over the direct connection`)
			}
			for i := range 3 {
				ne.curl(dh, local, fmt.Sprintf("/after/%d", i))
			}
			t.Logf("connect said:\n%s", c.stderr)
			if strings.Contains(c.stderr.String(), "data may be missing") {
				t.Errorf("a stream was cut:\n%s", c.stderr)
			}
			if code := c.interrupt(); code != 130 {
				t.Errorf("connect exited %d after SIGINT, want 130\n%s", code, c.stderr)
			}
			l.interrupt()
			// listen -v logs each tunnel connection's path: the second,
			// once the tunnel has moved, is direct.
			direct := regexp.MustCompile(`msg="handshake complete" peer=\S+ addr=\S+ protocol="securepeer over p2p" path="directly`)
			if got := direct.MatchString(l.stderr.String()); got != tc.moves {
				t.Errorf("listen saw a direct tunnel connection: %v, want %v\n%s", got, tc.moves, l.stderr)
			}

		})
	}
}

// TestNATFailures checks what connect and listen say, in one sentence,
// when nothing can carry a connection: no relay set (so two peers behind
// NATs have no way to meet), no relay reachable, a peer with no
// reservation, a peer that refuses this side's key, and a listen whose
// relays all fail.
func TestNATFailures(t *testing.T) {
	ne := newNATEnv(t)
	_, relay := ne.relay("relay")
	lh := ne.lab.AddHost("l", natlab.PortRestricted)
	dh := ne.lab.AddHost("d", natlab.Symmetric)
	ne.key("server")
	ne.key("client")
	ne.key("other")
	// The relay's address with a port nobody listens on: what a relay
	// that is down, or a typo, looks like.
	deadRelay := strings.Replace(relay, "/tcp/4001/", "/tcp/4002/", 1)
	l := ne.listen(lh, "server", "-relay", relay, "-allow", "client.pub", "-exec", "cat")
	defer l.interrupt()
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no relay set", []string{"connect", "-i", "client", "server.pub"}, 1,
			`^securepeer: no relay is set, so SHA256:\S+ cannot be reached: peers named by key meet through a relay`},
		{"no relay reachable", []string{"connect", "-i", "client", "-relay", deadRelay, "server.pub"}, 1,
			`^securepeer: no relay could be reached, so SHA256:\S+ cannot be \(relay /ip4/198\.18\.\d+\.2/tcp/4002: no relay could be reached: connection refused\); is securepeer relay running there`},
		{"no reservation", []string{"connect", "-i", "client", "-relay", relay, "other.pub"}, 1,
			`^securepeer: SHA256:\S+ is not reachable through the relays: it holds no reservation on them; is securepeer listen -p2p running on its side, with the same relay\?`},
		{"refused", []string{"connect", "-i", "other", "-relay", relay, "server.pub"}, 3,
			`^securepeer: SHA256:\S+ refused this identity \(SHA256:\S+\); ask its owner to add the key that securepeer id prints to its -allow file`},
		{"listen without a relay", []string{"listen", "-i", "other", "-relay", deadRelay}, 1,
			`^securepeer: no relay gave this side a reservation, so no peer could reach it \(relay /ip4/\S+: no relay could be reached: connection refused\)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ne := ne.sub(t)
			_, stderr, code := ne.run(dh, "", tc.args...)
			if code != tc.code || !regexp.MustCompile(tc.want).MatchString(stderr) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and %q", code, stderr, tc.code, tc.want)
			}
			t.Logf("%s", stderr)
		})
	}
}

// TestNATRelayKilled kills the relay in the middle of sessions: a
// connection that went direct does not need it and goes on; a stdio
// stream through it says that the relay was lost; and a tunnel through
// it says so too, and reconnects through the other relay, resuming its
// session, so that the next local connection works.
func TestNATRelayKilled(t *testing.T) {
	t.Run("direct", func(t *testing.T) {
		ne := newNATEnv(t)
		r, relay := ne.relay("relay")
		l := ne.listen(ne.lab.AddHost("l", natlab.PortRestricted), ne.key("server"), "-relay", relay, "-allow", ne.key("client")+".pub", "-exec", upperLines)
		defer l.interrupt()
		s := ne.open(ne.lab.AddHost("d", natlab.PortRestricted), "connect", "-i", "client", "-relay", relay, "server.pub")
		s.echo("before", "BEFORE")
		s.says(sayDirect)
		r.cmd.Process.Kill()
		<-r.done
		s.echo("after", "AFTER")
		s.stdin.Close()
		if code := s.wait(); code != 7 {
			t.Errorf("connect exited %d, want the command's 7\n%s", code, s.stderr)
		}
	})
	t.Run("relayed stdio", func(t *testing.T) {
		ne := newNATEnv(t)
		r, relay := ne.relay("relay")
		l := ne.listen(ne.lab.AddHost("l", natlab.Symmetric), ne.key("server"), "-relay", relay, "-allow", ne.key("client")+".pub", "-exec", upperLines)
		defer l.interrupt()
		s := ne.open(ne.lab.AddHost("d", natlab.Symmetric), "connect", "-i", "client", "-relay", relay, "server.pub")
		s.echo("before", "BEFORE")
		s.says(sayRelayed)
		r.cmd.Process.Kill()
		<-r.done
		if code := s.wait(); code != 1 {
			t.Errorf("connect exited %d, want 1\n%s", code, s.stderr)
		}
		s.says(`(?m)^securepeer: the connection to SHA256:\S+, through relay /ip4/\S+ \(relayed\), ended: the relay was lost; data may be missing$`)
		t.Logf("connect said:\n%s", s.stderr)
	})
	t.Run("relayed tunnel", func(t *testing.T) {
		ne := newNATEnv(t)
		relays := make(map[string]*background)
		var addrs []string
		for _, name := range []string{"relay1", "relay2"} {
			b, a := ne.relay(name)
			relays[relayTransport(a)] = b
			addrs = append(addrs, "-relay", a)
		}
		lh := ne.lab.AddHost("l", natlab.Symmetric)
		dh := ne.lab.AddHost("d", natlab.Symmetric)
		web := serveHTTP(t, lh)
		l := ne.listen(lh, ne.key("server"), append(append([]string{"-v"}, addrs...), "-allow", ne.key("client")+".pub", "-to", web)...)
		defer l.interrupt()
		c, local := ne.te.startCmd("client", ne.command(dh, append(append([]string{"connect", "-i", "client"}, addrs...), "-from", "127.0.0.1:0", "server.pub")...))
		defer c.interrupt()
		ne.curl(dh, local, "/before")
		s := &natSession{t: t, stderr: c.stderr}
		s.says(sayRelayed)
		via := regexp.MustCompile(`through relay (/ip4/\S+) \(relayed\)`).FindStringSubmatch(c.stderr.String())[1]
		relays[via].cmd.Process.Kill()
		<-relays[via].done
		s.says(`(?m)^securepeer: the tunnel connection to SHA256:\S+ ended: the connection to SHA256:\S+, through relay ` + regexp.QuoteMeta(via) + ` \(relayed\), ended: the relay was lost; data may be missing; the local connections in progress were reset; reconnecting$`)
		s.says(`(?m)^securepeer: reconnected to SHA256:\S+$`)
		for name := range relays {
			if name != via {
				s.says(`(?m)^securepeer: connected to SHA256:\S+ through relay ` + regexp.QuoteMeta(name) + ` \(relayed\)$`)
			}
		}
		ne.curl(dh, local, "/after")
		if !regexp.MustCompile(`msg="handshake complete".* path="through relay /ip4/\S+ \(relayed\)".* resumed=true`).MatchString(l.stderr.String()) {
			t.Errorf("the tunnel connection through the other relay did not resume its session:\n%s", l.stderr)
		}
		t.Logf("connect said:\n%s", c.stderr)
	})
}

// TestNATSSH logs in to a real sshd behind a NAT from behind another,
// with ssh's ProxyCommand a securepeer connect that names the peer by its
// key, as the README shows: through the relay, then over the hole-punched
// connection.
func TestNATSSH(t *testing.T) {
	ssh := requireTool(t, "ssh")
	ne := newNATEnv(t)
	_, relay := ne.relay("relay")
	lh := ne.lab.AddHost("l", natlab.PortRestricted)
	dh := ne.lab.AddHost("d", natlab.AddressRestricted)
	userKey := startLabSSHD(t, lh, "127.0.0.1:2222")
	l := ne.listen(lh, ne.key("server"), "-relay", relay, "-allow", ne.key("client")+".pub", "-to", "127.0.0.1:2222")
	defer l.interrupt()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cmd := dh.Command(ctx, ssh, "-F", "/dev/null", "-i", userKey, "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-o", "ProxyCommand=securepeer connect -i client -relay "+relay+" server.pub",
		"-l", "root", "server.invalid", "echo logged in")
	cmd.Dir = ne.te.dir
	cmd.Env = append(append([]string(nil), ne.te.env...), "SECUREPEER_TESTONLY_EXIT_FILE="+filepath.Join(ne.te.dir, "exit"))
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if stdout.String() != "logged in\n" || err != nil {
		t.Fatalf("ssh: %q, %v\n%s", stdout.String(), err, stderr.String())
	}
	if !regexp.MustCompile(sayDirect).MatchString(stderr.String()) {
		t.Errorf("the ssh session did not go direct:\n%s", stderr.String())
	}
	// ssh closes the ProxyCommand's input and sends it SIGHUP as it
	// exits: a clean end, about which connect says nothing, and exits 0.
	if lines := strings.Split(strings.TrimSpace(stderr.String()), "\n"); len(lines) != 1 {
		t.Errorf("connect said more than how it connected:\n%s", stderr.String())
	}
	exitFile := filepath.Join(ne.te.dir, "exit")
	testutil.WaitFor(t, func() bool { // connect may outlive ssh by a moment
		data, _ := os.ReadFile(exitFile)
		return strings.HasSuffix(string(data), "\n")
	}, testutil.Stringer(func() string { return "the ProxyCommand did not exit" }))
	if code := strings.TrimSpace(ne.te.readFile("exit")); code != "0" {
		t.Errorf("the ProxyCommand exited %s, want 0", code)
	}
	t.Logf("ssh's standard error, where the ProxyCommand writes:\n%s", stderr.String())
}

// startLabSSHD runs OpenSSH's sshd in h's namespace on addr, with a host
// key and an authorized key made here, and returns the user's private
// key file.
func startLabSSHD(t *testing.T, h *natlab.Host, addr string) string {
	t.Helper()
	sshd := requireTool(t, "/usr/sbin/sshd") // sshd wants its absolute path
	keygen := requireTool(t, "ssh-keygen")
	dir := t.TempDir()
	for _, k := range []string{"host", "user"} {
		if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "user.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(addr)
	config := fmt.Sprintf("Port %s\nListenAddress %s\nHostKey %s\nAuthorizedKeysFile %s\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nPidFile none\n",
		port, host, filepath.Join(dir, "host"), filepath.Join(dir, "authorized_keys"))
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	// sshd run by root insists on its privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := h.Command(ctx, sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
	})
	// sshd -e says on its standard error when it listens.
	lines := bufio.NewScanner(stderr)
	var log strings.Builder
	for lines.Scan() {
		fmt.Fprintln(&log, lines.Text())
		if strings.Contains(lines.Text(), "Server listening on") {
			go io.Copy(io.Discard, stderr)
			return filepath.Join(dir, "user")
		}
	}
	t.Fatalf("sshd ended without listening:\n%s", log.String())
	return ""
}

// A walkStep is one command of the README's walkthrough: who runs it,
// and what it prints, if the README says.
type walkStep struct {
	role, cmd, want string
}

// readWalkthrough reads the README's "Two laptops behind NATs": its
// code blocks, each a list of steps ("alice$ securepeer ..."), with the
// output that follows a step.
func readWalkthrough(t *testing.T) [][]walkStep {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n### Two laptops behind NATs\n")
	if !ok {
		t.Fatal("README.md has no section \"Two laptops behind NATs\"")
	}
	section, _, _ = strings.Cut(section, "\n##")
	prompt := regexp.MustCompile(`^(relay|alice|bob)\$ (.*)$`)
	var blocks [][]walkStep
	var block []walkStep
	in := false
	for _, line := range strings.Split(section, "\n") {
		switch m := prompt.FindStringSubmatch(line); {
		case line == "```sh":
			in, block = true, nil
		case line == "```" && in:
			in = false
			blocks = append(blocks, block)
		case !in || line == "":
		case m != nil:
			block = append(block, walkStep{role: m[1], cmd: m[2]})
		case len(block) > 0:
			block[len(block)-1].want += line + "\n"
		}
	}
	if len(blocks) != 5 {
		t.Fatalf("the walkthrough has %d blocks of commands, want 5 (relay, keys, a file, a command, a web server)", len(blocks))
	}
	return blocks
}

// serves reports whether a walkthrough command serves until stopped.
func serves(cmd string) bool {
	return strings.Contains(cmd, "securepeer relay") || strings.Contains(cmd, "securepeer listen") ||
		strings.Contains(cmd, "securepeer connect -from")
}

// TestNATWalkthrough runs the README's "Two laptops behind NATs" as
// written: each command with sh in its host of the NAT lab (the relay on
// a public address, Alice and Bob each behind a port-restricted NAT, as
// most home routers are), with HOME its own directory. What the lab adds:
// the relay's real address in place of the README's, the .pub files
// passed between the laptops, the photo Bob sends, Alice's web server,
// and a Ctrl-C for what serves until stopped at the end of each block.
func TestNATWalkthrough(t *testing.T) {
	blocks := readWalkthrough(t)
	ne := newNATEnv(t)
	hosts := map[string]*natlab.Host{
		"relay": ne.lab.AddPublicHost("relay"),
		"alice": ne.lab.AddHost("alice", natlab.PortRestricted),
		"bob":   ne.lab.AddHost("bob", natlab.PortRestricted),
	}
	dirs := make(map[string]string)
	for role := range hosts {
		dirs[role] = filepath.Join(ne.te.dir, role)
		if err := os.Mkdir(dirs[role], 0o700); err != nil {
			t.Fatal(err)
		}
	}
	photo := make([]byte, 3<<20)
	rand.Read(photo)
	if err := os.WriteFile(filepath.Join(dirs["bob"], "photo.jpg"), photo, 0o644); err != nil {
		t.Fatal(err)
	}
	web := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello from alice's web server")
	})}
	var wl net.Listener
	if err := hosts["alice"].Do(func() (err error) { wl, err = net.Listen("tcp", "127.0.0.1:8080"); return err }); err != nil {
		t.Fatal(err)
	}
	go web.Serve(wl)
	defer web.Close()

	w := &walk{ne: ne, hosts: hosts, dirs: dirs}
	readmeRelay := regexp.MustCompile(`/ip4/203\.0\.113\.7/tcp/4001/p2p/\w+`)
	for i, block := range blocks {
		for _, st := range block {
			if w.relay != "" {
				st.cmd = readmeRelay.ReplaceAllLiteralString(st.cmd, w.relay)
			}
			w.step(st)
		}
		w.endBlock(i)
	}
	got, err := os.ReadFile(filepath.Join(dirs["alice"], "photo.jpg"))
	if err != nil || !bytes.Equal(got, photo) {
		t.Errorf("alice's photo.jpg: %d bytes, %v; want bob's %d", len(got), err, len(photo))
	}
	for _, b := range w.stopped {
		t.Logf("%s said:\n%s", b.name, b.stderr)
	}
}

// A walk is the walkthrough under way.
type walk struct {
	ne      *natEnv
	hosts   map[string]*natlab.Host
	dirs    map[string]string
	relay   string        // the relay's address, once it runs
	running []*walkServer // what serves until stopped, in this block
	stopped []*walkServer
	n       int
}

// A walkServer is a walkthrough command that serves until stopped.
type walkServer struct {
	name   string
	host   *natlab.Host
	cmd    *exec.Cmd
	stderr *testenv.SyncBuffer
	done   chan struct{}
}

// command is sh -c cmd in role's host, with HOME its directory.
func (w *walk) command(role, cmd string) *exec.Cmd {
	c := w.hosts[role].Command(context.Background(), "sh", "-c", cmd)
	c.Dir = w.dirs[role]
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "SECUREPEER_") {
			c.Env = append(c.Env, kv)
		}
	}
	c.Env = append(c.Env, "HOME="+w.dirs[role])
	return c
}

// step runs one command: to its end, checking its output if the README
// gives it, or in the background until it is ready, if it serves.
func (w *walk) step(st walkStep) {
	t := w.ne.t
	t.Helper()
	w.n++
	if serves(st.cmd) {
		w.start(st)
		return
	}
	out, err := w.command(st.role, st.cmd).Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		t.Fatalf("%s$ %s: %v\n%s", st.role, st.cmd, err, ee.Stderr)
	} else if err != nil {
		t.Fatal(err)
	}
	if st.want != "" && string(out) != st.want {
		t.Errorf("%s$ %s printed %q, want %q as the README says", st.role, st.cmd, out, st.want)
	}
	w.tradeKeys(st.role)
}

// start starts a command that serves until stopped, and waits until it
// is ready: the relay until it has an address, listen until it holds a
// reservation, connect -from until it listens.
func (w *walk) start(st walkStep) {
	t := w.ne.t
	t.Helper()
	ready := filepath.Join(w.ne.te.dir, fmt.Sprintf("ready.%d", w.n))
	cmd := w.command(st.role, st.cmd)
	cmd.Env = append(cmd.Env, "SECUREPEER_TESTONLY_ADDR_FILE="+ready)
	// A process group, as a shell's job is, for the Ctrl-C of endBlock.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	s := &walkServer{name: st.role + "$ " + st.cmd, host: w.hosts[st.role], cmd: cmd, stderr: new(testenv.SyncBuffer), done: make(chan struct{})}
	var stdout testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, s.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // sh and what it runs
		<-s.done
	})
	testutil.WaitFor(t, func() bool {
		data, _ := os.ReadFile(ready)
		return len(data) > 0
	}, testutil.Stringer(func() string { return s.name + " did not get ready:\n" + s.stderr.String() }))
	if st.role == "relay" {
		w.relay, _, _ = strings.Cut(stdout.String(), "\n")
		w.stopped = append(w.stopped, s)
		return
	}
	w.running = append(w.running, s)
}

// tradeKeys gives the other laptop the .pub file that role has made of
// its key, as the README says they do.
func (w *walk) tradeKeys(role string) {
	key := filepath.Join(w.dirs[role], role+".pub")
	data, err := os.ReadFile(key)
	if err != nil {
		return
	}
	for other := range w.dirs {
		if other != role && other != "relay" {
			os.WriteFile(filepath.Join(w.dirs[other], role+".pub"), data, 0o644)
		}
	}
}

// endBlock ends what the block started: a listen that serves one peer
// ends on its own; the others get the Ctrl-C a user gives them.
func (w *walk) endBlock(i int) {
	t := w.ne.t
	// Last started, first stopped, as a user stops the client first.
	slices.Reverse(w.running)
	for _, s := range w.running {
		if m := fromAddr.FindStringSubmatch(s.name); m != nil {
			// A user stops connect -from some time after curl; this
			// test, the moment curl exits, and connect's Ctrl-C cuts
			// the tunnel streams in progress, so listen would rightly
			// say that one was cut if its end were still on its way.
			localConnsEnded(t, s.host, m[1])
		}
		if serves(s.name) && (strings.Contains(s.name, "-exec") || strings.Contains(s.name, "-to") || strings.Contains(s.name, "-from")) {
			syscall.Kill(-s.cmd.Process.Pid, syscall.SIGINT) // Ctrl-C, to the job
		}
		select {
		case <-s.done:
		case <-time.After(testTimeout):
			t.Fatalf("block %d: %s did not end\n%s", i+1, s.name, s.stderr)
		}
		if strings.Contains(s.stderr.String(), "data may be missing") {
			t.Errorf("block %d: %s:\n%s", i+1, s.name, s.stderr)
		}
	}
	w.stopped = append(w.stopped, w.running...)
	w.running = nil
}

// fromAddr finds the -from address of a walkthrough's connect.
var fromAddr = regexp.MustCompile(`securepeer connect -from \S+:(\d+) `)

// localConnsEnded waits until no TCP connection on h has port as either
// end and is established, or half-closed by the peer and not yet by this
// side (CLOSE_WAIT, LAST_ACK): then connect has passed on, as its FIN to
// the local client, the end of every tunnel stream it carried there,
// which the listen side sends only once its own target has ended; the
// done mark connect sends next is queued before any later cut of the
// tunnel connection.
func localConnsEnded(t *testing.T, h *natlab.Host, port string) {
	t.Helper()
	hexPort := fmt.Sprintf("%04X", mustAtoi(t, port))
	var open []string
	testutil.WaitFor(t, func() bool {
		open = nil
		err := h.Do(func() error {
			data, err := os.ReadFile("/proc/thread-self/net/tcp")
			if err != nil {
				return err
			}
			for _, line := range strings.Split(string(data), "\n")[1:] {
				f := strings.Fields(line)
				if len(f) < 4 {
					continue
				}
				local, remote, state := f[1], f[2], f[3]
				mine := strings.HasSuffix(local, ":"+hexPort) || strings.HasSuffix(remote, ":"+hexPort)
				if mine && (state == "01" || state == "08" || state == "09") { // ESTABLISHED, CLOSE_WAIT, LAST_ACK
					open = append(open, line)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return len(open) == 0
	}, testutil.Stringer(func() string {
		return fmt.Sprintf("connections on port %s still open:\n%s", port, strings.Join(open, "\n"))
	}))
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestNATDHT: a listen -p2p behind a port-restricted NAT holds a
// reservation on a public relay and publishes its addresses in a private
// DHT whose member is on another public host; a connect behind another
// port-restricted NAT, with no relay of its own, finds it there by key,
// says so, and reaches it through the relay of its record (where it
// stays: a dialer with no relay of its own announces no address a hole
// punch could use, p2p/PROTOCOL.md, "What is not done").
func TestNATDHT(t *testing.T) {
	ne := newNATEnv(t)
	_, relay := ne.relay("relay")
	mh := ne.lab.AddPublicHost("dht")
	mcmd := mh.Command(context.Background(), "securepeer-dht-member", fmt.Sprintf("/ip4/%s/tcp/4002", mh.Addr()))
	mcmd.Env = append([]string(nil), ne.te.env...)
	_, member := ne.te.startCmd("dht", mcmd)
	lh := ne.lab.AddHost("l", natlab.PortRestricted)
	dh := ne.lab.AddHost("d", natlab.PortRestricted)
	server, client := ne.key("server"), ne.key("client")
	l := ne.listen(lh, server, "-relay", relay, "-dht", member, "-allow", client+".pub", "-exec", upperLines)
	s := ne.open(dh, "connect", "-i", client, "-dht", member, server+".pub")
	s.echo("hello", "HELLO")
	s.says(`(?m)^securepeer: found SHA256:\S+ through the DHT: \d+ addresses \(1 through relays\)$`)
	s.says(`(?m)^securepeer: connected to SHA256:\S+ through relay SHA256:\S+ \(relayed\)$`)
	s.stdin.Close()
	if code := s.wait(); code != 7 {
		t.Errorf("connect exited %d, want the command's 7\n%s", code, s.stderr)
	}
	l.interrupt()
	if !regexp.MustCompile(`published this side's \d+ addresses in the DHT, under its key \(1 through relays\)`).MatchString(l.stderr.String()) {
		t.Errorf("listen did not say it published its addresses:\n%s", l.stderr)
	}
}
