package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/testutil"
	"github.com/securepeer/securepeer/internal/testenv"
)

// tmuxServer returns tm, which runs a tmux command with args on a tmux
// server of the test's own (its socket in te.dir, te's environment) and
// returns its output, failing the test if tmux fails. The server is
// killed at the end of the test.
func tmuxServer(t *testing.T, te *testEnv) (tm func(args ...string) string) {
	t.Helper()
	tmux := requireTool(t, "tmux")
	socket := filepath.Join(te.dir, "tmux.sock")
	tm = func(args ...string) string {
		t.Helper()
		cmd := exec.Command(tmux, append([]string{"-S", socket, "-f", "/dev/null"}, args...)...)
		cmd.Env = te.env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	t.Cleanup(func() { exec.Command(tmux, "-S", socket, "kill-server").Run() })
	return tm
}

// tmuxSession runs shell in a fresh tmux terminal and returns functions to
// type into it and read its screen.
func tmuxSession(t *testing.T, te *testEnv, shell string) (send func(keys ...string), screen func() string) {
	t.Helper()
	tm := tmuxServer(t, te)
	tm("new-session", "-d", "-x", "160", "-y", "40", "-s", "s", "sh", "-c", shell)
	send = func(keys ...string) { tm(append([]string{"send-keys", "-t", "s"}, keys...)...) }
	screen = func() string { return tm("capture-pane", "-p", "-t", "s") }
	return send, screen
}

// TestPassphraseTmux makes an encrypted key with keygen and uses it, typing
// the passphrases into a real terminal (tmux), as a person would: keygen
// asks twice, connect asks again and, after three wrong tries, gives up.
func TestPassphraseTmux(t *testing.T) {
	keygen := requireTool(t, "ssh-keygen")
	te := newTestEnv(t)
	te.run("keygen", "-f", "server")
	server, addr := te.start("server", "listen", "-i", "server", "-insecure-exec-any-key", "-exec", "tr a-z A-Z", "127.0.0.1:0")
	shell := fmt.Sprintf(`cd %q && export SECUREPEER_TESTONLY_TERMINAL=1
securepeer keygen -f enc > keygen.out 2> keygen.err; echo $? > keygen.rc
echo beep | securepeer connect -i enc -expect server.pub %s > id.out 2> id.err; echo $? > id.rc
echo boop | securepeer connect -i enc -expect server.pub %s > bad.out 2> bad.err; echo $? > bad.rc
sleep 600`, te.dir, addr, addr)
	send, screen := tmuxSession(t, te, shell)
	prompt := func(want string) {
		t.Helper()
		testutil.WaitFor(t, func() bool { return strings.Contains(lastLine(screen()), want) }, testutil.Stringer(screen))
	}

	prompt("Enter passphrase (empty for no passphrase):")
	send("correct horse", "Enter")
	prompt("Enter same passphrase again:")
	send("correct horse", "Enter")
	prompt("Enter passphrase for key 'enc':")
	if s := screen(); strings.Contains(s, "correct horse") {
		t.Fatalf("the passphrase was echoed:\n%s", s)
	}
	send("correct horse", "Enter")
	for range 3 {
		prompt("Enter passphrase for key 'enc':")
		send("battery staple", "Enter")
	}
	testutil.WaitFor(t, func() bool { return len(te.readFileIfAny("bad.rc")) > 0 }, testutil.Stringer(screen))

	if rc := strings.TrimSpace(te.readFile("keygen.rc")); rc != "0" {
		t.Fatalf("keygen exited %s: %s", rc, te.readFile("keygen.err"))
	}
	// ssh-keygen reads the key with the passphrase, so it is encrypted as
	// ssh-keygen -N would have encrypted it.
	out, err := exec.Command(keygen, "-y", "-P", "correct horse", "-f", filepath.Join(te.dir, "enc")).Output()
	if err != nil {
		t.Fatalf("ssh-keygen -y with the passphrase: %v", err)
	}
	pub := strings.SplitN(te.readFile("keygen.out"), "\n", 2)[0]
	if !strings.HasPrefix(string(out), pub) {
		t.Errorf("ssh-keygen -y = %q, keygen printed %q", out, pub)
	}
	if _, err := exec.Command(keygen, "-y", "-P", "", "-f", filepath.Join(te.dir, "enc")).Output(); err == nil {
		t.Error("the key opens without its passphrase")
	}
	if rc := strings.TrimSpace(te.readFile("id.rc")); rc != "0" || te.readFile("id.out") != "BEEP\n" {
		t.Errorf("connect with the passphrase: exit %s, %q\n%s", rc, te.readFile("id.out"), te.readFile("id.err"))
	}
	fp := strings.SplitN(te.readFile("keygen.out"), "\n", 3)[1]
	if !strings.Contains(server.stderr.String(), "accepted "+fp) {
		t.Errorf("the server did not see the key %s:\n%s", fp, server.stderr)
	}
	if rc := strings.TrimSpace(te.readFile("bad.rc")); rc != "1" || !strings.Contains(te.readFile("bad.err"), "securepeer: 3 wrong passphrases for enc (the passphrase does not decrypt the private key)") {
		t.Errorf("connect with wrong passphrases: exit %s, stderr %q", rc, te.readFile("bad.err"))
	}
	if !strings.Contains(screen(), "Bad passphrase, try again.") {
		t.Errorf("no retry message on the terminal:\n%s", screen())
	}
}

// lastLine is the last non-empty line of a screen.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n "), "\n")
	return lines[len(lines)-1]
}

