//go:build linux

package natlab_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/securepeer/securepeer/internal/natlab"
)

// probeTimeout bounds how long a probe waits for an answer that should
// come at once; it only ever runs out when the lab is broken.
const probeTimeout = 10 * time.Second

// observerPort is the first of the two ports an observer answers on, for
// TCP and UDP alike.
const observerPort = 3478

// An observer is a public host that tells whoever reaches it, over UDP or
// TCP, the address and port it sees them come from: what a STUN server or
// libp2p's identify protocol tells a peer about its NAT's mapping.
type observer struct {
	host *natlab.Host

	mu    sync.Mutex
	conns []net.Conn // accepted TCP connections, closed at cleanup
}

// startObserver makes h an observer on observerPort and the port after it,
// until the test ends.
func startObserver(t *testing.T, h *natlab.Host) *observer {
	t.Helper()
	o := &observer{host: h}
	var wg sync.WaitGroup
	var closers []io.Closer
	for i := range 2 {
		port := uint16(observerPort + i)
		u, err := h.ListenUDP(port)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := h.ListenTCP(port)
		if err != nil {
			u.Close()
			t.Fatal(err)
		}
		closers = append(closers, u, ln)
		wg.Go(func() { o.serveUDP(u) })
		wg.Go(func() { o.serveTCP(ln, &wg) })
	}
	t.Cleanup(func() {
		for _, c := range closers {
			c.Close()
		}
		o.mu.Lock()
		for _, c := range o.conns {
			c.Close()
		}
		o.mu.Unlock()
		wg.Wait()
	})
	return o
}

// addr returns the observer's i'th port.
func (o *observer) addr(i int) netip.AddrPort {
	return netip.AddrPortFrom(o.host.Addr(), uint16(observerPort+i))
}

// serveUDP answers every datagram with its source address and port.
func (o *observer) serveUDP(c *net.UDPConn) {
	buf := make([]byte, 64)
	for {
		_, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		c.WriteToUDPAddrPort([]byte(from.String()), from)
	}
}

// serveTCP writes every connection's remote address and port, then holds
// the connection open until the other side closes it, so that its mapping
// lives while the test runs.
func (o *observer) serveTCP(ln *net.TCPListener, wg *sync.WaitGroup) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		o.mu.Lock()
		o.conns = append(o.conns, c)
		o.mu.Unlock()
		wg.Go(func() {
			fmt.Fprintln(c, c.RemoteAddr())
			io.Copy(io.Discard, c)
		})
	}
}

// observeUDP sends a datagram from c to an observer and returns the
// address and port the observer saw.
func observeUDP(c *net.UDPConn, obs netip.AddrPort) (netip.AddrPort, error) {
	if _, err := c.WriteToUDPAddrPort([]byte("?"), obs); err != nil {
		return netip.AddrPort{}, err
	}
	c.SetReadDeadline(time.Now().Add(probeTimeout))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 64)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("no answer from observer %v: %w", obs, err)
		}
		if from == obs {
			return netip.ParseAddrPort(string(buf[:n]))
		}
	}
}

// observeTCP connects from h's port to an observer and returns the address
// and port the observer saw, and the connection, which holds the mapping
// until it is closed.
func observeTCP(ctx context.Context, h *natlab.Host, port uint16, obs netip.AddrPort) (netip.AddrPort, net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	c, err := h.DialTCP(ctx, port, obs)
	if err != nil {
		return netip.AddrPort{}, nil, fmt.Errorf("%s cannot reach observer %v: %w", h.Name(), obs, err)
	}
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		return netip.AddrPort{}, nil, fmt.Errorf("no answer from observer %v: %w", obs, err)
	}
	seen, err := netip.ParseAddrPort(strings.TrimSpace(line))
	if err != nil {
		c.Close()
		return netip.AddrPort{}, nil, err
	}
	return seen, c, nil
}

// waitDropped returns nil once h's router has recorded that it refused a
// packet of proto from from to port, or ctx's error.
func waitDropped(ctx context.Context, h *natlab.Host, proto string, from netip.AddrPort, port uint16) error {
	want := natlab.Drop{Proto: proto, From: from, Port: port}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		drops, err := h.Dropped(ctx)
		if err != nil {
			return err
		}
		for _, d := range drops {
			if d == want {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// hostName returns the name of the i'th host of kind k in a lab.
func hostName(k natlab.Kind, i int) string {
	return fmt.Sprintf("%s%d", strings.ReplaceAll(k.String(), "-", ""), i)
}
