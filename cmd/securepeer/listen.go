package main

import (
	"context"
	"flag"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/execproto"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/idle"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/ratelog"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/tunnel"
)

const listenUsage = `Usage: securepeer listen [flags] ADDR
       securepeer listen -p2p [flags] [ADDR]

Accepts securepeer connections on ADDR (HOST:PORT, or :PORT for every
interface). With -p2p (or -relay), it needs no port that peers can reach:
it holds a reservation on each relay of -relay or of
$SECUREPEER_HOME/relays, and peers reach it by its key, through a relay
and then directly where their NATs let hole punching through (ADDR, if
given, is where it listens for that; by default every interface, on a
port the system picks). It says through which relays it is reachable and
what a peer runs to reach it, and how each peer connected; it ends if no
relay gives it a reservation, and reserves again when it loses one.
With -dht it also publishes its addresses in a DHT, for peers that have
no relay in common with it (it ends if the first publication fails).
By default it waits for one peer and joins the stream to stdin
and stdout, like nc -l: stdin's end is sent as the end of the stream, and
listen exits when both streams have ended (on a terminal: as connect does,
see securepeer help connect). With -exec, -to or -from it
serves every peer that connects, until Ctrl-C or SIGTERM: then it stops
accepting and lets the sessions in progress finish, for up to 10 seconds;
a second signal, or the end of those 10 seconds, cuts them, and their
peers are told that the stream was aborted.

Without -allow, any key is accepted and each peer's fingerprint is printed;
with -allow FILE, only keys listed in FILE (authorized_keys format, one
"ssh-ed25519 AAAA... comment" per line) get in. FILE is read again when it
changes, so keys can be added or removed while listen runs. -exec refuses
to start without -allow, since it would run the command for anyone who can
reach the port, unless -insecure-exec-any-key says that it should.

Tunnels: -to and -from repeat, each optionally named. A connect -from
NAME=LOCAL peer's local connections reach this side's -to NAME=HOST:PORT
(like ssh -L); this side's -from NAME=LOCAL connections reach a connect
-to NAME=HOST:PORT peer's target (like ssh -R: the machine behind NAT
dials out and publishes its service here). A stream only ever reaches a
target its own side's -to names, and one the peer names that has no -to
here is refused with the names there are. Each peer's tunnel is one
connection, whatever it carries.

Flags:
    -p2p            be reached by key through relays, behind NATs (above)
    -relay ADDR     a relay to hold a reservation on, as securepeer relay prints
                    it (/ip4/.../tcp/4001/p2p/...); repeatable; implies -p2p;
                    without it, those of $SECUREPEER_HOME/relays
    -dht public|ADDR,...
                    also publish where this side can be reached (its relays'
                    circuit addresses, then its direct ones) under its key in
                    a libp2p DHT: public for the public one (IPFS's), or the
                    addresses of a private DHT's members (/ip4/.../tcp/.../
                    p2p/...); again every hour and when its reservations
                    change; anyone who knows the key can then look them up;
                    implies -p2p, and still needs a relay
    -allow FILE     accept only the keys in FILE
    -exec CMD       run "sh -c CMD" for each allowed peer, with the stream as its
                    stdin and stdout, and its stderr as the peer's stderr (or on
                    a terminal, for connect -t); SECUREPEER_PEER_KEY,
                    SECUREPEER_PEER_FINGERPRINT and SECUREPEER_PEER_ADDR tell it
                    who the peer is; connect exits with its exit status
    -insecure-exec-any-key
                    let -exec run without -allow, for any key that connects:
                    with a shell, a remote shell for anyone who can reach ADDR
    -to [NAME=]HOST:PORT
                    a target for the peers' streams of that name (unnamed:
                    the peers' unnamed -from, and any plain-stream peer);
                    repeat for several, each with its own name; unix:PATH
                    for a Unix socket
    -from [NAME=]LOCALADDR
                    listen on LOCALADDR and carry each local connection to
                    the connected peer's -to NAME; with several peers, the
                    first to connect keeps them while its key stays
                    connected; unix:PATH makes a Unix socket; repeatable
    -max-sessions N -exec, -to, -from: serve at most N sessions at once
                    (default 256); the peers beyond are refused, told why
    -max-sessions-per-key N
                    and at most N of them for one peer key (default 16), so
                    that no one key can take them all
    -keep-open, -k  stdio: after a peer's stream ends, wait for the next peer,
                    one at a time, each written to stdout in turn (stdin goes
                    to whichever peer is connected when it is read)
    -idle DURATION  end a stdio or -exec stream with no data either way for
                    DURATION (as 30s or 5m), aborted, exit 1
    -i FILE         identity (default $SECUREPEER_HOME/id_ed25519); FILE.pub for a
                    key held by ssh-agent
    -progress       show bytes, rate and elapsed time on stderr (terminal only),
                    with a percentage and the time left when stdin is a file,
                    and end with a summary line: bytes, time, rate
    -v              log everything structured (slog key=value lines): handshakes
                    (peer, cipher, post-quantum, role, timings) and notices
    -legacy         speak the Node secure-peer 0.2 protocol instead (see below)
    -ciphers LIST   -legacy only: cipher preference list, comma-separated and
                    spelled as the Node side spells them (default AES-256-CBC,RC4;
                    supported: aes-128-cbc, aes-192-cbc, aes-256-cbc, aes128,
                    aes192, aes256, rc4, in any capitalisation)

Legacy mode: -legacy talks to peers that run the Node module secure-peer 0.2,
to migrate them one side at a time. The protocol is insecure (identities in
clear, replayable handshake, forceable cipher choice, no forward secrecy),
and a warning says so. -i then takes an rsa-json key file ({"private": PEM,
"public": PEM}, the Node side's keys.json form; default
$SECUREPEER_HOME/id_legacy_rsa.json, made by securepeer keygen -legacy), and
-allow FILE takes PEM public keys and/or legacy fingerprints (SHA256:...,
one per line), as securepeer id -legacy prints them. -exec and an unnamed
-to work as usual; SECUREPEER_PEER_KEY is then the peer's public key as
PKCS #1 PEM ("RSA PUBLIC KEY"), encoded afresh from the key the peer sent,
never its text. A Node peer stops sending once it receives this side's end
of stream.

Examples:
    # receive a file from one known peer
    securepeer listen -allow friend.pub :5000 > backup.tar
    # the same behind a NAT: the friend runs securepeer connect YOUR.pub
    securepeer listen -p2p -allow friend.pub > backup.tar
    # an upper-casing echo service for the keys in friends.pub
    securepeer listen -allow friends.pub -exec 'tr a-z A-Z' 127.0.0.1:5000
    # a remote shell for the keys in admins.pub (connect -t for a terminal)
    securepeer listen -allow admins.pub -exec bash :5000
    # expose a local web server to the keys in friends.pub only
    securepeer listen -allow friends.pub -to 127.0.0.1:8080 :5000
    # two services, by name, and a way back to the peer's ssh (ssh -R)
    securepeer listen -allow friends.pub -to web=127.0.0.1:8080 -to db=127.0.0.1:5432 -from ssh=127.0.0.1:2222 :5000
    # collect one peer's stream after another into one file
    securepeer listen -k -allow senders.pub :5000 >> received.log
    # serve the upper-casing echo to Node secure-peer 0.2 clients
    securepeer listen -legacy -i keys.json -allow node-peers.pem -exec 'tr a-z A-Z' :5000
`

