package main

// securepeer relay: a circuit relay for peers named by key, with the
// limits a relay open to the internet needs.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/p2p"
)

const relayUsage = `Usage: securepeer relay [flags] [ADDR...]

Runs a circuit relay (libp2p's circuit relay v2) on ADDR (HOST:PORT, default
:4001, every interface), through which peers named by key meet: a listen
-p2p holds a reservation on it, and a connect to that listen's key reaches
it through the relay when neither can reach the other, then directly where
their NATs let hole punching through. It carries securepeer records end to
end: it sees ciphertext, and who talks to whom and how much, and cannot
stand in for either peer, whose keys are checked end to end.

It prints its addresses on stdout, each ending with /p2p/ and the relay's
ID, which names its key: hand one out, for -relay or the relays file
($SECUREPEER_HOME/relays, one address a line). Its key is
$SECUREPEER_HOME/relay_ed25519, made on first use (-i FILE for another).
It serves until Ctrl-C or SIGTERM: then it takes no new reservation or
circuit and lets the circuits in progress finish, for up to 10 seconds; a
second signal, or the end of those 10 seconds, cuts them.

A relay is open to the internet, so what anyone can make it hold is
bounded, per address and in all (defaults in parentheses):

Flags:
    -i FILE              the relay's identity (default $SECUREPEER_HOME/relay_ed25519)
    -public HOST:PORT    an address to hand out instead of those it listens on,
                         for a relay behind a port forward or with a DNS name;
                         repeatable
    -allow FILE          only the keys in FILE (authorized_keys format) may
                         hold a reservation or open a circuit, and a circuit
                         only to another of them: a relay for a group
    -max-conns N         connections at once (4096)
    -max-conns-per-ip N  connections at once from one address, or IPv6 /56 (16)
    -conn-rate R         new connections per second from one address (1),
    -conn-burst N        after a burst of N (32)
    -max-reservations N  reservations at once (1024)
    -max-reservations-per-ip N
                         reservations from one address (8)
    -reservation-ttl D   how long a reservation lasts unless renewed (1h)
    -max-circuits N      circuits at once (1024)
    -max-circuits-per-peer N
                         circuits to or from one peer at once (16)
    -circuit-data SIZE   bytes a circuit carries each way, as 1GiB or 500MB (1GiB)
    -circuit-duration D  how long a circuit lasts (1h)
    -v                   log structured lines: the relay's counters every minute

A circuit that reaches its data or time limit is cut, and both peers are
told why; a tunnel then reconnects (and resumes its session), so the
limits bound what one circuit costs, not what peers can do.

Examples:
    securepeer relay                                  # on a host with a public address
    securepeer relay -public relay.example.org:4001 :4001
    securepeer relay -allow team.pub -circuit-data 10GiB
`

// relayOptions are relay's command line, parsed.
type relayOptions struct {
	identity string
	public   []string // -public, as HOST:PORT
	allow    string
	verbose  bool
	addrs    []string // the addresses to listen on, as HOST:PORT
	limits   p2p.RelayLimits
	data     string // -circuit-data, as given
}

// parseRelay parses relay's command line into options, and validates
// them.
func parseRelay(args []string) (*relayOptions, error) {
	o := &relayOptions{limits: p2p.DefaultRelayLimits}
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	l := &o.limits
	fs.StringVar(&o.identity, "i", "", "")
	fs.Func("public", "", func(v string) error { o.public = append(o.public, v); return nil })
	fs.StringVar(&o.allow, "allow", "", "")
	fs.BoolVar(&o.verbose, "v", false, "")
	fs.IntVar(&l.Conns, "max-conns", l.Conns, "")
	fs.IntVar(&l.ConnsPerIP, "max-conns-per-ip", l.ConnsPerIP, "")
	fs.Float64Var(&l.ConnRate, "conn-rate", l.ConnRate, "")
	fs.IntVar(&l.ConnBurst, "conn-burst", l.ConnBurst, "")
	fs.IntVar(&l.Reservations, "max-reservations", l.Reservations, "")
	fs.IntVar(&l.ReservationsPerIP, "max-reservations-per-ip", l.ReservationsPerIP, "")
	fs.DurationVar(&l.ReservationTTL, "reservation-ttl", l.ReservationTTL, "")
	fs.IntVar(&l.Circuits, "max-circuits", l.Circuits, "")
	fs.IntVar(&l.CircuitsPerPeer, "max-circuits-per-peer", l.CircuitsPerPeer, "")
	fs.StringVar(&o.data, "circuit-data", "", "")
	fs.DurationVar(&l.CircuitDuration, "circuit-duration", l.CircuitDuration, "")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return nil, err
	}
	o.addrs = rest
	return o, o.validate()
}

