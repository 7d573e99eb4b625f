package main

// Errors: what the user reads, and the exit code each calls for.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/pkgerr"
)

// describe is the one place that turns an error into what the user reads.
// The command prints "securepeer: " once itself, so an error of one of the
// libraries is shown without its package's name (pkgerr.Unnamed: every
// library error starts with its name, once, and gives the rest without any
// text being parsed); a hint is added for the mistakes the libraries can
// only state, since library errors say what happened and the command says
// what to do. A library error that the command put in a sentence of its
// own keeps its name there.
func describe(err error) string {
	msg := pkgerr.Unnamed(err).Error()
	if h := hint(err); h != "" {
		msg += "; " + h
	}
	return msg
}

// hint returns what to do about err, if the command knows. The messages
// that already say it (handshakeError's for a timeout) do not wrap the
// error the hint is for.
func hint(err error) string {
	switch {
	case errors.Is(err, securepeer.ErrLegacyPeer):
		return "talk to it with -legacy"
	case errors.Is(err, securepeer.ErrPassphraseNeeded):
		return "securepeer asks for the passphrase on a terminal; without one, add the key to ssh-agent (ssh-add) and pass its .pub with -i"
	case errors.Is(err, securepeer.ErrNotEd25519):
		return "make one with securepeer keygen, or ssh-keygen -t ed25519"
	case errors.Is(err, securepeer.ErrHandshakeTimeout):
		return "is the peer a securepeer peer, and reachable?"
	}
	return ""
}

// Exit codes, as documented in usage.
const (
	exitOK          = 0
	exitFailure     = 1 // connection or protocol error, or anything else
	exitUsage       = 2
	exitRejected    = 3   // a peer refused us, or we refused a peer's key
	exitInterrupted = 130 // SIGINT; see signalError for the others
)

// report prints err, if any, as one line on stderr and returns the exit code
// it calls for.
func report(e *env, err error) int {
	if err == nil {
		return exitOK
	}
	code := errorCode(err)
	var xe *exitStatusError
	if errors.As(err, &xe) {
		return code // the peer's command has had its say, as ssh's has
	}
	var se *signalError
	if err == error(errInterrupted) || errors.As(err, &se) && err == error(se) {
		// The bare interruption: the user knows.
		return code
	}
	if e.vlog != nil {
		e.vlog.Error(describe(err), "exit", code)
		return code
	}
	fmt.Fprintf(e.stderr, "securepeer: %s\n", describe(err))
	return code
}

// errorCode is the exit code err calls for.
func errorCode(err error) int {
	var ce *codeError
	var se *signalError
	var xe *exitStatusError
	switch {
	case errors.As(err, &xe):
		return xe.code
	case errors.As(err, &ce):
		return ce.code
	case errors.As(err, &se):
		return se.code()
	}
	return exitFailure
}

// A codeError is an error that ends the program with a given exit code.
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }

func (e *codeError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &codeError{exitUsage, pkgerr.Plainf(format, args...)}
}

func rejectedErrorf(format string, args ...any) error {
	return &codeError{exitRejected, pkgerr.Plainf(format, args...)}
}

var errInterrupted = &codeError{exitInterrupted, errors.New("interrupted")}

// A signalError is the cause of a command's context after a signal. Its
// exit code is 128 plus the signal's number, as shells report it.
type signalError struct{ sig os.Signal }

func (e *signalError) Error() string {
	name := e.sig.String()
	switch e.sig {
	case syscall.SIGINT:
		name = "SIGINT"
	case syscall.SIGTERM:
		name = "SIGTERM"
	case syscall.SIGHUP:
		name = "SIGHUP"
	}
	return "interrupted (" + name + ")"
}

func (e *signalError) code() int {
	if s, ok := e.sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return exitInterrupted
}

// interruption is the error a command returns when ctx ended: its
// *signalError cause, or errInterrupted if it ended for another reason
// (in tests, which run commands in process).
func interruption(ctx context.Context) error {
	var se *signalError
	if errors.As(context.Cause(ctx), &se) {
		return se
	}
	return errInterrupted
}

func listenError(addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		// Which program holds it is not known here: sshd, a web server,
		// another securepeer listen all look the same.
		return pkgerr.Plainf("cannot listen on %s: another program already listens on that port; pick another port, or stop that program", addr)
	}
	if errors.Is(err, syscall.EACCES) {
		return pkgerr.Plainf("cannot listen on %s: permission denied; ports below 1024 need privileges, pick a higher one", addr)
	}
	return pkgerr.Plainf("cannot listen on %s: %v", addr, err)
}
