//go:build unix

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/testutil"
	"github.com/securepeer/securepeer/internal/testenv"
)

// TestSSHProxyCommandHangup runs ssh sessions to a real sshd with
// securepeer connect as ssh's ProxyCommand, as the README shows, through
// listen -to. ssh sends its ProxyCommand SIGHUP as it exits, which races
// with the ends of both streams; that SIGHUP is the normal end of a
// ProxyCommand, so each connect must print nothing and exit 0. Its stderr
// and exit code go to files: ssh does not say how its ProxyCommand ended.
func TestSSHProxyCommandHangup(t *testing.T) {
	t.Parallel()
	ssh := testenv.RequireTool(t, "ssh")
	sshdAddr, userKey := startSSHD(t)
	te := newKeys(t)
	server, peerAddr := te.start("server", "listen", "-i", "server", "-allow", "allowed", "-to", sshdAddr, "127.0.0.1:0")
	sshArgs := sshLoginArgs(t, userKey)

	const sessions = 20
	for i := range sessions {
		exitFile := filepath.Join(te.dir, fmt.Sprintf("exit.%d", i))
		errFile := filepath.Join(te.dir, fmt.Sprintf("stderr.%d", i))
		// ssh runs the ProxyCommand with exec, so env and then securepeer
		// are the process that ssh signals.
		proxy := fmt.Sprintf("env SECUREPEER_TESTONLY_EXIT_FILE=%s securepeer connect -i %s -expect %s %s 2>%s",
			exitFile, filepath.Join(te.dir, "client"), filepath.Join(te.dir, "server.pub"), peerAddr, errFile)
		want := fmt.Sprintf("session %d\n", i)
		out, err := runTool(te.env, ssh, append(sshArgs, "-o", "ProxyCommand="+proxy, "sshd.invalid", "echo session", fmt.Sprint(i))...)
		if out != want || err != nil {
			t.Fatalf("ssh session %d: %q, %v\n%s", i, out, err, server.stderr)
		}
		// connect may outlive ssh by a moment.
		testutil.WaitFor(t, func() bool {
			data, _ := os.ReadFile(exitFile)
			return strings.HasSuffix(string(data), "\n")
		}, server.stderr)
		code := strings.TrimSpace(te.readFile(filepath.Base(exitFile)))
		stderr := te.readFile(filepath.Base(errFile))
		if code != "0" || stderr != "" {
			t.Errorf("session %d: the ProxyCommand exited %s, with stderr %q; want 0 and nothing", i, code, stderr)
		}
	}
}

// TestHangupCutsDownload sends SIGHUP to a connect that has sent all of
// its stdin and is receiving an endless stream: the grace after a SIGHUP
// must not make a cut transfer look complete. connect exits 129 saying it
// aborted while receiving, and the sending listen exits 1.
func TestHangupCutsDownload(t *testing.T) {
	t.Parallel()
	te := newKeys(t)
	sendCmd := te.command("listen", "-i", "server", "127.0.0.1:0")
	stdin, err := sendCmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	sender, addr := te.startCmd("sender", sendCmd)
	go func() {
		chunk := []byte(strings.Repeat("0123456789abcdef", 4096))
		for {
			if _, err := stdin.Write(chunk); err != nil {
				return
			}
		}
	}()

	receiver := te.command("connect", "-i", "client", "-expect", "server.pub", addr)
	receiver.Stdin = strings.NewReader("") // all sent at once
	var received byteCounter
	var stderr testenv.SyncBuffer
	receiver.Stdout, receiver.Stderr = &received, &stderr
	if err := receiver.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { receiver.Process.Kill() })
	testutil.WaitFor(t, func() bool { return received.Len() >= 1<<20 }, &stderr)
	receiver.Process.Signal(syscall.SIGHUP)
	if code := exitStatus(t, waitCmd(t, receiver)); code != 129 {
		t.Errorf("connect exited %d after SIGHUP in the middle of a download, want 129\n%s", code, stderr.String())
	}
	if s := stderr.String(); !strings.Contains(s, "interrupted (SIGHUP) while receiving; aborted the stream") {
		t.Errorf("connect does not say it cut the download:\n%s", s)
	}
	stdin.Close()
	if code := sender.wait(); code != exitFailure {
		t.Errorf("listen exited %d, want %d: it must know that the download was cut\n%s", code, exitFailure, sender.stderr)
	}
}

