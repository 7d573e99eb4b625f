package securepeer

import (
	"errors"

	"github.com/securepeer/securepeer/internal/pkgerr"
)

// Every error this package returns starts with "securepeer: ", once: it is
// built by errorf or newError (internal/pkgerr), which never repeat the
// name however errors are wrapped. The sentinels below state facts without
// the name, as io.EOF does, so that they read well inside any sentence; the
// errors returned wrap them. Callers branch with errors.Is on the
// sentinels and errors.As on the typed errors, never on the text.

// errorf returns an error of this package, formatted as fmt.Errorf does,
// its text prefixed "securepeer: " (pkgerr.Errorf).
func errorf(format string, a ...any) error { return pkgerr.Errorf("securepeer", format, a...) }

// newError returns an error of this package, its text prefixed
// "securepeer: ".
func newError(text string) error { return pkgerr.New("securepeer", text) }

// ErrRejected is returned, wrapped, by the Handshake or Read of a connection
// whose peer refused this side's key in its [Config.Verify].
var ErrRejected = errors.New("the peer rejected this side's key")

// ErrNoCommonCipher is returned, wrapped, by Handshake when the two peers'
// [Config.Ciphers] lists have no cipher in common. The responder finds it
// and tells the initiator with an abort, which is not authenticated: on an
// initiator it is the peer's word, which anyone on the path can forge, and
// no reason to offer ciphers it would not otherwise (PROTOCOL.md,
// "Handshake messages and aborts").
var ErrNoCommonCipher = errors.New("the peers have no cipher in common")

// ErrNoCommonProtocol is returned, wrapped, by Handshake when both peers
// set [Config.NextProtos] and this side found that the lists have no
// protocol in common, from the peer's list as the handshake authenticated
// it: the initiator from message 2 (a resumed handshake's responder from
// the initiator's resumption message 1). It is a fact, never an attacker's
// word, so a caller may act on it, for example by connecting again with
// another list. The other side gets [ErrPeerNoCommonProtocol] instead.
var ErrNoCommonProtocol = errors.New("the peers have no application protocol in common")

// ErrPeerNoCommonProtocol is returned, wrapped, by Handshake when the peer
// aborted the handshake saying that the peers have no application protocol
// in common, where an honest peer says so: to a responder in place of
// message 3, or to an initiator that offered a session ticket. Aborts are
// not authenticated, so anyone on the path can forge one: it does not
// match [ErrNoCommonProtocol], and a caller must not change what it
// offers because of it (PROTOCOL.md, "Handshake messages and aborts").
var ErrPeerNoCommonProtocol = errors.New("the peer says the peers have no application protocol in common (unauthenticated)")

// ErrOwnKey is returned, wrapped, by the Handshake of a side whose
// [Config.Verify] is nil when the peer presents this side's own identity.
// A Verify that should accept it, for a user's own machines sharing one
// identity, can compare the key with [Identity.PublicKey].
var ErrOwnKey = errors.New("the peer presents this side's own identity")

// errAuth is the one error for every failed authentication of the peer's
// data: a record or handshake message that does not decrypt. It does not say
// which check failed (PROTOCOL.md, "Errors").
var errAuth = newError("message authentication failed; the connection was tampered with or corrupted")

// ErrHandshakeTimeout is returned, wrapped, by Handshake when the handshake
// did not complete within [Config.HandshakeTimeout] or the deadline of the
// context given to [Conn.HandshakeContext] or [Dial]. The error is also a
// [net.Error] whose Timeout method reports true.
var ErrHandshakeTimeout = errors.New("handshake timed out")

// ErrAborted is returned, wrapped, by Read when the peer ended the
// connection with [Conn.Abort]: it gave up before the end of its stream, so
// what was read may be incomplete.
var ErrAborted = errors.New("the peer aborted the stream; data may be missing")

// ErrLegacyPeer is returned, wrapped, by Handshake when the peer speaks the
// Node secure-peer 0.2 protocol, which the legacy package implements.
var ErrLegacyPeer = errors.New("the peer speaks the legacy secure-peer (Node) protocol, not securepeer")

// ErrIdentityFileMode is returned, wrapped, by [LoadIdentity] for an
// identity file that others than its owner may read or write.
var ErrIdentityFileMode = errors.New("identity file is accessible by others")

// ErrNotEd25519 is returned, wrapped, when a private key that is to be an
// identity is not an Ed25519 key.
var ErrNotEd25519 = errors.New("an identity must be an Ed25519 key")

// ErrPassphraseNeeded is returned, wrapped, by [ParseIdentity] and
// [LoadIdentity] for a private key protected by a passphrase; see
// [ParseIdentityWithPassphrase].
var ErrPassphraseNeeded = errors.New("the private key is protected by a passphrase")

// ErrWrongPassphrase is returned, wrapped, by [ParseIdentityWithPassphrase]
// when the passphrase does not decrypt the key.
var ErrWrongPassphrase = errors.New("the passphrase does not decrypt the private key")

// ErrSignerUnavailable is returned, wrapped, by the Handshake of a side
// whose identity comes from [NewIdentityFromSigner] when the signer no
// longer signs (the key was removed from ssh-agent, the agent is gone, a
// token was unplugged) and the identity's last proof of its static key has
// expired.
var ErrSignerUnavailable = errors.New("the identity's signer no longer signs for it")
