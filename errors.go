package securepeer

import "errors"

// ErrRejected is returned, wrapped, by the Handshake or Read of a connection
// whose peer refused this side's key in its [Config.Verify].
var ErrRejected = errors.New("securepeer: the peer rejected this side's key")

// ErrNoCommonCipher is returned, wrapped, by Handshake when the two peers'
// [Config.Ciphers] lists have no cipher in common.
var ErrNoCommonCipher = errors.New("securepeer: the peers have no cipher in common")

// ErrNoCommonProtocol is returned, wrapped, by Handshake when both peers
// set [Config.NextProtos] and the lists have no protocol in common.
var ErrNoCommonProtocol = errors.New("securepeer: the peers have no application protocol in common")

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