// listenHandshakeTimeout bounds a server's handshakes. It is long enough for
// a client whose user is asked to confirm this server's key, as sshd's
// LoginGraceTime is.
const listenHandshakeTimeout = 2 * time.Minute

// listenGrace is how long listen -exec and -to let sessions finish after
// the first signal, as the usage text says.
const listenGrace = 10 * time.Second

// testOnlyGrace, if set, replaces listenGrace, so tests of the grace
// period do not wait for it.
var testOnlyGrace time.Duration

// listenOptions are listen's command line, parsed.
type listenOptions struct {
	common     commonFlags
	legacy     legacyFlags
	args       []string // the positional arguments: the address
	addr       string
	allow      string // -allow FILE
	exec       string // -exec CMD
	execAnyKey bool
	keepOpen   bool
	from, to   forwardList
	limits     sessionLimits
	limitsSet  bool      // -max-sessions or -max-sessions-per-key was given
	p2p        bool      // -p2p, or -relay: listen through relays, by key
	relays     relayList // -relay
	dht        dhtList   // -dht: publish this side's addresses there
}

// parseListen parses listen's command line into options, and validates
// them.
func parseListen(args []string) (*listenOptions, error) {
	o := &listenOptions{limits: defaultSessionLimits}
	fs := flag.NewFlagSet("listen", flag.ContinueOnError)
	o.common.register(fs)
	o.legacy.register(fs)
	fs.StringVar(&o.allow, "allow", "", "")
	fs.StringVar(&o.exec, "exec", "", "")
	fs.BoolVar(&o.execAnyKey, execAnyKeyFlag, false, "")
	fs.BoolVar(&o.keepOpen, "keep-open", false, "")
	fs.BoolVar(&o.keepOpen, "k", false, "")
	fs.Var(&o.from, "from", "")
	fs.Var(&o.to, "to", "")
	fs.IntVar(&o.limits.total, "max-sessions", o.limits.total, "")
	fs.IntVar(&o.limits.perKey, "max-sessions-per-key", o.limits.perKey, "")
	fs.BoolVar(&o.p2p, "p2p", false, "")
	fs.Var(&o.relays, "relay", "")
	fs.Var(&o.dht, "dht", "")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return nil, err
	}
	o.args = rest
	if len(rest) > 0 {
		o.addr = rest[0]
	}
	o.limitsSet = isFlagSet(fs, "max-sessions") || isFlagSet(fs, "max-sessions-per-key")
	o.p2p = o.p2p || len(o.relays) > 0 || len(o.dht) > 0
	return o, o.validate()
}

