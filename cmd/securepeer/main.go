// Command securepeer makes encrypted, mutually authenticated streams between
// two peers identified by Ed25519 keys: a secure netcat, a per-connection
// command runner and a TCP tunnel, with ssh-style known hosts.
//
// Run `securepeer help` for the subcommands and `securepeer help CMD` for
// each one's flags and examples.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
)

const usage = `securepeer makes encrypted, mutually authenticated streams between peers
identified by Ed25519 keys, with no certificates and no authorities.

Usage:
    securepeer keygen [-f FILE] [-force]      make an identity (key pair)
    securepeer id [-i FILE]                   print your public key and fingerprint
    securepeer listen [flags] ADDR            accept peers: stdio, -exec, -to, -from
    securepeer listen -p2p [flags]            accept them by key, through relays, behind NATs
    securepeer connect [flags] PEER           connect to a peer: stdio, -from, -to
    securepeer relay [flags] [ADDR]           a relay through which peers named by key meet
    securepeer demo                           two peers shake hands in this process
    securepeer help [CMD]                     describe a subcommand

Your identity is $SECUREPEER_HOME/id_ed25519 (default ~/.securepeer/id_ed25519),
created on first use; -i FILE selects another, such as ~/.ssh/id_ed25519.
If only id_ed25519.pub is there, its key is used from ssh-agent, as ssh does.
Peers you connect to are remembered in known_hosts next to it, as ssh does.
As ssh's StrictModes does, a home directory (made mode 0700), or the
directory of a key, known_hosts or -allow file, that others can write is
refused, and so are a known_hosts or -allow file that others can write
or that another user owns.
To migrate peers off the Node module secure-peer 0.2, keygen, id, listen and
connect take -legacy, which speaks its insecure protocol with rsa-json keys.

Examples:
    # receive a file in one shell...
    securepeer listen -allow friends.pub :5000 > photo.jpg
    # ...and send it from another
    securepeer connect -accept-new example.org:5000 < photo.jpg

    # an upper-casing echo server for the keys in friends.pub, and a client
    securepeer listen -allow friends.pub -exec 'tr a-z A-Z' 127.0.0.1:5000
    echo 'beep boop' | securepeer connect 127.0.0.1:5000

    # a remote shell for the keys in admins.pub, on a terminal (ssh -t)
    securepeer listen -allow admins.pub -exec bash :5000
    securepeer connect -t example.org:5000

    # two laptops behind NATs, each with the relay in ~/.securepeer/relays
    # (a host with a public address runs securepeer relay): by key
    securepeer listen -p2p -allow bob.pub > photo.jpg
    securepeer connect alice.pub < photo.jpg

    # a web server both ways: the laptop reaches the server's site on its
    # 8080, and publishes its own sshd on the server's 2222 (ssh -L and -R)
    securepeer listen -allow friends.pub -to web=127.0.0.1:80 -from ssh=127.0.0.1:2222 :5000
    securepeer connect -from web=127.0.0.1:8080 -to ssh=127.0.0.1:22 example.org:5000

Exit status: 0 success, 1 connection or protocol error, 2 usage error,
3 peer rejected or key mismatch, the command's own status for a connect to
a listen -exec (127: not found), 130, 143 or 129 interrupted by SIGINT
(Ctrl-C), SIGTERM or SIGHUP. Only the end of stdin ends a stream cleanly:
an interrupted transfer is aborted, and the peer exits 1 saying data may be
missing. (After SIGHUP, which ssh sends its ProxyCommand as it exits, a
stream that ends on its own within 3 seconds ends cleanly.) A second
signal ends the program at once (listen: cuts the sessions it was letting
finish).
`

// A command is one subcommand.
type command struct {
	name  string
	usage string
	run   func(ctx context.Context, env *env, args []string) error
}

func commands() []command {
	return []command{
		{"keygen", keygenUsage, runKeygen},
		{"id", idUsage, runID},
		{"listen", listenUsage, runListen},
		{"connect", connectUsage, runConnect},
		{"relay", relayUsage, runRelay},
		{"demo", demoUsage, runDemo},
	}
}

func findCommand(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// env is what a subcommand may touch of the outside world, so that tests
// and the demo can run commands with their own streams.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string

	// cut is closed by a second signal (nil: never). Only a command that
	// sets cutsOnSecondSignal watches it; for the others the second signal
	// ends the program at once.
	cut                <-chan struct{}
	cutsOnSecondSignal atomic.Bool

	// vlog, set by -v, makes stderr structured: notices and the final
	// error become slog records too, so that one format is parsed.
	vlog *slog.Logger
}

// stopSignals are the signals that interrupt a command. The first one
// cancels the command's context with a *signalError as its cause.
var stopSignals = []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP}

func main() {
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, stopSignals...)
	ctx, cancel := context.WithCancelCause(context.Background())
	cut := make(chan struct{})
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, cut: cut}
	go func() {
		first := &signalError{<-sigc}
		cancel(first)
		<-sigc
		if !e.cutsOnSecondSignal.Load() {
			exit(first.code())
		}
		// listen cuts its sessions, which is quick but not instant; a
		// third signal ends the program at once.
		signal.Reset(stopSignals...)
		close(cut)
	}()
	code := run(ctx, e, os.Args[1:])
	exit(code)
}

// testOnlyExitFile, if set, is where exit writes the exit code first, for
// tests whose securepeer is started by another program that does not say
// how it ended (ssh's ProxyCommand).
var testOnlyExitFile string

// exit ends the program with code.
func exit(code int) {
	if testOnlyExitFile != "" {
		os.WriteFile(testOnlyExitFile, []byte(fmt.Sprintln(code)), 0o644)
	}
	os.Exit(code)
}

// run runs the command line args and returns the exit code.
func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		if name == "help" && len(args) > 1 {
			c, ok := findCommand(args[1])
			if !ok {
				return report(e, usageErrorf("help: unknown subcommand %q; the subcommands are %s", args[1], commandNames()))
			}
			fmt.Fprint(e.stdout, c.usage)
			return exitOK
		}
		fmt.Fprint(e.stdout, usage)
		return exitOK
	case "-version", "--version", "version":
		fmt.Fprintln(e.stdout, "securepeer", version())
		return exitOK
	}
	c, ok := findCommand(name)
	if !ok {
		hint := ""
		if strings.HasPrefix(name, "-") {
			hint = "; flags go after the subcommand, as in securepeer connect " + name + " ADDR"
		}
		return report(e, usageErrorf("unknown subcommand %q%s; the subcommands are %s", name, hint, commandNames()))
	}
	err := c.run(ctx, e, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(e.stdout, c.usage)
		return exitOK
	}
	return report(e, err)
}

func commandNames() string {
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
	}
	return strings.Join(names, ", ")
}