// validate checks the options, as relay's usage says they go together.
func (o *relayOptions) validate() error {
	if len(o.addrs) == 0 {
		o.addrs = []string{":4001"}
	}
	for _, a := range o.addrs {
		if err := checkAddr("relay address", a, false); err != nil {
			return err
		}
		if _, err := listenMultiaddrs(a); err != nil {
			return err
		}
	}
	for _, a := range o.public {
		if _, err := publicMultiaddr(a); err != nil {
			return err
		}
	}
	if o.data != "" {
		n, err := parseSize(o.data)
		if err != nil {
			return usageErrorf("relay: -circuit-data %q: %v", o.data, err)
		}
		o.limits.CircuitData = n
	}
	l := o.limits
	for _, c := range []struct {
		name string
		n    float64
	}{
		{"max-conns", float64(l.Conns)}, {"max-conns-per-ip", float64(l.ConnsPerIP)},
		{"conn-rate", l.ConnRate}, {"conn-burst", float64(l.ConnBurst)},
		{"max-reservations", float64(l.Reservations)}, {"max-reservations-per-ip", float64(l.ReservationsPerIP)},
		{"max-circuits", float64(l.Circuits)}, {"max-circuits-per-peer", float64(l.CircuitsPerPeer)},
		{"circuit-data", float64(l.CircuitData)},
	} {
		if c.n <= 0 {
			return usageErrorf("relay: -%s must be more than 0", c.name)
		}
	}
	switch {
	case l.ReservationTTL < time.Minute:
		return usageErrorf("relay: -reservation-ttl %v: at least a minute, or listeners renew all the time", l.ReservationTTL)
	case l.CircuitDuration < time.Second:
		return usageErrorf("relay: -circuit-duration %v: at least a second; the relay protocol counts in seconds", l.CircuitDuration)
	}
	return nil
}

// parseSize reads a byte count: a number, optionally followed by B, KB,
// MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024).
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   float64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
	}
	num, mult := strings.TrimSpace(s), 1.0
	for _, u := range units {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 || f*mult >= 1<<62 {
		return 0, errors.New("want a positive size, as 1GiB, 500MB or 1048576")
	}
	return int64(f * mult), nil
}

// publicMultiaddr turns a -public HOST:PORT into a multiaddr: an IP
// address, or a DNS name.
func publicMultiaddr(a string) (string, error) {
	if err := checkAddr("-public address", a, true); err != nil {
		return "", err
	}
	host, port, _ := net.SplitHostPort(a)
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Is4() || ip.Is4In6() {
			return "/ip4/" + ip.Unmap().String() + "/tcp/" + port, nil
		}
		return "/ip6/" + ip.String() + "/tcp/" + port, nil
	}
	return "/dns/" + host + "/tcp/" + port, nil
}

// relayIdentityFile is the relay's default identity, in the securepeer
// home.
const relayIdentityFile = "relay_ed25519"

// loadRelayIdentity loads the relay's identity: -i FILE, or the default
// one, created on first use.
func (e *env) loadRelayIdentity(file string) (*securepeer.Identity, error) {
	if file != "" {
		return e.loadIdentity(file)
	}
	dir, err := e.homeDir()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, relayIdentityFile)
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		return e.loadIdentity(path)
	}
	id, err := securepeer.GenerateIdentity()
	if err != nil {
		return nil, err
	}
	if err := writeIdentity(path, id, "securepeer relay", false); err != nil {
		return nil, err
	}
	e.notef("created the relay's identity %s (%s)", path, id.PublicKey().Fingerprint())
	return id, nil
}

func runRelay(ctx context.Context, e *env, args []string) error {
	o, err := parseRelay(args)
	if err != nil {
		return err
	}
	c := commonFlags{verbose: o.verbose}
	log := c.logger(e)
	id, err := e.loadRelayIdentity(o.identity)
	if err != nil {
		return err
	}
	cfg, stopping, err := o.config(e, log, id)
	if err != nil {
		return err
	}
	// Not ctx: the first signal stops the relay gracefully (serveRelay).
	r, err := p2p.RunRelay(context.WithoutCancel(ctx), cfg)
	if err != nil {
		return nodeError(err)
	}
	defer r.Close()
	addrs := handOutOrder(r.Addrs())
	for _, a := range addrs {
		fmt.Fprintln(e.stdout, a)
	}
	if err := writeAddrFile(addrs); err != nil {
		return err
	}
	e.notef("relay %s running; hand out an address above that peers can reach, the first on a host with a public address (for -relay, or the relays file); %s", r.Key().Fingerprint(), limitWords(o.limits))
	return serveRelay(ctx, e, r, stopping, log)
}