func (te *testEnv) readFileIfAny(name string) string {
	data, _ := os.ReadFile(filepath.Join(te.dir, name))
	return string(data)
}

// TestPassphraseWithoutTerminal checks that an encrypted key with nobody to
// ask refuses clearly, and never reads a passphrase from stdin.
func TestPassphraseWithoutTerminal(t *testing.T) {
	keygen := requireTool(t, "ssh-keygen")
	te := newTestEnv(t)
	if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "secret", "-f", filepath.Join(te.dir, "enc")).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	cmd := te.command("connect", "-i", "enc", "-expect", "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "127.0.0.1:1")
	cmd.Stdin = strings.NewReader("secret\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err == nil {
		t.Fatal("an encrypted key was used with no terminal to ask for its passphrase")
	}
	if !strings.Contains(stderr.String(), "is protected by a passphrase and there is no terminal to ask for it; add it to ssh-agent (ssh-add enc) and pass -i enc.pub") {
		t.Errorf("stderr %q", stderr.String())
	}
}

// TestAgentIdentityCommand serves and connects with identities that live
// only in a real ssh-agent: the private key files are deleted, -i names the
// .pub, and an encrypted key in the agent is used without a prompt.
func TestAgentIdentityCommand(t *testing.T) {
	addBin := requireTool(t, "ssh-add")
	keygen := requireTool(t, "ssh-keygen")
	te := newTestEnv(t)
	te.startAgent()
	for _, name := range []string{"server", "client"} {
		pass := ""
		if name == "client" {
			pass = "secret" // encrypted: the agent's copy is used, nobody is asked
		}
		path := filepath.Join(te.dir, name)
		if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", pass, "-C", name, "-f", path).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
		add := exec.Command(addBin, path)
		add.Env = te.env
		if pass != "" {
			// ssh-add reads the passphrase through SSH_ASKPASS when it has
			// no terminal.
			askpass := filepath.Join(te.dir, "askpass")
			os.WriteFile(askpass, []byte("#!/bin/sh\necho "+pass+"\n"), 0o700)
			add.Env = append(add.Env, "SSH_ASKPASS="+askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=none")
		}
		if out, err := add.CombinedOutput(); err != nil {
			t.Fatalf("ssh-add %s: %v\n%s", name, err, out)
		}
	}
	os.Remove(filepath.Join(te.dir, "server")) // only the agent has it now

	server, addr := te.start("server", "listen", "-i", "server.pub", "-insecure-exec-any-key", "-exec", "tr a-z A-Z", "127.0.0.1:0")
	cmd := te.command("connect", "-i", "client", "-expect", "server.pub", addr)
	cmd.Stdin = strings.NewReader("agent\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || string(out) != "AGENT\n" {
		t.Fatalf("connect: %q, %v\n%s\nserver:\n%s", out, err, stderr.String(), server.stderr)
	}
	server.interrupt()
	if !strings.Contains(server.stderr.String(), "accepted SHA256:") {
		t.Errorf("the server did not accept the client:\n%s", server.stderr)
	}

	// A locked agent: a clear error.
	lock := exec.Command(addBin, "-x")
	askpass := filepath.Join(te.dir, "askpass")
	lock.Env = append(append([]string{}, te.env...), "SSH_ASKPASS="+askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=none")
	if out, err := lock.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add -x: %v\n%s", err, out)
	}
	// (id would print a .pub without the agent; a listen needs the key.)
	locked := te.command("listen", "-i", "server.pub", "127.0.0.1:0")
	var lockedErr bytes.Buffer
	locked.Stderr = &lockedErr
	done := make(chan error, 1)
	go func() { done <- locked.Run() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(lockedErr.String(), "ssh-agent holds no keys (or is locked)") {
			t.Errorf("listen with a locked agent: %v, stderr %q", err, lockedErr.String())
		}
	case <-time.After(testTimeout):
		locked.Process.Kill()
		t.Fatal("listen with a locked agent did not exit")
	}
}

// TestPromptCtrlD answers the first-contact question with Ctrl-D, which
// counts as no (exit 3), as in ssh.
func TestPromptCtrlD(t *testing.T) {
	te := newTestEnv(t)
	te.run("keygen", "-f", "server")
	te.run("id")
	server, addr := te.start("server", "listen", "-i", "server", "-insecure-exec-any-key", "-exec", "cat", "127.0.0.1:0")
	shell := fmt.Sprintf("cd %q && SECUREPEER_TESTONLY_TERMINAL=1 securepeer connect %s < /dev/null > out 2> err; echo $? > rc; sleep 600", te.dir, addr)
	send, screen := tmuxSession(t, te, shell)
	testutil.WaitFor(t, func() bool { return strings.Contains(screen(), "(yes/no/[fingerprint])?") }, testutil.Stringer(screen))
	send("C-d")
	testutil.WaitFor(t, func() bool { return len(te.readFileIfAny("rc")) > 0 }, testutil.Stringer(screen))
	if rc := strings.TrimSpace(te.readFile("rc")); rc != "3" {
		t.Errorf("connect exited %s after Ctrl-D, want 3\n%s", rc, te.readFile("err"))
	}
	if !strings.Contains(te.readFile("err"), "was not confirmed") {
		t.Errorf("stderr %q", te.readFile("err"))
	}
	server.interrupt()
}

// startAgent starts a real ssh-agent of the test's own and sets
// SSH_AUTH_SOCK for the commands that follow.
func (te *testEnv) startAgent() {
	te.t.Helper()
	agentBin := testenv.RequireTool(te.t, "ssh-agent")
	sock := filepath.Join(te.dir, "agent.sock")
	agentCmd := exec.Command(agentBin, "-D", "-a", sock)
	if err := agentCmd.Start(); err != nil {
		te.t.Fatal(err)
	}
	te.t.Cleanup(func() { agentCmd.Process.Kill(); agentCmd.Wait() })
	testutil.WaitFor(te.t, func() bool { _, err := os.Stat(sock); return err == nil }, testutil.Stringer(func() string { return "no agent socket" }))
	te.env = append(te.env, "SSH_AUTH_SOCK="+sock)
}

// sshAdd adds the unencrypted private key file to the test's ssh-agent.
func (te *testEnv) sshAdd(args ...string) {
	te.t.Helper()
	add := exec.Command(testenv.RequireTool(te.t, "ssh-add"), args...)
	add.Env = te.env
	if out, err := add.CombinedOutput(); err != nil {
		te.t.Fatalf("ssh-add %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestAgentOnlyDefaultKey uses a default identity that lives only in a real
// ssh-agent: its private key file is deleted and its .pub is still there,
// as ssh users keep keys. id and connect use the agent's copy, as ssh does,
// without -i; they make no new identity and never touch the .pub. Without
// the key in the agent, or without an agent, they say what to do.
func TestAgentOnlyDefaultKey(t *testing.T) {
	te := newTestEnv(t)
	te.startAgent()
	te.run("keygen", "-f", "server")
	server, addr := te.start("server", "listen", "-i", "server", "-insecure-exec-any-key", "-exec", "tr a-z A-Z", "127.0.0.1:0")
	id := te.run("id") // makes the default identity
	key := filepath.Join(te.dir, "home", ".securepeer", "id_ed25519")
	pub := te.readFile("home/.securepeer/id_ed25519.pub")
	te.sshAdd(key)
	if err := os.Remove(key); err != nil {
		t.Fatal(err)
	}

	if got := te.run("id"); got != id {
		t.Errorf("id with the key in ssh-agent only printed %q, want %q", got, id)
	}
	cmd := te.command("connect", "-expect", "server.pub", addr)
	cmd.Stdin = strings.NewReader("agent only\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || string(out) != "AGENT ONLY\n" || stderr.Len() != 0 {
		t.Fatalf("connect with the key in ssh-agent only: %q, %v\n%s", out, err, stderr.String())
	}
	fp := strings.Split(id, "\n")[1]
	testutil.WaitFor(t, func() bool { return strings.Contains(server.stderr.String(), "accepted "+fp) }, server.stderr)

	noAgent := append(append([]string{}, te.env...), "SSH_AUTH_SOCK=")
	for _, tc := range []struct {
		name  string
		env   []string
		setup func()
		want  string
	}{
		{"no agent", noAgent, func() {}, "the private key " + key + " is missing and " + key + ".pub is there, so the key can only come from ssh-agent, but SSH_AUTH_SOCK is not set; start ssh-agent and add the key to it, or restore " + key + ", or remove " + key + ".pub so that a new identity is made"},
		{"key not in the agent", te.env, func() { te.sshAdd("-D") }, "the private key " + key + " is missing, and ssh-agent does not hold the key of " + key + ".pub (" + fp + "); add it to the agent, or restore " + key + ", or remove " + key + ".pub so that a new identity is made"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup()
			for _, args := range [][]string{{"id"}, {"connect", "-expect", "server.pub", addr}} {
				cmd := te.command(args...)
				cmd.Env = tc.env
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				out, err := cmd.Output()
				if code := exitStatus(t, err); code != exitFailure || len(out) != 0 || stderr.String() != "securepeer: "+tc.want+"\n" {
					t.Errorf("securepeer %s: exit %d, stdout %q, stderr\n%s\nwant exit 1 and\n%s", strings.Join(args, " "), code, out, stderr.String(), tc.want)
				}
			}
			if _, err := os.Stat(key); err == nil {
				t.Errorf("a new identity was made in place of the agent's")
			}
			if got := te.readFile("home/.securepeer/id_ed25519.pub"); got != pub {
				t.Errorf("the .pub changed: %q, was %q", got, pub)
			}
		})
	}
	server.interrupt()
}

// TestAgentIdentityRenews checks that the identity -i FILE.pub gives can
// have the agent sign again long after it was made, as the library asks
// each hour (securepeer.NewIdentityFromSigner), and that it stops working
// once the key is removed from the agent. Config.Time moves the clock.
func TestAgentIdentityRenews(t *testing.T) {
	agentBin := requireTool(t, "ssh-agent")
	addBin := requireTool(t, "ssh-add")
	keygen := requireTool(t, "ssh-keygen")
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	agentCmd := exec.Command(agentBin, "-D", "-a", sock)
	if err := agentCmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agentCmd.Process.Kill(); agentCmd.Wait() })
	testutil.WaitFor(t, func() bool { _, err := os.Stat(sock); return err == nil }, testutil.Stringer(func() string { return "no agent socket" }))
	key := filepath.Join(dir, "key")
	if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	sshAdd := func(args ...string) {
		add := exec.Command(addBin, args...)
		add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
		if out, err := add.CombinedOutput(); err != nil {
			t.Fatalf("ssh-add %v: %v\n%s", args, err, out)
		}
	}
	sshAdd(key)
	e := &env{getenv: func(k string) string {
		if k == "SSH_AUTH_SOCK" {
			return sock
		}
		return ""
	}}
	id, err := e.agentIdentity(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	handshake := func(at time.Time) error {
		peer, err := securepeer.GenerateIdentity()
		if err != nil {
			t.Fatal(err)
		}
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		now := func() time.Time { return at }
		srv := make(chan error, 1)
		go func() {
			err := securepeer.Server(b, &securepeer.Config{Identity: peer, Time: now}).Handshake()
			b.Close()
			srv <- err
		}()
		err = securepeer.Client(a, &securepeer.Config{Identity: id, Time: now}).Handshake()
		a.Close()
		return errors.Join(err, <-srv)
	}
	later := time.Now().Add(3 * time.Hour)
	if err := handshake(later); err != nil {
		t.Fatalf("three hours on, with the key in the agent: %v", err)
	}
	sshAdd("-d", key)
	if err := handshake(later.Add(3 * time.Hour)); !errors.Is(err, securepeer.ErrSignerUnavailable) {
		t.Fatalf("after ssh-add -d, three hours on: %v, want ErrSignerUnavailable", err)
	}
}
