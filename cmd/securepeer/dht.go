package main

// Finding a peer by key through a libp2p DHT (package p2p/locate), opt-in
// with -dht: listen -p2p publishes where it can be reached, and connect
// looks a peer up when it has no relay of its own, or when its relays
// fail. A relay the user runs stays the default way to meet.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/pkgerr"
	"github.com/securepeer/securepeer/p2p"
	"github.com/securepeer/securepeer/p2p/locate"
)

// dhtList is the repeatable -dht flag: "public" for the public DHT's
// bootstrap peers, or the multiaddrs, with /p2p/ID, of a private DHT's
// members, comma-separated.
type dhtList []string

func (l *dhtList) String() string { return strings.Join(*l, ",") }

func (l *dhtList) Set(v string) error {
	for s := range strings.SplitSeq(v, ",") {
		s = strings.TrimSpace(s)
		if s == "public" {
			*l = append(*l, locate.PublicBootstrap()...)
			continue
		}
		if _, err := peer.AddrInfoFromString(s); err != nil {
			return pkgerr.Plainf("-dht %q: %v; -dht takes public, for the public DHT, or the addresses of a private DHT's members, each ending with /p2p/ and its ID, as /ip4/198.51.100.7/tcp/4002/p2p/12D3KooW..., comma-separated", s, err)
		}
		*l = append(*l, s)
	}
	return nil
}

// Bounds of the DHT's work: joining (a bootstrap peer answers, and is in
// the routing table), one lookup, one publication.
const (
	dhtJoinTimeout    = 30 * time.Second
	dhtLookupTimeout  = 30 * time.Second
	dhtPublishTimeout = time.Minute
)

// dhtMaxAddrs is how many addresses a record carries at most, locate's
// bound: NewRecord refuses more.
const dhtMaxAddrs = 32

