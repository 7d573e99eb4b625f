package p2p

import (
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	mss "github.com/multiformats/go-multistream"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/admit"
	"github.com/securepeer/securepeer/internal/wire"
	"github.com/securepeer/securepeer/libp2psec"
)

// mssProposal is what a libp2p dialer that speaks securepeer alone sends
// first: multistream-select's header and its proposal of securepeer.
var mssProposal = func() []byte {
	var b []byte
	for _, line := range []string{mss.ProtocolID, libp2psec.ID} {
		b = append(b, byte(len(line)+1))
		b = append(b, line...)
		b = append(b, '\n')
	}
	return b
}()

func TestMSSFlightLen(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		want int
	}{
		{"nothing", nil, 1},
		{"first length", mssProposal[:1], 20},
		{"header", mssProposal[:20], 21},
		{"second length", mssProposal[:21], len(mssProposal)},
		{"proposal", mssProposal, len(mssProposal)},
		{"proposal and more", append(append([]byte{}, mssProposal...), 1, 2, 3), len(mssProposal)},
		{"a length too long", []byte{0x81, 0x10}, 2}, // 2049
		{"a varint not minimal", []byte{0x80, 0x00}, 2},
		{"an unfinished varint", []byte{0x80}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := mssFlightLen(tc.b); got != tc.want {
				t.Errorf("mssFlightLen(%x) = %d, want %d", tc.b, got, tc.want)
			}
		})
	}
	if len(mssProposal) != int(negotiationBytes) {
		t.Errorf("the proposal is %d bytes, negotiationBytes says %d", len(mssProposal), negotiationBytes)
	}
}

// recordFlight returns a securepeer initiator's first flight, its hello
// and message 1, as a libp2p dialer sends it once multistream-select has
// been answered: what an attacker replays to make a listener compute
// message 2.
func recordFlight(t testing.TB) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer b.Close()
	go func() {
		defer a.Close()
		securepeer.Client(a, &securepeer.Config{Identity: newIdentity(t)}).Handshake()
	}()
	var flight []byte
	buf := make([]byte, 4096)
	for wire.FirstFlightLen(flight) > len(flight) {
		n, err := b.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		flight = append(flight, buf[:n]...)
	}
	return flight
}

// A pendingState is a state in which a stranger's connection waits in a
// node's or a relay's admission, and how an attacker puts it there.
type pendingState struct {
	name string
	// send is what the attacker sends, in turns; after each but the last
	// it reads the answer, at least want[i] bytes.
	send [][]byte
	want []int
	// perConn bounds the target's memory per pending connection in the
	// state (Go heap and stacks), as PROTOCOL.md's table says; twice that
	// under the race detector.
	perConn int64
}

// pendingStates are the states of PROTOCOL.md's "Pending handshakes".
func pendingStates(t testing.TB) []pendingState {
	flight := recordFlight(t)
	return []pendingState{
		{name: "first flight", perConn: 8 << 10},
		{name: "securepeer's first flight", send: [][]byte{mssProposal}, want: []int{len(mssProposal)}, perConn: 16 << 10},
		{name: "waiting for message 3", send: [][]byte{mssProposal, flight}, want: []int{len(mssProposal), 1}, perConn: 40 << 10},
	}
}

// pendingStrangers is how many strangers each pending state gets.
const pendingStrangers = 5000

// TestPendingStrangers drives 5000 strangers into each state in which a
// node's or a relay's admission holds a connection whose peer has proved
// nothing: from 5000 source addresses, and (for the states a source can
// fill without the resource manager's per-source bounds refusing it)
// from one. The target holds no more than its Pending limit, its memory
// per held connection stays within the table's figure, and then a
// legitimate peer from another address gets through (reserves a slot on
// the relay, or dials the node and gets its echo) while the strangers
// still fill the table, which it makes room in.
func TestPendingStrangers(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs source addresses across 127.0.0.0/8")
	}
	states := pendingStates(t)
	for _, target := range []struct {
		name   string
		node   bool
		limits RelayLimits
	}{
		{"node", true, RelayLimits{Limits: NodeLimits}},
		{"relay", false, RelayLimits{}},
	} {
		for _, st := range states {
			for _, many := range []bool{true, false} {
				if !many && len(st.send) > 1 {
					continue // one source's handshakes: ConnsPerIP at once
				}
				name := target.name + "/" + st.name + "/one source"
				if many {
					name = target.name + "/" + st.name + "/many sources"
				}
				t.Run(name, func(t *testing.T) {
					testPendingStrangers(t, target.node, target.limits, st, many)
				})
			}
		}
	}
}

