package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/testutil"
	"github.com/securepeer/securepeer/p2p"
	"github.com/securepeer/securepeer/p2p/locate"
)

// testDHTMember starts a member of a private DHT on loopback, in the test
// process, as a DHT server that others join through; it returns its
// address for -dht.
func testDHTMember(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	l, err := locate.Start(ctx, locate.Config{Server: true, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addrs()[0]
}

// TestDHTConnect: connect finds a listen -p2p that published its
// addresses in a private DHT, by the listener's key, reaches it at what
// it found, and gets the -exec's answer; each says what it did. With no
// relay of its own; through the relay of the listener's record, when the
// record has no direct address (on loopback one always answers); and
// after its own relay, which the listener does not use, fails.
func TestDHTConnect(t *testing.T) {
	member := testDHTMember(t)
	te := newTestEnv(t)
	relay, addrs := te.start("relay", "relay", "127.0.0.1:0")
	defer relay.interrupt()
	raddr, _, _ := strings.Cut(addrs, "\n")
	other, addrs := te.start("other", "relay", "127.0.0.1:0")
	defer other.interrupt()
	oaddr, _, _ := strings.Cut(addrs, "\n")
	for _, tc := range []struct {
		name        string
		relayedOnly bool     // the record has circuit addresses only
		args        []string // connect's, before the peer
		found       string   // what connect says it found, after "found KEY "
		path        string   // in what it says of the path
	}{
		{"no relay", false, nil, "through the DHT: 2 addresses (1 through relays)", "directly (127.0.0.1:"},
		// Relayed, or hole punched after meeting there (on loopback, a
		// punch gets through at once).
		{"through the record's relay", true, nil, "through the DHT: 1 address (1 through relays)", "through relay "},
		{"after its relay failed", false, []string{"-relay", oaddr}, "through the DHT: 2 addresses (1 through relays)", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			te := *te
			te.t = t
			// A key and a name of its own: the DHT keeps the others' records.
			name := strings.ReplaceAll(tc.name, " ", "-")
			te.run("keygen", "-f", name)
			fp := fileKey(t, &te, name+".pub").Fingerprint()
			if tc.relayedOnly {
				te.env = append(slices.Clone(te.env), "SECUREPEER_TESTONLY_DHT_RELAYED_ONLY=1")
			}
			server, _ := te.start(name, "listen", "-i", name, "-relay", raddr, "-dht", member, "-insecure-exec-any-key", "-exec", "tr a-z A-Z", "127.0.0.1:0")
			defer server.interrupt()
			if !strings.Contains(server.stderr.String(), "published this side's") {
				t.Errorf("listen did not say it published its addresses:\n%s", server.stderr)
			}
			cmd := te.command(append(append([]string{"connect", "-dht", member}, tc.args...), name+".pub")...)
			cmd.Stdin = strings.NewReader("found by key\n")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil || string(out) != "FOUND BY KEY\n" {
				t.Fatalf("connect: %q, %v\n%s\nlisten:\n%s", out, err, stderr.String(), server.stderr)
			}
			if w := "found " + fp + " " + tc.found; !strings.Contains(stderr.String(), w) {
				t.Errorf("connect did not say %q:\n%s", w, stderr.String())
			}
			_, path, _ := strings.Cut(stderr.String(), "connected to "+fp+" ")
			if path, _, _ = strings.Cut(path, "\n"); !strings.Contains(path, tc.path) {
				t.Errorf("connect said it connected %q, want %q in it:\n%s", path, tc.path, stderr.String())
			}
		})
	}
}

// TestDHTNotFound: connect -dht, with no relay, names a key that
// published nothing: one sentence says so, with what to check, exit 1.
func TestDHTNotFound(t *testing.T) {
	member := testDHTMember(t)
	te := newTestEnv(t)
	te.run("keygen", "-f", "nobody")
	fp := fileKey(t, te, "nobody.pub").Fingerprint()
	cmd := te.command("connect", "-dht", member, "nobody.pub")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	ee, ok := err.(*exec.ExitError)
	want := fp + " was not found in the DHT: no record under its key; is it running listen -p2p with -dht, in the same DHT? A relay in common (-relay) needs no DHT"
	if !ok || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), want) {
		t.Errorf("connect: %v\n%s\nwant exit 1 and %q", err, stderr.String(), want)
	}
}

