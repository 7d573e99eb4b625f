package main

import (
	"context"
	"flag"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/execproto"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/idle"
	"github.com/securepeer/securepeer/internal/pkgerr"
)

const connectUsage = `Usage: securepeer connect [flags] PEER

Connects to the securepeer listener PEER and joins the stream to stdin and
stdout, like nc. PEER is an address, HOST:PORT, or the peer's key: its .pub
file, its key line ('ssh-ed25519 AAAA...'), its fingerprint (SHA256:...,
of a key that known_hosts lists) or a name that known_hosts lists with its
key (a line "bob ssh-ed25519 AAAA..."). A peer named by key is reached
wherever it is, behind any NAT, through the relays of -relay or of
$SECUREPEER_HOME/relays (one address a line, as securepeer relay prints
them), where it holds a reservation (listen -p2p), and directly once
hole punching gets through; connect says how: "connected to SHA256:...
through relay ... (relayed)" or "... directly", and "the connection to
... is now direct" when that happens later. The key is checked end to
end, so a relay sees only ciphertext and cannot stand in for the peer.
With -dht, a peer with no relay in common is looked up by key in a DHT
where it publishes its addresses ("found SHA256:... through the DHT"),
and reached at them, through its own relays if need be.

With either, stdin's end is sent as the end of the stream, stdin's end is sent as the end of the stream,
so the peer can still answer, and connect exits 0 once both streams have
ended. On a terminal whose output goes to a file or a pipe, the peer's end
is enough, as nobody is going to type Ctrl-D to a transfer that is over;
in a conversation (input and output both a terminal), Ctrl-D ends this
side only, and when the peer ends its side first, connect says so and
this side can still answer until its own Ctrl-D. With a listen -exec peer
it is ssh running a remote command: the command's stderr comes out on
stderr, and connect exits with its exit status once the command has ended
(127 if it does not exist; 128 plus the signal's number, with a line
saying which signal, if one killed it). With -t and a terminal on stdin,
the command runs on a terminal of its own, as with ssh -t: this side's
terminal is in raw mode meanwhile, so every key goes to the command, and
its size follows this window's. A signal (Ctrl-C, SIGTERM, SIGHUP) before
stdin's end aborts the stream: the peer is told that data may be missing,
and a -exec command is ended. After SIGHUP, which ssh sends its
ProxyCommand as it exits, the stream is given 3 seconds to end on its own
(stdin's end sent, the peer's end received); if it does, connect exits 0
and says nothing.

With -from or -to it makes a tunnel instead: it meets the peer once and
checks its key (exiting 1 or 3 if that fails), then listens on each -from
address and carries its local TCP connections to the peer's -to of the
same name (like ssh -L), and connects the streams the peer's -from opens
to this side's -to of their name (like ssh -R: a machine behind NAT
publishes a service on the listener's side), until Ctrl-C. One
connection carries them all, with keepalives. If it is lost, the local
connections in progress are reset, never ended as if complete, and
connect reconnects, waiting half a second, then twice as long each time
up to 30 seconds (with jitter), unless -no-reconnect. A stream the peer
refuses (its -to target is down: "connect failed: connection refused";
or it has no -to of that name) ends only that local connection, with a
notice; a changed peer key, or a peer that refuses this side, ends the
tunnel (exit 3). A peer that does not multiplex (an older listen -to, a
listen -exec) gets a secure connection per local connection, for an
unnamed -from only.

The peer's key is checked as ssh checks host keys: against -expect if
given, else against known_hosts ($SECUREPEER_HOME/known_hosts, default
~/.securepeer/known_hosts). On first contact a terminal is asked to confirm
the fingerprint; without a terminal, connect refuses unless -accept-new is
given. A key that differs from the recorded one is always refused (exit 3):
remove the line named in the message if the change was intended.

Flags:
    -relay ADDR        a peer named by key: a relay to reach it through, as
                       securepeer relay prints it (/ip4/.../tcp/4001/p2p/...);
                       repeatable; without it, those of $SECUREPEER_HOME/relays
    -dht public|ADDR,...
                       a peer named by key: look it up in a libp2p DHT where its
                       listen -p2p -dht publishes, when no relay is set or the
                       relays fail: public for the public one (IPFS's), or the
                       addresses of a private DHT's members (/ip4/.../tcp/.../
                       p2p/...); then reach it at what its record gives (its
                       relays, its direct addresses); up to 30 s to join the
                       DHT and 30 s to look up
    -expect KEY        accept only this peer key: a fingerprint (SHA256:...), a
                       key (ssh-ed25519 AAAA...), or a .pub file; known_hosts is
                       then neither read nor written (a peer named by key is
                       pinned already)
    -accept-new        trust and record an unknown peer's key without asking
                       (a changed key is still refused)
    -known-hosts FILE  use FILE instead of the default known_hosts
    -from [NAME=]LOCALADDR
                       tunnel: listen on LOCALADDR and carry each connection
                       to the peer's -to NAME (unnamed: its unnamed -to);
                       unix:PATH makes a Unix socket (mode 0600); repeatable
    -to [NAME=]HOST:PORT
                       tunnel: a target for the peer's -from NAME streams
                       (reverse forwarding); unix:PATH for a Unix socket;
                       repeatable, one per name
    -no-reconnect      tunnel: exit 1 when the connection is lost, instead of
                       reconnecting
    -w DURATION        give up connecting (TCP and handshake) after DURATION,
                       as 10s (default 15s for TCP, 30s for the handshake);
                       a first-contact question is not bounded by it
    -idle DURATION     end a stdio stream with no data either way for
                       DURATION, aborted, exit 1
    -t                 give a listen -exec peer's command a terminal (ssh -t);
                       without a terminal on stdin, it says so and goes on
                       without one, as ssh does
    -i FILE            identity (default $SECUREPEER_HOME/id_ed25519); FILE.pub
                       for a key held by ssh-agent
    -progress          show bytes, rate and elapsed time on stderr (terminal only),
                       with a percentage and the time left when stdin is a file,
                       and end with a summary line: bytes, time, rate
    -v                 log everything structured (slog key=value lines):
                       handshakes (peer, cipher, post-quantum, role, timings)
                       and notices
    -legacy            speak the Node secure-peer 0.2 protocol instead (see below)
    -ciphers LIST      -legacy only: cipher preference list, comma-separated and
                       spelled as the Node side spells them (default
                       AES-256-CBC,RC4; see securepeer help listen)

Legacy mode: -legacy talks to a peer that runs the Node module secure-peer
0.2, to migrate it. The protocol is insecure (identities in clear, replayable
handshake, forceable cipher choice, no forward secrecy), and a warning says
so. -i then takes an rsa-json key file ({"private": PEM, "public": PEM};
default $SECUREPEER_HOME/id_legacy_rsa.json, made by securepeer keygen
-legacy). RSA keys are never written to known_hosts, so -accept-new and
-known-hosts do not apply: pin the peer with -expect, which then takes its
legacy fingerprint (SHA256:..., as securepeer id -legacy prints it), a PEM
public key file, or its rsa-json file. Without -expect, connect shows the
peer's fingerprint and refuses (exit 3). A Node peer stops sending once it
has this side's end of stream (what it sends in direct reply still arrives),
so to receive more than that, keep stdin open until it is in.

Examples:
    # send a file; the listener writes it to its stdout
    securepeer connect example.org:5000 < backup.tar
    # the same to a laptop behind a NAT, named by its key: a listen -p2p
    securepeer connect -relay /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW... alice.pub < backup.tar
    # the same, with no relay of this side's: look it up where it publishes
    securepeer connect -dht /ip4/198.51.100.7/tcp/4002/p2p/12D3KooW... alice.pub < backup.tar
    # ssh to it, with no open port on its side
    ssh -o ProxyCommand='securepeer connect alice.pub' user@alice
    # talk to the upper-casing echo of securepeer help listen
    echo 'beep boop' | securepeer connect -expect SHA256:... 127.0.0.1:5000
    # a shell on a listen -allow admins.pub -exec bash peer
    securepeer connect -t example.org:5000
    # reach a web server exposed with listen -to, at http://127.0.0.1:8080/
    securepeer connect -from 127.0.0.1:8080 example.org:5000
    # two named services of the peer, and publish this machine's ssh on the
    # peer's side (its listen -from ssh=127.0.0.1:2222)
    securepeer connect -from web=127.0.0.1:8080 -from db=127.0.0.1:5432 -to ssh=127.0.0.1:22 example.org:5000
    # ssh through securepeer, with no forward at all
    ssh -o ProxyCommand='securepeer connect -expect server.pub %h:5000' user@example.org
    # talk to a Node secure-peer 0.2 server whose public key is in server.pem
    echo 'beep boop' | securepeer connect -legacy -i keys.json -expect server.pem example.org:5000
`

