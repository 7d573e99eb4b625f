package main

// Accepting peers: listen's one loop for admission, sessions and a
// graceful stop.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/securepeer/securepeer/internal/admit"
	"github.com/securepeer/securepeer/internal/wire"
)

// listenConfig says how a listener treats connections.
type listenConfig struct {
	h handshaker
	// timeout bounds each peer from its accept to the end of its
	// handshake; its first flight gets the shorter of this and
	// internal/admit's 10 seconds.
	timeout time.Duration
	// cpuOnDemand is admit.Config.CPUOnDemand: the handshake asks for its
	// turn of handshake CPU (securepeer's does; -legacy's does not).
	cpuOnDemand bool
	verify      verifyFunc
	log         *slog.Logger
	// refused is called when verify refuses a peer (nil: do nothing).
	refused func(remote string, err error)
	// notef prints a notice for the user: accept errors being retried, and
	// what a graceful stop waits for.
	notef func(format string, args ...any)

	// grace bounds how long sessions may run on after serving stops; cut
	// ends them before that (a second signal; nil: never).
	grace time.Duration
	cut   <-chan struct{}

	// limits, if set, bounds the sessions at once, in all and for one
	// peer key, and refuses the others.
	limits *sessionCounter
}

// Accept errors such as EMFILE are retried after a pause that starts at
// minAcceptDelay and doubles up to maxAcceptDelay, as net/http's Server
// does: running out of file descriptors for a moment must not end a
// tunnel. (listen's accepting is internal/admit's, which does the same.)
const (
	minAcceptDelay = 5 * time.Millisecond
	maxAcceptDelay = time.Second
)

// acceptRetrying accepts a connection from l, retrying failures other than
// a closed listener after a growing pause (reported with notef), until ctx
// ends. It returns net.ErrClosed once l is closed or ctx has ended.
func acceptRetrying(ctx context.Context, l net.Listener, notef func(string, ...any)) (net.Conn, error) {
	delay := time.Duration(0)
	for {
		c, err := l.Accept()
		if err == nil {
			return c, nil
		}
		if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
			return nil, net.ErrClosed
		}
		if delay == 0 {
			delay = minAcceptDelay
		} else {
			delay = min(2*delay, maxAcceptDelay)
		}
		notef("accepting connections: %v; retrying in %v", err, delay)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, net.ErrClosed
		}
	}
}

// A peerListener hands out the streams of peers whose handshake is done:
// TCP connections through internal/admit (admitPeers), or the streams of
// a p2p node (p2pListener).
type peerListener interface {
	Accept() (*stream, error)
	Close() error
}

// serve accepts peers' streams from al: over TCP, admitPeers runs the
// responder handshake on each connection through internal/admit, the
// admission the library's listener uses too (accepting never stops,
// pending handshakes are bounded with fairness between sources, the
// peer's first flight has its own deadline, and accept errors are
// retried, reported with cfg.notef); a p2p node admits its peers itself.
// For each stream it calls handle in a goroutine of its own (a session),
// with a context that ends when the session must be cut. serve is the
// only place that serves peers.
//
// serve runs until ctx ends. Then it stops accepting: it closes al, which
// also ends the handshakes in progress, and lets the sessions finish, for
// at most cfg.grace or until cfg.cut; then it cuts the ones left by ending
// their context. It returns once every handle call has returned, and every
// refusal of cfg.limits has ended.
func serve(ctx context.Context, al peerListener, cfg listenConfig, handle func(context.Context, *stream)) {
	stopAccepting := context.AfterFunc(ctx, func() { al.Close() })
	defer stopAccepting()
	if cfg.limits != nil {
		defer cfg.limits.wait() // once the sessions, and so the refusals, are cut
	}
	sessCtx, cutSessions := context.WithCancel(context.WithoutCancel(ctx))
	defer cutSessions()

	var sessions sync.WaitGroup
	var live atomic.Int64 // sessions running
	for {
		s, err := al.Accept()
		if err != nil {
			// Closed: ctx has ended (nothing else closes l).
			break
		}
		s.logHandshake(cfg.log)
		if ctx.Err() != nil {
			// Serving stopped as the handshake ended: the peer has sent
			// nothing yet, but must not read a clean end.
			s.abort()
			continue
		}
		if cfg.limits != nil && !cfg.limits.take(sessCtx, s) {
			continue // being refused
		}
		sessions.Add(1)
		live.Add(1)
		go func() {
			defer sessions.Done()
			defer live.Add(-1)
			if cfg.limits != nil {
				defer cfg.limits.done(s)
			}
			handle(sessCtx, s)
		}()
	}
	al.Close()
	finish(cfg, &sessions, &live, cutSessions)
}

// admitPeers is l through internal/admit, with cfg's handshake.
func admitPeers(l net.Listener, cfg listenConfig) *admit.Listener[*stream] {
	return admit.NewListener(l, admit.Config[*stream]{
		Handshake: func(ctx context.Context, c net.Conn) (*stream, error) {
			return cfg.h.handshake(ctx, c, false, cfg.verify)
		},
		FirstFlight:      cfg.h.firstFlight,
		HandshakeTimeout: cfg.timeout,
		CPUOnDemand:      cfg.cpuOnDemand,
		ReplayKey:        wire.FirstFlightEphemeral, // a -legacy header has no key: not checked
		DemandWork:       true,
		Failed: func(remote net.Addr, err error) {
			var ce *codeError
			if errors.As(err, &ce) && ce.code == exitRejected && cfg.refused != nil {
				cfg.refused(remote.String(), ce)
			} else {
				cfg.log.Info("handshake failed", "addr", remote.String(), "err", err)
			}
		},
		Logf: cfg.notef,
	})
}

// finish lets the sessions in progress end once serving has stopped, for
// at most cfg.grace or until cfg.cut, and then cuts the ones left (cut),
// saying what it waits for. live counts the sessions still running.
func finish(cfg listenConfig, sessions *sync.WaitGroup, live *atomic.Int64, cut func()) {
	done := make(chan struct{})
	go func() {
		sessions.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	default:
	}
	if live.Load() == 0 {
		// The last session is returning (live drops just before its
		// Done): nothing to wait for, so nothing to say.
		<-done
		return
	}
	cfg.notef("stopping: no new connections; waiting up to %v for %s to end; Ctrl-C again to cut them", cfg.grace, sessionCount(live.Load()))
	grace := time.NewTimer(cfg.grace)
	defer grace.Stop()
	select {
	case <-done:
		return
	case <-grace.C:
		cfg.notef("stopping: cutting %s after %v", sessionCount(live.Load()), cfg.grace)
	case <-cfg.cut:
		cfg.notef("stopping: cutting %s", sessionCount(live.Load()))
	}
	cut()
	<-done
}

func sessionCount(n int64) string {
	if n == 1 {
		return "1 session"
	}
	return fmt.Sprintf("%d sessions", n)
}
