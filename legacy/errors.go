package legacy

import (
	"errors"
	"fmt"

	"github.com/securepeer/securepeer/internal/pkgerr"
)

// Every error this package returns starts with "legacy: ", once
// (internal/pkgerr); NoCommonCipherError says it itself. The sentinels
// state their fact alone, and the errors returned wrap them.

// errorf returns an error of this package, formatted as fmt.Errorf does,
// its text prefixed "legacy: ".
func errorf(format string, a ...any) error { return pkgerr.Errorf("legacy", format, a...) }

// newError returns an error of this package, its text prefixed "legacy: ".
func newError(text string) error { return pkgerr.New("legacy", text) }

// ErrRejected is returned, wrapped, by Read when the peer closed the
// connection after the handshake without sending a single frame. That is all
// secure-peer 0.2 does when its 'identify' handler rejects this side's key:
// the protocol has no rejection message, so the same error can also mean the
// peer crashed or the network failed at that moment.
var ErrRejected = errors.New("the peer closed the connection without sending any data; secure-peer does this when it rejects a key")

// ErrNoCommonCipher is returned, wrapped, by Handshake when the two
// preference lists share no cipher name. Names are compared exactly, so
// "rc4" and "RC4" do not match.
var ErrNoCommonCipher = errors.New("the peers have no cipher in common; check Config.Ciphers against the Node side's opts.ciphers (names are case-sensitive)")

// A NoCommonCipherError is the error Handshake returns when the two
// preference lists share no cipher name. It wraps [ErrNoCommonCipher] and
// carries both lists, so that a caller can show them in its own terms.
type NoCommonCipherError struct {
	Local []string // this side's list, as sent
	Peer  []string // the peer's list, as received
}

func (e *NoCommonCipherError) Error() string {
	return fmt.Sprintf("legacy: %v (this side: %q, peer: %q)", ErrNoCommonCipher, e.Local, e.Peer)
}

// Unwrap returns [ErrNoCommonCipher].
func (e *NoCommonCipherError) Unwrap() error { return ErrNoCommonCipher }

// ErrTruncated is returned, wrapped, by Read when the connection ended
// without the peer's end frame, after at least one frame: the data read so
// far is genuine but may be incomplete.
var ErrTruncated = errors.New("the connection ended before the peer's end frame; the data may be truncated")

// ErrFrameTooLarge is returned, wrapped, by Read when the peer sends a frame
// larger than [Config.MaxFrameSize] allows. The connection is closed.
var ErrFrameTooLarge = errors.New("the peer sent a frame larger than this side accepts")

// errAuth is the one error for every failed signature: the header's, or a
// frame's (which covers its sequence number, the session token and the
// ciphertext). It does not say which check failed.
var errAuth = newError("signature verification failed; the connection was tampered with, replayed or corrupted")

// errShutdown is returned by Write after CloseWrite.
var errShutdown = newError("write after CloseWrite")