func testPendingStrangers(t *testing.T, node bool, limits RelayLimits, st pendingState, many bool) {
	full := limits.withDefaults()
	if node {
		full.Limits = limits.Limits.withDefaults(NodeLimits)
	}
	h := startHelper(t, helperSpec{Node: node, Limits: limits})
	base := h.stats(t)

	source := func(int) net.IP { return net.IPv4(127, 0, 30, 1) }
	if many {
		source = func(i int) net.IP { return net.IPv4(127, 20+byte(i/62500), byte(i/250%250), byte(1+i%250)) }
	}
	start := time.Now()
	a := attackPending(t, h.tcp, pendingStrangers, source, st)
	defer a.close()
	if a.failed.Load() > 0 {
		t.Fatalf("%d of %d strangers could not reach the state for another reason than the target closing their connection: %v", a.failed.Load(), pendingStrangers, a.firstErr())
	}
	// The target accepts the last connections a moment after they opened.
	want := full.Pending
	if !many && len(st.send) > 0 {
		want = full.ConnsPerIP // the resource manager's bound on a source
	}
	held := h.stats(t)
	for deadline := time.Now().Add(5 * time.Second); held.Pending < want && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		held = h.stats(t)
	}
	t.Logf("%d strangers in %v: %d in the state, %d closed by the target; target: %d pending of at most %d",
		pendingStrangers, time.Since(start).Round(time.Millisecond), a.reached.Load(), a.closed.Load(), held.Pending, full.Pending)
	if held.Pending != want {
		t.Errorf("the target holds %d pending connections, want %d (its limit, or the resource manager's per source for one source past its first flight)", held.Pending, want)
	}
	grown := int64(held.Memory) - int64(base.Memory)
	per := grown / int64(max(held.Pending, 1))
	t.Logf("target memory %d KiB before, %d KiB after (+%d KiB, %d B per pending connection), %d goroutines",
		base.Memory>>10, held.Memory>>10, grown>>10, per, held.Goroutines)
	limit := st.perConn
	if raceEnabled {
		limit *= 2
	}
	if held.Pending >= 1000 && per > limit { // fewer, and the figure is noise
		t.Errorf("%d B per pending connection, more than the %d B of the table (twice that under the race detector)", per, st.perConn)
	}

	// A legitimate peer, from another address, while the strangers hold
	// the table: it displaces one.
	legit := time.Now()
	if node {
		d := startNode(t, Config{DirectWait: -1, NoHolePunching: true})
		if err := d.AddAddrs(mustKey(t, h.id), []string{h.addr}); err != nil {
			t.Fatal(err)
		}
		roundTrip(t, dial(t, d, mustKey(t, h.id), echoProto), "past the strangers")
	} else {
		l := startNode(t, Config{Relays: []string{h.addr}, NoHolePunching: true})
		listen(t, l, echoProto)
	}
	after := h.stats(t)
	t.Logf("the legitimate peer got through in %v; the target then held %d pending connections",
		time.Since(legit).Round(time.Millisecond), after.Pending)
	if after.Pending < want-1 {
		t.Errorf("the target held %d pending connections after the legitimate peer, not the %d that would show the strangers still filled it: the test took longer than their deadline", after.Pending, want-1)
	}
}

func mustKey(t testing.TB, p peer.ID) securepeer.PublicKey {
	t.Helper()
	k, err := KeyOf(p)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// A pendingAttack is strangers holding connections in a pending state.
type pendingAttack struct {
	mu                      sync.Mutex
	conns                   []net.Conn
	errs                    []error
	reached, closed, failed atomic.Int64
}

// attackPending opens n connections to target, the i-th from source(i),
// at most 128 being set up at once, and puts each in st; it returns once
// each is in the state or was closed by the target.
func attackPending(t *testing.T, target *net.TCPAddr, n int, source func(int) net.IP, st pendingState) *pendingAttack {
	a := &pendingAttack{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 128)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := a.one(target, source(i), st)
			switch {
			case err == nil:
				a.reached.Add(1)
			case closedByRelay(err):
				a.closed.Add(1)
			default:
				a.failed.Add(1)
				a.mu.Lock()
				a.errs = append(a.errs, err)
				a.mu.Unlock()
			}
			if c != nil {
				a.mu.Lock()
				a.conns = append(a.conns, c)
				a.mu.Unlock()
			}
		})
	}
	wg.Wait()
	return a
}

func (a *pendingAttack) one(target *net.TCPAddr, src net.IP, st pendingState) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: testTimeout}
	c, err := d.Dial("tcp", target.String())
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(testTimeout))
	defer c.SetDeadline(time.Time{})
	for i, b := range st.send {
		if _, err := c.Write(b); err != nil {
			return c, err
		}
		if _, err := io.ReadAtLeast(c, make([]byte, 16<<10), st.want[i]); err != nil {
			return c, err
		}
	}
	return c, nil
}

func (a *pendingAttack) firstErr() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.errs) == 0 {
		return nil
	}
	return a.errs[0]
}

func (a *pendingAttack) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.conns {
		c.Close()
	}
}

// TestAdmittedConnCloseWrite: an admitted connection can be half-closed,
// as securepeer does after refusing a peer (Verify) so that its alert
// reaches the peer before the reset that closing a socket with unread
// data sends: the peer reads the end of the stream, and can still write.
// Without it, a refused libp2p dialer that wrote after its message 3
// could read "connection reset" instead of the refusal.
func TestAdmittedConnCloseWrite(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peerSide, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peerSide.Close()
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var c net.Conn = &admittedConn{Conn: &admit.Conn{Conn: raw}}
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		t.Fatal("an admitted connection cannot be half-closed")
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	peerSide.SetDeadline(time.Now().Add(testTimeout))
	if _, err := peerSide.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the peer read %v, want io.EOF", err)
	}
	if _, err := peerSide.Write([]byte("still")); err != nil {
		t.Fatal(err)
	}
	raw.SetDeadline(time.Now().Add(testTimeout))
	if _, err := io.ReadFull(raw, make([]byte, 5)); err != nil {
		t.Fatalf("reading after CloseWrite: %v", err)
	}
}
