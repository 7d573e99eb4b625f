package main

// Tests that testscript cannot express: a real net/http server behind a
// tunnel, signals sent while streams are open, processes left behind, and
// the known-hosts prompt seen through a real terminal (tmux). They run the
// test binary installed on $PATH as "securepeer" by TestMain.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/testutil"
	"github.com/securepeer/securepeer/internal/testenv"
)

// testTimeout bounds every wait; generous for a loaded 2-core machine
// running -race.
const testTimeout = testutil.Timeout

// testEnv is a HOME and SECUREPEER_HOME of the test's own.
type testEnv struct {
	t   testing.TB
	dir string
	env []string
}

func newTestEnv(t testing.TB) *testEnv {
	t.Helper()
	dir := t.TempDir()
	env := append(os.Environ(),
		"HOME="+filepath.Join(dir, "home"),
		"SECUREPEER_HOME="+filepath.Join(dir, "home", ".securepeer"),
		"SECUREPEER_TESTONLY_ADDR_FILE=",
		"SECUREPEER_TESTONLY_TERMINAL=",
	)
	return &testEnv{t: t, dir: dir, env: env}
}

// command returns a securepeer command in the test's directory.
func (te *testEnv) command(args ...string) *exec.Cmd {
	cmd := exec.Command("securepeer", args...)
	cmd.Dir = te.dir
	cmd.Env = te.env
	return cmd
}

