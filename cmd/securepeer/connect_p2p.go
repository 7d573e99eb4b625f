package main

// connect to a peer named by its key: through relays, and directly once
// hole punching gets through, with the p2p engine.

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/tunnel"
	"github.com/securepeer/securepeer/internal/pkgerr"
	"github.com/securepeer/securepeer/p2p"
)

// checkPeer checks connect's PEER argument as far as it can be checked
// without reading files: a fingerprint's length, a key line, or
// HOST:PORT. A word without a colon may be a key file or a known_hosts
// name, which resolve looks up.
func (o *connectOptions) checkPeer() error {
	s := strings.TrimSpace(o.addr)
	switch {
	case strings.HasPrefix(s, "SHA256:"):
		if len(strings.TrimRight(s, "=")) != len("SHA256:")+43 {
			return usageErrorf("connect: %q: a SHA256 fingerprint has 43 characters after \"SHA256:\"; copy it whole from securepeer id", s)
		}
		return o.checkByKey()
	case isKeyLine(s):
		if _, err := securepeer.ParsePublicKey(s); err != nil {
			return usageErrorf("connect: the peer key %q: %v", s, describe(err))
		}
		return o.checkByKey()
	case strings.Contains(s, ":"):
		if err := checkAddr("peer address", o.addr, true); err != nil {
			return err
		}
		if f := o.byKeyFlag(); f != "" {
			return usageErrorf("connect: %s is for a peer named by its key (its .pub file, key line, fingerprint or known_hosts name); %s is an address, dialed directly", f, o.addr)
		}
	}
	return nil
}

// byKeyFlag names the flag given that only a peer named by its key
// takes (-relay, -dht), or is empty.
func (o *connectOptions) byKeyFlag() string {
	switch {
	case len(o.relays) > 0:
		return "-relay"
	case len(o.dht) > 0:
		return "-dht"
	}
	return ""
}

// isKeyLine reports whether s looks like a public key line.
func isKeyLine(s string) bool {
	return strings.HasPrefix(s, "ssh-") && strings.ContainsAny(s, " \t")
}

// checkByKey refuses the flags that have no meaning for a peer named by
// its key.
func (o *connectOptions) checkByKey() error {
	switch {
	case o.legacy.enabled:
		return usageErrorf("connect: -legacy speaks to a Node secure-peer 0.2 peer at HOST:PORT; a peer named by its key is reached through relays, in the native protocol only")
	case o.expect != "":
		return usageErrorf("connect: the peer is named by its key, which pins it already; -expect is for a peer at HOST:PORT")
	case o.acceptNew:
		return usageErrorf("connect: -accept-new trusts a new peer's key on first use; a peer named by its key needs no such trust")
	}
	return nil
}

// resolve finds the peer connect names (resolvePeer), with the
// known_hosts file that -known-hosts or the default names.
func (o *connectOptions) resolve(e *env) (peerTarget, error) {
	t, err := resolvePeer(o.addr, func() (string, error) { return e.knownHostsPath(o.knownHosts) })
	if err != nil {
		return t, err
	}
	if t.byKey() {
		err = o.checkByKey()
	} else if f := o.byKeyFlag(); f != "" {
		err = usageErrorf("connect: %s is for a peer named by its key; %s is an address, dialed directly", f, o.addr)
	}
	return t, err
}

// p2pDialTimeout bounds a dial by key when -w does not: as long as a TCP
// connect and a handshake may take.
const p2pDialTimeout = dialTimeout + connectHandshakeTimeout

// connectByKey connects to the peer with key t.key through the relays,
// and then does what connect does with any stream.
func connectByKey(ctx context.Context, e *env, o *connectOptions, t peerTarget, log *slog.Logger) error {
	relays, from, err := e.relays(o.relays)
	if err != nil {
		return err
	}
	if len(relays) == 0 && len(o.dht) == 0 {
		return noRelayError(t.key, from)
	}
	id, err := e.loadIdentity(o.common.identity)
	if err != nil {
		return err
	}
	if id.PublicKey().Equal(t.key) {
		return usageErrorf("connect: %s is your own key (%s); name the peer's", t.key.Fingerprint(), t.how)
	}
	log.Info("peer named by key", "peer", t.key.Fingerprint(), "from", t.how, "relays", strings.Join(relays, " "), "dht", len(o.dht) > 0)
	note := "; this session's stream stays on the relay, as a stream does not move between connections"
	if o.tunnel.tunnel() {
		note = "" // the tunnel moves to it, and says so
	}
	n, err := startNode(ctx, id, p2pSpec{relays: relays, notef: e.notef, directNote: note}, log)
	if err != nil {
		return err
	}
	defer n.close()
	direct := n.watch(t.key)
	protos := o.handshake().protos
	if len(protos) == 0 {
		protos = []string{streamProtocol}
	}
	d := &p2pDialer{n: n, key: t.key, protos: protos, timeout: p2pDialTimeout, direct: direct, relays: len(relays) > 0}
	if len(o.dht) > 0 {
		d.dht = &dhtFinder{boot: o.dht, notef: e.notef}
	}
	if o.wait > 0 {
		d.timeout = o.wait
	}
	return connectWith(ctx, e, &o.common, d, &o.tunnel, o.tty && e.stdinIsTerminal(), log)
}

