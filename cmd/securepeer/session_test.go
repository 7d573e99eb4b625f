package main

// Helpers that tests on every platform share with the unix-only ones
// (stop_test.go, forward_test.go): a connect joined to a listen -exec
// session, the keys of a test, and starting a command.

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/securepeer/securepeer/internal/testenv"
)

// session is a connect joined to a listen -exec 'cat' session, line by line.
type session struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Reader
	stderr *testenv.SyncBuffer
}

func (te *testEnv) openSession(addr string) *session {
	te.t.Helper()
	return te.openSessionAs("", addr)
}

// openSessionAs is openSession with the identity id ("": the default).
func (te *testEnv) openSessionAs(id, addr string) *session {
	te.t.Helper()
	args := []string{"connect", "-expect", "server.pub", addr}
	if id != "" {
		args = append(args, "-i", id)
	}
	return te.openSessionArgs(args...)
}

// openSessionArgs is openSession with connect's arguments args.
func (te *testEnv) openSessionArgs(args ...string) *session {
	te.t.Helper()
	cmd := te.command(args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		te.t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		te.t.Fatal(err)
	}
	s := &session{t: te.t, cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout), stderr: new(testenv.SyncBuffer)}
	cmd.Stderr = s.stderr
	if err := cmd.Start(); err != nil {
		te.t.Fatal(err)
	}
	te.t.Cleanup(func() { cmd.Process.Kill() })
	s.echo("ping")
	return s
}

// echo sends a line and checks that it comes back.
func (s *session) echo(line string) {
	s.t.Helper()
	if _, err := io.WriteString(s.stdin, line+"\n"); err != nil {
		s.t.Fatalf("sending %q: %v\n%s", line, err, s.stderr)
	}
	got, err := s.out.ReadString('\n')
	if err != nil || got != line+"\n" {
		s.t.Fatalf("echo of %q: %q, %v\n%s", line, got, err, s.stderr)
	}
}

// newKeys makes the server and client keys of a test, and an allow file
// with the client's.
func newKeys(t testing.TB) *testEnv {
	te := newTestEnv(t)
	te.run("keygen", "-f", "server")
	te.run("keygen", "-f", "client")
	if err := os.WriteFile(filepath.Join(te.dir, "allowed"), []byte(te.readFile("client.pub")), 0o644); err != nil {
		t.Fatal(err)
	}
	return te
}

// startCmd starts cmd, failing t if it cannot.
func startCmd(t testing.TB, cmd *exec.Cmd) *exec.Cmd {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}
