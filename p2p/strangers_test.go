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
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/sec"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	tptu "github.com/libp2p/go-libp2p/p2p/net/upgrader"
	pbv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/util"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	mss "github.com/multiformats/go-multistream"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/libp2psec"
)

var strangerCount = flag.Int("p2p.strangers", 1000, "strangers that try to reserve a slot in TestRelayStrangers")

// helperEnv, when set, makes TestHelperProcess run a relay or a node with
// the spec it holds (JSON), for a parent test to measure.
const helperEnv = "P2P_HELPER_SPEC"

// A helperSpec says what TestHelperProcess runs.
type helperSpec struct {
	Node   bool // a node that listens for echoProto and echoes; else a relay
	Limits RelayLimits
}

// TestHelperProcess is not a test: run by TestRelayStrangers and
// TestPendingStrangers in a process of its own, so that the memory it
// reports is the relay's or the node's alone, it runs one, prints its
// address, and answers each "stats" line on its input with its counters
// and memory, until its input ends.
func TestHelperProcess(t *testing.T) {
	env := os.Getenv(helperEnv)
	if env == "" {
		t.Skip("run by TestRelayStrangers and TestPendingStrangers")
	}
	var spec helperSpec
	if err := json.Unmarshal([]byte(env), &spec); err != nil {
		t.Fatal(err)
	}
	var (
		addr  string
		stats func() helperStats
	)
	if spec.Node {
		n := startNode(t, Config{Limits: spec.Limits.Limits})
		echo(t, listen(t, n, echoProto))
		addr = n.Addrs()[0]
		stats = func() helperStats {
			return helperStats{RelayStats: RelayStats{Conns: len(n.host.Network().Conns())}, Pending: n.adm.pendingConns()}
		}
	} else {
		r, err := RunRelay(context.Background(), RelayConfig{Identity: newIdentity(t), ListenAddrs: loopback, Limits: spec.Limits})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		addr = r.Addrs()[0]
		stats = func() helperStats { return helperStats{RelayStats: r.Stats(), Pending: r.adm.pendingConns()} }
	}
	fmt.Printf("addr %s\n", addr)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		st := stats()
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		st.Memory = ms.HeapInuse + ms.StackInuse
		st.Goroutines = runtime.NumGoroutine()
		b, _ := json.Marshal(st)
		fmt.Printf("stats %s\n", b)
	}
}

type helperStats struct {
	RelayStats
	Pending    int
	Memory     uint64
	Goroutines int
}

// A relayHelper is a relay or a node in a helper process.
type relayHelper struct {
	addr  string
	id    peer.ID
	tcp   *net.TCPAddr
	in    io.WriteCloser
	lines *bufio.Scanner
}

func startRelayHelper(t *testing.T, limits RelayLimits) *relayHelper {
	t.Helper()
	return startHelper(t, helperSpec{Limits: limits})
}

func startHelper(t *testing.T, hs helperSpec) *relayHelper {
	t.Helper()
	spec, err := json.Marshal(hs)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(spec))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		cmd.Wait()
	})
	h := &relayHelper{in: in, lines: bufio.NewScanner(out)}
	h.addr = h.read(t, "addr")
	a, err := ma.NewMultiaddr(h.addr)
	if err != nil {
		t.Fatal(err)
	}
	transport, id := peer.SplitAddr(a)
	h.id = id
	na, err := manet.ToNetAddr(transport)
	if err != nil {
		t.Fatal(err)
	}
	h.tcp = na.(*net.TCPAddr)
	return h
}

// read returns the rest of the helper's next line that starts with kind.
func (h *relayHelper) read(t *testing.T, kind string) string {
	t.Helper()
	for h.lines.Scan() {
		if rest, ok := strings.CutPrefix(h.lines.Text(), kind+" "); ok {
			return rest
		}
	}
	t.Fatalf("the relay helper ended without a %q line: %v", kind, h.lines.Err())
	return ""
}

