//go:build linux

package natlab_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/securepeer/securepeer/internal/natlab"
)

// kindLab is a lab with two observers, obs1 and obs2, and one host of
// every kind, named after it.
type kindLab struct {
	obs1, obs2 *observer
	hosts      map[natlab.Kind]*natlab.Host
}

func newKindLab(t *testing.T) *kindLab {
	t.Helper()
	lab := natlab.New(t)
	kl := &kindLab{
		obs1:  startObserver(t, lab.AddPublicHost("obs1")),
		obs2:  startObserver(t, lab.AddPublicHost("obs2")),
		hosts: make(map[natlab.Kind]*natlab.Host),
	}
	for _, k := range natlab.Kinds() {
		kl.hosts[k] = lab.AddHost(hostName(k, 1), k)
	}
	return kl
}

// TestAddresses checks where each kind puts its host: a NAT's host has a
// private address and its router's public one, the others their own public
// address.
func TestAddresses(t *testing.T) {
	t.Parallel()
	kl := newKindLab(t)
	public := netip.MustParsePrefix("198.18.0.0/16")
	private := netip.MustParsePrefix("198.19.0.0/16")
	for _, k := range natlab.Kinds() {
		h := kl.hosts[k]
		if !public.Contains(h.PublicAddr()) {
			t.Errorf("%v: public address %v is not in %v", k, h.PublicAddr(), public)
		}
		wantOwn := public
		if k.Translates() {
			wantOwn = private
		}
		if !wantOwn.Contains(h.Addr()) {
			t.Errorf("%v: own address %v is not in %v", k, h.Addr(), wantOwn)
		}
		if k.Translates() == (h.Addr() == h.PublicAddr()) {
			t.Errorf("%v: own address %v, public address %v", k, h.Addr(), h.PublicAddr())
		}
	}
}

// TestMapping checks each kind's mapping as RFC 4787 section 4.1 tells it
// apart: one local port sends to two ports of one observer and to a second
// observer, and the observers report the public address and port they see.
// An endpoint-independent mapping shows one (the host's own port, which
// the lab's NATs keep); an address-and-port-dependent one shows three.
func TestMapping(t *testing.T) {
	t.Parallel()
	kl := newKindLab(t)
	dests := []netip.AddrPort{kl.obs1.addr(0), kl.obs1.addr(1), kl.obs2.addr(0)}
	for _, k := range natlab.Kinds() {
		h := kl.hosts[k]
		for _, proto := range []string{"udp", "tcp"} {
			t.Run(k.String()+"/"+proto, func(t *testing.T) {
				t.Parallel()
				local, seen, err := observeMapping(t, h, proto, dests)
				if err != nil {
					t.Fatal(err)
				}
				checkMapping(t, h, local, seen)
			})
		}
	}
}

