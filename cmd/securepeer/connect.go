package main

import (
	"context"
	"flag"
	"log/slog"
	"net"
	"strings"
	"time"
)

const connectUsage = `Usage: securepeer connect [flags] ADDR

Connects to the securepeer listener at ADDR (HOST:PORT) and joins the stream
to stdin and stdout, like nc: stdin's end is sent as the end of the stream,
so the peer can still answer, and connect exits 0 once the peer's stream
has ended. A signal (Ctrl-C, SIGTERM, SIGHUP) before stdin's end aborts
the stream: the peer is told that data may be missing.

With -from, it instead meets the peer once and checks its key (exiting 1 or
3 if that fails), then listens on a local address and carries each local
TCP connection to the peer (like ssh -L), until Ctrl-C. With a listen -to
of this version, that one connection carries every local connection as a
stream of its own, with keepalives; if it is lost, the local connections
in progress are reset and the next one connects again. A peer that does
not multiplex (an older listen -to, a listen -exec) gets a secure
connection per local connection. A stream the peer refuses (its -to
target is down: "connect failed: connection refused") or that fails ends
only that local connection, with a notice; a changed peer key ends the
tunnel (exit 3).

The peer's key is checked as ssh checks host keys: against -expect if
given, else against known_hosts ($SECUREPEER_HOME/known_hosts, default
~/.securepeer/known_hosts). On first contact a terminal is asked to confirm
the fingerprint; without a terminal, connect refuses unless -accept-new is
given. A key that differs from the recorded one is always refused (exit 3):
remove the line named in the message if the change was intended.

Flags:
    -expect KEY        accept only this peer key: a fingerprint (SHA256:...), a
                       key (ssh-ed25519 AAAA...), or a .pub file; known_hosts is
                       then neither read nor written
    -accept-new        trust and record an unknown peer's key without asking
                       (a changed key is still refused)
    -known-hosts FILE  use FILE instead of the default known_hosts
    -from LOCALADDR    tunnel: listen on LOCALADDR and forward connections
    -i FILE            identity (default $SECUREPEER_HOME/id_ed25519); FILE.pub
                       for a key held by ssh-agent
    -progress          show bytes, rate and elapsed time on stderr (terminal only),
                       with a percentage and the time left when stdin is a file
    -v                 log handshakes (peer, cipher, post-quantum, role, timings)
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
    # talk to the upper-casing echo of securepeer help listen
    echo 'beep boop' | securepeer connect -expect SHA256:... 127.0.0.1:5000
    # reach a web server exposed with listen -to, at http://127.0.0.1:8080/
    securepeer connect -from 127.0.0.1:8080 example.org:5000
    # talk to a Node secure-peer 0.2 server whose public key is in server.pem
    echo 'beep boop' | securepeer connect -legacy -i keys.json -expect server.pem example.org:5000
`

// connectHandshakeTimeout bounds a client handshake when nobody is asked a
// question; with a possible prompt, the server's limit applies instead.
const connectHandshakeTimeout = 30 * time.Second

func runConnect(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("connect", flag.ContinueOnError)
	var cf commonFlags
	cf.register(fs)
	var lf legacyFlags
	lf.register(fs)
	expect := fs.String("expect", "", "")
	acceptNew := fs.Bool("accept-new", false, "")
	knownHosts := fs.String("known-hosts", "", "")
	from := fs.String("from", "", "")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(rest) == 0:
		return usageErrorf("connect: missing the peer's address, as in securepeer connect example.org:5000")
	case len(rest) == 2 && isDigits(rest[1]) && !strings.Contains(rest[0], ":"):
		// nc's habit: HOST PORT.
		return usageErrorf("connect: the address is one argument, HOST:PORT; did you mean %s?", net.JoinHostPort(rest[0], rest[1]))
	case len(rest) > 1:
		return usageErrorf("connect: unexpected arguments %q after the address; data to send goes to stdin, as in echo hi | securepeer connect HOST:PORT", rest[1:])
	}
	addr := rest[0]
	if err := checkAddr("peer address", addr, true); err != nil {
		return err
	}
	if *from != "" {
		if err := checkAddr("-from address", *from, false); err != nil {
			return err
		}
	}
	log := cf.logger(e)
	if lf.enabled {
		if *acceptNew || *knownHosts != "" {
			return usageErrorf("connect: -legacy does not use known_hosts, so -accept-new and -known-hosts do not apply; pin the peer with -expect")
		}
		pin := &legacyPinPolicy{log: log, addr: addr}
		if *expect != "" {
			if pin.expect, err = parseLegacyExpect(*expect); err != nil {
				return err
			}
		}
		h, err := legacyStart(e, "connect", cf.identity, &lf, connectHandshakeTimeout)
		if err != nil {
			return err
		}
		return connectWith(ctx, e, &cf, h, addr, *from, pin.verify, log)
	}
	if _, err := lf.check("connect"); err != nil {
		return err
	}
	policy := &hostPolicy{e: e, addr: addr, acceptNew: *acceptNew, log: log}
	if *expect != "" {
		if policy.expect, err = parseExpect(*expect); err != nil {
			return err
		}
	}
	if policy.expect == "" { // a pin is all -expect checks: known_hosts is not read
		if policy.file, err = e.knownHostsPath(*knownHosts); err != nil {
			return err
		}
	}

	id, err := e.loadIdentity(cf.identity)
	if err != nil {
		return err
	}
	policy.self = id.PublicKey()
	timeout := connectHandshakeTimeout
	if policy.expect == "" && !policy.acceptNew && haveTerminal() {
		timeout = listenHandshakeTimeout
	}
	h := &nativeHandshaker{id: id, timeout: timeout}
	if *from != "" {
		h.protos = tunnelProtos()
	}
	return connectWith(ctx, e, &cf, h, addr, *from, policy.verify, log)
}

// connectWith connects to the peer at addr with h, and joins it to stdin and
// stdout, or with from set, tunnels local connections to it.
func connectWith(ctx context.Context, e *env, cf *commonFlags, h handshaker, addr, from string, verify verifyFunc, log *slog.Logger) error {
	if from != "" {
		return connectFrom(ctx, e, h, addr, from, verify, log)
	}
	s, err := dial(ctx, h, addr, verify, log)
	if err != nil {
		return err
	}
	m := cf.meter(e)
	defer m.finish()
	return joinStdio(ctx, s, e.stdin, e.stdinIsTerminal(), e.stdout, m)
}
