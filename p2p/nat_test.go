//go:build linux

package p2p

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/natlab"
	"github.com/securepeer/securepeer/internal/natlab/natlabtest"
	"github.com/securepeer/securepeer/internal/testenv"
)

// The NAT lab tests run each peer in a process of its own inside a host
// of the lab (internal/natlab): the test binary again, as
// TestNATPeerProcess, told what to be by natPeerEnv, and driven by lines
// of JSON on its input.

const natPeerEnv = "P2P_NAT_PEER"

// natPeerSpec tells a peer process what to be.
type natPeerSpec struct {
	Relay  bool     // a relay, else a node
	Key    []byte   // the identity, an OpenSSH private key
	Listen string   // the address to listen on
	Relays []string // the node's relays
	Serve  bool     // the node listens for echoProto and bulkProto
	// PlainListen, with Serve, is a TCP address where the process also
	// takes plain securepeer connections (no libp2p), read to their end
	// and answered with one byte, as bulkProto's streams are.
	PlainListen string
	DirectWait  time.Duration
	// TunnelTo, if set, makes the node forward each stream of tunnelProto
	// to this TCP address.
	TunnelTo string
	// Proxy, if set, makes the process a proxy, as ssh's ProxyCommand
	// runs one: a node that dials this key's tunnelProto, says on its
	// standard error which path the stream took, and carries its
	// standard input and output over the stream.
	Proxy string
}

const tunnelProto = "tunnel/1"

// natCommand is one line of a peer process's input.
type natCommand struct {
	Op   string // "dial", "bulk" or "plainbulk"
	Addr string // plainbulk: the TCP address of the peer's PlainListen
	Key  string // the peer to dial, authorized_keys form
	Wait time.Duration
	Size int64
}

// natResult is a peer process's answer to a command.
type natResult struct {
	Err       string
	Relayed   bool          // the first stream's path
	Resumed   bool          // the first stream's connection resumed
	FirstByte time.Duration // from Dial to the echo of a first byte
	// Direct is how long after Dial a direct connection existed, or -1
	// if none did within the command's Wait; DirectStream is whether a
	// new stream then went direct.
	Direct       time.Duration
	DirectStream bool
	// Bulk: bytes per second of a one-way transfer.
	Rate float64
}

// TestNATPeerProcess is not a test: it is a peer in the NAT lab, run by
// the NAT tests in a process of their own.
func TestNATPeerProcess(t *testing.T) {
	var spec natPeerSpec
	natlabtest.ReadSpec(t, natPeerEnv, "run by the NAT lab tests", &spec)
	id, err := securepeer.ParseIdentity(spec.Key)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Proxy != "" {
		runNATProxy(t, id, spec)
		return
	}
	out := &natOutput{w: bufio.NewWriter(os.Stdout)}
	if spec.Relay {
		r, err := RunRelay(context.Background(), RelayConfig{Identity: id, ListenAddrs: []string{spec.Listen}})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		out.line("ready", r.Addrs())
		io.Copy(io.Discard, os.Stdin)
		return
	}
	runNATNode(t, id, spec, out)
}

// natOutput writes a peer process's lines, one at a time.
type natOutput struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (o *natOutput) line(kind string, v any) {
	b, _ := json.Marshal(v)
	o.mu.Lock()
	defer o.mu.Unlock()
	fmt.Fprintf(o.w, "%s %s\n", kind, b)
	o.w.Flush()
}

