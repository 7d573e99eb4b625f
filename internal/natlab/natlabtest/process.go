//go:build linux

package natlabtest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/securepeer/securepeer/internal/natlab"
)

// EncodeSpec returns spec in JSON, base64: the value of the environment
// variable that [ReadSpec] decodes in the peer process.
func EncodeSpec(t testing.TB, spec any) string {
	t.Helper()
	raw, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(raw)
}

// ReadSpec is the peer process's side of [StartProcess]: it decodes the
// spec that env holds into v, and skips the test, saying why, when env is
// not set (the test was not run as a peer process).
func ReadSpec(t testing.TB, env, why string, v any) {
	t.Helper()
	raw := os.Getenv(env)
	if raw == "" {
		t.Skip(why)
	}
	js, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(js, v); err != nil {
		t.Fatal(err)
	}
}

// StartProcess runs the test binary again inside h as the test named test
// (and only it, once), with args after those flags and env set to spec
// ([EncodeSpec]), and returns its standard input and output; its standard
// error is the test's. When the test ends, the process's input is closed
// and it is waited for, and killed if it has not ended 10 s later.
func StartProcess(t testing.TB, h *natlab.Host, test, env string, spec any, args ...string) (stdin io.WriteCloser, stdout io.ReadCloser) {
	t.Helper()
	encoded := EncodeSpec(t, spec)
	ctx, cancel := context.WithCancel(context.Background())
	args = append([]string{"-test.run=^" + test + "$", "-test.count=1"}, args...)
	cmd := h.Command(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), env+"="+encoded)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err = cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		waitOrKill(cmd, cancel)
	})
	return stdin, stdout
}

// waitOrKill waits for cmd to end once its input is closed, and kills it
// if it has not after a while.
func waitOrKill(cmd *exec.Cmd, cancel context.CancelFunc) {
	defer cancel()
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cancel()
		<-done
	}
}