func (h *relayHelper) stats(t *testing.T) helperStats {
	t.Helper()
	if _, err := io.WriteString(h.in, "stats\n"); err != nil {
		t.Fatal(err)
	}
	var st helperStats
	if err := json.Unmarshal([]byte(h.read(t, "stats")), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// A stranger is a peer with a fresh key that connects to a relay and
// asks for a reservation, speaking the protocols itself rather than
// running a libp2p host: connection, multistream-select, securepeer,
// yamux, the hop protocol. It keeps the connection until closed, never
// answers the relay's streams, and has a source address of its own.
type stranger struct {
	conn   net.Conn
	muxed  network.MuxedConn
	status pbv2.Status
}

// errRefusedConn means the relay closed the connection before the
// reservation was answered: its admission refused it.
var errRefusedConn = errors.New("the relay closed the connection")

func reserveAsStranger(ctx context.Context, relay *net.TCPAddr, relayID peer.ID, src net.IP) (*stranger, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
	c, err := d.DialContext(ctx, "tcp", relay.String())
	if err != nil {
		return nil, err
	}
	s := &stranger{conn: c}
	if err := s.reserve(ctx, relayID); err != nil {
		s.Close()
		if closedByRelay(err) {
			return nil, fmt.Errorf("%w: %v", errRefusedConn, err)
		}
		return nil, err
	}
	return s, nil
}

// closedByRelay reports whether err is the host closing the connection
// (its admission refusing it, or a relay making room), at whatever layer
// it showed.
func closedByRelay(err error) bool {
	var se *network.StreamError
	var ce *network.ConnError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, network.ErrReset) ||
		errors.As(err, &se) || errors.As(err, &ce)
}

// secureAsStranger runs, on c, multistream-select for securepeer and the
// securepeer handshake with a fresh key, expecting peer id, with ctx's
// deadline on c.
func secureAsStranger(ctx context.Context, c net.Conn, id peer.ID) (sec.SecureConn, error) {
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := mss.SelectOneOf([]protocol.ID{libp2psec.ID}, c); err != nil {
		return nil, err
	}
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, err
	}
	tr, err := libp2psec.New(libp2psec.ID, key, []tptu.StreamMuxer{{ID: yamux.ID}})
	if err != nil {
		return nil, err
	}
	return tr.SecureOutbound(ctx, c, id)
}

func (s *stranger) reserve(ctx context.Context, relayID peer.ID) error {
	sc, err := secureAsStranger(ctx, s.conn, relayID)
	if err != nil {
		return err
	}
	s.conn = sc
	s.conn.SetDeadline(time.Time{})
	if s.muxed, err = yamux.DefaultTransport.NewConn(sc, false, &network.NullScope{}); err != nil {
		return err
	}
	hop, err := s.muxed.OpenStream(ctx)
	if err != nil {
		return err
	}
	defer hop.Close()
	if dl, ok := ctx.Deadline(); ok {
		hop.SetDeadline(dl)
	}
	if _, err := mss.SelectOneOf([]protocol.ID{proto.ProtoIDv2Hop}, hop); err != nil {
		return err
	}
	if err := util.NewDelimitedWriter(hop).WriteMsg(&pbv2.HopMessage{Type: pbv2.HopMessage_RESERVE.Enum()}); err != nil {
		return err
	}
	rd := util.NewDelimitedReader(hop, 4096)
	defer rd.Close()
	var answer pbv2.HopMessage
	if err := rd.ReadMsg(&answer); err != nil {
		return err
	}
	s.status = answer.GetStatus()
	return nil
}

func (s *stranger) Close() {
	if s.muxed != nil {
		s.muxed.Close()
	}
	s.conn.Close()
}

// strangerResults counts how a group of strangers fared.
type strangerResults struct {
	reserved, refused, refusedConn, failed int
	held                                   []*stranger
	errs                                   []error
}

// runStrangers runs n strangers against h, at most 16 at once, the i-th
// from source(i); they keep their connections until the test ends.
func runStrangers(t *testing.T, h *relayHelper, n int, source func(i int) net.IP) *strangerResults {
	t.Helper()
	var (
		mu  sync.Mutex
		res strangerResults
		wg  sync.WaitGroup
		sem = make(chan struct{}, 16)
	)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			s, err := reserveAsStranger(ctx, h.tcp, h.id, source(i))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, errRefusedConn):
				res.refusedConn++
			case err != nil:
				res.failed++
				res.errs = append(res.errs, err)
			case s.status == pbv2.Status_OK:
				res.reserved++
				res.held = append(res.held, s)
			default:
				res.refused++
				res.held = append(res.held, s)
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, s := range res.held {
			s.Close()
		}
	})
	return &res
}