// TestDHTFlag checks what -dht takes, on listen and connect.
func TestDHTFlag(t *testing.T) {
	const member = "/ip4/127.0.0.1/tcp/4002/p2p/12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf"
	key := newTestKey(t)
	for _, tc := range []struct {
		name string
		args []string
		err  string
	}{
		{"member", []string{"-dht", member, key.String()}, ""},
		{"two members", []string{"-dht", member + "," + member, key.String()}, ""},
		{"public", []string{"-dht", "public", key.String()}, ""},
		{"no peer ID", []string{"-dht", "/ip4/127.0.0.1/tcp/4002", key.String()}, "each ending with /p2p/ and its ID"},
		{"host and port", []string{"-dht", "127.0.0.1:4002", key.String()}, "-dht takes public"},
		{"for an address", []string{"-dht", member, "example.org:5000"}, "-dht is for a peer named by its key"},
	} {
		t.Run("connect "+tc.name, func(t *testing.T) {
			_, err := parseConnect(tc.args)
			checkUsage(t, err, tc.err)
		})
	}
	o, err := parseListen([]string{"-dht", "public"})
	if err != nil {
		t.Fatal(err)
	}
	if !o.p2p || !slices.Equal(o.dht, locate.PublicBootstrap()) {
		t.Errorf("listen -dht public: p2p %v, bootstrap %v", o.p2p, o.dht)
	}
}

// TestDHTAddrs: a record lists the circuit addresses first, and at most
// locate's bound.
func TestDHTAddrs(t *testing.T) {
	self, err := p2p.PeerID(newTestKey(t))
	if err != nil {
		t.Fatal(err)
	}
	relay, err := p2p.PeerID(newTestKey(t))
	if err != nil {
		t.Fatal(err)
	}
	var in []string
	for i := range 40 {
		in = append(in, fmt.Sprintf("/ip4/192.0.2.%d/tcp/4001/p2p/%s", i, self))
	}
	circuit := fmt.Sprintf("/ip4/203.0.113.7/tcp/4001/p2p/%s/p2p-circuit/p2p/%s", relay, self)
	in = append(in, circuit)
	got := dhtAddrs(in)
	if len(got) != dhtMaxAddrs || got[0] != circuit || got[1] != in[0] {
		t.Errorf("dhtAddrs: %d addresses, first %q, %q", len(got), got[0], got[1])
	}
	id, err := securepeer.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := locate.NewRecord(id, got, time.Now()); err != nil {
		t.Errorf("locate refuses what dhtAddrs gives: %v", err)
	}
}

// fileKey is the key of the .pub file name.
func fileKey(t *testing.T, te *testEnv, name string) securepeer.PublicKey {
	t.Helper()
	k, err := securepeer.ParsePublicKey(strings.TrimSpace(te.readFile(name)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestDHTRepublish: listen publishes again when its reservations change,
// only if its addresses did, and tries again after a failure, saying so.
func TestDHTRepublish(t *testing.T) {
	var mu sync.Mutex
	now := []string{"/ip4/192.0.2.1/tcp/1"}
	published := make(chan []string, 4)
	var calls [][]string // what publish was called with
	fail := true
	changed := make(chan struct{}, 1)
	notes := new(testutil.NoteLog)
	p := &dhtPublisher{
		times: dhtTimes{republish: time.Hour, settle: time.Millisecond, retry: time.Millisecond},
		addrs: func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(now) },
		publish: func(_ context.Context, a []string) error {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, a)
			if fail {
				fail = false
				return errors.New("no DHT peer took it")
			}
			published <- a
			return nil
		},
		notef:   notes.Notef,
		changed: changed,
		last:    slices.Clone(now),
	}
	p.run()
	defer p.close()
	changed <- struct{}{} // the same addresses: nothing to publish
	// Once the loop has taken that change, a new address.
	testutil.WaitFor(t, func() bool { return len(changed) == 0 }, notes)
	mu.Lock()
	now = append(now, "/ip4/192.0.2.2/tcp/2")
	mu.Unlock()
	changed <- struct{}{}
	select {
	case a := <-published:
		if len(a) != 2 {
			t.Errorf("published %v, want the new addresses", a)
		}
	case <-time.After(testTimeout):
		t.Fatalf("nothing published again\n%s", notes)
	}
	testutil.WaitFor(t, func() bool { return notes.Count("published this side's 2 addresses") == 1 }, notes)
	if notes.Count("could not publish this side's addresses in the DHT (no DHT peer took it); trying again in 1ms") != 1 {
		t.Errorf("notices:\n%s", notes)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 2 || len(calls[0]) != 2 {
		t.Errorf("publish was called with %v; want the new addresses twice (a failure, then again), never the old ones", calls)
	}
}

// testDHTMemberMain is a member of a private DHT, as a command for the
// NAT lab's hosts (TestNATDHT): a locate server listening on the
// multiaddr of its argument, which writes its address to the test's
// address file and runs until killed.
func testDHTMemberMain() {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	l, err := locate.Start(ctx, locate.Config{Server: true, ListenAddrs: os.Args[1:]})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testOnlyAddrFile = os.Getenv("SECUREPEER_TESTONLY_ADDR_FILE")
	if err := writeAddrFile(l.Addrs()[:1]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	select {}
}
