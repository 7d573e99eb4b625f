package main

// listen through relays (-p2p): the node holds a reservation on each
// relay, so that peers who know its key reach it wherever it is, and
// serves the streams they open for what listen serves.

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/pkgerr"
	"github.com/securepeer/securepeer/p2p"
)

// checkP2P checks the address and the flags that go with -p2p or not.
func (o *listenOptions) checkP2P() error {
	if !o.p2p {
		return checkAddr("listen address", o.addr, false)
	}
	if o.legacy.enabled {
		return usageErrorf("listen: -legacy speaks to Node secure-peer 0.2 peers over TCP; through relays, peers are reached by key in the native protocol only")
	}
	if o.addr == "" {
		return nil
	}
	if err := checkAddr("listen address", o.addr, false); err != nil {
		return err
	}
	_, err := listenMultiaddrs(o.addr)
	return err
}

// p2pProtos is what listen serves through relays: the application
// protocols of what it serves, a plain stream for stdio.
func (o *listenOptions) p2pProtos() []string {
	if p := o.protos(); len(p) > 0 {
		return p
	}
	return []string{streamProtocol}
}

// listenP2P starts listen's node with the identity id, listens for the
// protocols it serves, and waits for a reservation on one of the relays:
// if none gives one, listen ends, saying what each relay did. Later
// losses are notices, and the node reserves again.
func (r *listening) listenP2P(ctx context.Context, id *securepeer.Identity) error {
	relays, from, err := r.e.relays(r.o.relays)
	if err != nil {
		return err
	}
	if len(relays) == 0 {
		return pkgerr.Plainf("listen -p2p: no relay is set, so no peer could reach this side; give one with -relay ADDR, as securepeer relay prints it, or list relays in %s", from)
	}
	addrs, err := listenMultiaddrs(r.o.addr)
	if err != nil {
		return err
	}
	verify := r.cfg.verify
	n, err := startNode(ctx, id, p2pSpec{
		relays: relays,
		listen: addrs,
		verify: func(ctx context.Context, key securepeer.PublicKey) error {
			err := verify(ctx, key)
			if err != nil {
				r.cfg.refused(key.Fingerprint(), err)
			}
			return err
		},
		notef:      r.rates.Kind("notices about peers and relays"),
		directNote: "; new streams from it use it",
	}, r.log)
	if err != nil {
		return err
	}
	r.node = n
	if r.p2pl, err = listenP2PStreams(n, r.o.p2pProtos(), r.o.allow == ""); err != nil {
		return err
	}
	if err := n.node.Ready(ctx); err != nil {
		if ctx.Err() != nil {
			return interruption(ctx)
		}
		return reservationError(n, err)
	}
	if len(r.o.dht) > 0 {
		if r.dht, err = startDHTPublisher(ctx, r.o.dht, id, n, r.e.notef); err != nil {
			return err
		}
	}
	if r.local, err = listenAll(r.o.from); err != nil {
		return err
	}
	r.howToConnect()
	return writeP2PAddrs(n, r.local)
}

// howToConnect says through which relays this side is reachable (before
// the node's events may say it), and, once, what a peer runs to reach it.
func (r *listening) howToConnect() {
	n := r.node
	addrs := n.node.Addrs() // not under n.mu, which the node's events take
	n.mu.Lock()
	defer n.mu.Unlock()
	var first string
	for _, a := range addrs {
		i := strings.Index(a, "/p2p-circuit")
		if i < 0 {
			continue
		}
		if k, err := relayKey(a[:i]); err == nil {
			n.reservedLocked(k)
		}
		if first == "" {
			first = a[:i]
		}
	}
	if first != "" {
		n.tellLocked("peers reach this side with: securepeer connect -relay %s '%s'", first, n.self)
	}
}

// writeP2PAddrs gives the tests the node's first address, then the -from
// addresses.
func writeP2PAddrs(n *p2pNode, local []net.Listener) error {
	addrs := n.node.Addrs()
	if len(addrs) == 0 {
		return nil
	}
	list := []string{addrs[0]}
	for _, l := range local {
		list = append(list, l.Addr().String())
	}
	return writeAddrFile(list)
}

// reservationError says why no relay gave this side a reservation.
func reservationError(n *p2pNode, err error) error {
	var parts []string
	for _, re := range relayErrors(err) {
		parts = append(parts, "relay "+n.relayName(re.Relay)+": "+relayWords(re))
	}
	if len(parts) == 0 {
		return pkgerr.Plainf("no relay gave this side a reservation, so no peer could reach it: %w", err)
	}
	return pkgerr.Plainf("no relay gave this side a reservation, so no peer could reach it (%s); is securepeer relay running there, and is the address right?", strings.Join(parts, "; "))
}

// relayErrors returns the *p2p.RelayError values err holds.
func relayErrors(err error) []*p2p.RelayError {
	var re *p2p.RelayError
	if errors.As(err, &re) {
		return []*p2p.RelayError{re}
	}
	var out []*p2p.RelayError
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, relayErrors(e)...)
		}
	} else if u := errors.Unwrap(err); u != nil {
		out = relayErrors(u)
	}
	return out
}

// A p2pListener hands out the streams peers open, through listen's node,
// for any of the protocols listen serves, as the command's streams. The
// node has admitted their peers (Config.Verify: listen's -allow).
type p2pListener struct {
	n         *p2pNode
	ls        []*p2p.Listener
	ch        chan *stream
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
	anyKey    bool // listen has no -allow: say so of each new peer
}

// listenP2PStreams listens for the protocols names on n.
func listenP2PStreams(n *p2pNode, names []string, anyKey bool) (*p2pListener, error) {
	l := &p2pListener{n: n, ch: make(chan *stream), done: make(chan struct{}), anyKey: anyKey}
	for _, name := range names {
		pl, err := n.node.Listen(name)
		if err != nil {
			l.Close()
			return nil, pkgerr.Plainf("listening for %s: %w", name, err)
		}
		l.ls = append(l.ls, pl)
		l.wg.Go(func() { l.accept(pl) })
	}
	return l, nil
}

// accept hands out pl's streams until l closes. Each waits here until
// Accept takes it: with the node's backlog, a listener holds at most 65
// streams that no session has taken.
func (l *p2pListener) accept(pl *p2p.Listener) {
	for {
		st, err := pl.AcceptStream()
		if err != nil {
			return
		}
		verb := "accepted"
		if l.anyKey {
			verb = "accepted (without -allow any key gets in)"
		}
		l.n.announce(st.RemoteKey(), st.Path(), verb)
		s := newP2PStream(st, l.n.self, false, 0, l.n)
		select {
		case l.ch <- s:
		case <-l.done:
			st.Abort()
			return
		}
	}
}

// Accept returns the next stream, or net.ErrClosed once l is closed.
func (l *p2pListener) Accept() (*stream, error) {
	select {
	case s := <-l.ch:
		return s, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops listening: streams that peers open from now on are
// refused. The node stays up, for the sessions in progress.
func (l *p2pListener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		for _, pl := range l.ls {
			pl.Close()
		}
	})
	l.wg.Wait()
	return nil
}