// noRelayError says that a peer named by key cannot be reached for want
// of a relay.
func noRelayError(key securepeer.PublicKey, from string) error {
	return pkgerr.Plainf("no relay is set, so %s cannot be reached: peers named by key meet through a relay (and go direct from there where their NATs allow it); give one with -relay ADDR, as securepeer relay prints it, or list relays in %s; or look the peer up in a DHT where it publishes, with -dht", key.Fingerprint(), from)
}

// p2pDialer opens streams to the peer with key through the p2p node: a
// connection through a relay or a direct one, and a stream on it for
// each dial. It offers protos in order, as a native handshake offers
// them: the first the peer serves is the stream's protocol.
type p2pDialer struct {
	n       *p2pNode
	key     securepeer.PublicKey
	protos  []string
	timeout time.Duration
	direct  <-chan struct{} // the node's word that the connection went direct
	relays  bool            // relays are set
	dht     *dhtFinder      // -dht: where to look the peer up, or nil
}

// dial opens a stream to the peer. With -dht, it looks the peer up first
// if no relay is set and no addresses found earlier are left to try, and
// again when a dial fails in a way that other addresses might not: at
// most one lookup per dial.
func (d *p2pDialer) dial(ctx context.Context) (*stream, error) {
	looked := false
	if d.dht != nil && !d.relays && !d.dht.found.Load() {
		if err := d.dht.find(ctx, d.n, d.key); err != nil {
			return nil, err
		}
		looked = true
	}
	s, err := d.dialOnce(ctx)
	var f *p2pDialFailure
	if d.dht == nil || looked || !errors.As(err, &f) || !worthLooking(f.err) || ctx.Err() != nil {
		return s, d.dialFailure(ctx, err)
	}
	if ferr := d.dht.find(ctx, d.n, d.key); ferr != nil {
		if ctx.Err() != nil {
			return nil, interruption(ctx)
		}
		return nil, pkgerr.Plainf("%v; and through the DHT: %w", d.dialFailure(ctx, err), ferr)
	}
	s, err = d.dialOnce(ctx)
	return s, d.dialFailure(ctx, err)
}

// A p2pDialFailure is why dialOnce failed, for dialFailure to say.
type p2pDialFailure struct {
	err      error
	timedOut bool
}

func (f *p2pDialFailure) Error() string { return f.err.Error() }
func (f *p2pDialFailure) Unwrap() error { return f.err }

// dialFailure says why a dial failed, in a sentence with a hint.
func (d *p2pDialer) dialFailure(ctx context.Context, err error) error {
	var f *p2pDialFailure
	if !errors.As(err, &f) {
		return err
	}
	if ctx.Err() != nil {
		return interruption(ctx)
	}
	if d.dht != nil {
		d.dht.found.Store(false) // the addresses found did not do
	}
	if f.timedOut {
		return pkgerr.Plainf("reaching %s timed out after %v (connect -w sets that limit): %s", d.key.Fingerprint(), d.timeout, p2pDialError(d.n, d.key, f.err))
	}
	return p2pDialError(d.n, d.key, f.err)
}