// run runs securepeer to completion and returns its stdout.
func (te *testEnv) run(args ...string) string {
	te.t.Helper()
	cmd := te.command(args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		te.t.Fatalf("securepeer %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// background is a securepeer process that runs while the test does.
type background struct {
	t      testing.TB
	cmd    *exec.Cmd
	stderr *testenv.SyncBuffer
	done   chan struct{}
	err    error
}

// start starts a listening securepeer and returns it with the address it
// listens on.
func (te *testEnv) start(name string, args ...string) (*background, string) {
	te.t.Helper()
	return te.startCmd(name, te.command(args...))
}

// startCmd starts cmd, which runs a listening securepeer, and returns it
// with the address it listens on. cmd's stderr is the background's.
func (te *testEnv) startCmd(name string, cmd *exec.Cmd) (*background, string) {
	te.t.Helper()
	addrFile := filepath.Join(te.dir, name+".addr")
	cmd.Env = append(cmd.Env, "SECUREPEER_TESTONLY_ADDR_FILE="+addrFile)
	b := te.startBackground(cmd)
	deadline := time.Now().Add(testTimeout)
	for {
		if data, err := os.ReadFile(addrFile); err == nil && len(data) > 0 {
			return b, string(data)
		}
		select {
		case <-b.done:
			te.t.Fatalf("%s exited before listening: %v\n%s", name, b.err, b.stderr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			te.t.Fatalf("%s did not listen within %v\n%s", name, testTimeout, b.stderr)
		}
	}
}

// startBackground starts cmd, which runs securepeer, and returns it at
// once, its stderr the background's. It is killed, if still running, at
// the end of the test.
func (te *testEnv) startBackground(cmd *exec.Cmd) *background {
	te.t.Helper()
	b := &background{t: te.t, cmd: cmd, stderr: new(testenv.SyncBuffer), done: make(chan struct{})}
	cmd.Stderr = b.stderr
	if err := cmd.Start(); err != nil {
		te.t.Fatal(err)
	}
	go func() {
		b.err = cmd.Wait()
		close(b.done)
	}()
	te.t.Cleanup(func() {
		cmd.Process.Kill()
		<-b.done
	})
	return b
}

// interrupt sends SIGINT, as Ctrl-C does, and returns the exit code.
func (b *background) interrupt() int {
	b.t.Helper()
	b.cmd.Process.Signal(os.Interrupt)
	return b.wait()
}

func (b *background) wait() int {
	b.t.Helper()
	select {
	case <-b.done:
	case <-time.After(testTimeout):
		b.t.Fatalf("%s did not exit within %v\n%s", b.cmd, testTimeout, b.stderr)
	}
	var ee *exec.ExitError
	if errors.As(b.err, &ee) {
		return ee.ExitCode()
	}
	if b.err != nil {
		b.t.Fatal(b.err)
	}
	return 0
}

// byteCounter is an io.Writer that counts what it is given and keeps none
// of it, for endless streams.
type byteCounter struct{ n atomic.Int64 }

func (c *byteCounter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return len(p), nil
}

// Len returns how many bytes were written.
func (c *byteCounter) Len() int { return int(c.n.Load()) }

// TestTunnelHTTP exposes a real net/http server through listen -to and
// reaches it through connect -from: small and large requests, concurrent
// ones, and a clean shutdown of both ends.
func TestTunnelHTTP(t *testing.T) {
	te := newTestEnv(t)
	te.run("keygen", "-f", "server")
	te.run("keygen", "-f", "client")
	if err := os.WriteFile(filepath.Join(te.dir, "allowed"), []byte(te.readFile("client.pub")), 0o644); err != nil {
		t.Fatal(err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sum := sha256.New()
		n, err := io.Copy(sum, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%s %s %d %x", r.Method, r.URL.Path, n, sum.Sum(nil))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	server, peerAddr := te.start("server", "listen", "-i", "server", "-allow", "allowed", "-to", l.Addr().String(), "127.0.0.1:0")
	client, localAddr := te.start("client", "connect", "-i", "client", "-expect", "server.pub", "-from", "127.0.0.1:0", peerAddr)

	httpClient := &http.Client{Timeout: testTimeout}
	get := func(method, path string, body []byte) string {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+localAddr+path, bytes.NewReader(body))
		if err != nil {
			t.Error(err)
			return ""
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Errorf("%s %s: %v\nserver:\n%s\nclient:\n%s", method, path, err, server.stderr, client.stderr)
			return ""
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Errorf("%s %s: reading the body: %v", method, path, err)
		}
		return string(data)
	}

	if got, want := get("GET", "/hello", nil), fmt.Sprintf("GET /hello 0 %x", sha256.Sum256(nil)); got != want {
		t.Errorf("GET = %q, want %q", got, want)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB, many records
	if got, want := get("POST", "/upload", big), fmt.Sprintf("POST /upload %d %x", len(big), sha256.Sum256(big)); got != want {
		t.Errorf("POST = %q, want %q", got, want)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			path := fmt.Sprintf("/concurrent/%d", i)
			if got, want := get("GET", path, nil), "GET "+path+" 0"; !strings.HasPrefix(got, want) {
				t.Errorf("GET %s = %q", path, got)
			}
		})
	}
	wg.Wait()
	httpClient.CloseIdleConnections()

	if code := client.interrupt(); code != exitInterrupted {
		t.Errorf("connect -from exited %d after Ctrl-C, want %d\n%s", code, exitInterrupted, client.stderr)
	}
	if code := server.interrupt(); code != exitInterrupted {
		t.Errorf("listen -to exited %d after Ctrl-C, want %d\n%s", code, exitInterrupted, server.stderr)
	}
	for _, b := range []*background{client, server} {
		if s := b.stderr.String(); strings.Contains(s, "panic") || strings.Contains(s, "DATA RACE") {
			t.Errorf("%s:\n%s", b.cmd, s)
		}
	}
}

// isZombie reports whether pid has exited and waits only to be reaped, by
// an init process that may not bother in a container.
func isZombie(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	i := bytes.LastIndexByte(data, ')')
	return i >= 0 && i+2 < len(data) && data[i+2] == 'Z'
}

// readPIDs waits until file holds n process IDs, one a line.
func readPIDs(t *testing.T, file string, n int) []int {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		data, _ := os.ReadFile(file)
		fields := strings.Fields(string(data))
		if len(fields) >= n {
			var pids []int
			for _, f := range fields {
				pid, err := strconv.Atoi(f)
				if err != nil {
					t.Fatalf("%s: %v", file, err)
				}
				pids = append(pids, pid)
			}
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %q, want %d process IDs", file, data, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (te *testEnv) readFile(name string) string {
	te.t.Helper()
	data, err := os.ReadFile(filepath.Join(te.dir, name))
	if err != nil {
		te.t.Fatal(err)
	}
	return string(data)
}

// requireTool returns the path of tool, as testenv.RequireTool.
func requireTool(t *testing.T, tool string) string {
	t.Helper()
	return testenv.RequireTool(t, tool)
}

// TestSSHKeygenInterop checks that keys from ssh-keygen -t ed25519 work as
// identities and that ssh-keygen reads ours, with the same fingerprints.
func TestSSHKeygenInterop(t *testing.T) {
	sshKeygen := requireTool(t, "ssh-keygen")
	te := newTestEnv(t)
	ssh := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(sshKeygen, args...)
		cmd.Dir = te.dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	fingerprint := regexp.MustCompile(`SHA256:[A-Za-z0-9+/]{43}`)

	// ssh-keygen's key, read by securepeer.
	ssh("-q", "-t", "ed25519", "-N", "", "-C", "made by ssh-keygen", "-f", "sshkey")
	id := strings.Split(strings.TrimSpace(te.run("id", "-i", "sshkey")), "\n")
	if len(id) != 2 {
		t.Fatalf("securepeer id printed %q", id)
	}
	if pub := te.readFile("sshkey.pub"); !strings.HasPrefix(pub, id[0]+" ") {
		t.Errorf("securepeer id printed %q; ssh-keygen wrote %q", id[0], pub)
	}
	if want := fingerprint.FindString(ssh("-lf", "sshkey.pub")); id[1] != want {
		t.Errorf("securepeer id fingerprint %q, ssh-keygen -lf %q", id[1], want)
	}

	// securepeer's key, read by ssh-keygen.
	out := strings.Split(strings.TrimSpace(te.run("keygen", "-f", "spkey", "-C", "made by securepeer")), "\n")
	if got := strings.TrimSpace(ssh("-y", "-f", "spkey")); !strings.HasPrefix(got, out[0]) {
		t.Errorf("ssh-keygen -y derived %q, securepeer keygen printed %q", got, out[0])
	}
	if got := fingerprint.FindString(ssh("-lf", "spkey")); got != out[1] {
		t.Errorf("ssh-keygen -lf printed %q, securepeer keygen %q", got, out[1])
	}

	// And the ssh-keygen key serves as a peer's identity, pinned by its .pub.
	server, addr := te.start("server", "listen", "-i", "sshkey", "-insecure-exec-any-key", "-exec", "tr a-z A-Z", "127.0.0.1:0")
	cmd := te.command("connect", "-i", "spkey", "-expect", "sshkey.pub", addr)
	cmd.Stdin = strings.NewReader("beep boop\n")
	got, err := cmd.Output()
	if err != nil || string(got) != "BEEP BOOP\n" {
		t.Errorf("connect to an ssh-keygen identity: %q, %v", got, err)
	}
	server.interrupt()
}

// TestPromptTmux drives the first-contact question through a real terminal
// (tmux), as a person would: the question appears while connect waits, the
// answer is typed, and the key is recorded.
func TestPromptTmux(t *testing.T) {
	te := newTestEnv(t)
	te.run("keygen", "-f", "server")
	te.run("id")
	server, addr := te.start("server", "listen", "-i", "server", "-insecure-exec-any-key", "-exec", "tr a-z A-Z", "127.0.0.1:0")
	if err := os.WriteFile(filepath.Join(te.dir, "msg"), []byte("beep boop\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// The terminal hook only lifts the test binary's default of "no
	// terminal"; the terminal itself is tmux's.
	shell := fmt.Sprintf("cd %q && SECUREPEER_TESTONLY_TERMINAL=1 securepeer connect %s < msg > out 2> err; echo $? > rc; sleep 600",
		te.dir, addr)
	send, screen := tmuxSession(t, te, shell)
	testutil.WaitFor(t, func() bool { return strings.Contains(screen(), "(yes/no/[fingerprint])?") }, testutil.Stringer(screen))
	s := screen()
	if !strings.Contains(s, "The authenticity of peer '"+addr+"' can't be established.") ||
		!fingerprintRE.MatchString(s) {
		t.Errorf("the question does not name the peer and its fingerprint:\n%s", s)
	}
	if _, err := os.Stat(filepath.Join(te.dir, "rc")); err == nil {
		t.Fatal("connect finished before the question was answered")
	}
	send("yes", "Enter")
	testutil.WaitFor(t, func() bool {
		data, _ := os.ReadFile(filepath.Join(te.dir, "rc"))
		return len(data) > 0
	}, testutil.Stringer(screen))

	if rc := strings.TrimSpace(te.readFile("rc")); rc != "0" {
		t.Errorf("connect exited %s\n%s", rc, te.readFile("err"))
	}
	if out := te.readFile("out"); out != "BEEP BOOP\n" {
		t.Errorf("connect printed %q, want the echo; the question must not go to stdout", out)
	}
	if errOut := te.readFile("err"); strings.Contains(errOut, "authenticity") {
		t.Errorf("the question went to stderr:\n%s", errOut)
	}
	kh := filepath.Join(te.dir, "home", ".securepeer", "known_hosts")
	data, err := os.ReadFile(kh)
	if err != nil || !strings.HasPrefix(string(data), "[127.0.0.1]:") {
		t.Errorf("known_hosts after yes: %q, %v", data, err)
	}
	server.interrupt()
}

var fingerprintRE = regexp.MustCompile(`ED25519 key fingerprint is SHA256:[A-Za-z0-9+/]{43}\.`)

// TestDemo runs the demo in process: both sides report each other's keys,
// the same cipher, opposite roles, and the echo.
func TestDemo(t *testing.T) {
	var stdout, stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
	if code := run(context.Background(), e, []string{"demo"}); code != 0 {
		t.Fatalf("demo exited %d\n%s", code, stderr.String())
	}
	out := stdout.String()
	field := func(side, name string) string {
		re := regexp.MustCompile(`(?m)^` + side + `\n(?:  .*\n)*?  ` + name + ` +(.*)$`)
		m := re.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no %s %s in\n%s", side, name, out)
		}
		return m[1]
	}
	if field("server", "own key") != field("client", "peer key") || field("client", "own key") != field("server", "peer key") {
		t.Errorf("the sides disagree about the keys:\n%s", out)
	}
	if field("server", "own key") == field("client", "own key") {
		t.Errorf("both sides have the same key:\n%s", out)
	}
	if field("server", "cipher") != field("client", "cipher") {
		t.Errorf("the sides disagree about the cipher:\n%s", out)
	}
	if field("server", "role") != "responder" || field("client", "role") != "initiator" {
		t.Errorf("roles:\n%s", out)
	}
	if !strings.HasPrefix(field("client", "post-quantum"), "yes") {
		t.Errorf("the demo is not post-quantum:\n%s", out)
	}
	if !strings.Contains(out, `client sent "beep boop", server echoed "BEEP BOOP"`) {
		t.Errorf("no echo in\n%s", out)
	}
}

// TestProgressNotInPipe checks that -progress prints nothing when stderr
// is not a terminal.
func TestProgressNotInPipe(t *testing.T) {
	te := newTestEnv(t)
	te.run("keygen", "-f", "server")
	server, addr := te.start("server", "listen", "-i", "server", "-insecure-exec-any-key", "-exec", "cat", "127.0.0.1:0")
	cmd := te.command("connect", "-progress", "-accept-new", addr)
	cmd.Stdin = bytes.NewReader(make([]byte, 1<<20))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || len(out) != 1<<20 {
		t.Fatalf("connect: %d bytes, %v\n%s", len(out), err, stderr.String())
	}
	if strings.Contains(stderr.String(), "sent ") || strings.Contains(stderr.String(), "\r") {
		t.Errorf("progress printed into a pipe:\n%q", stderr.String())
	}
	server.interrupt()
}

func TestMeter(t *testing.T) {
	for _, tc := range []struct {
		n    float64
		want string
	}{{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"}, {5 << 20, "5.0 MiB"}, {3 << 30, "3.0 GiB"}} {
		if got := formatBytes(tc.n); got != tc.want {
			t.Errorf("formatBytes(%v) = %q, want %q", tc.n, got, tc.want)
		}
	}
	var out testenv.SyncBuffer
	m := newMeter(&out, 0, 0)
	io.Copy(io.Discard, m.countSent(bytes.NewReader(make([]byte, 3<<20))))
	m.received.Add(1024)
	testutil.WaitFor(t, func() bool { return strings.Contains(out.String(), "sent 3.0 MiB, received 1.0 KiB") }, &out)
	m.finish()
	if s := out.String(); !strings.HasSuffix(s, "\n") || !strings.HasPrefix(s, "\r") {
		t.Errorf("meter output %q: want lines redrawn with \\r and a final newline", s)
	}
	// A meter without output only counts, and finish does not block.
	newMeter(nil, 0, 0).finish()

	// With the size known (stdin a regular file): a percentage and the
	// time left.
	sized := &meter{total: 4 << 20}
	sized.sent.Store(1 << 20)
	if got, want := sized.line(2*time.Second), "sent 1.0 MiB of 4.0 MiB (25%), 0:06 left, received 0 B, 512.0 KiB/s, 0:02"; got != want {
		t.Errorf("line = %q, want %q", got, want)
	}
}

func TestParseFlagsInterspersed(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		wantPos  []string
		wantExec string
	}{
		{[]string{"-exec", "cat", ":5000"}, []string{":5000"}, "cat"},
		{[]string{":5000", "-exec", "cat"}, []string{":5000"}, "cat"},
		{[]string{"-exec", "cat", "--", "-odd"}, []string{"-odd"}, "cat"},
		{[]string{"a", "b"}, []string{"a", "b"}, ""},
	} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		execCmd := fs.String("exec", "", "")
		pos, err := parseFlags(fs, tc.args)
		if err != nil || fmt.Sprint(pos) != fmt.Sprint(tc.wantPos) || *execCmd != tc.wantExec {
			t.Errorf("parseFlags(%q) = %q, -exec %q, %v; want %q, %q", tc.args, pos, *execCmd, err, tc.wantPos, tc.wantExec)
		}
	}
}

// exitStatus returns the exit code of a finished command from cmd.Wait's
// error.
func exitStatus(t testing.TB, err error) int {
	t.Helper()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	t.Fatal(err)
	return 0
}

// waitCmd waits for a started command, failing after testTimeout.
func waitCmd(t testing.TB, cmd *exec.Cmd) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(testTimeout):
		cmd.Process.Kill()
		t.Fatalf("%s did not exit within %v", cmd, testTimeout)
		return nil
	}
}

// TestConnectOtherProtocols runs a stdio connect against a library server
// that wants an application protocol of its own: connect offers
// securepeer-exec/1, finds nothing in common in the server's authenticated
// message 2, and connects again offering nothing, for the plain stream it
// had before it offered anything. It says so on stderr, without -v too.
func TestConnectOtherProtocols(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t)
	te.run("keygen", "-f", "client")
	id, err := securepeer.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	l, err := securepeer.Listen("tcp", "127.0.0.1:0", &securepeer.Config{Identity: id, NextProtos: []string{"example-app/1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				c.Write(bytes.ToUpper(b))
				c.(*securepeer.Conn).CloseWrite()
			}()
		}
	}()
	cmd := te.command("connect", "-i", "client", "-expect", id.PublicKey().String(), l.Addr().String())
	cmd.Stdin = strings.NewReader("beep boop\n")
	var stderr testenv.SyncBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if string(out) != "BEEP BOOP\n" || err != nil {
		t.Errorf("connect: %q, %v\n%s", out, err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "authenticated answer shows; connecting again as a plain stream") {
		t.Errorf("connect did not say it connected again offering nothing:\n%s", stderr.String())
	}
}