// connectHandshakeTimeout bounds a client handshake when nobody is asked a
// question; with a possible prompt, the server's limit applies instead.
const connectHandshakeTimeout = 30 * time.Second

// connectOptions are connect's command line, parsed.
type connectOptions struct {
	common     commonFlags
	legacy     legacyFlags
	args       []string // the positional arguments: the address
	addr       string
	expect     string // -expect, as given
	acceptNew  bool
	knownHosts string
	tunnel     tunnelFlags
	wait       time.Duration // -w: 0 for the defaults
	tty        bool
	relays     relayList // -relay: the relays to reach a peer named by key through
	dht        dhtList   // -dht: where to look a peer named by key up
}

// parseConnect parses connect's command line into options, and validates
// them.
func parseConnect(args []string) (*connectOptions, error) {
	o := &connectOptions{}
	fs := flag.NewFlagSet("connect", flag.ContinueOnError)
	o.common.register(fs)
	o.legacy.register(fs)
	fs.StringVar(&o.expect, "expect", "", "")
	fs.BoolVar(&o.acceptNew, "accept-new", false, "")
	fs.StringVar(&o.knownHosts, "known-hosts", "", "")
	fs.Var(&o.tunnel.from, "from", "")
	fs.Var(&o.tunnel.to, "to", "")
	fs.BoolVar(&o.tunnel.noReconnect, "no-reconnect", false, "")
	fs.DurationVar(&o.wait, "w", 0, "")
	fs.BoolVar(&o.tty, "t", false, "")
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
	return o, o.validate()
}

