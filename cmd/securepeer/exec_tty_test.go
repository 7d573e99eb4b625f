package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/testutil"
)

// ttyShell is listen's -exec for the terminal tests: bash, with no startup
// files and a prompt of its own.
const ttyShell = `PS1='remote$ ' exec bash --norc --noprofile`

// startTTYServer starts listen -exec ttyShell for the key client.pub, and
// returns it with its address.
func startTTYServer(t *testing.T, te *testEnv) (*background, string) {
	t.Helper()
	requireTool(t, "bash")
	te.run("keygen", "-f", "server")
	te.run("keygen", "-f", "client")
	if err := os.WriteFile(filepath.Join(te.dir, "allowed"), []byte(te.readFile("client.pub")), 0o644); err != nil {
		t.Fatal(err)
	}
	return te.start("server", "listen", "-i", "server", "-allow", "allowed", "-exec", ttyShell, "127.0.0.1:0")
}

// tmux runs a tmux command on the server of tmuxSession.
func tmux(t *testing.T, te *testEnv, args ...string) {
	t.Helper()
	cmd := exec.Command(requireTool(t, "tmux"), append([]string{"-S", filepath.Join(te.dir, "tmux.sock"), "-f", "/dev/null"}, args...)...)
	cmd.Env = te.env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// screenHas waits until a line of the screen matches re.
func screenHas(t *testing.T, screen func() string, re string) {
	t.Helper()
	r := regexp.MustCompile(`(?m)` + re)
	testutil.WaitFor(t, func() bool { return r.MatchString(screen()) }, testutil.Stringer(screen))
}

// TestExecTTYTmux uses listen -exec bash as a remote shell through connect
// -t in a real terminal (tmux), as a person would: the prompt comes, a
// command typed runs and shows its output, Ctrl-C reaches the remote
// command and not connect, the remote terminal has the local one's size
// and follows it when the window is resized, exit ends connect with the
// shell's status, and the local terminal is as it was before.
func TestExecTTYTmux(t *testing.T) {
	te := newTestEnv(t)
	server, addr := startTTYServer(t, te)
	shell := fmt.Sprintf(`cd %q && securepeer connect -t -i client -expect server.pub %s 2> err; echo $? > rc; stty -a > stty.txt; sleep 600`, te.dir, addr)
	send, screen := tmuxSession(t, te, shell)

	screenHas(t, screen, `^remote\$ ?$`)
	send("echo hello-$((6*7))", "Enter")
	screenHas(t, screen, `^hello-42$`)

	// Ctrl-C flushes what is typed ahead, as on any terminal: each key
	// waits for its moment.
	send("echo sleeping; sleep 1000", "Enter")
	screenHas(t, screen, `^sleeping$`)
	send("C-c")
	prompt := func() bool { return strings.TrimSpace(lastLine(screen())) == "remote$" }
	testutil.WaitFor(t, prompt, testutil.Stringer(screen))
	send("echo after-ctrl-c", "Enter")
	screenHas(t, screen, `^after-ctrl-c$`)
	testutil.WaitFor(t, prompt, testutil.Stringer(screen))

	send("stty size", "Enter")
	screenHas(t, screen, `^40 160$`)
	tmux(t, te, "resize-window", "-t", "s", "-x", "100", "-y", "30")
	// The new size travels from SIGWINCH, the keys from stdin: either may
	// reach the shell first, so ask until the answer is the new size.
	newSize := regexp.MustCompile(`(?m)^30 100$`)
	for i := 0; !newSize.MatchString(screen()); i++ {
		if i == 50 {
			t.Fatalf("the remote terminal did not follow the resize:\n%s", screen())
		}
		send("clear; stty size", "Enter")
		testutil.WaitFor(t, prompt, testutil.Stringer(screen))
	}

	send("exit 3", "Enter")
	testutil.WaitFor(t, func() bool { return len(te.readFileIfAny("stty.txt")) > 0 }, testutil.Stringer(screen))
	if rc := strings.TrimSpace(te.readFile("rc")); rc != "3" {
		t.Errorf("connect exited %s, want the shell's 3\n%s", rc, te.readFile("err"))
	}
	if errOut := te.readFile("err"); errOut != "" {
		t.Errorf("connect's stderr: %q", errOut)
	}
	// Raw mode is off again: the line discipline and echo are back.
	if st := te.readFile("stty.txt"); !regexp.MustCompile(`(^|\s)icanon\s`).MatchString(st) || !regexp.MustCompile(`(^|\s)echo\s`).MatchString(st) {
		t.Errorf("the terminal was not restored:\n%s", st)
	}
	server.interrupt()
	if s := server.stderr.String(); !strings.Contains(s, "exited with status 3") || strings.Contains(s, "DATA RACE") {
		t.Errorf("listen:\n%s", s)
	}
}

// TestExecTTYHangup closes connect -t's terminal under it (the terminal
// emulator goes away): connect exits as SIGHUP says (129), and the remote
// shell is hung up in turn, which listen reports.
func TestExecTTYHangup(t *testing.T) {
	te := newTestEnv(t)
	server, addr := startTTYServer(t, te)
	// The shell around connect ignores the hangup, to record its status.
	shell := fmt.Sprintf(`trap '' HUP; cd %q && securepeer connect -t -i client -expect server.pub %s 2> err; echo $? > rc`, te.dir, addr)
	_, screen := tmuxSession(t, te, shell)
	screenHas(t, screen, `^remote\$ ?$`)
	tmux(t, te, "kill-server")
	testutil.WaitFor(t, func() bool { return len(te.readFileIfAny("rc")) > 0 }, server.stderr)
	if rc := strings.TrimSpace(te.readFile("rc")); rc != "129" {
		t.Errorf("connect exited %s after its terminal hung up, want 129\n%s", rc, te.readFile("err"))
	}
	testutil.WaitFor(t, func() bool { return strings.Contains(server.stderr.String(), "hung up") }, server.stderr)
	if s := server.stderr.String(); !strings.Contains(s, `-exec: hung up "`+ttyShell+`" (SIGHUP to its terminal's processes): the peer at 127.0.0.1:`) ||
		!strings.Contains(s, "aborted the stream") {
		t.Errorf("listen:\n%s", s)
	}
	server.interrupt()
}
