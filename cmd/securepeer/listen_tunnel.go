package main

// listen's tunnels: which peer its -from connections go to, and the peers
// that do not multiplex, each of whose connections reaches the unnamed
// -to.

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/tunnel"
	"github.com/securepeer/securepeer/internal/pkgerr"
)

// forwardPlain serves a peer that does not multiplex (a plain stream, or
// an older securepeer): it can name no forward, so it reaches the unnamed
// -to, if there is one.
func forwardPlain(ctx context.Context, s *stream, end *tunnelEnd) error {
	to, ok := end.targets[""]
	if !ok {
		s.abort()
		return pkgerr.Plainf("the peer at %s does not multiplex tunnels, so it can only reach an unnamed -to, and there is none; closed its connection", s.remoteAddr)
	}
	return forwardTo(ctx, s, to, end.log)
}

// forwardTo connects to the local service at addr and proxies s to it.
func forwardTo(ctx context.Context, s *stream, addr string, log *slog.Logger) error {
	c, err := dialTarget(ctx, addr)
	if err != nil {
		s.abort()
		return pkgerr.Plainf("-to: cannot connect to %s (%s); the connection from %s was closed; is the service running there?", addr, targetFailure(err), s.remoteAddr)
	}
	log.Info("forwarding", "peer", s.peer.Fingerprint(), "to", addr)
	if err := proxy(ctx, s, c); err != nil {
		return pkgerr.Plainf("forwarding %s to %s: %v", s.remoteAddr, addr, err)
	}
	log.Info("connection closed", "peer", s.peer.Fingerprint(), "addr", s.remoteAddr)
	return nil
}

// tunnelPeers are listen's tunnel connections, and the one peer its -from
// connections go to: the first that connected, by its key, for as long as
// a connection with that key is up (over its newest one: a peer that
// reconnects, say after a restart, is the same peer). A peer with another
// key never takes them over while that one stays; when it leaves, they go
// to the peer connected longest, and a notice says so. Binding to a key
// keeps an admitted peer from taking traffic meant for another, which
// "whoever connected last" allowed.
type tunnelPeers struct {
	notef func(format string, args ...any) // nil: listen has no -from, nothing to say

	mu    sync.Mutex
	list  []*tunnelConn // in the order they connected
	bound string        // the key that -from connections go to; "" for none
}

// A tunnelConn is one of listen's tunnel connections: the secure stream,
// which says who the peer is, and the session over it.
type tunnelConn struct {
	s *stream
	m *tunnel.Session
}

func (c *tunnelConn) key() string { return c.s.peer.String() }

func (c *tunnelConn) fingerprint() string { return c.s.peer.Fingerprint() }

func (p *tunnelPeers) add(c *tunnelConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.list = append(p.list, c)
	switch key := c.key(); {
	case p.bound == "":
		p.bound = key
		p.say("-from connections now go to %s, which connected from %s, while it stays connected", c.fingerprint(), c.s.remoteAddr)
	case key != p.bound:
		p.say("%s connected a tunnel from %s; -from connections still go to %s, which connected first", c.fingerprint(), c.s.remoteAddr, p.boundFingerprint())
	}
}

func (p *tunnelPeers) remove(c *tunnelConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.list = slices.DeleteFunc(p.list, func(x *tunnelConn) bool { return x == c })
	if c.key() != p.bound || p.boundFingerprint() != "" {
		return // another peer's, or the bound peer has another connection
	}
	if len(p.list) == 0 {
		p.bound = ""
		p.say("%s, which -from connections went to, has left; they are reset until a tunnel peer connects", c.fingerprint())
		return
	}
	next := p.list[0]
	p.bound = next.key()
	p.say("%s, which -from connections went to, has left; they now go to %s, which connected from %s", c.fingerprint(), next.fingerprint(), next.s.remoteAddr)
}

// boundFingerprint is the bound key's fingerprint, or "" if none of its
// connections is left. p.mu is held.
func (p *tunnelPeers) boundFingerprint() string {
	for _, c := range p.list {
		if c.key() == p.bound {
			return c.fingerprint()
		}
	}
	return ""
}

// say gives a notice about which peer -from connections go to, if listen
// has any. p.mu is held.
func (p *tunnelPeers) say(format string, args ...any) {
	if p.notef != nil {
		p.notef(format, args...)
	}
}

// carrier is the tunnel connection that a -from connection takes: the
// bound peer's newest that is still up.
func (p *tunnelPeers) carrier(ctx context.Context) (*tunnel.Session, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.list) - 1; i >= 0; i-- {
		if c := p.list[i]; c.key() == p.bound && !c.m.Closed() {
			return c.m, nil
		}
	}
	return nil, errors.New("no peer is connected with a tunnel to carry it (a connect -to peer)")
}
