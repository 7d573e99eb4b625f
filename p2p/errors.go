package p2p

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/pkgerr"
)

// Sentinels, for errors.Is. Errors from this package wrap them, often
// inside a [*DialError], a [*RelayError] or a [*CircuitError] that adds
// which peer and which relay.
var (
	// ErrSignerIdentity was returned by [Start] and [RunRelay] for an
	// identity whose private key is held by a signer, such as ssh-agent.
	//
	// Deprecated: nothing returns it: the host key signs through the
	// identity's signer, so such identities run nodes and relays.
	ErrSignerIdentity = pkgerr.New("p2p", "the identity's private key is held by a signer such as ssh-agent, and a libp2p host needs the key itself")

	// ErrNoRelay means that a relay could not be reached: no connection
	// to any of its addresses, or a host with another key at them.
	ErrNoRelay = pkgerr.New("p2p", "no relay could be reached")

	// ErrNoReservation means that a relay was reached but the peer holds
	// no reservation on it, so the relay cannot connect to it.
	ErrNoReservation = pkgerr.New("p2p", "the peer holds no reservation on the relay")

	// ErrReservationRefused means that a relay refused this node a
	// reservation: it is full, it allows only some keys, or it limits
	// reservations from this node's address.
	ErrReservationRefused = pkgerr.New("p2p", "the relay refused a reservation")

	// ErrRelayRefused means that a relay refused to open a circuit to the
	// peer for another reason than a missing reservation: its limits, its
	// access rules, or the peer's connection to it failing.
	ErrRelayRefused = pkgerr.New("p2p", "the relay refused the circuit")

	// ErrNoPath means that nothing can carry a connection to the peer: no
	// direct address answered and no relay is set.
	ErrNoPath = pkgerr.New("p2p", "no path to the peer: no direct address answered and no relay is set")

	// ErrWrongKey means that a host with another key answered in the
	// peer's place: at a direct address, or through a relay, which may be
	// trying to stand in for the peer. The handshake refused it before
	// this node's identity was sent.
	ErrWrongKey = pkgerr.New("p2p", "a host with another key answered in the peer's place")

	// ErrNotSecurepeer means that the host reached, at a direct address
	// or through a relay, does not speak securepeer, the only security
	// protocol this engine accepts: it is not the peer, or someone in
	// between tried to make the connection fall back to another protocol.
	ErrNotSecurepeer = pkgerr.New("p2p", "the host reached does not speak securepeer")

	// ErrCircuitDataLimit means that a relay cut a circuit once the
	// bytes it allows each way had crossed it.
	ErrCircuitDataLimit = pkgerr.New("p2p", "the relay cut the circuit at its data limit")

	// ErrCircuitTimeLimit means that a relay cut a circuit at the end of
	// the time it allows a circuit.
	ErrCircuitTimeLimit = pkgerr.New("p2p", "the relay cut the circuit at its time limit")

	// ErrRelayLost means that the connection to the relay carrying a
	// circuit ended: the relay stopped, or the network between this node
	// and the relay failed.
	ErrRelayLost = pkgerr.New("p2p", "the connection to the relay was lost")

	// ErrCircuitEnded means that a circuit through a relay ended while the
	// relay stayed connected, without reaching the relay's limits: the
	// peer's side of the circuit failed, or the relay dropped it.
	ErrCircuitEnded = pkgerr.New("p2p", "the relayed connection ended")

	// ErrClosed is returned by a closed [Node] or [Listener].
	ErrClosed = pkgerr.New("p2p", "closed")
)

// A RelayError says what one relay did with a reservation or a circuit.
type RelayError struct {
	// Relay is the relay's key.
	Relay securepeer.PublicKey
	// Err is ErrNoRelay, ErrNoReservation, ErrReservationRefused,
	// ErrRelayRefused, ErrRelayLost, ErrWrongKey, ErrNotSecurepeer, or
	// ErrCircuitEnded when the circuit opened but the connection over it
	// failed.
	Err error
	// Cause is go-libp2p's error, for the details, or nil.
	Cause error
}

func (e *RelayError) Error() string { return "p2p: " + e.text() }

// Unnamed returns the error's text without the package's name, for
// [pkgerr.Unnamed].
func (e *RelayError) Unnamed() error { return errors.New(e.text()) }

func (e *RelayError) text() string {
	s := fmt.Sprintf("%s (relay %s)", trimPrefix(e.Err), e.Relay.Fingerprint())
	if e.Cause != nil {
		s += ": " + oneLine(e.Cause)
	}
	return s
}

// Unwrap returns Err and Cause.
func (e *RelayError) Unwrap() []error { return nonNil(e.Err, e.Cause) }

// An AddrError says why a direct address of the peer did not give a
// connection.
type AddrError struct {
	// Addr is the address, a multiaddr.
	Addr string
	// Err is ErrWrongKey if a host with another key answered there,
	// ErrNotSecurepeer if a host that does not speak securepeer did, else
	// nil.
	Err error
	// Cause is go-libp2p's error.
	Cause error
}

func (e *AddrError) Error() string { return "p2p: " + e.text() }

// Unnamed returns the error's text without the package's name, for
// [pkgerr.Unnamed].
func (e *AddrError) Unnamed() error { return errors.New(e.text()) }

func (e *AddrError) text() string {
	s := "direct address " + e.Addr + ": "
	if e.Err != nil {
		s += trimPrefix(e.Err) + ": "
	}
	return s + oneLine(e.Cause)
}

// Unwrap returns Err and Cause.
func (e *AddrError) Unwrap() []error { return nonNil(e.Err, e.Cause) }

