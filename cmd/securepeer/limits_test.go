//go:build unix

package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/ratelog"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/testutil"
)

// countingConn is one end of a net.Pipe as a stream's connection,
// counting its closes.
type countingConn struct {
	net.Conn
	closed *atomic.Int64
}

func (c countingConn) CloseWrite() error { return nil }

func (c countingConn) Close() error {
	c.closed.Add(1)
	return c.Conn.Close()
}

// TestSessionCounter drives 5000 sessions of one key past its limit: each
// is refused, at most maxRefusing at once with the reason and the rest
// aborted at once, with a bounded number of notices; another key still
// gets a session until the total is reached, and a session given back
// makes room again.
func TestSessionCounter(t *testing.T) {
	var closed, refusing, most, refused atomic.Int64
	release := make(chan struct{})
	var reasons sync.Map
	refuse := func(_ context.Context, s *stream, reason string) {
		n := refusing.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		refused.Add(1)
		reasons.Store(reason, true)
		<-release
		refusing.Add(-1)
	}
	notes := new(testutil.NoteLog)
	rates := ratelog.New(notes.Notef)
	c := newSessionCounter(sessionLimits{total: 3, perKey: 2}, refuse, rates.Kind("refused sessions"))
	keys := make([]peerKey, 2)
	for i := range keys {
		id, err := securepeer.GenerateIdentity()
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = id.PublicKey()
	}
	session := func(key peerKey) *stream {
		a, b := net.Pipe()
		t.Cleanup(func() { b.Close() })
		return &stream{conn: countingConn{a, &closed}, raw: a, peer: key, remoteAddr: "127.0.0.1:1"}
	}
	ctx := context.Background()
	a1, b1 := session(keys[0]), session(keys[1])
	for i, s := range []*stream{a1, session(keys[0]), b1} {
		if !c.take(ctx, s) {
			t.Fatalf("session %d refused, within the limits", i)
		}
	}
	if c.take(ctx, session(keys[1])) {
		t.Fatal("a fourth session taken, beyond -max-sessions 3")
	}
	const flood = 5000
	for range flood {
		if c.take(ctx, session(keys[0])) {
			t.Fatal("a third session of one key taken, beyond -max-sessions-per-key 2")
		}
	}
	if n := closed.Load(); n != flood+1-maxRefusing {
		t.Errorf("%d sessions aborted at once, want the %d beyond the %d refusals in progress", n, flood+1-maxRefusing, maxRefusing)
	}
	close(release)
	c.wait()
	if n := most.Load(); n != maxRefusing || refused.Load() != maxRefusing {
		t.Errorf("%d refusals, at most %d at once; want %d", refused.Load(), n, maxRefusing)
	}
	for _, want := range []string{"listen serves 3 sessions already", "listen serves 2 sessions for this key already"} {
		found := false
		reasons.Range(func(r, _ any) bool {
			found = found || strings.HasPrefix(r.(string), want)
			return true
		})
		if !found {
			t.Errorf("no refusal says %q", want)
		}
	}
	if n := notes.Count("refused a session of"); n != ratelog.Burst {
		t.Errorf("%d notices of refused sessions, want the rate log's %d:\n%s", n, ratelog.Burst, notes)
	}
	c.done(a1)
	if !c.take(ctx, session(keys[0])) {
		t.Error("a session refused after one of its key ended")
	}
}

