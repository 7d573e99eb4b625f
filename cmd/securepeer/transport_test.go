package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/securepeer/securepeer/internal/testenv"
	"github.com/securepeer/securepeer/internal/wire"
)

// TestForgedNoCommonProtocol puts a man in the middle between a stdio
// connect and a listen -exec whose command exits 7. It replaces the
// listener's message 2 of the first connection with the unauthenticated
// abort "no application protocol in common", which no securepeer
// responder sends there, or injects the abort before it. Were connect to
// believe it and connect again offering nothing, securepeer-exec/1 and the
// exit status would be gone and connect would exit 0. It must report
// tampering instead, and connect only once.
func TestForgedNoCommonProtocol(t *testing.T) {
	t.Parallel()
	abort := []byte{0, 0, wire.AbortNoALPN}
	for _, tc := range []struct {
		name    string
		replace func(msg2 []byte) []byte
	}{
		{"message 2 replaced", func([]byte) []byte { return abort }},
		{"abort injected before message 2", func(msg2 []byte) []byte { return append(bytes.Clone(abort), msg2...) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			te := newTestEnv(t)
			te.run("keygen", "-f", "server")
			te.run("keygen", "-f", "client")
			srv, addr := te.start("listen", "listen", "-i", "server", "-exec", "cat; exit 7", "127.0.0.1:0")
			defer srv.interrupt()
			mitm := testenv.StartMITM(t, addr, func(conn int, fromInitiator bool, i int, frame []byte) []byte {
				if conn == 0 && !fromInitiator && i == 0 {
					return tc.replace(frame)
				}
				return frame
			})

			cmd := te.command("connect", "-i", "client", "-expect", "server.pub", mitm.Addr)
			cmd.Stdin = strings.NewReader("beep boop\n")
			var stderr syncBuffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			code := exitStatus(t, err)
			if code != 1 {
				t.Errorf("connect exited %d, want 1 (an error), not 0 nor the command's 7", code)
			}
			if !strings.Contains(stderr.String(), "tampered") {
				t.Errorf("connect did not report tampering:\n%s", stderr.String())
			}
			if len(out) != 0 {
				t.Errorf("connect wrote %q to stdout", out)
			}
			if n := mitm.Conns(); n != 1 {
				t.Errorf("connect made %d connections, want 1: it connected again on a forged abort", n)
			}
		})
	}
}
