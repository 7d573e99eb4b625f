//go:build linux

package natlab

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"syscall"

	"golang.org/x/sys/unix"
)

// A Host is a network namespace in a lab, with one interface (eth0) and one
// address, on the lab's internet or behind a router of its [Kind].
type Host struct {
	lab    *Lab
	name   string
	kind   Kind
	netns  string
	router string // the router's namespace, "" for a Public host
	addr   netip.Addr
	public netip.Addr
}

// hostName is what a host may be called: it becomes part of namespace
// names.
var hostName = regexp.MustCompile(`^[a-z0-9]{1,20}$`)

// AddPublicHost adds a host with a public address and nothing in front of
// it, and fails the lab's test if it cannot. Like AddHost, call it from the
// goroutine of the test that made the lab.
func (l *Lab) AddPublicHost(name string) *Host { return l.AddHost(name, Public) }

// AddHost adds a host called name (lower-case letters and digits) behind a
// router of kind k, or straight on the internet for [Public], and fails the
// lab's test if it cannot (with t.Fatal, so only from the goroutine of the
// test that made the lab).
func (l *Lab) AddHost(name string, k Kind) *Host {
	l.t.Helper()
	h, err := l.addHost(name, k)
	if err != nil {
		l.t.Fatal(err)
	}
	return h
}

func (l *Lab) addHost(name string, k Kind) (*Host, error) {
	if !hostName.MatchString(name) {
		return nil, fmt.Errorf("natlab: host name %q is not 1 to 20 lower-case letters and digits", name)
	}
	if k < 0 || int(k) >= len(kindNames) {
		return nil, fmt.Errorf("natlab: no such kind %v", k)
	}
	h := &Host{lab: l, name: name, kind: k, netns: l.prefix + "h-" + name}
	l.mu.Lock()
	_, dup := l.hosts[name]
	if !dup {
		l.hosts[name] = h
	}
	l.mu.Unlock()
	if dup {
		return nil, fmt.Errorf("natlab: the lab already has a host called %q", name)
	}
	if err := l.addNamespace(h.netns, roleHost); err != nil {
		return nil, err
	}
	if k == Public {
		_, addr, err := l.link(h.netns, "eth0")
		h.addr, h.public = addr, addr
		return h, err
	}
	return h, l.addRouter(h)
}

// addRouter puts a router of h's kind between h and the internet: its wan0
// on the internet router's next link, its lan0 on h's own link, and the
// kind's ruleset. A NAT's link is private, 198.19.i.0/24; a firewall's is
// public, 198.18.(128+i).0/24, routed to it by the internet router.
func (l *Lab) addRouter(h *Host) error {
	h.router = l.prefix + "r-" + h.name
	if err := l.addNamespace(h.router, roleRouter); err != nil {
		return err
	}
	i, wan, err := l.link(h.router, wanIf)
	if err != nil {
		return err
	}
	lan := [4]byte{198, 19, byte(i), 0}
	if !h.kind.Translates() {
		lan = [4]byte{198, 18, byte(128 + i), 0}
		err := l.ipBatch(l.inet, fmt.Sprintf("route add %d.%d.%d.0/24 via %s", lan[0], lan[1], lan[2], wan))
		if err != nil {
			return err
		}
	}
	gw, addr := lan, lan
	gw[3], addr[3] = 1, 2
	h.addr = netip.AddrFrom4(addr)
	h.public = h.addr
	if h.kind.Translates() {
		h.public = wan
	}
	err = l.ipBatch(h.router,
		fmt.Sprintf("link add %s type veth peer name eth0 netns %s", lanIf, h.netns),
		fmt.Sprintf("addr add %s/24 dev %s", netip.AddrFrom4(gw), lanIf),
		fmt.Sprintf("link set %s up", lanIf),
	)
	if err != nil {
		return err
	}
	err = l.ipBatch(h.netns,
		fmt.Sprintf("addr add %s/24 dev eth0", h.addr),
		"link set eth0 up",
		fmt.Sprintf("route add default via %s", netip.AddrFrom4(gw)),
	)
	if err != nil {
		return err
	}
	rules, err := ruleset(h.kind, wan, h.addr)
	if err != nil {
		return err
	}
	return l.nftLoad(h.router, rules)
}

// Name returns the name the host was added with.
func (h *Host) Name() string { return h.name }

// Kind returns what stands between the host and the internet.
func (h *Host) Kind() Kind { return h.kind }

// Netns returns the name of the host's network namespace, for
// "ip netns exec".
func (h *Host) Netns() string { return h.netns }

// Addr returns the host's own address: a private one in 198.19.0.0/16
// behind a NAT, a public one in 198.18.0.0/16 otherwise.
func (h *Host) Addr() netip.Addr { return h.addr }

// PublicAddr returns the address the internet sees the host's packets come
// from: its NAT router's, or its own if it is not translated.
func (h *Host) PublicAddr() netip.Addr { return h.public }

// Command returns a command that runs program name with args inside the
// host's network namespace (through ip netns exec, which execs it: the
// command's process is the program's). Like [exec.CommandContext], it is
// killed when ctx is done; the lab kills whatever still runs in its
// namespaces when its test ends.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, h.lab.ip, append([]string{"netns", "exec", h.netns, name}, args...)...)
}