// dialOnce offers the protocols in turn, within the dial's time limit.
// A failure of the dial itself is a *p2pDialFailure.
func (d *p2pDialer) dialOnce(ctx context.Context) (*stream, error) {
	dctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	start := time.Now()
	for _, name := range d.protos {
		st, err := d.n.node.Dial(dctx, d.key, name)
		if errors.Is(err, p2p.ErrNotServed) {
			continue
		}
		if err != nil {
			return nil, &p2pDialFailure{err: err, timedOut: dctx.Err() != nil}
		}
		s := newP2PStream(st, d.n.self, true, time.Since(start), d.n)
		d.n.announce(st.RemoteKey(), st.Path(), "connected to")
		s.logHandshake(d.n.log)
		return s, nil
	}
	return nil, pkgerr.Plainf("%s serves none of %s: it is a securepeer peer, but not a listen -p2p of this version that serves this (stdio, -exec, or -to for a tunnel)", d.key.Fingerprint(), strings.Join(d.protos, ", "))
}

func (d *p2pDialer) plain() peerDialer {
	p := *d
	p.protos = []string{streamProtocol}
	return &p
}

// directs returns what says that the connection to the peer went direct,
// for a tunnel to move to it.
func (d *p2pDialer) directs() <-chan struct{} { return d.direct }

func (d *p2pDialer) offersTunnel() bool { return slices.Contains(d.protos, tunnel.Protocol) }

func (d *p2pDialer) String() string { return d.key.Fingerprint() }

// p2pDialError says, in one sentence, why the peer with key could not be
// reached: the most telling of what the relays and the addresses tried
// said. The p2p package's sentinels decide; the exit code is 3 when a
// key was refused, by either side, as over TCP.
func p2pDialError(n *p2pNode, key securepeer.PublicKey, err error) error {
	fp := key.Fingerprint()
	detail := n.dialDetail(err)
	switch {
	case errors.Is(err, securepeer.ErrOwnKey):
		return usageErrorf("%s is your own key; name the peer's", fp)
	case errors.Is(err, p2p.ErrWrongKey):
		return rejectedErrorf("a host with another key answered in place of %s, and was refused before this side's identity was sent: a relay, or whoever is at the peer's address, may be trying to stand in for it%s", fp, detail)
	case errors.Is(err, securepeer.ErrRejected):
		return rejectedErrorf("%s refused this identity (%s); ask its owner to add the key that securepeer id prints to its -allow file", fp, n.self.Fingerprint())
	case errors.Is(err, p2p.ErrNotSecurepeer):
		return pkgerr.Plainf("the host reached for %s does not speak securepeer, so it is not the peer%s", fp, detail)
	case errors.Is(err, p2p.ErrNoReservation):
		return pkgerr.Plainf("%s is not reachable through the relays: it holds no reservation on them; is securepeer listen -p2p running on its side, with the same relay?%s", fp, detail)
	case errors.Is(err, p2p.ErrRelayRefused):
		return pkgerr.Plainf("the relay refused to connect this side to %s (its limits or its access rules)%s", fp, detail)
	case errors.Is(err, p2p.ErrCircuitEnded), errors.Is(err, p2p.ErrRelayLost):
		return pkgerr.Plainf("the connection to %s through the relay failed once open%s", fp, detail)
	case errors.Is(err, p2p.ErrNoRelay):
		return pkgerr.Plainf("no relay could be reached, so %s cannot be%s; is securepeer relay running there, and is the address right?", fp, detail)
	case errors.Is(err, p2p.ErrNoPath):
		return pkgerr.Plainf("nothing can carry a connection to %s: no relay is set, and none of its direct addresses answered; peers behind NATs meet through a relay (-relay)", fp)
	}
	var de *p2p.DialError
	if errors.As(err, &de) {
		return pkgerr.Plainf("%w", err) // it says "cannot reach" and whom
	}
	return pkgerr.Plainf("cannot reach %s: %w", fp, err)
}

// dialDetail lists, after ": ", what each relay said of a failed dial.
func (n *p2pNode) dialDetail(err error) string {
	var de *p2p.DialError
	if !errors.As(err, &de) || len(de.Relays) == 0 {
		return ""
	}
	var parts []string
	for _, re := range de.Relays {
		parts = append(parts, "relay "+n.relayName(re.Relay)+": "+relayWords(re))
	}
	return " (" + strings.Join(parts, "; ") + ")"
}

// relayWords says what one relay did, shortly: its sentinel's words, and
// the cause when that is a plain network failure.
func relayWords(re *p2p.RelayError) string {
	s := pkgerr.Unnamed(re.Err).Error()
	var errno syscall.Errno
	switch {
	case re.Cause == nil:
	case errors.As(re.Cause, &errno):
		s += ": " + errno.Error()
	case errors.Is(re.Cause, context.DeadlineExceeded):
		s += ": timed out"
	}
	return s
}
