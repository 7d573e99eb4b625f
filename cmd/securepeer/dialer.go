package main

import (
	"context"
	"log/slog"
)

// A peerDialer makes connect's streams to its one peer: over TCP, with a
// handshake each ([tcpDialer]), or by the peer's key through the p2p
// engine, as streams of one connection ([p2pDialer]). Everything connect
// does with a stream (stdio, -exec, tunnels) is the same either way.
type peerDialer interface {
	// dial makes a stream that offers connect's application protocols.
	dial(ctx context.Context) (*stream, error)
	// plain is the dialer of plain streams, which offer no application
	// protocol: the tunnel's connection per local connection, for a peer
	// that does not multiplex.
	plain() peerDialer
	// offersTunnel reports whether dial offers the tunnel protocol:
	// false for -legacy, which has none.
	offersTunnel() bool
	// String names the peer in messages: its address, or its key's
	// fingerprint.
	String() string
}

// tcpDialer reaches a peer at a TCP address, with a handshake for each
// stream.
type tcpDialer struct {
	h      handshaker
	addr   string
	verify verifyFunc
	log    *slog.Logger
	// stdio makes dial fall back to a plain stream when the peer speaks
	// none of the protocols offered, as its authenticated answer shows
	// (dialOrPlain); notef says so.
	stdio bool
	notef func(string, ...any)
}

func (d *tcpDialer) dial(ctx context.Context) (*stream, error) {
	if d.stdio {
		return dialOrPlain(ctx, d.h, d.addr, d.verify, d.log, d.notef)
	}
	return dial(ctx, d.h, d.addr, d.verify, d.log)
}

func (d *tcpDialer) plain() peerDialer {
	p := *d
	p.stdio = false
	if nh, ok := d.h.(*nativeHandshaker); ok {
		// Offer nothing: these connections are plain streams, whatever
		// the peer might offer by now.
		plain := *nh
		plain.protos = nil
		p.h = &plain
	}
	return &p
}

func (d *tcpDialer) offersTunnel() bool { return offersTunnel(d.h) }

func (d *tcpDialer) String() string { return d.addr }
