package main

import (
	"errors"
	"net"
	"strings"

	"github.com/securepeer/securepeer"
)

// describe is the one place that turns an error into what the user reads:
// the libraries' own prefixes go (the command prints "securepeer: " once),
// and a hint is added for the mistakes the libraries can only state, since
// library errors say what happened and the command says what to do.
func describe(err error) string {
	msg := err.Error()
	for _, prefix := range []string{"securepeer: ", "knownhosts: ", "legacy: "} {
		msg = strings.TrimPrefix(msg, prefix)
		msg = strings.ReplaceAll(msg, ": "+prefix, ": ")
		msg = strings.ReplaceAll(msg, "("+prefix, "(")
	}
	if h := hint(err); h != "" && !strings.Contains(msg, h) {
		msg += "; " + h
	}
	return msg
}

// hint returns what to do about err, if the command knows.
func hint(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, securepeer.ErrLegacyPeer):
		return "talk to it with -legacy"
	case errors.Is(err, securepeer.ErrPassphraseNeeded):
		return "the command does not ask for passphrases yet, so it needs an unencrypted key"
	case errors.Is(err, securepeer.ErrNotEd25519):
		return "make one with securepeer keygen, or ssh-keygen -t ed25519"
	case errors.As(err, &ne) && ne.Timeout() && strings.Contains(err.Error(), "handshake timed out"):
		return "is the peer a securepeer peer, and reachable?"
	}
	return ""
}
