package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/testutil"
	"github.com/securepeer/securepeer/internal/testenv"
	"github.com/securepeer/securepeer/p2p"
)

// TestP2PDialError checks the sentence and the exit code for each way a
// dial by key fails, from the p2p package's own errors: errors.Is and
// errors.As decide, never the text.
func TestP2PDialError(t *testing.T) {
	relay := newTestKey(t)
	n := &p2pNode{self: newTestKey(t), relay: map[securepeer.PublicKey]string{relay: "/ip4/203.0.113.7/tcp/4001"}}
	peer := newTestKey(t)
	fp := peer.Fingerprint()
	viaRelay := func(err, cause error) error {
		return &p2p.DialError{Peer: peer, Relays: []*p2p.RelayError{{Relay: relay, Err: err, Cause: cause}}}
	}
	for _, tc := range []struct {
		name string
		err  error
		code int
		want string
	}{
		{"no relay reachable", viaRelay(p2p.ErrNoRelay, fmt.Errorf("dial: %w", syscall.ECONNREFUSED)), 1,
			"no relay could be reached, so " + fp + " cannot be (relay /ip4/203.0.113.7/tcp/4001: no relay could be reached: connection refused); is securepeer relay running there, and is the address right?"},
		{"no reservation", viaRelay(p2p.ErrNoReservation, errors.New("NO_RESERVATION (204)")), 1,
			fp + " is not reachable through the relays: it holds no reservation on them; is securepeer listen -p2p running on its side, with the same relay? (relay /ip4/203.0.113.7/tcp/4001: the peer holds no reservation on the relay)"},
		{"relay refused", viaRelay(p2p.ErrRelayRefused, nil), 1, "the relay refused to connect this side to " + fp + " (its limits or its access rules)"},
		{"wrong key", viaRelay(p2p.ErrWrongKey, nil), 3, "a host with another key answered in place of " + fp + ", and was refused before this side's identity was sent"},
		{"rejected", &p2p.DialError{Peer: peer, Err: fmt.Errorf("handshake: %w", securepeer.ErrRejected)}, 3,
			fp + " refused this identity (" + n.self.Fingerprint() + "); ask its owner to add the key that securepeer id prints to its -allow file"},
		{"not securepeer", viaRelay(p2p.ErrNotSecurepeer, nil), 1, "the host reached for " + fp + " does not speak securepeer"},
		{"circuit ended", viaRelay(p2p.ErrCircuitEnded, nil), 1, "the connection to " + fp + " through the relay failed once open"},
		{"no path", &p2p.DialError{Peer: peer, Err: p2p.ErrNoPath}, 1, "nothing can carry a connection to " + fp},
		{"own key", fmt.Errorf("p2p: dialing this node's own key: %w", securepeer.ErrOwnKey), 2, fp + " is your own key"},
		{"anything else", &p2p.DialError{Peer: peer, Err: context.Canceled}, 1, "cannot reach " + fp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := p2pDialError(n, peer, tc.err)
			if errorCode(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("exit %d, %q\nwant exit %d, %q", errorCode(err), err, tc.code, tc.want)
			}
			if strings.Count(err.Error(), fp) > strings.Count(tc.want, fp) {
				t.Errorf("%q names the peer more than once", err)
			}
		})
	}
}

// TestConnectByKeyOptions checks the flags that a peer named by key
// takes, and refuses those that mean nothing for it.
func TestConnectByKeyOptions(t *testing.T) {
	key := newTestKey(t)
	for _, tc := range []struct {
		name string
		args []string
		err  string
	}{
		{"key line", []string{"-relay", testRelay, key.String()}, ""},
		{"fingerprint", []string{key.Fingerprint()}, ""},
		{"key file", []string{"-relay", testRelay, "-from", "127.0.0.1:8080", "alice.pub"}, ""},
		{"bad relay", []string{"-relay", "203.0.113.7:4001", "alice.pub"}, "relay address"},
		{"relay for an address", []string{"-relay", testRelay, "example.org:5000"}, "-relay is for a peer named by its key"},
		{"expect with a key", []string{"-expect", "alice.pub", key.String()}, "which pins it already"},
		{"accept-new with a key", []string{"-accept-new", key.Fingerprint()}, "needs no such trust"},
		{"legacy with a key", []string{"-legacy", key.String()}, "in the native protocol only"},
		{"short fingerprint", []string{"SHA256:abc"}, "43 characters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConnect(tc.args)
			checkUsage(t, err, tc.err)
		})
	}
}