// TestTerminalChatHalfClose holds a conversation between a listen and a
// connect, each on a real terminal (tmux): Ctrl-D on one side ends only
// that side's stream, as with pipes; the other side is told, can still
// answer, and both exit 0 once it ends its side too.
func TestTerminalChatHalfClose(t *testing.T) {
	te := newKeys(t)
	tm := tmuxServer(t, te)
	// The terminal hook only lifts the test binary's default of "no
	// terminal"; the terminals are tmux's.
	start := func(name, command string) (send func(...string), screen func() string) {
		shell := fmt.Sprintf("cd %q && export SECUREPEER_TESTONLY_TERMINAL=1 && %s; echo $? > %s.rc; sleep 600", te.dir, command, name)
		tm("new-session", "-d", "-x", "160", "-y", "20", "-s", name, "sh", "-c", shell)
		send = func(keys ...string) { tm(append([]string{"send-keys", "-t", name}, keys...)...) }
		screen = func() string { return tm("capture-pane", "-p", "-t", name) }
		return send, screen
	}
	both := func(a, b func() string) fmt.Stringer {
		return testutil.Stringer(func() string { return "listen:\n" + a() + "\nconnect:\n" + b() })
	}
	sendL, screenL := start("listen", "SECUREPEER_TESTONLY_ADDR_FILE=addr securepeer listen -i server -allow allowed 127.0.0.1:0")
	testutil.WaitFor(t, func() bool { return len(te.readFileIfAny("addr")) > 0 }, testutil.Stringer(screenL))
	sendC, screenC := start("connect", "securepeer connect -i client -expect server.pub "+te.readFile("addr"))
	show := both(screenL, screenC)

	sendC("hello from connect", "Enter")
	testutil.WaitFor(t, func() bool { return strings.Contains(screenL(), "hello from connect") }, show)
	sendC("C-d") // connect's end: listen must not end with it
	testutil.WaitFor(t, func() bool {
		return strings.Contains(screenL(), "has ended its stream; yours stays open until you end it (Ctrl-D)")
	}, show)
	if te.readFileIfAny("listen.rc") != "" || te.readFileIfAny("connect.rc") != "" {
		t.Fatalf("a side exited after the other's Ctrl-D\n%s", show)
	}
	sendL("answer from listen", "Enter")
	testutil.WaitFor(t, func() bool { return strings.Contains(screenC(), "answer from listen") }, show)
	sendL("C-d")
	testutil.WaitFor(t, func() bool { return te.readFileIfAny("listen.rc") != "" && te.readFileIfAny("connect.rc") != "" }, show)
	for _, side := range []string{"listen", "connect"} {
		if rc := strings.TrimSpace(te.readFile(side + ".rc")); rc != "0" {
			t.Errorf("%s exited %s\n%s", side, rc, show)
		}
	}
}

// TestTerminalReceiverEndsWithPeer runs listen on a terminal (tmux) with
// its stdout in a file, as the README's receiver does: a transfer, not a
// conversation, so the sender's end ends it without anyone typing Ctrl-D.
func TestTerminalReceiverEndsWithPeer(t *testing.T) {
	te := newKeys(t)
	shell := fmt.Sprintf("cd %q && SECUREPEER_TESTONLY_TERMINAL=1 SECUREPEER_TESTONLY_ADDR_FILE=addr securepeer listen -i server -allow allowed 127.0.0.1:0 > out; echo $? > rc; sleep 600", te.dir)
	_, screen := tmuxSession(t, te, shell)
	testutil.WaitFor(t, func() bool { return len(te.readFileIfAny("addr")) > 0 }, testutil.Stringer(screen))
	cmd := te.command("connect", "-i", "client", "-expect", "server.pub", te.readFile("addr"))
	cmd.Stdin = strings.NewReader("a file\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("connect: %v\n%s", err, out)
	}
	testutil.WaitFor(t, func() bool { return te.readFileIfAny("rc") != "" }, testutil.Stringer(screen))
	if rc, out := strings.TrimSpace(te.readFile("rc")), te.readFile("out"); rc != "0" || out != "a file\n" {
		t.Errorf("listen exited %s and wrote %q\n%s", rc, out, screen())
	}
}
