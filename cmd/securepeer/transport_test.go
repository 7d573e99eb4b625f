package main

import (
	"strings"
	"testing"
)

// TestHandshakeTimeoutMessage checks what connect -w says of a peer that
// accepts TCP and never answers: the limit the user set, in the command's
// words, not the library's ("or the context's deadline").
func TestHandshakeTimeoutMessage(t *testing.T) {
	t.Parallel()
	te := newKeys(t)
	silent := listenLocal(t) // the kernel accepts; nobody answers
	defer silent.Close()
	addr := silent.Addr().String()
	cmd := te.command("connect", "-w", "300ms", "-i", "client", "-expect", "server.pub", addr)
	var stderr syncBuffer
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
	other := listenLocal(t) // another program's port, held for the whole test
	defer other.Close()
	addr := other.Addr().String()
	for _, args := range [][]string{
		{"listen", "-i", "server", addr},
		{"listen", "-i", "server", "-to", "127.0.0.1:1", addr},
	} {
		cmd := te.command(args...)
		var stderr syncBuffer
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