// TestP2PAgentIdentity: identities whose keys are in a real ssh-agent
// only reach peers by key as key files do: listen -p2p and connect, each
// with an agent's key, meet through a relay, and the listener's -allow
// sees the connecting agent key.
func TestP2PAgentIdentity(t *testing.T) {
	keygen := requireTool(t, "ssh-keygen")
	te := newTestEnv(t)
	te.startAgent()
	for _, name := range []string{"serverkey", "clientkey"} {
		path := filepath.Join(te.dir, name)
		if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", path).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
		te.sshAdd(path)
		os.Remove(path) // only the agent has it now
	}
	relay, addrs := te.start("relay", "relay", "127.0.0.1:0")
	defer relay.interrupt()
	addr, _, _ := strings.Cut(addrs, "\n")
	server, _ := te.start("server", "listen", "-i", "serverkey.pub", "-relay", addr, "-allow", "clientkey.pub", "-exec", "cat", "127.0.0.1:0")
	defer server.interrupt()
	cmd := te.command("connect", "-i", "clientkey.pub", "-relay", addr, "serverkey.pub")
	cmd.Stdin = strings.NewReader("signed by the agent\n")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || string(out) != "signed by the agent\n" {
		t.Fatalf("connect: %q, %v\n%s\nlisten:\n%s", out, err, stderr.String(), server.stderr)
	}
}

// TestP2PListenGracefulStop: through relays too, listen's first signal
// stops accepting and lets the session in progress finish: the node and
// its connection to the peer outlive the signal.
func TestP2PListenGracefulStop(t *testing.T) {
	te := newTestEnv(t)
	te.run("keygen", "-f", "server")
	te.env = append(te.env, "SECUREPEER_TESTONLY_GRACE=1h")
	relay, addrs := te.start("relay", "relay", "127.0.0.1:0")
	defer relay.interrupt()
	addr, _, _ := strings.Cut(addrs, "\n")
	server, _ := te.start("server", "listen", "-i", "server", "-relay", addr, "-insecure-exec-any-key", "-exec", "cat", "127.0.0.1:0")
	cmd := te.command("connect", "-relay", addr, "server.pub")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr testenv.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	out := bufio.NewReader(stdout)
	echo := func(line string) {
		t.Helper()
		io.WriteString(stdin, line+"\n")
		if got, err := out.ReadString('\n'); got != line+"\n" || err != nil {
			t.Fatalf("echo of %q: %q, %v\n%s", line, got, err, stderr.String())
		}
	}
	echo("before")
	server.cmd.Process.Signal(os.Interrupt)
	testutil.WaitFor(t, func() bool {
		return strings.Contains(server.stderr.String(), "stopping: no new connections; waiting up to 1h0m0s for 1 session to end")
	}, server.stderr)
	echo("after the signal")
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Errorf("connect: %v\n%s", err, stderr.String())
	}
	if code := server.wait(); code != 130 {
		t.Errorf("listen exited %d, want 130\n%s", code, server.stderr)
	}
}

// TestP2PSessionLimits: listen -p2p counts its sessions as listen over
// TCP does: a key at its -max-sessions-per-key has its next -exec session
// refused, with the reason as its command's status (exit 1), while
// another key still gets its session, and the held one goes on.
func TestP2PSessionLimits(t *testing.T) {
	te := newTestEnv(t)
	te.run("keygen", "-f", "server")
	te.run("keygen", "-f", "client")
	self := te.run("id")
	if err := os.WriteFile(filepath.Join(te.dir, "allowed"), []byte(self+te.readFile("client.pub")), 0o644); err != nil {
		t.Fatal(err)
	}
	_, addrs := te.start("relay", "relay", "127.0.0.1:0") // killed at the end
	addr, _, _ := strings.Cut(addrs, "\n")
	server, _ := te.start("server", "listen", "-i", "server", "-relay", addr, "-allow", "allowed", "-exec", "cat", "-max-sessions-per-key", "1", "127.0.0.1:0")
	held := te.openSessionArgs("connect", "-relay", addr, "server.pub")
	cmd := te.command("connect", "-relay", addr, "server.pub")
	cmd.Stdin = strings.NewReader("more\n")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 1 || stdout.Len() != 0 || !strings.Contains(stderr.String(), "the peer's command did not run: listen serves 1 session for this key already") {
		t.Errorf("a session beyond the key's limit: exit %d, stdout %q, stderr:\n%s\nlisten:\n%s", code, stdout.String(), stderr.String(), server.stderr)
	}
	other := te.command("connect", "-i", "client", "-relay", addr, "server.pub")
	other.Stdin = strings.NewReader("another key\n")
	if out, err := other.Output(); err != nil || string(out) != "another key\n" {
		t.Errorf("another key's session: %q, %v\n%s", out, err, server.stderr)
	}
	held.echo("still there")
	if n := strings.Count(server.stderr.String(), "refused a session of"); n != 1 {
		t.Errorf("listen gave %d notices of refused sessions, want 1:\n%s", n, server.stderr)
	}
}