// tunnel reports whether listen carries tunnels (-to or -from).
func (o *listenOptions) tunnel() bool { return len(o.from) > 0 || len(o.to) > 0 }

// stdio reports whether listen joins a peer to stdin and stdout.
func (o *listenOptions) stdio() bool { return o.exec == "" && !o.tunnel() }

// validate checks the options, as listen's usage says they go together.
func (o *listenOptions) validate() error {
	switch {
	case len(o.args) == 0 && !o.p2p:
		return usageErrorf("listen: missing the address to listen on, as in securepeer listen :5000 (or -p2p, to be reached through relays by key)")
	case len(o.args) > 1:
		return usageErrorf("listen: unexpected arguments %q after the address; quote the -exec command as one argument, as in -exec 'tr a-z A-Z'", o.args[1:])
	}
	if err := o.checkP2P(); err != nil {
		return err
	}
	if o.exec != "" && o.tunnel() {
		return usageErrorf("listen: -exec and -to or -from cannot be used together; run two listeners on two ports")
	}
	if err := checkForwards("listen", o.from, o.to); err != nil {
		return err
	}
	switch {
	case o.keepOpen && !o.stdio():
		return usageErrorf("listen: -keep-open is for stdio; -exec, -to and -from serve every peer already")
	case o.common.idle != 0 && o.tunnel():
		return usageErrorf("listen: -idle is for stdio and -exec streams, not tunnels, which keep their connections up with keepalives")
	}
	if err := checkExecAccess(o.exec, o.allow, o.execAnyKey); err != nil {
		return err
	}
	if err := o.limits.check(o.limitsSet && o.stdio()); err != nil {
		return err
	}
	_, err := o.legacy.check("listen")
	return err
}

// protos is what listen offers in the handshake: the application
// protocols of what it serves.
func (o *listenOptions) protos() []string {
	switch {
	case o.tunnel():
		return tunnelProtos()
	case o.exec != "":
		return execProtos()
	}
	return nil
}

