//go:build linux

package natlab_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/securepeer/securepeer/internal/natlab"
)

// TestCommand checks that a program Command starts runs inside the host's
// namespace: behind each kind, the test binary, run as a UDP prober, finds
// the host's own address on its socket and the host's public address at
// the observer.
func TestCommand(t *testing.T) {
	t.Parallel()
	lab := natlab.New(t)
	obs := startObserver(t, lab.AddPublicHost("obs"))
	for _, k := range natlab.Kinds() {
		h := lab.AddHost(hostName(k, 1), k)
		t.Run(k.String(), func(t *testing.T) {
			cmd := h.Command(t.Context(), os.Args[0])
			cmd.Env = append(os.Environ(), helperEnv+"="+helperUDPProbe, observerEnv+"="+obs.addr(0).String())
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			fields := strings.Fields(string(out))
			if len(fields) != 2 {
				t.Fatalf("the prober printed %q", out)
			}
			local, err1 := netip.ParseAddrPort(fields[0])
			seen, err2 := netip.ParseAddrPort(fields[1])
			if err := errors.Join(err1, err2); err != nil {
				t.Fatal(err)
			}
			if local.Addr() != h.Addr() || seen.Addr() != h.PublicAddr() {
				t.Errorf("the prober sent from %v and was seen as %v; want %v and %v", local, seen, h.Addr(), h.PublicAddr())
			}
		})
	}
}

// TestPrivateAddressesDoNotRoute checks that the lab's internet has no
// route to a NAT's private side: a public host's connection to a NAT host's
// own address is refused as unreachable, by the internet router.
func TestPrivateAddressesDoNotRoute(t *testing.T) {
	t.Parallel()
	lab := natlab.New(t)
	pub := lab.AddPublicHost("pub")
	for _, k := range natlab.Kinds() {
		if !k.Translates() {
			continue
		}
		h := lab.AddHost(hostName(k, 1), k)
		t.Run(k.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), probeTimeout)
			defer cancel()
			c, err := pub.DialTCP(ctx, 0, netip.AddrPortFrom(h.Addr(), 80))
			if err == nil {
				c.Close()
			}
			if !errors.Is(err, syscall.ENETUNREACH) && !errors.Is(err, syscall.EHOSTUNREACH) {
				t.Errorf("a connection to %v from the internet: %v, want unreachable", h.Addr(), err)
			}
		})
	}
}

// TestAddHostErrors checks the hosts a lab refuses to add.
func TestAddHostErrors(t *testing.T) {
	lab := natlab.New(t)
	lab.AddPublicHost("taken")
	tests := []struct {
		name string
		host string
		kind natlab.Kind
	}{
		{"empty name", "", natlab.Public},
		{"upper case", "Alice", natlab.Public},
		{"dash", "a-b", natlab.FullCone},
		{"too long", strings.Repeat("a", 21), natlab.Public},
		{"taken", "taken", natlab.Symmetric},
		{"no such kind", "b", natlab.SymmetricRandom + 1}, // the last kind, outside Kinds
		{"negative kind", "c", natlab.Kind(-1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := lab.AddHostErr(tt.host, tt.kind); err == nil {
				t.Errorf("AddHost(%q, %v) succeeded", tt.host, tt.kind)
			}
		})
	}
	if got := labNamespaces(t, lab.Prefix()); !slices.Equal(got, []string{lab.Prefix() + "h-taken", lab.Prefix() + "inet"}) {
		t.Errorf("namespaces %v after refused hosts", got)
	}
}

// TestParseDropped checks the reading of nft's JSON listing of the dropped
// set, and that it rejects what it cannot read.
func TestParseDropped(t *testing.T) {
	const listing = `{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
	{"set": {"family": "ip", "name": "dropped", "table": "natlab", "type": ["inet_proto", "ipv4_addr", "inet_service", "inet_service"],
	"handle": 1, "size": 65536, "flags": ["timeout"], "timeout": 600, "elem": [
	{"elem": {"val": {"concat": ["udp", "198.18.0.3", 9000, 20000]}, "expires": 599}},
	{"elem": {"val": {"concat": ["tcp", "198.18.0.4", 9001, 20001]}, "expires": 599}}]}}]}`
	got, err := natlab.ParseDropped([]byte(listing))
	if err != nil {
		t.Fatal(err)
	}
	want := []natlab.Drop{
		{Proto: "udp", From: netip.MustParseAddrPort("198.18.0.3:9000"), Port: 20000},
		{Proto: "tcp", From: netip.MustParseAddrPort("198.18.0.4:9001"), Port: 20001},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	empty := `{"nftables": [{"set": {"name": "dropped"}}]}`
	if got, err := natlab.ParseDropped([]byte(empty)); err != nil || len(got) != 0 {
		t.Errorf("an empty set gave %v, %v", got, err)
	}
	for _, bad := range []string{
		`not json`,
		`{"nftables": [{"set": {"elem": [{"elem": {"val": {"concat": ["udp", "198.18.0.3", 9000]}}}]}}]}`,
		`{"nftables": [{"set": {"elem": [{"elem": {"val": {"concat": ["udp", "nowhere", 9000, 1]}}}]}}]}`,
		`{"nftables": [{"set": {"elem": [{"elem": {"val": {"concat": [17, "198.18.0.3", 9000, 1]}}}]}}]}`,
	} {
		if got, err := natlab.ParseDropped([]byte(bad)); err == nil {
			t.Errorf("ParseDropped(%s) = %v, want an error", bad, got)
		}
	}
}

// TestCut checks that Cut drops a host's packets to and from one address,
// both ways, and no other, until it is restored.
func TestCut(t *testing.T) {
	t.Parallel()
	lab := natlab.New(t)
	a, b, c := lab.AddPublicHost("a"), lab.AddPublicHost("b"), lab.AddPublicHost("c")
	la, err := a.ListenTCP(0)
	if err != nil {
		t.Fatal(err)
	}
	defer la.Close()
	port := uint16(la.Addr().(*net.TCPAddr).Port)
	dial := func(from *natlab.Host, timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		conn, err := from.DialTCP(ctx, 0, netip.AddrPortFrom(a.Addr(), port))
		if err == nil {
			conn.Close()
		}
		return err
	}
	if err := dial(b, probeTimeout); err != nil {
		t.Fatalf("before the cut: %v", err)
	}
	restore, err := a.Cut(b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	// Dropped packets show as a dial that never ends: a second is plenty
	// on the lab's links. The dial ends with the context's error, or with
	// the socket's deadline (the context's, set on the connecting socket)
	// when the poller sees it first.
	if err := dial(b, time.Second); !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("across the cut: %v, want the packets dropped until the deadline", err)
	}
	if err := dial(c, probeTimeout); err != nil {
		t.Errorf("from another host during the cut: %v", err)
	}
	if _, err := a.Cut(netip.MustParseAddr("2001:db8::1")); err == nil {
		t.Error("an IPv6 address was cut")
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if err := dial(b, probeTimeout); err != nil {
		t.Errorf("after the restore: %v", err)
	}
}