// observeMapping sends from one local port of h to every dest over proto
// and returns that port and what each dest saw.
func observeMapping(t *testing.T, h *natlab.Host, proto string, dests []netip.AddrPort) (uint16, []netip.AddrPort, error) {
	var seen []netip.AddrPort
	if proto == "udp" {
		c, err := h.ListenUDP(0)
		if err != nil {
			return 0, nil, err
		}
		defer c.Close()
		for _, d := range dests {
			s, err := observeUDP(c, d)
			if err != nil {
				return 0, nil, err
			}
			seen = append(seen, s)
		}
		return uint16(c.LocalAddr().(*net.UDPAddr).Port), seen, nil
	}
	ln, err := h.ListenTCP(0)
	if err != nil {
		return 0, nil, err
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	for _, d := range dests {
		s, c, err := observeTCP(t.Context(), h, port, d)
		if err != nil {
			return 0, nil, err
		}
		defer c.Close()
		seen = append(seen, s)
	}
	return port, seen, nil
}

// checkMapping checks what observers saw of h's local port against h's
// kind.
func checkMapping(t *testing.T, h *natlab.Host, local uint16, seen []netip.AddrPort) {
	t.Helper()
	ports := make(map[uint16]bool)
	for _, s := range seen {
		if s.Addr() != h.PublicAddr() {
			t.Errorf("an observer saw address %v, want %v", s.Addr(), h.PublicAddr())
		}
		ports[s.Port()] = true
	}
	switch h.Kind().Mapping() {
	case natlab.EndpointIndependent:
		if len(ports) != 1 || !ports[local] {
			t.Errorf("local port %d was seen as %v, want %d from every destination", local, seen, local)
		}
	case natlab.AddressAndPortDependent:
		if len(ports) != len(seen) {
			t.Errorf("local port %d was seen as %v, want a different port for every destination", local, seen)
		}
	default:
		t.Fatalf("no check for mapping %v", h.Kind().Mapping())
	}
}

// TestFiltering checks each kind's filtering as RFC 4787 section 5 tells
// it apart. The host sends from one port to obs1's first port (for TCP: a
// connection from its listening port), which makes a mapping; then probes
// from a new port of obs1, from obs2, and to a port the host listens on but
// has never sent from, see whether they reach the host. Each probe ends
// when the host gets it or its router records that it dropped it, so no
// verdict rests on a timeout.
func TestFiltering(t *testing.T) {
	t.Parallel()
	kl := newKindLab(t)
	probes := []struct {
		name string
		from *observer
		// unmapped sends to the port the host never sent from.
		unmapped bool
		// delivered says which filtering behaviours let it in.
		delivered map[natlab.Behavior]bool
	}{
		{"same address, other port", kl.obs1, false, map[natlab.Behavior]bool{
			natlab.Open: true, natlab.EndpointIndependent: true, natlab.AddressDependent: true,
		}},
		{"other address", kl.obs2, false, map[natlab.Behavior]bool{
			natlab.Open: true, natlab.EndpointIndependent: true,
		}},
		{"port never sent from", kl.obs2, true, map[natlab.Behavior]bool{
			natlab.Open: true,
		}},
	}
	for _, k := range natlab.Kinds() {
		h := kl.hosts[k]
		for _, proto := range []string{"udp", "tcp"} {
			t.Run(k.String()+"/"+proto, func(t *testing.T) {
				t.Parallel()
				target := newProbeTarget(t, h, proto, kl.obs1.addr(0))
				for _, p := range probes {
					to := target.mapped
					if p.unmapped {
						to = target.unmapped
					}
					got, err := target.probe(t.Context(), p.from.host, to)
					if err != nil {
						t.Fatalf("%s: %v", p.name, err)
					}
					if want := p.delivered[k.Filtering()]; got != want {
						t.Errorf("%s: delivered %v, want %v (%v filtering)", p.name, got, want, k.Filtering())
					}
				}
			})
		}
	}
}

// A probeTarget is a host with two ports: mapped, from which it has sent to
// an observer, and unmapped, on which it listens but has never sent from.
// The address and port of every packet (UDP) or connection (TCP) either
// port receives goes to arrived.
type probeTarget struct {
	host     *natlab.Host
	proto    string
	mapped   uint16 // the public port of the host's mapping toward the observer
	unmapped uint16 // the other port, public and local alike
	arrived  chan netip.AddrPort
	done     chan struct{} // closed when the test ends
}

// newProbeTarget opens h's two ports for proto and sends from the first to
// obs, until the test ends.
func newProbeTarget(t *testing.T, h *natlab.Host, proto string, obs netip.AddrPort) *probeTarget {
	t.Helper()
	pt := &probeTarget{host: h, proto: proto, arrived: make(chan netip.AddrPort), done: make(chan struct{})}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(func() { close(pt.done) })
	var err error
	if proto == "udp" {
		err = pt.openUDP(t, &wg, obs)
	} else {
		err = pt.openTCP(t, &wg, obs)
	}
	if err != nil {
		t.Fatal(err)
	}
	return pt
}

// openUDP opens the target's two UDP ports.
func (pt *probeTarget) openUDP(t *testing.T, wg *sync.WaitGroup, obs netip.AddrPort) error {
	for i := range 2 {
		c, err := pt.host.ListenUDP(0)
		if err != nil {
			return err
		}
		t.Cleanup(func() { c.Close() })
		port := uint16(c.LocalAddr().(*net.UDPAddr).Port)
		if i == 1 {
			pt.unmapped = port
		} else {
			seen, err := observeUDP(c, obs)
			if err != nil {
				return err
			}
			pt.mapped = seen.Port()
		}
		wg.Go(func() {
			buf := make([]byte, 64)
			for {
				_, from, err := c.ReadFromUDPAddrPort(buf)
				if err != nil || !pt.report(from) {
					return
				}
			}
		})
	}
	return nil
}

// openTCP opens the target's two TCP listeners, and connects from the
// first to obs.
func (pt *probeTarget) openTCP(t *testing.T, wg *sync.WaitGroup, obs netip.AddrPort) error {
	for i := range 2 {
		ln, err := pt.host.ListenTCP(0)
		if err != nil {
			return err
		}
		t.Cleanup(func() { ln.Close() })
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		if i == 1 {
			pt.unmapped = port
		} else {
			seen, c, err := observeTCP(t.Context(), pt.host, port, obs)
			if err != nil {
				return err
			}
			t.Cleanup(func() { c.Close() })
			pt.mapped = seen.Port()
		}
		wg.Go(func() {
			for {
				c, err := ln.AcceptTCP()
				if err != nil {
					return
				}
				c.Close()
				if !pt.report(c.RemoteAddr().(*net.TCPAddr).AddrPort()) {
					return
				}
			}
		})
	}
	return nil
}

// report hands what arrived from to the probe waiting for it, and reports
// false once the test has ended.
func (pt *probeTarget) report(from netip.AddrPort) bool {
	select {
	case pt.arrived <- netip.AddrPortFrom(from.Addr().Unmap(), from.Port()):
		return true
	case <-pt.done:
		return false
	}
}

// probe sends a UDP datagram, or a TCP SYN, from a new port of host from to
// the target's public port, and reports whether it reached the target
// rather than being dropped by its router.
func (pt *probeTarget) probe(ctx context.Context, from *natlab.Host, port uint16) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	to := netip.AddrPortFrom(pt.host.PublicAddr(), port)
	src, stop, err := send(ctx, from, pt.proto, to)
	if err != nil {
		return false, err
	}
	defer stop()
	dropped := make(chan error, 1)
	go func() { dropped <- waitDropped(ctx, pt.host, pt.proto, src, port) }()
	select {
	case got := <-pt.arrived:
		if got != src {
			return false, fmt.Errorf("the host got a packet from %v while waiting for the probe from %v", got, src)
		}
		return true, nil
	case err := <-dropped:
		if err != nil {
			return false, fmt.Errorf("%w: %w", errNoVerdict, err)
		}
		return false, nil
	}
}