// newVerifier is listen's check of the peer's key: the keys of -allow
// (native or -legacy ones), or any key without it.
func (o *listenOptions) newVerifier(e *env, log *slog.Logger) (verifyFunc, error) {
	if o.allow == "" {
		return func(context.Context, peerKey) error { return nil }, nil
	}
	// Whoever can replace the file decides who gets in.
	if err := checkFileDir(o.allow); err != nil {
		return nil, err
	}
	var p interface {
		verify(context.Context, peerKey) error
	}
	var err error
	if o.legacy.enabled {
		p, err = newLegacyAllowPolicy(e, log, o.allow)
	} else {
		p, err = newAllowPolicy(e, log, o.allow)
	}
	if err != nil {
		return nil, err
	}
	return p.verify, nil
}

func runListen(ctx context.Context, e *env, args []string) error {
	o, err := parseListen(args)
	if err != nil {
		return err
	}
	if o.execAnyKey {
		e.notef("warning: -%s: any key that connects runs %q", execAnyKeyFlag, o.exec)
	}
	log := o.common.logger(e)
	h, err := newHandshaker(e, &o.common, &o.legacy, handshakeSpec{cmd: "listen", timeout: listenHandshakeTimeout, protos: o.protos(), responder: true})
	if err != nil {
		return err
	}
	verify, err := o.newVerifier(e, log)
	if err != nil {
		return err
	}
	r, err := o.listen(ctx, e, h, verify, log)
	if err != nil {
		return err
	}
	defer r.close()
	peers := r.peers()
	switch {
	case o.keepOpen:
		return listenKeepOpen(ctx, e, peers, r.cfg, &o.common, r.noteAccepted)
	case o.stdio():
		return listenStdio(ctx, e, peers, r.cfg, &o.common, r.noteAccepted)
	}
	return r.serveSessions(ctx, peers)
}

// A listening is listen once it listens: on its address for peers, or
// through relays, and on its -from addresses for local connections.
type listening struct {
	e     *env
	o     *listenOptions
	log   *slog.Logger
	l     net.Listener   // peers, over TCP
	node  *p2pNode       // peers, through relays (-p2p)
	dht   *dhtPublisher  // keeps its record in the DHT (-dht)
	p2pl  *p2pListener   // and their streams
	local []net.Listener // -from, in order
	cfg   listenConfig
	rates *ratelog.Log // the notices a peer can cause as fast as it likes
}

// listen listens on the address, or through relays, and on the -from
// addresses, and says where.
func (o *listenOptions) listen(ctx context.Context, e *env, h handshaker, verify verifyFunc, log *slog.Logger) (*listening, error) {
	r := &listening{e: e, o: o, log: log, rates: ratelog.New(e.notef)}
	r.cfg = listenConfig{
		h:           h,
		timeout:     listenHandshakeTimeout,
		cpuOnDemand: func() bool { _, native := h.(*nativeHandshaker); return native }(),
		verify:      verify,
		log:         log,
		refused: func(remote string, err error) {
			r.rates.Printf("refused peers", "refused %s: %v", remote, err)
		},
		notef: e.notef,
		grace: listenGrace,
		cut:   e.cut,
	}
	if testOnlyGrace != 0 {
		r.cfg.grace = testOnlyGrace
	}
	if !o.stdio() {
		r.cfg.limits = newSessionCounter(o.limits, r.refuse, r.rates.Kind("refused sessions"))
	}
	if o.p2p {
		if err := r.listenP2P(ctx, h.(*nativeHandshaker).id); err != nil {
			r.close()
			return nil, err
		}
		return r, nil
	}
	l, err := net.Listen("tcp", o.addr)
	if err != nil {
		return nil, listenError(o.addr, err)
	}
	local, err := listenAll(o.from)
	if err == nil {
		err = announceAddrs(log, "peers and local connections", append([]net.Listener{l}, local...))
	}
	if err != nil {
		l.Close()
		closeAll(local)
		return nil, err
	}
	r.l, r.local = l, local
	return r, nil
}

