package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"
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

// testOnlyAddrFile, if set, receives the address listen (or connect -from)
// listens on, so tests can use port 0.
var testOnlyAddrFile = ""

func announceAddr(log *slog.Logger, what string, a net.Addr) error {
	log.Info("listening", "what", what, "addr", a.String())
	if testOnlyAddrFile == "" {
		return nil
	}
	tmp := testOnlyAddrFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(a.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, testOnlyAddrFile)
}

// commonFlags are the flags of listen and connect.
type commonFlags struct {
	identity string
	verbose  bool
	progress bool
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.identity, "i", "", "")
	fs.BoolVar(&c.verbose, "v", false, "")
	fs.BoolVar(&c.progress, "progress", false, "")
}

// logger returns the -v logger: handshakes and connection events, on stderr.
func (c *commonFlags) logger(e *env) *slog.Logger {
	level := slog.Level(100) // nothing
	if c.verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(prefixWriter{e.stderr}, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}

// meter returns the progress meter for a stdio transfer: shown at once with
// -progress, after two seconds with -v, and never unless stderr is a
// terminal.
func (c *commonFlags) meter(e *env) *meter {
	f, ok := e.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) || !(c.progress || c.verbose) {
		return newMeter(nil, 0, 0)
	}
	delay := time.Duration(0)
	if !c.progress {
		delay = 2 * time.Second
	}
	var total int64
	if f, ok := e.stdin.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			total = fi.Size() // what is left of it is what will be sent
			if off, err := f.Seek(0, io.SeekCurrent); err == nil {
				total -= off
			}
		}
	}
	return newMeter(e.stderr, delay, total)
}

// stdinIsTerminal reports whether stdin is a terminal.
func (e *env) stdinIsTerminal() bool {
	f, ok := e.stdin.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// prefixWriter puts "securepeer: " before each log line; slog writes one
// record per Write.
type prefixWriter struct{ w io.Writer }

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := p.w.Write(append([]byte("securepeer: "), b...)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// checkAddr validates a HOST:PORT argument, with a hint for the likely
// mistakes.
func checkAddr(what, addr string, needHost bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		switch {
		case isDigits(addr):
			if needHost {
				return usageErrorf("%s %q has no host; did you mean HOST:%s, as in 127.0.0.1:%s?", what, addr, addr, addr)
			}
			return usageErrorf("%s %q has no colon; did you mean :%s?", what, addr, addr)
		case !strings.Contains(addr, ":"):
			return usageErrorf("%s %q has no port; did you mean %s:5000?", what, addr, addr)
		}
		return usageErrorf("%s %q: want HOST:PORT (brackets around IPv6 hosts, as in [::1]:5000)", what, addr)
	}
	if needHost && host == "" {
		return usageErrorf("%s %q has no host; did you mean 127.0.0.1%s?", what, addr, addr)
	}
	if port == "" {
		return usageErrorf("%s %q has no port", what, addr)
	}
	if isDigits(port) {
		n, err := strconv.Atoi(port)
		switch {
		case err != nil || n > 65535:
			return usageErrorf("%s %q: port %s is out of range; ports go up to 65535", what, addr, port)
		case n == 0 && needHost:
			return usageErrorf("%s %q: port 0 is not a port to connect to", what, addr)
		}
	}
	return nil
}

func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

func listenError(addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("cannot listen on %s: the port is in use; is another securepeer listen running? Pick another port", addr)
	}
	if errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("cannot listen on %s: permission denied; ports below 1024 need privileges, pick a higher one", addr)
	}
	return fmt.Errorf("cannot listen on %s: %v", addr, err)
}

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

// forwardTo connects to the local service at addr and proxies s to it.
func forwardTo(ctx context.Context, s *stream, addr string, log *slog.Logger) error {
	d := net.Dialer{Timeout: dialTimeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		s.abort()
		return fmt.Errorf("-to: %v; the connection from %s was closed", dialError(addr, err), s.remoteAddr)
	}
	log.Info("forwarding", "peer", s.peer.Fingerprint(), "to", addr)
	if err := proxy(ctx, s, c); err != nil {
		return fmt.Errorf("forwarding %s to %s: %v", s.remoteAddr, addr, err)
	}
	log.Info("connection closed", "peer", s.peer.Fingerprint(), "addr", s.remoteAddr)
	return nil
}
