package securepeer

import "errors"

// ErrRejected is returned, wrapped, by the Handshake or Read of a connection
// whose peer refused this side's key in its [Config.Verify].
var ErrRejected = errors.New("securepeer: the peer rejected this side's key")

// ErrNoCommonCipher is returned, wrapped, by Handshake when the two peers'
// [Config.Ciphers] lists have no cipher in common. The responder finds it
// and tells the initiator with an abort, which is not authenticated: on an
// initiator it is the peer's word, which anyone on the path can forge, and
// no reason to offer ciphers it would not otherwise (PROTOCOL.md,
// "Handshake messages and aborts").
var ErrNoCommonCipher = errors.New("securepeer: the peers have no cipher in common")

// ErrNoCommonProtocol is returned, wrapped, by Handshake when both peers
// set [Config.NextProtos] and this side found that the lists have no
// protocol in common, from the peer's list as the handshake authenticated
// it: the initiator from message 2 (a resumed handshake's responder from
// the initiator's resumption message 1). It is a fact, never an attacker's
// word, so a caller may act on it, for example by connecting again with
// another list. The other side gets [ErrPeerNoCommonProtocol] instead.
var ErrNoCommonProtocol = errors.New("securepeer: the peers have no application protocol in common")

// ErrPeerNoCommonProtocol is returned, wrapped, by Handshake when the peer
// aborted the handshake saying that the peers have no application protocol
// in common, where an honest peer says so: to a responder in place of
// message 3, or to an initiator that offered a session ticket. Aborts are
// not authenticated, so anyone on the path can forge one: it does not
// match [ErrNoCommonProtocol], and a caller must not change what it
// offers because of it (PROTOCOL.md, "Handshake messages and aborts").
var ErrPeerNoCommonProtocol = errors.New("securepeer: the peer says the peers have no application protocol in common (unauthenticated)")

// ErrOwnKey is returned, wrapped, by the Handshake of a side whose
// [Config.Verify] is nil when the peer presents this side's own identity.
// A Verify that should accept it, for a user's own machines sharing one
// identity, can compare the key with [Identity.PublicKey].
var ErrOwnKey = errors.New("securepeer: the peer presents this side's own identity")

// errAuth is the one error for every failed authentication of the peer's
// data: a record or handshake message that does not decrypt. It does not say
// which check failed (PROTOCOL.md, "Errors").
var errAuth = errors.New("securepeer: message authentication failed; the connection was tampered with or corrupted")

// ErrAborted is returned, wrapped, by Read when the peer ended the
// connection with [Conn.Abort]: it gave up before the end of its stream, so
// what was read may be incomplete.
var ErrAborted = errors.New("securepeer: the peer aborted the stream; data may be missing")

// ErrLegacyPeer is returned, wrapped, by Handshake when the peer speaks the
// Node secure-peer 0.2 protocol, which the legacy package implements.
var ErrLegacyPeer = errors.New("securepeer: the peer speaks the legacy secure-peer (Node) protocol, not securepeer")

// ErrIdentityFileMode is returned, wrapped, by [LoadIdentity] for an
// identity file that others than its owner may read or write.
var ErrIdentityFileMode = errors.New("securepeer: identity file is accessible by others")

// ErrNotEd25519 is returned, wrapped, when a private key that is to be an
// identity is not an Ed25519 key.
var ErrNotEd25519 = errors.New("securepeer: an identity must be an Ed25519 key")

// ErrPassphraseNeeded is returned, wrapped, by [ParseIdentity] and
// [LoadIdentity] for a private key protected by a passphrase; see
// [ParseIdentityWithPassphrase].
var ErrPassphraseNeeded = errors.New("securepeer: the private key is protected by a passphrase")

// ErrWrongPassphrase is returned, wrapped, by [ParseIdentityWithPassphrase]
// when the passphrase does not decrypt the key.
var ErrWrongPassphrase = errors.New("securepeer: the passphrase does not decrypt the private key")