// peers returns the listener of peers' streams: the TCP listener through
// internal/admit, or the p2p node's.
func (r *listening) peers() peerListener {
	if r.p2pl != nil {
		return r.p2pl
	}
	return admitPeers(r.l, r.cfg)
}

// close stops what listen started: the p2p node, if any. (The listeners
// are closed by serve, and the -from ones by localForward.)
func (r *listening) close() {
	r.dht.close()
	if r.node != nil {
		r.node.close()
	}
}

// refuse tells the peer of s why listen does not serve its session, in
// the protocol it negotiated: a securepeer-exec/2 client reads it as its
// command's status, a tunnel as the reason its connection was refused.
// Other streams have no room for it, and are aborted. ctx ending cuts it.
func (r *listening) refuse(ctx context.Context, s *stream, reason string) {
	stop := context.AfterFunc(ctx, s.abort)
	defer stop()
	switch s.negotiated {
	case execproto.Protocol2:
		x := &execproto.Server{Name: r.o.exec, Log: r.log}
		x.Refuse(streamConn{s}, reason)
	case tunnel.Protocol:
		tunnel.Refuse(streamConn{s}, reason, closeTimeout)
	default:
		s.abort()
	}
}

// noteAccepted says that a peer got in without -allow. (Through relays,
// the node says how each new peer connected, and whether it got in
// without -allow.)
func (r *listening) noteAccepted(s *stream) {
	switch {
	case r.node != nil && s.peer.String() == s.self.String() && r.o.allow == "":
		r.e.notef("accepted %s, your own identity (without -allow any key gets in)", s.peer.Fingerprint())
	case r.node != nil:
	case r.o.allow == "" && s.peer.String() == s.self.String():
		r.e.notef("accepted %s from %s, your own identity (without -allow any key gets in)", s.peer.Fingerprint(), s.remoteAddr)
	case r.o.allow == "":
		r.e.notef("accepted %s from %s (without -allow any key gets in)", s.peer.Fingerprint(), s.remoteAddr)
	}
}

// serveSessions serves every peer, with -exec or tunnels, until a signal.
func (r *listening) serveSessions(ctx context.Context, pl peerListener) error {
	// The first signal stops serving gracefully; the second cuts the
	// sessions rather than ending the program under them.
	r.e.cutsOnSecondSignal.Store(true)
	stopCtx := ctx
	end := newTunnelEnd(r.o.to, r.log, r.rates)
	var peers tunnelPeers
	if len(r.o.from) > 0 {
		peers.notef = r.rates.Kind("notices about tunnel peers")
	}
	var locals sync.WaitGroup
	for i, ll := range r.local {
		// A -from connection rides on a peer's tunnel connection, which
		// serve lets finish or cuts: that, not the first signal, ends it.
		locals.Go(func() {
			localForward(stopCtx, context.WithoutCancel(stopCtx), ll, r.o.from[i], peers.carrier, r.e.notef, r.log)
		})
	}
	serve(ctx, pl, r.cfg, func(ctx context.Context, s *stream) {
		r.noteAccepted(s)
		var err error
		switch {
		case r.o.exec != "":
			err = runExec(ctx, r.e, s, r.o.exec, r.o.common.idle, r.log)
		case s.negotiated == tunnel.Protocol:
			r.serveTunnel(ctx, stopCtx, s, end, &peers)
		default: // a peer that does not multiplex: one stream, one connection
			err = forwardPlain(ctx, s, end)
		}
		if err != nil {
			r.e.notef("%v", err)
		}
	})
	locals.Wait()
	return interruption(ctx) // serve returns only when ctx ends
}