// TestRelayStrangers drives strangers into a relay's connection and
// reservation slots: first many from one source address, then
// -p2p.strangers from a quarter as many addresses, more than the relay's
// connection limit. The relay holds no more reservations and connections
// than its limits allow, its memory stays bounded, a listener that
// reserved before them stays reachable, and a dialer that comes after
// them finds a slot.
func TestRelayStrangers(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs source addresses across 127.0.0.0/8")
	}
	// Fewer connections than strangers, so that the relay is full and must
	// make room for the dialer at the end.
	limits := RelayLimits{Reservations: 128, Limits: Limits{Conns: 512}}
	full := limits.withDefaults()
	h := startRelayHelper(t, limits)
	base := h.stats(t)

	l := startNode(t, Config{Relays: []string{h.addr}})
	echo(t, listen(t, l, echoProto))

	one := runStrangers(t, h, 3*full.ConnsPerIP, func(int) net.IP { return net.IPv4(127, 0, 9, 1) })
	t.Logf("one source, %d strangers: %d reserved, %d refused a reservation, %d connections closed by the relay, %d failed %v",
		3*full.ConnsPerIP, one.reserved, one.refused, one.refusedConn, one.failed, one.errs)
	if one.reserved != full.ReservationsPerIP || one.reserved+one.refused > full.ConnsPerIP {
		t.Errorf("one source got %d reservations over %d connections; want %d over at most %d",
			one.reserved, one.reserved+one.refused, full.ReservationsPerIP, full.ConnsPerIP)
	}

	n := *strangerCount
	many := runStrangers(t, h, n, func(i int) net.IP { return net.IPv4(127, 0, byte(10+i/4/250), byte(1+i/4%250)) })
	after := h.stats(t)
	t.Logf("%d strangers from %d addresses: %d reserved, %d refused a reservation, %d connections closed by the relay, %d failed %v",
		n, (n+3)/4, many.reserved, many.refused, many.refusedConn, many.failed, many.errs)
	if many.failed > 0 {
		t.Errorf("%d strangers failed for another reason than the relay's refusal", many.failed)
	}
	if after.Reservations != full.Reservations {
		t.Errorf("the relay holds %d reservations, want its limit, %d", after.Reservations, full.Reservations)
	}
	if after.Conns > full.Conns {
		t.Errorf("the relay holds %d connections, more than its limit, %d", after.Conns, full.Conns)
	}
	grown := int64(after.Memory) - int64(base.Memory)
	perConn := grown / int64(max(after.Conns, 1))
	t.Logf("relay: %d connections, %d reservations; memory %d KiB before, %d KiB after (+%d KiB, %d KiB per connection), %d goroutines",
		after.Conns, after.Reservations, base.Memory>>10, after.Memory>>10, grown>>10, perConn>>10, after.Goroutines)
	if perConn > maxRelayConnMemory {
		t.Errorf("the relay holds %d KiB per connection, more than %d KiB", perConn>>10, maxRelayConnMemory>>10)
	}

	d := startNode(t, Config{Relays: []string{h.addr}, DirectWait: -1, NoHolePunching: true})
	l.host.Peerstore().ClearAddrs(d.ID())
	s := dial(t, d, l.Key(), echoProto)
	roundTrip(t, s, "still reachable")
	if !s.Path().Relayed {
		t.Errorf("path %v, want relayed", s.Path())
	}
}

// maxRelayConnMemory bounds what one idle authenticated connection costs
// the relay, measured by TestRelayStrangers.
const maxRelayConnMemory = 256 << 10

// handshakeAsStranger connects to a node from src with a fresh key, runs
// the securepeer handshake expecting the node's peer ID, and returns what
// its first read gives: the node's refusal, for a key it does not know.
func handshakeAsStranger(ctx context.Context, node *net.TCPAddr, nodeID peer.ID, src net.IP) error {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
	c, err := d.DialContext(ctx, "tcp", node.String())
	if err != nil {
		return err
	}
	defer c.Close()
	sc, err := secureAsStranger(ctx, c, nodeID)
	if err != nil {
		return err
	}
	_, err = sc.Read(make([]byte, 1))
	return err
}

// TestNodeStrangers: -p2p.strangers peers with keys a node does not know
// connect to it directly, from a quarter as many source addresses, and
// are refused inside the handshake; the node holds none of them, and a
// peer it knows connects after them.
func TestNodeStrangers(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs source addresses across 127.0.0.0/8")
	}
	known := newIdentity(t)
	l := startNode(t, Config{Verify: func(_ context.Context, k securepeer.PublicKey) error {
		if k != known.PublicKey() {
			return errors.New("unknown key")
		}
		return nil
	}})
	echo(t, listen(t, l, echoProto))
	a, err := ma.NewMultiaddr(l.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	transport, _ := peer.SplitAddr(a)
	na, err := manet.ToNetAddr(transport)
	if err != nil {
		t.Fatal(err)
	}
	n := *strangerCount
	var (
		mu       sync.Mutex
		rejected int
		other    []error
		wg       sync.WaitGroup
		sem      = make(chan struct{}, 16)
	)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			err := handshakeAsStranger(ctx, na.(*net.TCPAddr), l.ID(), net.IPv4(127, 0, byte(10+i/4/250), byte(1+i/4%250)))
			mu.Lock()
			defer mu.Unlock()
			if errors.Is(err, securepeer.ErrRejected) {
				rejected++
			} else {
				other = append(other, err)
			}
		})
	}
	wg.Wait()
	t.Logf("%d strangers: %d refused inside the handshake, %d otherwise", n, rejected, len(other))
	for _, err := range other {
		if !closedByRelay(err) {
			t.Errorf("a stranger's handshake ended with %v", err)
		}
	}
	if conns := len(l.host.Network().Conns()); conns != 0 {
		t.Errorf("the node holds %d connections", conns)
	}
	d := startNode(t, Config{Identity: known})
	if err := d.AddAddrs(l.Key(), l.Addrs()); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, dial(t, d, l.Key(), echoProto), "known")
}