// joinDHT starts a DHT client (locate's host of its own, which listens on
// nothing) and waits until a DHT peer is in its routing table, at most
// dhtJoinTimeout.
func joinDHT(ctx context.Context, boot dhtList) (*locate.Locator, error) {
	jctx, cancel := context.WithTimeout(ctx, dhtJoinTimeout)
	defer cancel()
	l, err := locate.Start(jctx, locate.Config{Bootstrap: boot})
	if err != nil {
		return nil, pkgerr.Plainf("joining the DHT: %w", err)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for l.Peers() == 0 {
		select {
		case <-jctx.Done():
			l.Close()
			if ctx.Err() != nil {
				return nil, interruption(ctx)
			}
			return nil, pkgerr.Plainf("joining the DHT: none of the %d peers of -dht answered as a DHT member within %v; is the address right, with its /p2p/ID?", len(boot), dhtJoinTimeout)
		case <-tick.C: // the DHT adds a peer once identify has run; it offers no event for it
		}
	}
	return l, nil
}

// testOnlyDHTRelayedOnly makes listen publish its circuit addresses
// only, so that the tests on loopback, where a direct address always
// answers, show that a peer is reached through a relay it found in the
// record.
var testOnlyDHTRelayedOnly bool

// dhtAddrs returns what a record says of the node: its circuit addresses
// through its relays first (they work from behind any NAT), then its
// direct ones, at most dhtMaxAddrs.
func dhtAddrs(addrs []string) []string {
	out := slices.Clone(addrs)
	if testOnlyDHTRelayedOnly {
		out = slices.DeleteFunc(out, func(a string) bool { return !strings.Contains(a, "/p2p-circuit") })
	}
	slices.SortStableFunc(out, func(a, b string) int {
		ca, cb := strings.Contains(a, "/p2p-circuit"), strings.Contains(b, "/p2p-circuit")
		switch {
		case ca == cb:
			return 0
		case ca:
			return -1
		}
		return 1
	})
	if len(out) > dhtMaxAddrs {
		out = out[:dhtMaxAddrs]
	}
	return out
}

// Republication: every dhtRepublish, well within the record's day, since
// DHT peers come and go and those holding it may leave; and once the
// node's reservations change, after dhtSettle, but never sooner than
// dhtMinGap after the last one, so that a relay that comes and goes does
// not make the node publish at its pace. A failure is tried again after
// dhtRetry.
type dhtTimes struct {
	republish, settle, minGap, retry time.Duration
}

var defaultDHTTimes = dhtTimes{
	republish: time.Hour,
	settle:    2 * time.Second,
	minGap:    30 * time.Second,
	retry:     time.Minute,
}

// A dhtPublisher keeps listen's record in the DHT up to date.
type dhtPublisher struct {
	times   dhtTimes
	addrs   func() []string                             // the node's addresses now
	publish func(ctx context.Context, a []string) error // stores a record
	notef   func(format string, args ...any)
	changed <-chan struct{} // the node's reservations changed

	last    []string
	lastAt  time.Time
	stop    context.CancelFunc
	stopped chan struct{}
	once    sync.Once
}

// startDHTPublisher publishes the node's addresses once (listen ends if
// that fails), and keeps them published until close. Each publication
// joins the DHT, stores the record and leaves: between them, listen holds
// no DHT host.
func startDHTPublisher(ctx context.Context, boot dhtList, id *securepeer.Identity, n *p2pNode, notef func(string, ...any)) (*dhtPublisher, error) {
	p := &dhtPublisher{
		times: defaultDHTTimes,
		addrs: func() []string { return dhtAddrs(n.node.Addrs()) },
		publish: func(ctx context.Context, a []string) error {
			pctx, cancel := context.WithTimeout(ctx, dhtPublishTimeout)
			defer cancel()
			loc, err := joinDHT(pctx, boot)
			if err != nil {
				return err
			}
			defer loc.Close()
			return loc.Publish(pctx, id, a)
		},
		notef:   notef,
		changed: n.reservationsChanged(),
	}
	if err := p.publishNow(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, interruption(ctx)
		}
		return nil, pkgerr.Plainf("publishing this side's addresses in the DHT: %w; peers can reach it through its relays without -dht", err)
	}
	p.run()
	return p, nil
}

// publishNow publishes the node's addresses, and says so.
func (p *dhtPublisher) publishNow(ctx context.Context) error {
	a := p.addrs()
	if len(a) == 0 {
		return errors.New("this side has no address yet")
	}
	if err := p.publish(ctx, a); err != nil {
		return err
	}
	p.last, p.lastAt = a, time.Now()
	p.notef("published this side's %s in the DHT, under its key (%d through relays)", addresses(len(a)), countCircuits(a))
	return nil
}

// addresses says "1 address", "2 addresses".
func addresses(n int) string {
	if n == 1 {
		return "1 address"
	}
	return fmt.Sprintf("%d addresses", n)
}

// countCircuits counts the circuit addresses of addrs.
func countCircuits(addrs []string) int {
	n := 0
	for _, a := range addrs {
		if strings.Contains(a, "/p2p-circuit") {
			n++
		}
	}
	return n
}

// run republishes in a goroutine of its own until close.
func (p *dhtPublisher) run() {
	ctx, cancel := context.WithCancel(context.Background())
	p.stop, p.stopped = cancel, make(chan struct{})
	go func() {
		defer close(p.stopped)
		p.loop(ctx)
	}()
}