// send sends a UDP datagram, or starts a TCP connection, from a new port of
// h to to, and returns the source address and port, and a function that
// ends the attempt and frees the port.
func send(ctx context.Context, h *natlab.Host, proto string, to netip.AddrPort) (netip.AddrPort, func(), error) {
	if proto == "udp" {
		c, err := h.ListenUDP(0)
		if err != nil {
			return netip.AddrPort{}, nil, err
		}
		src := netip.AddrPortFrom(h.Addr(), uint16(c.LocalAddr().(*net.UDPAddr).Port))
		if _, err := c.WriteToUDPAddrPort([]byte("probe"), to); err != nil {
			c.Close()
			return netip.AddrPort{}, nil, err
		}
		return src, func() { c.Close() }, nil
	}
	// A listener holds the port, so that it is known before the
	// connection that uses it is made.
	ln, err := h.ListenTCP(0)
	if err != nil {
		return netip.AddrPort{}, nil, err
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	ctx, cancel := context.WithCancel(ctx)
	dialed := make(chan struct{})
	go func() {
		defer close(dialed)
		if c, err := h.DialTCP(ctx, port, to); err == nil {
			c.Close()
		}
	}()
	stop := func() {
		cancel()
		<-dialed
		ln.Close()
	}
	return netip.AddrPortFrom(h.Addr(), port), stop, nil
}

// errNoVerdict is what a filtering probe reports when neither the host nor
// its router answered for the packet.
var errNoVerdict = errors.New("the probe was neither delivered nor dropped")

// punchTimeout bounds a hole punch. A punch that works connects with the
// first SYNs, or with the first retransmission one second later (an
// address-restricted cone drops a SYN that arrives before its own went
// out); one that cannot work takes all of it.
const punchTimeout = 5 * time.Second

// TestTCPSimultaneousOpen punches a TCP connection between hosts of every
// pair of kinds, as libp2p's DCUtR does without port prediction (see
// punchTable), all pairs at once so that the failing ones wait out
// punchTimeout together, and checks which pairs connect against
// punchTable.
func TestTCPSimultaneousOpen(t *testing.T) {
	t.Parallel()
	lab := natlab.New(t)
	relay := startObserver(t, lab.AddPublicHost("relay"))
	hosts := make(map[natlab.Kind][2]*natlab.Host)
	for _, k := range natlab.Kinds() {
		hosts[k] = [2]*natlab.Host{lab.AddHost(hostName(k, 1), k), lab.AddHost(hostName(k, 2), k)}
	}
	results := make([]punchResult, len(punchTable))
	var wg sync.WaitGroup
	for i, row := range punchTable {
		wg.Go(func() {
			results[i] = punch(t.Context(), hosts[row.a][0], hosts[row.b][1], relay.addr(0))
		})
	}
	wg.Wait()
	for i, row := range punchTable {
		t.Run(row.a.String()+"-"+row.b.String(), func(t *testing.T) {
			r := results[i]
			if r.err != nil {
				t.Fatal(r.err)
			}
			t.Logf("%v side: %s; %v side: %s; after %v", row.a, r.a, row.b, r.b, r.elapsed.Round(time.Millisecond))
			want := row.want && !row.predict // this probe does not predict ports
			if (r.a != "") != want || (r.b != "") != want {
				t.Errorf("%v side connected: %v, %v side connected: %v; want %v", row.a, r.a != "", row.b, r.b != "", want)
			}
			if want && simultaneous(row.a) && simultaneous(row.b) && (r.a != viaDial || r.b != viaDial) {
				t.Errorf("connected by %s and %s, want a simultaneous open (%s on both sides)", r.a, r.b, viaDial)
			}
		})
	}
}

// simultaneous reports whether a punch between two hosts of kinds for
// which it holds can only be a simultaneous open. Such a kind keeps the
// port, so the peer's SYN comes to the port the host dials from, from the
// port the host dials; and it lets in no SYN from an address the host has
// not sent to. The first SYN from the peer that gets in therefore comes
// after the host's own went out, and conntrack hands it, as the reply
// direction of that flow, to the host's connecting socket, not to its
// listener.
func simultaneous(k natlab.Kind) bool {
	f := k.Filtering()
	return k.Mapping() == natlab.EndpointIndependent && (f == natlab.AddressDependent || f == natlab.AddressAndPortDependent)
}

// How a side of a punch got the connection that carried its peer's hello.
const (
	viaDial   = "its dial"
	viaAccept = "its listener"
)

// A punchResult says how each side of a punch got its connection (viaDial
// or viaAccept, "" for none), and how long the punch took.
type punchResult struct {
	a, b    string
	elapsed time.Duration
	err     error
}

// A puncher is one side of a hole punch: a host listening on a port, and
// what the relay saw of that port.
type puncher struct {
	host     *natlab.Host
	ln       *net.TCPListener
	port     uint16
	observed netip.AddrPort

	mu    sync.Mutex
	conns []net.Conn
}

// punch has a and b listen, learn their public address and port from a
// connection to relay, then dial each other's from their listening port at
// once, and reports how each got a connection that carried the other's
// name.
func punch(ctx context.Context, a, b *natlab.Host, relay netip.AddrPort) punchResult {
	pa, err := newPuncher(ctx, a, relay)
	if err != nil {
		return punchResult{err: err}
	}
	defer pa.close()
	pb, err := newPuncher(ctx, b, relay)
	if err != nil {
		return punchResult{err: err}
	}
	defer pb.close()
	ctx, cancel := context.WithTimeout(ctx, punchTimeout)
	defer cancel()
	var r punchResult
	start := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() { r.a = pa.run(ctx, pb) })
	wg.Go(func() { r.b = pb.run(ctx, pa) })
	wg.Wait()
	r.elapsed = time.Since(start)
	return r
}

