package p2p

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/pkgerr"
)

// TestErrorsNameThePackageOnce checks that every error of the package
// names it once, at the start, and that pkgerr.Unnamed gives the same text
// without the name, which is how the command shows them without parsing
// any text; a securepeer error inside is not named either.
func TestErrorsNameThePackageOnce(t *testing.T) {
	peer, relay := newIdentity(t).PublicKey(), newIdentity(t).PublicKey()
	cause := errors.New("dial tcp4 198.18.0.1:4001: connect: connection refused")
	relayErr := &RelayError{Relay: relay, Err: ErrNoReservation, Cause: cause}
	addrErr := &AddrError{Addr: "/ip4/198.18.0.1/tcp/4001", Err: ErrWrongKey, Cause: cause}
	for _, tt := range []struct {
		name string
		err  error
	}{
		{"sentinel", ErrNoRelay},
		{"formatted", pkgerr.Errorf("p2p", "dialing this node's own key: %w", securepeer.ErrOwnKey)},
		{"RelayError", relayErr},
		{"AddrError", addrErr},
		{"DialError", &DialError{Peer: peer, Relays: []*RelayError{relayErr}, Addrs: []*AddrError{addrErr}}},
		{"CircuitError", &CircuitError{Peer: peer, Relay: relay, Err: ErrCircuitTimeLimit, TimeLimit: time.Minute}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			text := tt.err.Error()
			rest, ok := strings.CutPrefix(text, "p2p: ")
			if !ok {
				t.Fatalf("%q does not start with the package's name", text)
			}
			if strings.Contains(rest, "p2p: ") || strings.Contains(rest, "securepeer: ") {
				t.Errorf("%q names a package inside", text)
			}
			if got := pkgerr.Unnamed(tt.err).Error(); got != rest {
				t.Errorf("pkgerr.Unnamed: %q, want %q", got, rest)
			}
		})
	}
}