// TestSessionLimitsExec checks listen -exec's limits end to end: one key
// that holds its sessions has each further one refused, with the reason
// as its command's status (exit 1), while another key still gets its
// session, until the total is reached.
func TestSessionLimitsExec(t *testing.T) {
	t.Parallel()
	te := newKeys(t)
	// The default identity, which openSession uses, and client's.
	self := te.run("id")
	if err := os.WriteFile(filepath.Join(te.dir, "allowed"), []byte(self+te.readFile("client.pub")), 0o644); err != nil {
		t.Fatal(err)
	}
	server, addr := te.start("server", "listen", "-i", "server", "-allow", "allowed", "-exec", "cat", "-max-sessions", "3", "-max-sessions-per-key", "2", "127.0.0.1:0")
	held := []*session{te.openSession(addr), te.openSession(addr)}
	for i := range 20 {
		cmd := te.command("connect", "-expect", "server.pub", addr)
		cmd.Stdin = strings.NewReader("more\n")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if code := cmd.ProcessState.ExitCode(); code != 1 || stdout.Len() != 0 || !strings.Contains(stderr.String(), "the peer's command did not run: listen serves 2 sessions for this key already") {
			t.Fatalf("session %d beyond the key's limit: exit %d (%v), stdout %q, stderr:\n%s", i, code, err, stdout.String(), stderr.String())
		}
	}
	other := te.command("connect", "-i", "client", "-expect", "server.pub", addr)
	other.Stdin = strings.NewReader("another key\n")
	if out, err := other.Output(); err != nil || string(out) != "another key\n" {
		t.Fatalf("another key's session: %q, %v\n%s", out, err, server.stderr)
	}
	third := te.openSessionAs("client", addr) // the other key's 1st, and the 3rd in all
	defer third.stdin.Close()
	cmd := te.command("connect", "-i", "client", "-expect", "server.pub", addr)
	cmd.Stdin = strings.NewReader("")
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "listen serves 3 sessions already, the most it allows") {
		t.Errorf("a session beyond -max-sessions:\n%s", out)
	}
	for _, s := range held {
		s.echo("still there")
	}
	if n := strings.Count(server.stderr.String(), "refused a session of"); n == 0 || n > ratelog.Burst {
		t.Errorf("listen gave %d notices of refused sessions, want 1 to %d:\n%s", n, ratelog.Burst, server.stderr)
	}
}

// TestSessionLimitsTunnel checks listen -to's limits end to end: a key at
// its limit has its next tunnel refused, and connect exits 1 saying why,
// while another key still gets its tunnel.
func TestSessionLimitsTunnel(t *testing.T) {
	t.Parallel()
	te := newKeys(t)
	self := te.run("id")
	if err := os.WriteFile(filepath.Join(te.dir, "allowed"), []byte(self+te.readFile("client.pub")), 0o644); err != nil {
		t.Fatal(err)
	}
	target := testutil.ListenLocal(t)
	startHTTP(t, target, nil, nil)
	server, addr := te.start("server", "listen", "-i", "server", "-allow", "allowed", "-to", target.Addr().String(), "-max-sessions-per-key", "1", "127.0.0.1:0")
	first, local := te.start("first", "connect", "-expect", "server.pub", "-from", "127.0.0.1:0", addr)
	if got, err := httpGet(newHTTPClient(), "http://"+local+"/first"); got != "answer to /first" || err != nil {
		t.Fatalf("the first tunnel: %q, %v\n%s\n%s", got, err, first.stderr, server.stderr)
	}
	cmd := te.command("connect", "-expect", "server.pub", "-from", "127.0.0.1:0", addr)
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), "refused the tunnel connection: listen serves 1 session for this key already") {
		t.Errorf("a second tunnel of the key: exit %d (%v):\n%s", code, err, out)
	}
	_, otherLocal := te.start("other", "connect", "-i", "client", "-expect", "server.pub", "-from", "127.0.0.1:0", addr)
	if got, err := httpGet(newHTTPClient(), "http://"+otherLocal+"/other"); got != "answer to /other" || err != nil {
		t.Errorf("another key's tunnel: %q, %v\n%s", got, err, server.stderr)
	}
	if got, err := httpGet(newHTTPClient(), "http://"+local+"/again"); got != "answer to /again" || err != nil {
		t.Errorf("the first tunnel after the refusal: %q, %v", got, err)
	}
	if n := strings.Count(server.stderr.String(), "refused a session of"); n != 1 {
		t.Errorf("listen gave %d notices of refused sessions, want 1:\n%s", n, server.stderr)
	}
}
