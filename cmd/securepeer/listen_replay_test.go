package main

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/testutil"
	"github.com/securepeer/securepeer/internal/testenv"
	"github.com/securepeer/securepeer/internal/wire"
)

// TestListenRefusesReplays: listen answers a recorded first flight once;
// the same flight again is closed before listen sends or computes
// anything, and -v logs it as a replay; a real peer still gets through.
func TestListenRefusesReplays(t *testing.T) {
	te := newTestEnv(t)
	te.run("keygen", "-f", "server")
	server, addr := te.start("server", "listen", "-v", "-i", "server", "-insecure-exec-any-key", "-exec", "cat", "127.0.0.1:0")

	flight := recordedFirstFlight(t)
	for i, want := range []string{"message 2", "nothing"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(testTimeout))
		if _, err := c.Write(flight); err != nil {
			t.Fatal(err)
		}
		got := "nothing"
		if hello, err := io.ReadAll(io.LimitReader(c, wire.HelloSize+2)); err == nil && len(hello) == wire.HelloSize+2 {
			got = "message 2"
		}
		c.Close()
		if got != want {
			t.Fatalf("connection %d with the recorded flight: listen sent %s, want %s\n%s", i, got, want, server.stderr)
		}
	}
	testutil.WaitFor(t, func() bool { return strings.Contains(server.stderr.String(), "repeats one received before") }, server.stderr)

	echo := te.command("connect", "-expect", "server.pub", addr)
	echo.Stdin = strings.NewReader("past the replay\n")
	var out, stderr testenv.SyncBuffer
	echo.Stdout, echo.Stderr = &out, &stderr
	if err := echo.Start(); err != nil {
		t.Fatal(err)
	}
	if err := waitCmd(t, echo); err != nil || out.String() != "past the replay\n" {
		t.Errorf("connect after the replay: %q, %v\n%s", out.String(), err, stderr.String())
	}
	if code := server.interrupt(); code != exitInterrupted {
		t.Errorf("listen exited %d after Ctrl-C, want %d\n%s", code, exitInterrupted, server.stderr)
	}
}

// recordedFirstFlight returns what a real securepeer client sends before
// it reads anything: its hello and its framed message 1.
func recordedFirstFlight(t *testing.T) []byte {
	t.Helper()
	id, err := securepeer.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	defer a.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		securepeer.Client(a, &securepeer.Config{Identity: id}).Handshake()
	}()
	var flight bytes.Buffer
	if _, err := io.CopyN(&flight, b, wire.HelloSize+2); err != nil {
		t.Fatal(err)
	}
	n := int(flight.Bytes()[wire.HelloSize])<<8 | int(flight.Bytes()[wire.HelloSize+1])
	if _, err := io.CopyN(&flight, b, int64(n)); err != nil {
		t.Fatal(err)
	}
	b.Close()
	<-done
	return flight.Bytes()
}