func runNATNode(t *testing.T, id *securepeer.Identity, spec natPeerSpec, out *natOutput) {
	events := newEventLog()
	n, err := Start(context.Background(), Config{
		Identity:    id,
		ListenAddrs: []string{spec.Listen},
		Relays:      spec.Relays,
		DirectWait:  spec.DirectWait,
		Notify: func(e Event) {
			events.notify(e)
			out.line("event", e.String())
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if spec.Serve {
		echoLn, err := n.Listen(echoProto)
		if err != nil {
			t.Fatal(err)
		}
		echo(t, echoLn)
		bulkLn, err := n.Listen(bulkProto)
		if err != nil {
			t.Fatal(err)
		}
		go serveBulk(bulkLn)
		if spec.PlainListen != "" {
			servePlainBulk(t, id, spec.PlainListen)
		}
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		err = n.Ready(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	if spec.TunnelTo != "" {
		ln, err := n.Listen(tunnelProto)
		if err != nil {
			t.Fatal(err)
		}
		go forwardTunnel(ln, spec.TunnelTo)
	}
	out.line("ready", n.Addrs())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var cmd natCommand
		if err := json.Unmarshal(in.Bytes(), &cmd); err != nil {
			t.Fatal(err)
		}
		out.line("result", natRun(n, events, cmd))
	}
}

// forwardTunnel carries each stream of ln to a new TCP connection to
// addr.
func forwardTunnel(ln *Listener, addr string) {
	for {
		s, err := ln.AcceptStream()
		if err != nil {
			return
		}
		go func() {
			defer s.Close()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				s.Abort()
				return
			}
			defer c.Close()
			go func() {
				io.Copy(c, s)
				c.(*net.TCPConn).CloseWrite()
			}()
			io.Copy(s, c)
		}()
	}
}

// runNATProxy dials spec.Proxy's tunnel and carries standard input and
// output over it.
func runNATProxy(t *testing.T, id *securepeer.Identity, spec natPeerSpec) {
	key, err := securepeer.ParsePublicKey(spec.Proxy)
	if err != nil {
		t.Fatal(err)
	}
	n, err := Start(context.Background(), Config{Identity: id, ListenAddrs: []string{spec.Listen}, Relays: spec.Relays})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	s, err := n.Dial(ctx, key, tunnelProto)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fmt.Fprintf(os.Stderr, "p2p path: %s\n", pathWord(s.Path().Relayed))
	go func() {
		io.Copy(s, os.Stdin)
		s.CloseWrite()
	}()
	io.Copy(os.Stdout, s)
}

// serveBulk reads each stream to its end and answers with one byte.
func serveBulk(l *Listener) {
	for {
		s, err := l.AcceptStream()
		if err != nil {
			return
		}
		go func() {
			defer s.Close()
			if _, err := io.Copy(io.Discard, s); err == nil {
				s.Write([]byte{1})
			}
		}()
	}
}

func natRun(n *Node, events *eventLog, cmd natCommand) natResult {
	key, err := securepeer.ParsePublicKey(cmd.Key)
	if err != nil {
		return natResult{Err: err.Error()}
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	switch cmd.Op {
	case "dial":
		return natDial(ctx, n, events, key, cmd.Wait)
	case "bulk":
		return natBulk(ctx, n, key, cmd.Size)
	case "plainbulk":
		return natPlainBulk(ctx, key, cmd.Addr, cmd.Size)
	}
	return natResult{Err: "unknown op " + cmd.Op}
}

// natDial dials key, times the echo of a first byte, then waits up to
// wait for a direct connection.
func natDial(ctx context.Context, n *Node, events *eventLog, key securepeer.PublicKey, wait time.Duration) natResult {
	var res natResult
	start := time.Now()
	s, err := n.Dial(ctx, key, echoProto)
	if err != nil {
		return natResult{Err: err.Error()}
	}
	defer s.Close()
	b := []byte{42}
	if _, err := s.Write(b); err != nil {
		return natResult{Err: err.Error()}
	}
	if _, err := io.ReadFull(s, b); err != nil {
		return natResult{Err: err.Error()}
	}
	res.FirstByte = time.Since(start)
	res.Relayed, res.Resumed = s.Path().Relayed, s.Resumed()
	res.Direct = -1
	p, _ := PeerID(key)
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for res.Direct < 0 {
		events.mu.Lock()
		changed := events.changed
		events.mu.Unlock()
		if c := n.bestConn(p); c != nil && !isCircuit(c.RemoteMultiaddr()) {
			res.Direct = time.Since(start)
			break
		}
		select {
		case <-changed:
		case <-deadline.C:
			return res
		}
	}
	s2, err := n.Dial(ctx, key, echoProto)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer s2.Close()
	res.DirectStream = !s2.Path().Relayed
	return res
}

// natBulk sends size bytes to key's bulk protocol and times them until
// the peer says it has read them all.
func natBulk(ctx context.Context, n *Node, key securepeer.PublicKey, size int64) natResult {
	s, err := n.Dial(ctx, key, bulkProto)
	if err != nil {
		return natResult{Err: err.Error()}
	}
	defer s.Close()
	res := natResult{Relayed: s.Path().Relayed}
	buf := make([]byte, 64<<10)
	start := time.Now()
	for sent := int64(0); sent < size; sent += int64(len(buf)) {
		if _, err := s.Write(buf); err != nil {
			return natResult{Err: err.Error()}
		}
	}
	s.CloseWrite()
	if _, err := io.ReadFull(s, buf[:1]); err != nil {
		return natResult{Err: err.Error()}
	}
	res.Rate = float64(size) / time.Since(start).Seconds()
	return res
}

// natPlainBulk sends size bytes over a plain securepeer connection (no
// libp2p) to addr, pinned to key, and times them until the peer says it
// has read them all: what the engine's direct streams are measured
// against.
func natPlainBulk(ctx context.Context, key securepeer.PublicKey, addr string, size int64) natResult {
	c, err := securepeer.Dial(ctx, "tcp", addr, &securepeer.Config{Identity: plainIdentity, Verify: pinKey(key)})
	if err != nil {
		return natResult{Err: err.Error()}
	}
	defer c.Close()
	if err := c.HandshakeContext(ctx); err != nil {
		return natResult{Err: err.Error()}
	}
	buf := make([]byte, 64<<10)
	start := time.Now()
	for sent := int64(0); sent < size; sent += int64(len(buf)) {
		if _, err := c.Write(buf); err != nil {
			return natResult{Err: err.Error()}
		}
	}
	c.CloseWrite()
	if _, err := io.ReadFull(c, buf[:1]); err != nil {
		return natResult{Err: err.Error()}
	}
	return natResult{Rate: float64(size) / time.Since(start).Seconds()}
}

// plainIdentity is the identity of the plain connections' dialers: the
// listener takes any key.
var plainIdentity, _ = securepeer.GenerateIdentity()

func pinKey(want securepeer.PublicKey) func(context.Context, securepeer.PublicKey) error {
	return func(_ context.Context, got securepeer.PublicKey) error {
		if got != want {
			return securepeer.ErrRejected
		}
		return nil
	}
}

// servePlainBulk takes plain securepeer connections at addr, with id and
// any peer key, reads each to its end and answers with one byte.
func servePlainBulk(t *testing.T, id *securepeer.Identity, addr string) {
	ln, err := securepeer.Listen("tcp", addr, &securepeer.Config{Identity: id, Verify: func(context.Context, securepeer.PublicKey) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := io.Copy(io.Discard, c); err == nil {
					c.Write([]byte{1})
				}
			}()
		}
	}()
}

// A natPeer is a peer process in the lab, from the test's side.
type natPeer struct {
	name  string
	key   securepeer.PublicKey
	addrs []string
	in    io.WriteCloser
	lines chan string // lines other than events; closed at the end

	mu      sync.Mutex
	log     strings.Builder // its events
	changed chan struct{}   // closed when an event is logged, then replaced
}

func startNATPeer(t testing.TB, h *natlab.Host, spec natPeerSpec) *natPeer {
	t.Helper()
	id := newIdentity(t)
	pem, err := id.MarshalOpenSSH("")
	if err != nil {
		t.Fatal(err)
	}
	spec.Key = pem
	spec.Listen = fmt.Sprintf("/ip4/%s/tcp/4001", h.Addr())
	var args []string
	if d := os.Getenv(natProfileEnv); d != "" {
		args = append(args, "-test.cpuprofile="+filepath.Join(d, h.Name()+".cpu"),
			"-test.blockprofile="+filepath.Join(d, h.Name()+".block"), "-test.blockprofilerate=1000")
	}
	p := &natPeer{name: h.Name(), key: id.PublicKey(), changed: make(chan struct{})}
	var stdout io.Reader
	p.in, stdout = natlabtest.StartProcess(t, h, "TestNATPeerProcess", natPeerEnv, spec, args...)
	p.lines = make(chan string, 16)
	go p.scan(stdout)
	p.read(t, "ready", &p.addrs)
	return p
}

// scan reads the peer's output: it keeps events in the log, so that the
// peer never waits for the test to read them, and passes the rest on.
func (p *natPeer) scan(r io.Reader) {
	defer close(p.lines)
	lines := bufio.NewScanner(r)
	for lines.Scan() {
		line := lines.Text()
		if rest, ok := strings.CutPrefix(line, "event "); ok {
			p.mu.Lock()
			fmt.Fprintf(&p.log, "%s %s\n", p.name, rest)
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
			continue
		}
		p.lines <- line
	}
}

// events returns the peer's events so far, and forgets them.
func (p *natPeer) events() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.log.String()
	p.log.Reset()
	return s
}

// await waits until the peer's events since they were last read hold n
// lines that contain substr, and fails the test if they do not within
// testTimeout.
func (p *natPeer) await(t *testing.T, substr string, n int) {
	t.Helper()
	deadline := time.NewTimer(testTimeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		count, changed := 0, p.changed
		for line := range strings.Lines(p.log.String()) {
			if strings.Contains(line, substr) {
				count++
			}
		}
		p.mu.Unlock()
		if count >= n {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("%s logged %d events with %q in %v, want %d:\n%s", p.name, count, substr, testTimeout, n, p.events())
		}
	}
}

// read reads the peer's lines up to the next of kind, into v.
func (p *natPeer) read(t testing.TB, kind string, v any) {
	t.Helper()
	for line := range p.lines {
		if rest, ok := strings.CutPrefix(line, kind+" "); ok {
			if err := json.Unmarshal([]byte(rest), v); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("%s ended without a %q line\n%s", p.name, kind, p.events())
}

func (p *natPeer) run(t testing.TB, cmd natCommand) natResult {
	t.Helper()
	b, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(p.in, "%s\n", b); err != nil {
		t.Fatal(err)
	}
	var res natResult
	p.read(t, "result", &res)
	return res
}

// TestNATPairs dials, for every pair of NAT kinds, from a node behind the
// first to a node behind the second that listens through a public relay:
// every pair connects, and ends direct exactly when the lab says that the
// two NATs let a TCP hole punch through (natlab.Punchable); a new stream
// then uses the direct connection. The times it logs (first byte, direct
// connection) are measurements, gathered in BENCHMARKS.md, not checked
// here.
func TestNATPairs(t *testing.T) {
	lab := natlab.New(t)
	relay := startNATPeer(t, lab.AddPublicHost("relay"), natPeerSpec{Relay: true})
	kinds := natlab.Kinds()
	listeners := make(map[natlab.Kind]*natPeer)
	dialers := make(map[natlab.Kind]*natPeer)
	lh := make(map[natlab.Kind]*natlab.Host)
	dh := make(map[natlab.Kind]*natlab.Host)
	for i, k := range kinds {
		lh[k] = lab.AddHost(fmt.Sprintf("l%d", i), k)
		dh[k] = lab.AddHost(fmt.Sprintf("d%d", i), k)
		listeners[k] = startNATPeer(t, lh[k], natPeerSpec{Relays: relay.addrs, Serve: true})
		dialers[k] = startNATPeer(t, dh[k], natPeerSpec{Relays: relay.addrs})
	}
	// Each dialer dials the listeners in turn; the dialers run at once.
	for _, from := range kinds {
		t.Run(from.String(), func(t *testing.T) {
			t.Parallel()
			for _, to := range kinds {
				t.Run(to.String(), func(t *testing.T) {
					d, l := dialers[from], listeners[to]
					d.events()
					// Two rounds of three hole punching attempts of at most
					// punchTimeout each, a second apart (punchAgain), and some
					// slack: on a loaded host a round can miss.
					res := d.run(t, natCommand{Op: "dial", Key: l.key.String(), Wait: 8 * punchTimeout})
					defer func() {
						if t.Failed() {
							// Which ports each side's SYNs aimed at.
							dd, _ := dh[from].Dropped(context.Background())
							ld, _ := lh[to].Dropped(context.Background())
							t.Logf("the dialer's router dropped %v\nthe listener's router dropped %v", dd, ld)
							t.Logf("the dialer's events:\n%s\nthe listener's events:\n%s", d.events(), l.events())
						}
					}()
					if res.Err != "" {
						t.Fatalf("dial: %s", res.Err)
					}
					want := natlab.Punchable(from, to)
					t.Logf("first byte %v (%s), direct after %v", res.FirstByte, pathWord(res.Relayed), res.Direct)
					if got := res.Direct >= 0; got != want {
						t.Errorf("direct %v, want %v", got, want)
					}
					if res.Direct >= 0 && !res.DirectStream {
						t.Error("a new stream did not use the direct connection")
					}
				})
			}
		})
	}
}

// TestNATSymmetricRandom: port prediction follows only a NAT that hands
// out ports in sequence. Against a symmetric NAT that picks them at
// random, facing a port-restricted NAT, the pair connects through the
// relay and stays there, either side dialing (natlab.Punchable says so).
func TestNATSymmetricRandom(t *testing.T) {
	lab := natlab.New(t)
	relay := startNATPeer(t, lab.AddPublicHost("relay"), natPeerSpec{Relay: true})
	kinds := []natlab.Kind{natlab.SymmetricRandom, natlab.PortRestricted}
	for i, from := range kinds {
		to := kinds[1-i]
		t.Run(from.String()+"/"+to.String(), func(t *testing.T) {
			t.Parallel()
			l := startNATPeer(t, lab.AddHost(fmt.Sprintf("l%d", i), to), natPeerSpec{Relays: relay.addrs, Serve: true})
			d := startNATPeer(t, lab.AddHost(fmt.Sprintf("d%d", i), from), natPeerSpec{Relays: relay.addrs})
			res := d.run(t, natCommand{Op: "dial", Key: l.key.String(), Wait: 4 * punchTimeout})
			if res.Err != "" {
				t.Fatalf("dial: %s", res.Err)
			}
			t.Logf("first byte %v (%s), direct after %v", res.FirstByte, pathWord(res.Relayed), res.Direct)
			if got, want := res.Direct >= 0, natlab.Punchable(from, to); got != want {
				t.Errorf("direct %v, want %v\n%s", got, want, d.events())
			}
		})
	}
}

// TestNATPunchAgain checks that a pair whose first round of hole punching
// failed goes direct in a later round (punchAgain): the path between the
// two NATs is cut while go-libp2p's round runs its three attempts, then
// restored; the relay's path stays up throughout. go-libp2p alone makes no
// further round, and the pair would stay relayed. With a symmetric NAT on
// either side, the later round needs the ports predicted for it, and not
// the failed attempts' ones, which go-libp2p would dial again
// (forgetOffered).
func TestNATPunchAgain(t *testing.T) {
	lab := natlab.New(t)
	relay := startNATPeer(t, lab.AddPublicHost("relay"), natPeerSpec{Relay: true})
	pairs := [][2]natlab.Kind{
		{natlab.PortRestricted, natlab.PortRestricted},
		{natlab.PortRestricted, natlab.Symmetric},
		{natlab.Symmetric, natlab.PortRestricted},
	}
	for i, pair := range pairs {
		from, to := pair[0], pair[1]
		t.Run(from.String()+"/"+to.String(), func(t *testing.T) {
			t.Parallel()
			lh, dh := lab.AddHost(fmt.Sprintf("l%d", i), to), lab.AddHost(fmt.Sprintf("d%d", i), from)
			punchAgainAfterCut(t, lh, dh, relay)
		})
	}
}

// punchAgainAfterCut is TestNATPunchAgain for a listener on lh and a
// dialer on dh.
func punchAgainAfterCut(t *testing.T, lh, dh *natlab.Host, relay *natPeer) {
	l := startNATPeer(t, lh, natPeerSpec{Relays: relay.addrs, Serve: true})
	d := startNATPeer(t, dh, natPeerSpec{Relays: relay.addrs})
	// Cut at both hosts, so that neither side's packets reach the other's
	// router: a router that saw a flow's SYNs go unanswered keeps that
	// flow in conntrack for two minutes, and may refuse a later simultaneous
	// open on the same addresses and ports as out of window, which only
	// the rounds a minute and more later would outlast.
	restoreL, err := lh.Cut(dh.PublicAddr())
	if err != nil {
		t.Fatal(err)
	}
	restoreD, err := dh.Cut(lh.PublicAddr())
	if err != nil {
		t.Fatal(err)
	}
	d.events()
	res := d.run(t, natCommand{Op: "dial", Key: l.key.String(), Wait: -1})
	if res.Err != "" || !res.Relayed {
		t.Fatalf("dial across the cut: %+v, want a relayed connection", res)
	}
	// The dialer answers each of the round's attempts, and logs its end.
	d.await(t, "hole punching with "+l.key.Fingerprint()+" failed", 3)
	if err := errors.Join(restoreL(), restoreD()); err != nil {
		t.Fatal(err)
	}
	// The next round starts a second after the failed one; on a loaded
	// host it can miss too, and the one after it comes 10 s later.
	res = d.run(t, natCommand{Op: "dial", Key: l.key.String(), Wait: 8 * punchTimeout})
	if res.Err != "" {
		t.Fatalf("dial: %s", res.Err)
	}
	t.Logf("direct after %v", res.Direct)
	if res.Direct < 0 || !res.DirectStream {
		t.Errorf("after the path came back: %+v, want a direct connection and stream\n%s%s", res, d.events(), l.events())
	}
}

func pathWord(relayed bool) string {
	if relayed {
		return "relayed"
	}
	return "direct"
}

// TestNATSSH logs in to a real sshd behind a port-restricted NAT (Linux's
// own masquerade, most home routers) from a host behind another, through
// a hole-punched connection: ssh's ProxyCommand is a node that dials the
// sshd host's node by key, through the relay and then directly.
func TestNATSSH(t *testing.T) {
	ssh := testenv.RequireTool(t, "ssh")
	lab := natlab.New(t)
	relay := startNATPeer(t, lab.AddPublicHost("relay"), natPeerSpec{Relay: true})
	server := lab.AddHost("server", natlab.PortRestricted)
	client := lab.AddHost("client", natlab.PortRestricted)
	sshdAddr, userKey := startLabSSHD(t, server)
	l := startNATPeer(t, server, natPeerSpec{Relays: relay.addrs, Serve: true, TunnelTo: sshdAddr})

	pem, err := newIdentity(t).MarshalOpenSSH("")
	if err != nil {
		t.Fatal(err)
	}
	spec := natlabtest.EncodeSpec(t, natPeerSpec{
		Key:    pem,
		Listen: fmt.Sprintf("/ip4/%s/tcp/4001", client.Addr()),
		Relays: relay.addrs,
		Proxy:  l.key.String(),
	})
	proxy := fmt.Sprintf("env %s=%s %s -test.run=^TestNATPeerProcess$ -test.count=1",
		natPeerEnv, spec, os.Args[0])
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cmd := client.Command(ctx, ssh, "-F", "/dev/null", "-i", userKey, "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-o", "ProxyCommand="+proxy, "-l", "root", "sshd.invalid", "echo logged in")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if stdout.String() != "logged in\n" || err != nil {
		t.Fatalf("ssh: %q, %v\n%s", stdout.String(), err, stderr.String())
	}
	t.Logf("ssh: %q; its standard error: %q", stdout.String(), stderr.String())
	if !strings.Contains(stderr.String(), "p2p path: direct") {
		t.Errorf("the ssh session did not go direct:\n%s", stderr.String())
	}
}

// startLabSSHD runs OpenSSH's sshd in h's namespace, on h's address, with
// a host key and an authorized key made here; it returns its address and
// the user's private key file.
func startLabSSHD(t *testing.T, h *natlab.Host) (addr, userKey string) {
	t.Helper()
	sshd := testenv.RequireTool(t, "/usr/sbin/sshd") // sshd wants its absolute path
	keygen := testenv.RequireTool(t, "ssh-keygen")
	dir := t.TempDir()
	for _, k := range []string{"host", "user"} {
		if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "user.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	addr = net.JoinHostPort(h.Addr().String(), "2222")
	config := fmt.Sprintf(`Port 2222
ListenAddress %s
HostKey %s
AuthorizedKeysFile %s
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
PidFile none
`, h.Addr(), filepath.Join(dir, "host"), filepath.Join(dir, "authorized_keys"))
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	// sshd run by root insists on its privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := h.Command(ctx, sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
	})
	// sshd -e says on its standard error when it listens.
	lines := bufio.NewScanner(stderr)
	var log strings.Builder
	for lines.Scan() {
		fmt.Fprintln(&log, lines.Text())
		if strings.Contains(lines.Text(), "Server listening on") {
			go io.Copy(io.Discard, stderr)
			return addr, filepath.Join(dir, "user")
		}
	}
	t.Fatalf("sshd ended without listening:\n%s", log.String())
	return "", ""
}

// BenchmarkNATThroughput measures, in the NAT lab, the bulk throughput of
// one stream for every pair of kinds (a dialer behind the first, a
// listener behind the second that listens through a public relay), on
// the path the stream took, and for each dialer the engine's direct
// stream against a plain securepeer connection (no libp2p) between the
// same two namespaces, to a listener on a public host, in alternating
// rounds (-p2p.natrounds) whose ratios it reports as a median and a range.
// The transfers run one at a time, so that they do not share the CPU. It
// logs two tables, pairs and vs-plain: rates are measurements, not
// checked. As root:
//
//	sudo go test -run '^$' -bench NATThroughput -benchtime 1x -v .
func BenchmarkNATThroughput(b *testing.B) {
	size := *natSize << 20
	lab := natlab.New(b)
	relay := startNATPeer(b, lab.AddPublicHost("relay"), natPeerSpec{Relay: true})
	pubHost := lab.AddPublicHost("pub")
	plainAddr := netip.AddrPortFrom(pubHost.Addr(), 4002).String()
	pub := startNATPeer(b, pubHost, natPeerSpec{Relays: relay.addrs, Serve: true, PlainListen: plainAddr})
	kinds := natlab.Kinds()
	listeners := make(map[natlab.Kind]*natPeer)
	dialers := make(map[natlab.Kind]*natPeer)
	for i, k := range kinds {
		listeners[k] = startNATPeer(b, lab.AddHost(fmt.Sprintf("l%d", i), k), natPeerSpec{Relays: relay.addrs, Serve: true})
		dialers[k] = startNATPeer(b, lab.AddHost(fmt.Sprintf("d%d", i), k), natPeerSpec{Relays: relay.addrs})
	}
	bulk := func(d, l *natPeer) (float64, bool) {
		// Let hole punching give a direct connection first, where it can.
		if res := d.run(b, natCommand{Op: "dial", Key: l.key.String(), Wait: 2 * punchTimeout}); res.Err != "" {
			b.Fatalf("%s to %s: dial: %s", d.name, l.name, res.Err)
		}
		res := d.run(b, natCommand{Op: "bulk", Key: l.key.String(), Size: size})
		if res.Err != "" {
			b.Fatalf("%s to %s: bulk: %s", d.name, l.name, res.Err)
		}
		return res.Rate, res.Relayed
	}
	plain := func(d *natPeer) float64 {
		res := d.run(b, natCommand{Op: "plainbulk", Key: pub.key.String(), Addr: plainAddr, Size: size})
		if res.Err != "" {
			b.Fatalf("%s: plain bulk: %s", d.name, res.Err)
		}
		return res.Rate
	}
	b.Run("pairs", func(b *testing.B) {
		for range b.N {
			b.Logf("one stream, %d MiB one way, per pair:\n%s", size>>20, natPairTable(kinds, func(from, to natlab.Kind) (float64, bool) {
				return bulk(dialers[from], listeners[to])
			}))
		}
	})
	b.Run("vs-plain", func(b *testing.B) {
		for range b.N {
			b.Logf("the engine against a plain securepeer connection, %d alternating rounds of %d MiB each:\n%s",
				*natRounds, size>>20, natRatioTable(kinds, *natRounds, func(from natlab.Kind) (float64, bool) {
					return bulk(dialers[from], pub)
				}, func(from natlab.Kind) float64 { return plain(dialers[from]) }))
		}
	})
}

// natRounds is how many alternating rounds BenchmarkNATThroughput/vs-plain
// runs for each dialer: one transfer is a sample of a few tens of
// milliseconds, which the lab's other processes can slow by half.
var natRounds = flag.Int("p2p.natrounds", 5, "alternating rounds of BenchmarkNATThroughput/vs-plain")

// natProfileEnv names a directory where each lab peer process writes its
// CPU and blocking profiles (HOST.cpu, HOST.block) when it ends: how
// BENCHMARKS.md's breakdown of the engine's direct stream was made.
const natProfileEnv = "SECUREPEER_NATLAB_PROFILE"

// natSize is the MiB of each transfer of BenchmarkNATThroughput.
var natSize = flag.Int64("p2p.natsize", 64, "MiB of each transfer of BenchmarkNATThroughput")

// natPairTable formats, for every pair of kinds, the rate of one transfer.
func natPairTable(kinds []natlab.Kind, bulk func(from, to natlab.Kind) (float64, bool)) string {
	var table strings.Builder
	fmt.Fprintf(&table, "| dialer \\ listener | %s |\n|---|", joinKinds(kinds, " | "))
	for range kinds {
		table.WriteString("---|")
	}
	table.WriteString("\n")
	for _, from := range kinds {
		fmt.Fprintf(&table, "| %s |", from)
		for _, to := range kinds {
			rate, relayed := bulk(from, to)
			fmt.Fprintf(&table, " %.0f MB/s%s |", rate/1e6, map[bool]string{true: " relayed"}[relayed])
		}
		table.WriteString("\n")
	}
	return table.String()
}

// natRatioTable runs, for each dialer kind, rounds of an engine transfer
// and a plain one in turn (the first of the pair alternating from round to
// round), and formats the median rates and the median of the per-round
// ratios with their range.
func natRatioTable(kinds []natlab.Kind, rounds int, engine func(natlab.Kind) (float64, bool), plain func(natlab.Kind) float64) string {
	var t strings.Builder
	t.WriteString("| dialer | engine, direct, to a public host | plain securepeer, same hosts | engine / plain (median) | per-round range |\n|---|---|---|---|---|\n")
	for _, from := range kinds {
		var es, ps, rs []float64
		relayed := false
		for r := range rounds {
			var e, p float64
			var rl bool
			if r%2 == 0 {
				e, rl = engine(from)
				p = plain(from)
			} else {
				p = plain(from)
				e, rl = engine(from)
			}
			relayed = relayed || rl
			es, ps, rs = append(es, e), append(ps, p), append(rs, e/p)
		}
		path := "direct"
		if relayed {
			path = "relayed"
		}
		fmt.Fprintf(&t, "| %s | %.0f MB/s (%s) | %.0f MB/s | %.2f | %.2f..%.2f |\n", from, median(es)/1e6, path,
			median(ps)/1e6, median(rs), slices.Min(rs), slices.Max(rs))
	}
	return t.String()
}

// median returns the middle of vs (the mean of the two middle values
// when their number is even).
func median(vs []float64) float64 {
	s := slices.Sorted(slices.Values(vs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func joinKinds(kinds []natlab.Kind, sep string) string {
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = k.String()
	}
	return strings.Join(names, sep)
}