// serveTunnel serves the streams of the tunnel connection over s until it
// ends: it stops when stopCtx ends, and is cut when ctx does.
func (r *listening) serveTunnel(ctx, stopCtx context.Context, s *stream, end *tunnelEnd, peers *tunnelPeers) {
	tc := &tunnelConn{s: s, m: newTunnelSession(s, false, r.log)}
	peers.add(tc)
	cut := end.server.Serve(stopCtx, ctx, tc.m)
	peers.remove(tc)
	switch {
	case ctx.Err() != nil || stopCtx.Err() != nil:
	case cut > 0:
		r.e.notef("the tunnel connection from %s ended with %s in progress, which were cut: %v", s.remoteAddr, streamCount(cut), tc.m.Err())
	default:
		r.log.Info("tunnel connection ended", "peer", s.peer.Fingerprint(), "addr", s.remoteAddr, "reason", tc.m.Err().Error())
	}
}

// listenStdio waits for one peer, stops listening, and joins it to stdin
// and stdout. A signal while it waits ends it at once.
func listenStdio(ctx context.Context, e *env, l peerListener, cfg listenConfig, cf *commonFlags, noteAccepted func(*stream)) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := make(chan *stream, 1)
	served := make(chan struct{})
	go func() {
		defer close(served)
		serve(sctx, l, cfg, func(_ context.Context, s *stream) {
			select {
			case got <- s:
				cancel()
			default:
				// Another peer finished its handshake at the same moment.
				cfg.log.Info("closing an extra connection", "addr", s.remoteAddr)
				s.abort()
			}
		})
	}()
	<-served // serve returns once it has a peer or ctx has ended
	var s *stream
	select {
	case s = <-got:
	default:
		return interruption(ctx)
	}
	noteAccepted(s)
	m := cf.meter(e)
	defer m.finish()
	ctx, stop := idle.Watch(ctx, cf.idle, m.activity)
	defer stop()
	peerEnds, note := e.stdioEnds()
	return joinStdio(ctx, s, s.conn, e.stdin, peerEnds, e.stdout, m, note)
}

// maxKeepOpenWaiting bounds the peers that listen -keep-open keeps waiting
// for their turn; more are refused, so a crowd costs bounded memory.
const maxKeepOpenWaiting = 16

// listenKeepOpen serves one peer after another, as ncat --keep-open does,
// until a signal: each peer's stream is joined to stdin and stdout in its
// turn, and the others wait (up to maxKeepOpenWaiting), since stdout is
// one file that several streams at once would interleave, and stdin can be
// read only once. Whatever a peer's session does not read of stdin stays
// for the next one; once stdin has ended, later peers get an immediate end
// of stream. A failed session is a notice, not the end of listen.
func listenKeepOpen(ctx context.Context, e *env, l peerListener, cfg listenConfig, cf *commonFlags, noteAccepted func(*stream)) error {
	e.cutsOnSecondSignal.Store(true)
	pump := &stdinPump{r: e.stdin}
	interactive := e.stdinIsTerminal()
	turn := make(chan struct{}, 1)
	var waiting atomic.Int64
	serve(ctx, l, cfg, func(sctx context.Context, s *stream) {
		if waiting.Add(1) > maxKeepOpenWaiting {
			waiting.Add(-1)
			s.abort()
			e.notef("%d peers already wait their turn; closed the connection from %s", maxKeepOpenWaiting, s.remoteAddr)
			return
		}
		select {
		case turn <- struct{}{}:
			waiting.Add(-1)
		case <-ctx.Done(): // stopping: serve only the peer in its turn
			waiting.Add(-1)
			s.abort()
			return
		}
		defer func() { <-turn }()
		noteAccepted(s)
		m := cf.meter(e)
		ictx, stop := idle.Watch(sctx, cf.idle, m.activity)
		done := make(chan struct{})
		// A turn ends with the peer's when stdin is a terminal: its end
		// would end every later turn too.
		err := joinStdio(ictx, s, s.conn, pump.reader(done), interactive, e.stdout, m, nil)
		close(done)
		stop()
		m.finish()
		if err != nil && sctx.Err() == nil {
			e.notef("%s", describe(err))
		}
	})
	return interruption(ctx)
}
