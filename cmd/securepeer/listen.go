package main

import (
	"context"
	"flag"
	"net"
	"time"
)

const listenUsage = `Usage: securepeer listen [flags] ADDR

Accepts securepeer connections on ADDR (HOST:PORT, or :PORT for every
interface). By default it waits for one peer and joins the stream to stdin
and stdout, like nc -l: stdin's end is sent as the end of the stream, and
listen exits when the peer's stream ends. With -exec or -to it serves every
peer that connects, until Ctrl-C or SIGTERM: then it stops accepting and
lets the sessions in progress finish, for up to 10 seconds; a second signal,
or the end of those 10 seconds, cuts them, and their peers are told that
the stream was aborted.

Without -allow, any key is accepted and each peer's fingerprint is printed;
with -allow FILE, only keys listed in FILE (authorized_keys format, one
"ssh-ed25519 AAAA... comment" per line) get in. FILE is read again when it
changes, so keys can be added or removed while listen runs.

Flags:
    -allow FILE     accept only the keys in FILE
    -exec CMD       run "sh -c CMD" for each peer, with the stream as its stdin
                    and stdout; SECUREPEER_PEER_KEY, SECUREPEER_PEER_FINGERPRINT
                    and SECUREPEER_PEER_ADDR tell it who the peer is
    -to HOST:PORT   forward each peer's stream to this TCP service (a tunnel);
                    a connect -from peer sends all its local connections over
                    one connection, each stream to a connection of its own,
                    and learns why one was refused if the service is down
    -i FILE         identity (default $SECUREPEER_HOME/id_ed25519); FILE.pub for a
                    key held by ssh-agent
    -progress       show bytes, rate and elapsed time on stderr (terminal only),
                    with a percentage and the time left when stdin is a file
    -v              log handshakes (peer, cipher, post-quantum, role, timings)
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
one per line), as securepeer id -legacy prints them. -exec and -to work as
usual; SECUREPEER_PEER_KEY is then the peer's public key as PKCS #1 PEM
("RSA PUBLIC KEY"), encoded afresh from the key the peer sent, never its
text. A Node peer stops sending once it receives this side's end of stream.

Examples:
    # receive a file from one known peer
    securepeer listen -allow friend.pub :5000 > backup.tar
    # an upper-casing echo service
    securepeer listen -exec 'tr a-z A-Z' 127.0.0.1:5000
    # expose a local web server to the keys in friends.pub only
    securepeer listen -allow friends.pub -to 127.0.0.1:8080 :5000
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

func runListen(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("listen", flag.ContinueOnError)
	var cf commonFlags
	cf.register(fs)
	var lf legacyFlags
	lf.register(fs)
	allow := fs.String("allow", "", "")
	execCmd := fs.String("exec", "", "")
	to := fs.String("to", "", "")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(rest) == 0:
		return usageErrorf("listen: missing the address to listen on, as in securepeer listen :5000")
	case len(rest) > 1:
		return usageErrorf("listen: unexpected arguments %q after the address; quote the -exec command as one argument, as in -exec 'tr a-z A-Z'", rest[1:])
	}
	addr := rest[0]
	if err := checkAddr("listen address", addr, false); err != nil {
		return err
	}
	if *execCmd != "" && *to != "" {
		return usageErrorf("listen: -exec and -to cannot be used together; run two listeners on two ports")
	}
	if *to != "" {
		if err := checkAddr("-to address", *to, true); err != nil {
			return err
		}
	}
	log := cf.logger(e)

	var h handshaker
	lh, err := legacyStart(e, "listen", cf.identity, &lf, listenHandshakeTimeout)
	switch {
	case err != nil:
		return err
	case lh != nil:
		h = lh
	default:
		id, err := e.loadIdentity(cf.identity)
		if err != nil {
			return err
		}
		nh := &nativeHandshaker{id: id, timeout: listenHandshakeTimeout}
		if *to != "" {
			nh.protos = tunnelProtos()
		}
		h = nh
	}

	var verify verifyFunc
	switch {
	case *allow != "" && lf.enabled:
		p, err := newLegacyAllowPolicy(e, log, *allow)
		if err != nil {
			return err
		}
		verify = p.verify
	case *allow != "":
		p, err := newAllowPolicy(e, log, *allow)
		if err != nil {
			return err
		}
		verify = p.verify
	default:
		verify = func(context.Context, peerKey) error { return nil }
	}

	l, err := net.Listen("tcp", addr)
	if err != nil {
		return listenError(addr, err)
	}
	if err := announceAddr(log, "peers", l.Addr()); err != nil {
		l.Close()
		return err
	}
	cfg := listenConfig{
		h:      h,
		verify: verify,
		log:    log,
		refused: func(remote string, err error) {
			e.notef("refused %s: %v", remote, err)
		},
		notef: e.notef,
		grace: listenGrace,
		cut:   e.cut,
	}
	if testOnlyGrace != 0 {
		cfg.grace = testOnlyGrace
	}
	noteAccepted := func(s *stream) {
		switch {
		case *allow == "" && s.peer.String() == s.self.String():
			e.notef("accepted %s from %s, your own identity (without -allow any key gets in)", s.peer.Fingerprint(), s.remoteAddr)
		case *allow == "":
			e.notef("accepted %s from %s (without -allow any key gets in)", s.peer.Fingerprint(), s.remoteAddr)
		}
	}

	if *execCmd == "" && *to == "" {
		return listenStdio(ctx, e, l, cfg, &cf, noteAccepted)
	}
	// The first signal stops serving gracefully; the second cuts the
	// sessions rather than ending the program under them.
	e.cutsOnSecondSignal.Store(true)
	stopCtx := ctx
	serve(ctx, l, cfg, func(ctx context.Context, s *stream) {
		noteAccepted(s)
		var err error
		switch {
		case *execCmd != "":
			err = runExec(ctx, e, s, *execCmd, log)
		case s.negotiated == tunnelProtocol:
			serveTunnel(stopCtx, ctx, s, *to, log, e.notef)
		default: // a peer that does not multiplex: one stream, one connection
			err = forwardTo(ctx, s, *to, log)
		}
		if err != nil {
			e.notef("%v", err)
		}
	})
	return interruption(ctx) // serve returns only when ctx ends
}

// listenStdio waits for one peer, stops listening, and joins it to stdin
// and stdout. A signal while it waits ends it at once.
func listenStdio(ctx context.Context, e *env, l net.Listener, cfg listenConfig, cf *commonFlags, noteAccepted func(*stream)) error {
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
	return joinStdio(ctx, s, e.stdin, e.stdinIsTerminal(), e.stdout, m)
}