// loop waits for the next reason to publish, and publishes.
func (p *dhtPublisher) loop(ctx context.Context) {
	next := time.NewTimer(p.times.republish)
	defer next.Stop()
	for {
		force := false
		select {
		case <-ctx.Done():
			return
		case <-next.C:
			force = true
		case <-p.changed:
			wait := max(p.times.settle, p.times.minGap-time.Since(p.lastAt))
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		if !force && slices.Equal(p.addrs(), p.last) {
			continue
		}
		wait := p.times.republish
		if err := p.publishNow(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			p.notef("could not publish this side's addresses in the DHT (%v); trying again in %v", err, p.times.retry)
			wait = p.times.retry
		}
		if !next.Stop() {
			select {
			case <-next.C:
			default:
			}
		}
		next.Reset(wait)
	}
}

// close stops republishing (a publication in progress is cut). The
// record stays in the DHT until it expires.
func (p *dhtPublisher) close() {
	if p == nil {
		return
	}
	p.once.Do(func() {
		p.stop()
		<-p.stopped
	})
}

// A dhtFinder looks connect's peer up in the DHT, at most once per dial.
type dhtFinder struct {
	boot  dhtList
	notef func(format string, args ...any)
	// found: the node has addresses from the DHT that have not failed
	// yet.
	found atomic.Bool
	// mu makes dials that run at once (a tunnel's, to a peer that does
	// not multiplex) look up one at a time: each holds one DHT host at
	// most.
	mu sync.Mutex
}

// find looks key up, and gives the node the addresses found. It says
// that the peer was found, or why not, in a sentence with a hint.
func (f *dhtFinder) find(ctx context.Context, n *p2pNode, key securepeer.PublicKey) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	loc, err := joinDHT(ctx, f.boot)
	if err != nil {
		return err
	}
	defer loc.Close()
	lctx, cancel := context.WithTimeout(ctx, dhtLookupTimeout)
	defer cancel()
	addrs, err := loc.Lookup(lctx, key)
	if err != nil {
		return lookupError(ctx, lctx, key, err)
	}
	usable := addAddrs(n.node, key, addrs)
	if len(usable) == 0 {
		return pkgerr.Plainf("the DHT's record for %s gives no address this side can dial (%s)", key.Fingerprint(), strings.Join(addrs, " "))
	}
	f.found.Store(true)
	f.notef("found %s through the DHT: %s (%d through relays)", key.Fingerprint(), addresses(len(usable)), countCircuits(usable))
	return nil
}

// addAddrs gives node the addresses of key that it takes, one by one, so
// that one it refuses (not TCP, say) does not cost the others; it returns
// those it took.
func addAddrs(node *p2p.Node, key securepeer.PublicKey, addrs []string) []string {
	var took []string
	for _, a := range addrs {
		if node.AddAddrs(key, []string{a}) == nil {
			took = append(took, a)
		}
	}
	return took
}

// lookupError says why key was not found, with what to check.
func lookupError(ctx, lctx context.Context, key securepeer.PublicKey, err error) error {
	fp := key.Fingerprint()
	switch {
	case ctx.Err() != nil:
		return interruption(ctx)
	case lctx.Err() != nil:
		return pkgerr.Plainf("looking %s up in the DHT timed out after %v; is it running listen -p2p with -dht, in the same DHT? A relay in common (-relay) needs no DHT", fp, dhtLookupTimeout)
	case errors.Is(err, locate.ErrBadRecord):
		return pkgerr.Plainf("the DHT gave a record for %s that does not check (%v), so it was not used: only its key can sign one, and this one is damaged or expired; a relay in common (-relay) needs no DHT", fp, pkgerr.Unnamed(err))
	case errors.Is(err, locate.ErrNotFound):
		return pkgerr.Plainf("%s was not found in the DHT: no record under its key; is it running listen -p2p with -dht, in the same DHT? A relay in common (-relay) needs no DHT", fp)
	}
	return pkgerr.Plainf("looking %s up in the DHT: %w", fp, err)
}

// worthLooking reports whether a dial that failed with err may succeed
// at addresses the DHT gives: not when the peer, or a host in its
// place, answered.
func worthLooking(err error) bool {
	return !errors.Is(err, p2p.ErrWrongKey) && !errors.Is(err, securepeer.ErrRejected) &&
		!errors.Is(err, securepeer.ErrOwnKey) && !errors.Is(err, p2p.ErrNotSecurepeer)
}