// config is the relay's configuration: its addresses, its limits, and
// who may use it. stopping, once set, refuses every new reservation and
// circuit.
func (o *relayOptions) config(e *env, log *slog.Logger, id *securepeer.Identity) (p2p.RelayConfig, *atomic.Bool, error) {
	cfg := p2p.RelayConfig{Identity: id, Limits: o.limits}
	for _, a := range o.addrs {
		m, _ := listenMultiaddrs(a)
		cfg.ListenAddrs = append(cfg.ListenAddrs, m...)
	}
	for _, a := range o.public {
		m, _ := publicMultiaddr(a)
		cfg.PublicAddrs = append(cfg.PublicAddrs, m)
	}
	stopping := new(atomic.Bool)
	allowed := func(securepeer.PublicKey) bool { return true }
	if o.allow != "" {
		if err := checkFileDir(o.allow); err != nil {
			return cfg, nil, err
		}
		p, err := newAllowPolicy(e, log, o.allow)
		if err != nil {
			return cfg, nil, err
		}
		allowed = func(k securepeer.PublicKey) bool { return p.verify(context.Background(), k) == nil }
	}
	cfg.AllowReserve = func(k securepeer.PublicKey) bool { return !stopping.Load() && allowed(k) }
	cfg.AllowCircuit = func(from, to securepeer.PublicKey) bool {
		return !stopping.Load() && allowed(from) && allowed(to)
	}
	return cfg, stopping, nil
}

// handOutOrder orders a relay's addresses as a user picks one to hand
// out: public addresses first, then private ones, then loopback, which
// only peers on the relay's own host can use.
func handOutOrder(addrs []string) []string {
	rank := func(a string) int {
		m, err := ma.NewMultiaddr(a)
		if err != nil || len(m) == 0 {
			return 3
		}
		ip, err := netip.ParseAddr(m[0].Value())
		switch {
		case err != nil:
			return 0 // a DNS name, as -public gives it
		case ip.IsLoopback():
			return 2
		case ip.IsPrivate() || ip.IsLinkLocalUnicast():
			return 1
		}
		return 0
	}
	out := slices.Clone(addrs)
	slices.SortStableFunc(out, func(a, b string) int { return rank(a) - rank(b) })
	return out
}

// limitWords says the relay's limits in one sentence.
func limitWords(l p2p.RelayLimits) string {
	return fmt.Sprintf("limits: %d connections (%d per address, %g a second after %d), %d reservations (%d per address, %v each), %d circuits (%d per peer), %s and %v per circuit",
		l.Conns, l.ConnsPerIP, l.ConnRate, l.ConnBurst,
		l.Reservations, l.ReservationsPerIP, l.ReservationTTL,
		l.Circuits, l.CircuitsPerPeer, formatBytes(float64(l.CircuitData)), l.CircuitDuration)
}

// relayStatsEvery is how often -v logs the relay's counters.
const relayStatsEvery = time.Minute

// relayPoll is how often a stopping relay looks whether its circuits
// have ended: go-libp2p's relay says when one opens or closes only to
// its metrics, which the p2p package counts.
const relayPoll = 100 * time.Millisecond

// serveRelay runs r until a signal: then it refuses new reservations and
// circuits, lets the circuits in progress end for up to listenGrace (or
// until a second signal), and stops.
func serveRelay(ctx context.Context, e *env, r *p2p.Relay, stopping *atomic.Bool, log *slog.Logger) error {
	e.cutsOnSecondSignal.Store(true)
	tick := time.NewTicker(relayStatsEvery)
	defer tick.Stop()
	for ctx.Err() == nil {
		select {
		case <-tick.C:
			logRelayStats(log, r.Stats())
		case <-ctx.Done():
		}
	}
	stopping.Store(true)
	grace := listenGrace
	if testOnlyGrace != 0 {
		grace = testOnlyGrace
	}
	if n := r.Stats().Circuits; n > 0 {
		e.notef("stopping: no new reservations or circuits; waiting up to %v for %s to end; Ctrl-C again to cut them", grace, circuitCount(n))
		waitCircuits(e, r, grace)
	}
	r.Close()
	st := r.Stats()
	logRelayStats(log, st)
	e.notef("relay stopped; its circuits carried %s", formatBytes(float64(st.Bytes)))
	return interruption(ctx)
}

// waitCircuits waits until r carries no circuit, grace has passed, or a
// second signal cuts them.
func waitCircuits(e *env, r *p2p.Relay, grace time.Duration) {
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	poll := time.NewTicker(relayPoll)
	defer poll.Stop()
	for r.Stats().Circuits > 0 {
		select {
		case <-poll.C:
		case <-deadline.C:
			e.notef("stopping: cutting %s after %v", circuitCount(r.Stats().Circuits), grace)
			return
		case <-e.cut:
			e.notef("stopping: cutting %s", circuitCount(r.Stats().Circuits))
			return
		}
	}
}

func circuitCount(n int) string {
	if n == 1 {
		return "1 circuit"
	}
	return fmt.Sprintf("%d circuits", n)
}

func logRelayStats(log *slog.Logger, st p2p.RelayStats) {
	log.Info("relay", "conns", st.Conns, "reservations", st.Reservations, "circuits", st.Circuits,
		"reservations_refused", st.ReservationsRefused, "circuits_refused", st.CircuitsRefused, "bytes", st.Bytes)
}