// Do runs fn on an OS thread that is inside the host's network namespace,
// and returns its error. Sockets fn opens belong to the host and keep
// working from any goroutine afterwards. fn must open its sockets itself,
// in the goroutine Do runs it in: goroutines it starts run in the
// machine's own namespace.
func (h *Host) Do(fn func() error) error { return inNamespace(h.netns, fn) }

// ListenTCP listens on the host's address at port (0 picks one) with
// SO_REUSEPORT, so that [Host.DialTCP] can dial from the same port: the
// way a peer behind a NAT lets its outgoing connections carry the mapping
// of its listening port.
func (h *Host) ListenTCP(port uint16) (*net.TCPListener, error) {
	var ln net.Listener
	err := h.Do(func() error {
		var err error
		lc := net.ListenConfig{Control: reusePort}
		ln, err = lc.Listen(context.Background(), "tcp4", netip.AddrPortFrom(h.addr, port).String())
		return err
	})
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}

// DialTCP connects from the host's address and local port (0 picks one)
// to raddr, with SO_REUSEPORT so that it may share the port of a
// [Host.ListenTCP] listener and of other connections to other addresses.
func (h *Host) DialTCP(ctx context.Context, port uint16, raddr netip.AddrPort) (*net.TCPConn, error) {
	var c net.Conn
	err := h.Do(func() error {
		var err error
		d := net.Dialer{
			LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(h.addr, port)),
			Control:   reusePort,
		}
		c, err = d.DialContext(ctx, "tcp4", raddr.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// ListenUDP opens a UDP socket on the host's address at port (0 picks
// one).
func (h *Host) ListenUDP(port uint16) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := h.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(h.addr, port)))
		return err
	})
	return c, err
}

// reusePort sets SO_REUSEADDR and SO_REUSEPORT on a socket before it binds.
func reusePort(_, _ string, c syscall.RawConn) error {
	var err error
	cerr := c.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if err == nil {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// A Drop is a packet from the internet that a host's router refused.
type Drop struct {
	Proto string         // "tcp" or "udp"
	From  netip.AddrPort // where it came from
	Port  uint16         // the port on the router's public address (or the host's, for a firewall) it was sent to
}

// Dropped returns the TCP and UDP packets from the internet the host's
// router has refused in the last ten minutes, one for each protocol, source
// and destination port. A [Public] host has no router and none.
func (h *Host) Dropped(ctx context.Context) ([]Drop, error) {
	if h.router == "" {
		return nil, nil
	}
	cmd := exec.CommandContext(ctx, h.lab.ip, "netns", "exec", h.router, h.lab.nft, "-j", "list", "set", "ip", rulesetTable, droppedSet)
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("natlab: list the packets %s's router dropped: %w", h.name, err)
	}
	return parseDropped(out)
}

// parseDropped reads the elements of the dropped set from nft -j.
func parseDropped(out []byte) ([]Drop, error) {
	var doc struct {
		Nftables []struct {
			Set *struct {
				Elem []struct {
					Elem struct {
						Val struct {
							Concat []any `json:"concat"`
						} `json:"val"`
					} `json:"elem"`
				} `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("natlab: nft -j output: %w", err)
	}
	var drops []Drop
	for _, item := range doc.Nftables {
		if item.Set == nil {
			continue
		}
		for _, e := range item.Set.Elem {
			d, err := parseDrop(e.Elem.Val.Concat)
			if err != nil {
				return nil, err
			}
			drops = append(drops, d)
		}
	}
	return drops, nil
}

// parseDrop reads one (protocol, address, source port, destination port)
// element.
func parseDrop(v []any) (Drop, error) {
	if len(v) != 4 {
		return Drop{}, fmt.Errorf("natlab: dropped set element %v is not 4 fields", v)
	}
	proto, ok1 := v[0].(string)
	addr, ok2 := v[1].(string)
	sport, ok3 := v[2].(float64)
	dport, ok4 := v[3].(float64)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return Drop{}, fmt.Errorf("natlab: dropped set element %v is not protocol, address, port, port", v)
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return Drop{}, fmt.Errorf("natlab: dropped set element %v: %w", v, err)
	}
	return Drop{Proto: proto, From: netip.AddrPortFrom(ip, uint16(sport)), Port: uint16(dport)}, nil
}

// cutTable is the nftables table of [Host.Cut], in the host's own
// namespace (the routers' rulesets live in theirs).
const cutTable = "natlab_cut"

// Cut drops every packet between the host and addr, both ways, in the
// host's own namespace, until the function it returns is called: a path
// that breaks and comes back, while the host's other paths (through a
// relay, say) carry on.
func (h *Host) Cut(addr netip.Addr) (restore func() error, err error) {
	if !addr.Is4() {
		return nil, fmt.Errorf("natlab: cut %s from %s: only IPv4 addresses are cut", h.name, addr)
	}
	rules := fmt.Sprintf(`table ip %[1]s {
	chain in { type filter hook input priority 0; ip saddr %[2]s drop; }
	chain out { type filter hook output priority 0; ip daddr %[2]s drop; }
}
`, cutTable, addr)
	if err := h.lab.nftLoad(h.netns, rules); err != nil {
		return nil, fmt.Errorf("natlab: cut %s from %s: %w", h.name, addr, err)
	}
	return func() error {
		err := run(h.lab.ip, nil, "netns", "exec", h.netns, h.lab.nft, "delete", "table", "ip", cutTable)
		if err != nil {
			return fmt.Errorf("natlab: restore %s's path to %s: %w", h.name, addr, err)
		}
		return nil
	}, nil
}
