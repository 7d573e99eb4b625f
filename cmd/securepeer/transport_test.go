package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/testutil"
	"github.com/securepeer/securepeer/internal/testenv"
	"github.com/securepeer/securepeer/internal/wire"
)

// TestForgedNoCommonProtocol puts a man in the middle between connect and
// listen. It replaces the listener's message 2 of the first connection
// with the unauthenticated abort "no application protocol in common",
// which no securepeer responder sends there, or injects the abort before
// it. Were connect to believe it and connect again offering nothing, a
// stdio connect to a listen -exec whose command exits 7 would lose
// securepeer-exec/1 and the exit status, and exit 0; a tunnel would lose
// securepeer-tunnel/1 and fall back to a connection per local connection,
// without the forwards' names. connect must report tampering instead, and
// connect only once.
func TestForgedNoCommonProtocol(t *testing.T) {
	t.Parallel()
	abort := []byte{0, 0, wire.AbortNoALPN}
	forgeries := []struct {
		name    string
		replace func(msg2 []byte) []byte
	}{
		{"message 2 replaced", func([]byte) []byte { return abort }},
		{"abort injected before message 2", func(msg2 []byte) []byte { return append(bytes.Clone(abort), msg2...) }},
	}
	modes := []struct {
		name          string
		listen, extra []string
	}{
		{"exec", []string{"-insecure-exec-any-key", "-exec", "cat; exit 7"}, nil},
		{"tunnel", []string{"-to", "db=127.0.0.1:1"}, []string{"-from", "db=127.0.0.1:0", "-no-reconnect"}},
	}
	for _, mode := range modes {
		for _, f := range forgeries {
			t.Run(mode.name+"/"+f.name, func(t *testing.T) {
				t.Parallel()
				te := newTestEnv(t)
				te.run("keygen", "-f", "server")
				te.run("keygen", "-f", "client")
				args := append(append([]string{"listen", "-i", "server"}, mode.listen...), "127.0.0.1:0")
				srv, addr := te.start("listen", args...)
				defer srv.interrupt()
				mitm := testenv.StartMITM(t, addr, func(conn int, fromInitiator bool, i int, frame []byte) []byte {
					if conn == 0 && !fromInitiator && i == 0 {
						return f.replace(frame)
					}
					return frame
				})

				args = append(append([]string{"connect", "-i", "client", "-expect", "server.pub"}, mode.extra...), mitm.Addr)
				cmd := te.command(args...)
				cmd.Stdin = strings.NewReader("beep boop\n")
				var stdout, stderr testenv.SyncBuffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				// A tunnel that fell back would run until stopped: waitCmd
				// ends it and fails the test.
				err := waitCmd(t, cmd)
				if code := exitStatus(t, err); code != 1 {
					t.Errorf("connect exited %d, want 1 (an error), not 0 nor the command's 7", code)
				}
				if !strings.Contains(stderr.String(), "tampered") {
					t.Errorf("connect did not report tampering:\n%s", stderr.String())
				}
				if out := stdout.String(); out != "" {
					t.Errorf("connect wrote %q to stdout", out)
				}
				if n := mitm.Conns(); n != 1 {
					t.Errorf("connect made %d connections, want 1: it connected again on a forged abort", n)
				}
			})
		}
	}
}

// TestHandshakeError checks what connect says for each kind of failed
// handshake, and that it keeps the library's error for errors.Is.
func TestHandshakeError(t *testing.T) {
	id, err := securepeer.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	h := &nativeHandshaker{id: id}
	tests := []struct {
		name     string
		err      error
		want     string
		wantCode int
		is       error
	}{
		{"rejected", fmt.Errorf("x: %w", securepeer.ErrRejected), "refused this identity", exitRejected, nil},
		{"signer gone", fmt.Errorf("x: %w", securepeer.ErrSignerUnavailable), "ssh-add -l", 1, securepeer.ErrSignerUnavailable},
		{"no protocol, found here", fmt.Errorf("x: %w", securepeer.ErrNoCommonProtocol), "handshake with 127.0.0.1:1 failed", 1, securepeer.ErrNoCommonProtocol},
		{"no protocol, the peer says", fmt.Errorf("x: %w", securepeer.ErrPeerNoCommonProtocol), "handshake with 127.0.0.1:1 failed", 1, securepeer.ErrPeerNoCommonProtocol},
	}
	for _, tt := range tests {
		got := handshakeError("127.0.0.1:1", h, tt.err)
		if !strings.Contains(got.Error(), tt.want) || errorCode(got) != tt.wantCode {
			t.Errorf("%s: %q (exit %d), want it to say %q, exit %d", tt.name, got, errorCode(got), tt.want, tt.wantCode)
		}
		if tt.is != nil && !errors.Is(got, tt.is) {
			t.Errorf("%s: %v does not wrap %v", tt.name, got, tt.is)
		}
	}
}

// TestHandshakeTimeoutMessage checks what connect -w says of a peer that
// accepts TCP and never answers: the limit the user set, in the command's
// words, not the library's ("or the context's deadline").
func TestHandshakeTimeoutMessage(t *testing.T) {
	t.Parallel()
	te := newKeys(t)
	silent := testutil.ListenLocal(t) // the kernel accepts; nobody answers
	defer silent.Close()
	addr := silent.Addr().String()
	cmd := te.command("connect", "-w", "300ms", "-i", "client", "-expect", "server.pub", addr)
	var stderr testenv.SyncBuffer
	cmd.Stderr = &stderr
	if code := exitStatus(t, waitCmd(t, startCmd(t, cmd))); code != exitFailure {
		t.Errorf("connect -w exited %d, want %d\n%s", code, exitFailure, stderr.String())
	}
	want := "securepeer: the handshake with " + addr + " timed out after 300ms (connect -w sets that limit); is the peer a securepeer peer, and reachable?\n"
	if got := stderr.String(); got != want {
		t.Errorf("connect -w said\n%s\nwant\n%s", got, want)
	}
}

// TestPortInUse checks that listen, finding its port taken by a program
// that is not securepeer, does not blame another securepeer listen.
func TestPortInUse(t *testing.T) {
	t.Parallel()
	te := newKeys(t)
	other := testutil.ListenLocal(t) // another program's port, held for the whole test
	defer other.Close()
	addr := other.Addr().String()
	for _, args := range [][]string{
		{"listen", "-i", "server", addr},
		{"listen", "-i", "server", "-to", "127.0.0.1:1", addr},
	} {
		cmd := te.command(args...)
		var stderr testenv.SyncBuffer
		cmd.Stderr = &stderr
		if code := exitStatus(t, waitCmd(t, startCmd(t, cmd))); code != exitFailure {
			t.Errorf("securepeer %s exited %d, want %d\n%s", strings.Join(args, " "), code, exitFailure, stderr.String())
		}
		want := "securepeer: cannot listen on " + addr + ": another program already listens on that port; pick another port, or stop that program\n"
		if got := stderr.String(); got != want {
			t.Errorf("securepeer %s said\n%s\nwant\n%s", strings.Join(args, " "), got, want)
		}
	}
}
