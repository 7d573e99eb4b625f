package securepeer

import (
	"fmt"

	"github.com/securepeer/securepeer/internal/wire"
)

// Aborts are not authenticated: anyone on the path can send one in place of
// a handshake message. So a receiver believes an abort only in a slot where
// an honest peer sends that reason, and there only as the peer's claim;
// anywhere else it is tampering (PROTOCOL.md, "Handshake messages and
// aborts").

// A slot is the place of the handshake message a side is reading, which
// decides the aborts it may stand for.
type slot uint8

const (
	slotMessage1       slot = iota // a responder reads message 1, also after asking for a full handshake
	slotMessage2                   // an initiator reads message 2 of a full handshake
	slotMessage2Worked             // an initiator reads message 2 after answering a demand for work
	slotWork                       // a responder reads the answer to its demand for work
	slotResumeMessage2             // an initiator that offered a ticket reads the answer
	slotMessage3                   // a responder reads message 3
	slotFinished                   // a responder reads the finished message of a resumption
)

// honestAborts lists, for each slot, the reasons an honest peer sends there.
// The table in PROTOCOL.md says why each is or is not there.
var honestAborts = map[slot][]byte{
	slotMessage1:       nil,
	slotMessage2:       {wire.AbortNoCipher, wire.AbortProtocol, wire.DemandWork},
	slotMessage2Worked: {wire.AbortNoCipher, wire.AbortProtocol},
	slotWork:           {wire.AbortProtocol},
	slotResumeMessage2: {wire.AbortNoCipher, wire.AbortProtocol, wire.AbortNoALPN, wire.RetryFull},
	slotMessage3:       {wire.AbortRejected, wire.AbortProtocol, wire.AbortNoALPN},
	slotFinished:       {wire.AbortRejected, wire.AbortProtocol},
}

// honestAbort reports whether an honest peer may send reason in place of
// the message of slot s. Reasons this version does not define are left to
// abortError.
func (s slot) honestAbort(reason byte) bool {
	for _, r := range honestAborts[s] {
		if r == reason {
			return true
		}
	}
	return false
}

// abortError is the error for an abort with reason read in place of the
// message of slot s. A reason an honest peer does not send there is
// reported as tampering, never as what it claims. Believed, it is still the
// peer's unauthenticated word: only ErrPeerNoCommonProtocol, never
// ErrNoCommonProtocol, can come from an abort.
func (hs *handshakeState) abortError(s slot, reason byte) error {
	known := reason >= wire.AbortRejected && reason <= wire.DemandWork
	if known && (!s.honestAbort(reason) || reason == wire.DemandWork && !hs.offeredWork) {
		return errorf("%w", &misplacedAbortError{reason})
	}
	switch reason {
	case wire.RetryFull:
		return errRetryFull
	case wire.DemandWork:
		return errWorkDemanded
	case wire.AbortRejected:
		return errorf("%w", ErrRejected)
	case wire.AbortNoCipher:
		return errorf("%w (the peer found none in this side's list %v)", ErrNoCommonCipher, hs.cfg.ciphers())
	case wire.AbortNoALPN:
		return errorf("%w (this side's list: %q)", ErrPeerNoCommonProtocol, hs.cfg.NextProtos)
	case wire.AbortProtocol:
		return newError("the peer aborted the handshake; it found this side's messages malformed")
	}
	return errorf("the peer aborted the handshake (reason %d)", reason)
}

// A misplacedAbortError is an abort read where no securepeer peer sends
// one: someone on the path forged it.
type misplacedAbortError struct{ reason byte }

func (e *misplacedAbortError) Error() string {
	return "handshake failed: the peer sent " + abortName(e.reason) + " where no securepeer peer sends one; the connection was tampered with"
}

// abortName names a known abort reason for an error message.
func abortName(reason byte) string {
	switch reason {
	case wire.AbortRejected:
		return "a rejection"
	case wire.AbortNoCipher:
		return `the abort "no cipher in common"`
	case wire.AbortProtocol:
		return `the abort "malformed message"`
	case wire.AbortNoALPN:
		return `the abort "no application protocol in common"`
	case wire.RetryFull:
		return "a request for a full handshake"
	case wire.DemandWork:
		return "a demand for work"
	}
	return fmt.Sprintf("abort reason %d", reason)
}

// errRetryFull is readMessage's report of the responder's RetryFull.
var errRetryFull = newError("the responder asked for a full handshake")

// errWorkDemanded is readMessage's report of the responder's DemandWork.
var errWorkDemanded = newError("the responder demanded work")