// A DialError says why [Node.Dial] found no connection to a peer: what
// each relay said and why each direct address failed. errors.Is finds
// the sentinels inside it: ErrWrongKey if a host with another key
// answered for the peer, ErrNotSecurepeer if a host that does not speak
// securepeer did, ErrNoReservation if a relay was reached but the peer
// holds no reservation there, ErrNoRelay if no relay could be reached,
// ErrNoPath if no relay is set and no direct address answered,
// securepeer.ErrRejected if the peer refused this node's key.
type DialError struct {
	// Peer is the key that was dialed.
	Peer securepeer.PublicKey
	// Relays holds one error per relay tried.
	Relays []*RelayError
	// Addrs holds one error per direct address tried.
	Addrs []*AddrError
	// Err is a sentinel (ErrNoPath, or ErrNoRelay when no relay answered),
	// or an error that is neither a relay's nor an address's, such as
	// the context's, or nil.
	Err error
}

func (e *DialError) Error() string { return "p2p: " + e.text() }

// Unnamed returns the error's text without the package's name, for
// [pkgerr.Unnamed].
func (e *DialError) Unnamed() error { return errors.New(e.text()) }

func (e *DialError) text() string {
	headline := e.headline()
	var details []string
	for _, r := range e.Relays {
		d := "relay " + r.Relay.Fingerprint() + ": "
		if !errors.Is(headline, r.Err) {
			d += trimPrefix(r.Err)
			if r.Cause != nil {
				d += ": "
			}
		}
		if r.Cause != nil {
			d += oneLine(r.Cause)
		}
		details = append(details, d)
	}
	for _, a := range e.Addrs {
		d := a.Addr + ": "
		if a.Err != nil && !errors.Is(headline, a.Err) {
			d += trimPrefix(a.Err) + ": "
		}
		details = append(details, d+oneLine(a.Cause))
	}
	s := fmt.Sprintf("cannot reach %s: %s", e.Peer.Fingerprint(), trimPrefix(headline))
	if len(details) > 0 {
		s += " (" + strings.Join(details, "; ") + ")"
	}
	return s
}

// outcomes are what a relay or an address can say about a dial, the most
// telling first: someone answered in the peer's place, someone who does
// not speak securepeer answered, the peer is not at the relay, the relay
// refused, the connection through the relay failed, no relay answered.
var outcomes = []error{ErrWrongKey, ErrNotSecurepeer, ErrNoReservation, ErrRelayRefused, ErrCircuitEnded, ErrNoRelay}

// rank returns err's place in outcomes.
func rank(err error) int {
	for i, o := range outcomes {
		if errors.Is(err, o) {
			return i
		}
	}
	return len(outcomes)
}

// headline returns the error that best says why the dial failed: the
// most telling of the relays' and the addresses' outcomes but "no relay
// could be reached", then Err.
func (e *DialError) headline() error {
	for _, want := range outcomes[:len(outcomes)-1] {
		for _, r := range e.Relays {
			if errors.Is(r.Err, want) {
				return want
			}
		}
		for _, a := range e.Addrs {
			if errors.Is(a.Err, want) {
				return want
			}
		}
	}
	if e.Err != nil {
		return e.Err
	}
	return ErrNoPath
}

// Unwrap returns the relays' and the addresses' errors, and Err.
func (e *DialError) Unwrap() []error {
	var errs []error
	for _, r := range e.Relays {
		errs = append(errs, r)
	}
	for _, a := range e.Addrs {
		errs = append(errs, a)
	}
	return append(errs, nonNil(e.Err)...)
}

// A CircuitError says why a relayed connection ended. It is what reads
// and writes on its streams return, wrapped, once it has.
type CircuitError struct {
	// Peer is the key at the other end of the circuit.
	Peer securepeer.PublicKey
	// Relay is the relay's key.
	Relay securepeer.PublicKey
	// Err is ErrCircuitDataLimit, ErrCircuitTimeLimit, ErrRelayLost or
	// ErrCircuitEnded.
	Err error
	// DataLimit and TimeLimit are the relay's limits for the circuit, as
	// it announced them; zero means none.
	DataLimit uint64
	TimeLimit time.Duration
	// Sent and Received count the bytes that crossed the circuit each
	// way, as the relay counts them (securepeer records included).
	Sent, Received uint64
	// Lasted is how long the circuit was open.
	Lasted time.Duration
}

func (e *CircuitError) Error() string { return "p2p: " + e.text() }

// Unnamed returns the error's text without the package's name, for
// [pkgerr.Unnamed].
func (e *CircuitError) Unnamed() error { return errors.New(e.text()) }

func (e *CircuitError) text() string {
	s := fmt.Sprintf("%s (relay %s, peer %s", trimPrefix(e.Err), e.Relay.Fingerprint(), e.Peer.Fingerprint())
	switch {
	case errors.Is(e.Err, ErrCircuitDataLimit):
		s += fmt.Sprintf(", limit %d bytes each way, %d sent, %d received", e.DataLimit, e.Sent, e.Received)
	case errors.Is(e.Err, ErrCircuitTimeLimit):
		s += fmt.Sprintf(", limit %v, open %v", e.TimeLimit, e.Lasted.Round(time.Second))
	default:
		s += fmt.Sprintf(", open %v, %d bytes sent, %d received", e.Lasted.Round(time.Millisecond), e.Sent, e.Received)
	}
	return s + ")"
}

// Unwrap returns Err.
func (e *CircuitError) Unwrap() error { return e.Err }

func nonNil(errs ...error) []error {
	var out []error
	for _, err := range errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// oneLine returns err's text on one line: go-libp2p lists the failures
// of a dial on lines of their own.
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n  * ", "; ")), " ")
}

// trimPrefix returns err's text without its package's name, to nest it
// in a sentence that already has one.
func trimPrefix(err error) string {
	if err == nil {
		return ""
	}
	return pkgerr.Unnamed(err).Error()
}