// validate checks the options, as connect's usage says they go together.
func (o *connectOptions) validate() error {
	rest := o.args
	switch {
	case len(rest) == 0:
		return usageErrorf("connect: missing the peer's address, as in securepeer connect example.org:5000")
	case len(rest) == 2 && isDigits(rest[1]) && !strings.Contains(rest[0], ":"):
		// nc's habit: HOST PORT.
		return usageErrorf("connect: the address is one argument, HOST:PORT; did you mean %s?", net.JoinHostPort(rest[0], rest[1]))
	case len(rest) > 1:
		return usageErrorf("connect: unexpected arguments %q after the address; data to send goes to stdin, as in echo hi | securepeer connect HOST:PORT", rest[1:])
	}
	if err := o.checkPeer(); err != nil {
		return err
	}
	if err := checkForwards("connect", o.tunnel.from, o.tunnel.to); err != nil {
		return err
	}
	switch {
	case o.tunnel.noReconnect && !o.tunnel.tunnel():
		return usageErrorf("connect: -no-reconnect is for tunnels (-from or -to)")
	case o.common.idle != 0 && o.tunnel.tunnel():
		return usageErrorf("connect: -idle is for a stdio stream, not a tunnel, which keeps its connection up with keepalives")
	}
	if err := checkTTYFlag(o.tty, &o.tunnel, &o.common, &o.legacy); err != nil {
		return err
	}
	switch {
	case o.wait < 0:
		return usageErrorf("connect: -w %v: a timeout cannot be negative", o.wait)
	case o.legacy.enabled && (o.acceptNew || o.knownHosts != ""):
		return usageErrorf("connect: -legacy does not use known_hosts, so -accept-new and -known-hosts do not apply; pin the peer with -expect")
	}
	_, err := o.legacy.check("connect")
	return err
}

// handshake is what connect asks of its handshaker.
func (o *connectOptions) handshake() handshakeSpec {
	spec := handshakeSpec{cmd: "connect", timeout: connectHandshakeTimeout, tcp: o.wait, protos: execProtos()}
	if o.wait > 0 {
		spec.timeout = o.wait
	}
	if !o.legacy.enabled && o.expect == "" && !o.acceptNew && haveTerminal() {
		// A question may be asked: give its answer the server's time.
		spec.timeout = max(spec.timeout, listenHandshakeTimeout)
	}
	if o.tunnel.tunnel() {
		spec.protos = tunnelProtos()
	}
	return spec
}

