package main

// TCP forwarding, both ways, what connect and listen share: each side's
// -from addresses accept local connections and open streams to the peer,
// and each side's -to targets take the streams the peer opens, over
// multiplexed tunnels (package internal/tunnel). connect_tunnel.go and
// listen_tunnel.go hold what only one of them does.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/netutil"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/ratelog"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/tunnel"
	"github.com/securepeer/securepeer/internal/pkgerr"
)

// A forwardSpec is one -from or -to: NAME=ADDR, or ADDR for the unnamed
// forward.
type forwardSpec struct{ name, addr string }

func (f forwardSpec) String() string {
	if f.name == "" {
		return f.addr
	}
	return f.name + "=" + f.addr
}

// forwardLabel names a forward in messages.
func forwardLabel(name string) string {
	if name == "" {
		return "the unnamed forward"
	}
	return fmt.Sprintf("%q", name)
}

// A tunnelEnd is what one side of a tunnel offers the streams the peer
// opens: its -to targets, by name ("" for the unnamed one).
type tunnelEnd struct {
	targets map[string]string
	log     *slog.Logger
	server  *tunnel.Server // serves a tunnel connection's streams
}

// newTunnelEnd is a tunnelEnd for the -to targets to, its notices going
// through rates, as a peer can cause them as fast as it likes.
func newTunnelEnd(to []forwardSpec, log *slog.Logger, rates *ratelog.Log) *tunnelEnd {
	end := &tunnelEnd{targets: targetMap(to), log: log}
	end.server = &tunnel.Server{
		Route: end.route,
		Log:   log,
		Notef: rates.Kind("notices about the peers' tunnel streams"),
		Fullf: rates.Kind("notices about full tunnel connections"),
	}
	return end
}

// route connects a stream for the forward name from the peer at from to
// this side's -to of that name, or refuses it with the reason.
func (end *tunnelEnd) route(ctx context.Context, name, from string) (net.Conn, string, error) {
	to, ok := end.targets[name]
	if !ok {
		return nil, "", &tunnel.Refusal{
			Status: end.noTarget(name),
			Err:    pkgerr.Plainf("refused a tunnel stream for %s from %s: there is no -to of that name here", forwardLabel(name), from),
		}
	}
	c, err := dialTarget(ctx, to)
	if err != nil {
		reason := targetFailure(err)
		return nil, "", &tunnel.Refusal{
			Status: "connect failed: " + reason,
			Err:    pkgerr.Plainf("-to: cannot connect to %s (%s), so the tunnel stream from %s was refused; is the service running there?", to, reason, from),
		}
	}
	return c, to, nil
}

// noTarget is the reason a stream for name is refused, for the peer to
// read: which names this side has, so that a typo is plain.
func (end *tunnelEnd) noTarget(name string) string {
	if len(end.targets) == 0 {
		return "no -to on its side, so it takes no streams"
	}
	var names []string
	for n := range end.targets {
		names = append(names, forwardLabel(n))
	}
	slices.Sort(names)
	return fmt.Sprintf("no -to for %s on its side; it has %s", forwardLabel(name), strings.Join(names, ", "))
}

// localForward accepts local connections on l, for the forward spec, and
// carries each over a stream of the session that session returns, until
// ctx ends; relayCtx ending cuts them. It returns once every local
// connection has ended.
func localForward(ctx, relayCtx context.Context, l net.Listener, spec forwardSpec, session func(context.Context) (*tunnel.Session, error), notef func(string, ...any), log *slog.Logger) {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	for {
		// Plain connections from this machine: no handshake to admit, so
		// accepting needs only the retry that keeps EMFILE from ending
		// the tunnel.
		c, err := acceptRetrying(ctx, l, notef)
		if err != nil {
			return
		}
		wg.Go(func() {
			log.Info("local connection", "from", connLabel(c), "forward", spec.String())
			forwardLocal(relayCtx, c, spec, session, notef)
		})
	}
}

// forwardLocal carries the local connection c over a new stream for spec,
// and says with notef why it failed, if it did, unless ctx has ended.
func forwardLocal(ctx context.Context, c net.Conn, spec forwardSpec, session func(context.Context) (*tunnel.Session, error), notef func(string, ...any)) {
	note := func(err error) {
		if ctx.Err() == nil {
			notef("%v", err)
		}
	}
	m, err := session(ctx)
	if err != nil {
		netutil.ResetClose(c)
		note(pkgerr.Plainf("%v; closed the local connection from %s", err, connLabel(c)))
		return
	}
	err = m.Forward(ctx, c, spec.name)
	if errors.Is(err, tunnel.ErrStopping) {
		// A newer session took this one's place (connect moved its
		// tunnel to a direct connection) as the stream began: Forward
		// opened nothing, and c is untouched; once more, then no more.
		if m2, err2 := session(ctx); err2 == nil && m2 != m {
			m, err = m2, m2.Forward(ctx, c, spec.name)
		}
		if errors.Is(err, tunnel.ErrStopping) {
			netutil.ResetClose(c)
		}
	}
	var open *tunnel.OpenError
	var refused *tunnel.RefusedError
	switch {
	case err == nil || ctx.Err() != nil:
	case errors.As(err, &open):
		note(pkgerr.Plainf("%v; closed the local connection from %s", err, connLabel(c)))
	case errors.As(err, &refused) && strings.HasPrefix(refused.Reason, "connect failed"):
		note(pkgerr.Plainf("open failed for the local connection from %s (-from %s): %v; check the service behind the peer's -to", connLabel(c), spec, err))
	case errors.As(err, &refused), errors.Is(err, tunnel.ErrStreamReset):
		note(pkgerr.Plainf("open failed for the local connection from %s (-from %s): %v", connLabel(c), spec, err))
	case m.Closed(): // a lost connection has a notice of its own
	default:
		note(pkgerr.Plainf("tunnel for %s: %v", connLabel(c), err))
	}
}