// newPuncher listens on a port of h and connects from it to relay, which
// tells it its public address and port; the connection stays open, as a
// libp2p peer's to its relay does.
func newPuncher(ctx context.Context, h *natlab.Host, relay netip.AddrPort) (*puncher, error) {
	ln, err := h.ListenTCP(0)
	if err != nil {
		return nil, err
	}
	p := &puncher{host: h, ln: ln, port: uint16(ln.Addr().(*net.TCPAddr).Port)}
	seen, c, err := observeTCP(ctx, h, p.port, relay)
	if err != nil {
		ln.Close()
		return nil, err
	}
	p.observed = seen
	p.keep(c)
	return p, nil
}

// keep holds c until close.
func (p *puncher) keep(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

// close closes the listener and every connection.
func (p *puncher) close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// run dials peer's observed address from p's listening port while
// accepting on it, says hello on every connection either yields, and
// returns how it got the first that carried peer's hello (viaDial or
// viaAccept), or "" if none did before ctx ended. It closes no connection
// (the peer may still be reading p's hello): close does, once both sides
// are done.
func (p *puncher) run(ctx context.Context, peer *puncher) string {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	verified := make(chan string, 2)
	greet := func(c net.Conn, via string) {
		p.keep(c)
		if hello(ctx, c, p.host.Name(), peer.host.Name()) {
			verified <- via
		}
	}
	wg.Go(func() {
		if c, err := p.host.DialTCP(ctx, p.port, peer.observed); err == nil {
			greet(c, viaDial)
		}
	})
	// Once run returns, ctx is canceled and the listener stops
	// accepting.
	context.AfterFunc(ctx, func() { p.ln.SetDeadline(time.Unix(1, 0)) })
	wg.Go(func() {
		for {
			c, err := p.ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { greet(c, viaAccept) })
		}
	})
	select {
	case via := <-verified:
		return via
	case <-ctx.Done():
		return ""
	}
}

// hello writes name on c and reports whether c then carries want, before
// ctx ends.
func hello(ctx context.Context, c net.Conn, name, want string) bool {
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := io.WriteString(c, name+"\n"); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && line == want+"\n"
}