// newVerifier is connect's check of the peer's key: the -expect pin, or
// else known_hosts, as ssh checks host keys; with -legacy, the pin only.
// self is this side's identity, which the peer may have too. It parses
// -expect first, so that a mistake in it is said before anything else is
// read.
func (o *connectOptions) newVerifier(e *env, log *slog.Logger, self func() peerKey) (verifyFunc, error) {
	var err error
	if o.legacy.enabled {
		pin := &legacyPinPolicy{log: log, addr: o.addr}
		if o.expect != "" {
			if pin.expect, err = parseLegacyExpect(o.expect); err != nil {
				return nil, err
			}
		}
		return pin.verify, nil
	}
	policy := &hostPolicy{e: e, addr: o.addr, acceptNew: o.acceptNew, log: log, self: self}
	if o.expect != "" {
		if policy.expect, err = parseExpect(o.expect); err != nil {
			return nil, err
		}
	}
	if policy.expect == "" { // a pin is all -expect checks: known_hosts is not read
		if policy.file, err = e.knownHostsPath(o.knownHosts); err != nil {
			return nil, err
		}
	}
	return policy.verify, nil
}

func runConnect(ctx context.Context, e *env, args []string) error {
	o, err := parseConnect(args)
	if err != nil {
		return err
	}
	target, err := o.resolve(e)
	if err != nil {
		return err
	}
	if o.tty && !e.stdinIsTerminal() {
		e.notef("-t: stdin is not a terminal, so the command gets none (as ssh says, a pseudo-terminal will not be allocated)")
	}
	log := o.common.logger(e)
	if target.byKey() {
		return connectByKey(ctx, e, o, target, log)
	}
	// The key check is set up before the identity is loaded (and, the
	// first time, created), and needs it only during a handshake.
	var h handshaker
	verify, err := o.newVerifier(e, log, func() peerKey { return h.publicKey() })
	if err != nil {
		return err
	}
	if h, err = newHandshaker(e, &o.common, &o.legacy, o.handshake()); err != nil {
		return err
	}
	d := &tcpDialer{h: h, addr: o.addr, verify: verify, log: log, stdio: !o.tunnel.tunnel(), notef: e.notef}
	return connectWith(ctx, e, &o.common, d, &o.tunnel, o.tty && e.stdinIsTerminal(), log)
}

// tunnelFlags are connect's tunnel flags.
type tunnelFlags struct {
	from, to    forwardList
	noReconnect bool
}

func (t *tunnelFlags) tunnel() bool { return len(t.from) > 0 || len(t.to) > 0 }

// connectWith connects to the peer with d, and joins it to stdin and
// stdout, or with -from or -to, makes a tunnel with it. tty asks a listen
// -exec peer for a terminal (-t, with a terminal on stdin).
func connectWith(ctx context.Context, e *env, cf *commonFlags, d peerDialer, tf *tunnelFlags, tty bool, log *slog.Logger) error {
	if tf.tunnel() {
		return connectTunnel(ctx, e, d, tf.from, tf.to, tf.noReconnect, log)
	}
	s, err := d.dial(ctx)
	if err != nil {
		return err
	}
	if tty && s.negotiated != execproto.Protocol2 {
		noTTYPeer(e, s)
		tty = false
	}
	var t *ttySession
	if tty {
		if t, err = startTTYSession(ctx, e, e.stdin.(*os.File)); err != nil {
			s.abort()
			return pkgerr.Plainf("-t: cannot put the terminal in raw mode: %v", err)
		}
		defer t.restore()
	}
	m := cf.meter(e)
	if t != nil {
		m = newMeter(nil, 0, 0) // the terminal is the command's: count only
	}
	defer m.finish()
	ctx, stop := idle.Watch(ctx, cf.idle, m.activity)
	defer stop()
	switch s.negotiated {
	case execproto.Protocol2:
		return connectExec2(ctx, e, s, t, m)
	case execproto.Protocol1:
		return connectExec1(ctx, e, s, m)
	}
	peerEnds, note := e.stdioEnds()
	return joinStdio(ctx, s, s.conn, e.stdin, peerEnds, e.stdout, m, note)
}