// targetMap is the -to flags by name.
func targetMap(to []forwardSpec) map[string]string {
	m := make(map[string]string, len(to))
	for _, f := range to {
		m[f.name] = f.addr
	}
	return m
}

// listenAll listens on the address of each -from, in order.
func listenAll(from []forwardSpec) ([]net.Listener, error) {
	var ls []net.Listener
	for _, f := range from {
		l, err := listenForward(f.addr)
		if err != nil {
			closeAll(ls)
			return nil, err
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// A forward's address is HOST:PORT, or unix:PATH for a Unix socket, as
// ssh -L and -R take a path.
const unixPrefix = "unix:"

// forwardNet splits a forward's address into a network and an address
// for package net.
func forwardNet(addr string) (network, address string) {
	if path, ok := strings.CutPrefix(addr, unixPrefix); ok {
		return "unix", path
	}
	return "tcp", addr
}

// listenForward listens on a -from address. A Unix socket is made
// accessible to this user only (listenUnix), and removed when the
// listener is closed; one that exists already is an error, as ssh's is
// without StreamLocalBindUnlink, since another program may be using it.
func listenForward(addr string) (net.Listener, error) {
	network, address := forwardNet(addr)
	if network == "tcp" {
		l, err := net.Listen("tcp", address)
		if err != nil {
			return nil, listenError(addr, err)
		}
		return l, nil
	}
	l, err := listenUnix(address)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, pkgerr.Plainf("cannot listen on %s: %s exists; if no program uses it any more (a securepeer that was killed), remove it", addr, address)
	case err != nil:
		return nil, pkgerr.Plainf("cannot listen on %s: %v", addr, err)
	}
	return l, nil
}

// dialTarget connects to a -to target.
func dialTarget(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: dialTimeout}
	network, address := forwardNet(addr)
	return d.DialContext(ctx, network, address)
}

// connLabel names a local connection in messages: its address, or the
// Unix socket it came in on (whose peers have no address).
func connLabel(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		return a.String()
	}
	return unixPrefix + c.LocalAddr().String()
}

func closeAll(ls []net.Listener) {
	for _, l := range ls {
		l.Close()
	}
}

// newTunnelSession starts a tunnel session over s, as yamux's client (the
// connect side) or server.
func newTunnelSession(s *stream, client bool, log *slog.Logger) *tunnel.Session {
	return tunnel.NewSession(streamConn{s}, tunnel.Config{
		Client:      client,
		Addr:        s.remoteAddr,
		Peer:        s.peer.Fingerprint(),
		Log:         log,
		Describe:    func(err error) error { return streamError(s, err) },
		KeepAlive:   testOnlyKeepAlive,
		PingTimeout: testOnlyKeepAlive,
	})
}

// targetFailure is the REASON of a "connect failed" status: what dialing
// the -to target said, without the address, as ssh says it.
func targetFailure(err error) string {
	var errno syscall.Errno
	var ne net.Error
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr):
		return "cannot resolve the host name"
	case errors.As(err, &errno):
		return errno.Error()
	case errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	}
	return "cannot connect"
}

func streamCount(n int) string {
	if n == 1 {
		return "1 stream"
	}
	return fmt.Sprintf("%d streams", n)
}

// testOnlyKeepAlive, if set, replaces tunnelKeepAlive and
// tunnelPingTimeout, so tests notice a dead peer quickly.
var testOnlyKeepAlive time.Duration

// testOnlyNoMux makes listen and connect offer no application protocol, as
// securepeer before tunnel.Protocol did: tests and benchmarks of the
// fallback to a connection per local connection.
var testOnlyNoMux bool

// streamProtocol is a plain secure stream, as when nothing is negotiated.
// Every side that offers an application protocol offers it too, so that a
// connect and a listen that want different things (say a stdio connect
// and a listen -to) still meet on a plain stream, as they did before
// either offered anything, instead of failing the handshake with
// securepeer.ErrNoCommonProtocol.
const streamProtocol = "securepeer-stream/1"

// tunnelProtos is what the sides of a native tunnel offer in NextProtos.
func tunnelProtos() []string {
	if testOnlyNoMux {
		return nil
	}
	return []string{tunnel.Protocol, streamProtocol}
}
