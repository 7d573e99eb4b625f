// Package securepeer provides peer-to-peer encrypted, mutually authenticated
// streams built on public keys alone: no certificates, no authorities, and
// either side may start the connection.
//
// Each peer has an [Identity], an Ed25519 key pair that is also an OpenSSH
// key. A [Conn] wraps any [net.Conn] the way crypto/tls does: [Client] and
// [Server] fix the roles, [NewConn] lets the protocol settle them, and [Dial]
// and [Listen] are the usual shortcuts. [Config.Verify] decides which peer
// keys to accept, the way the identify callback of the Node module
// secure-peer did.
//
//	id, _ := securepeer.GenerateIdentity()
//	conn, err := securepeer.Dial(ctx, "tcp", "example.net:5000", &securepeer.Config{
//		Identity: id,
//		Verify: func(ctx context.Context, peer securepeer.PublicKey) error {
//			if !peer.Equal(serverKey) {
//				return errors.New("not the server I know")
//			}
//			return nil
//		},
//	})
//
// # Security properties
//
// The handshake is Noise XX (through github.com/flynn/noise) with an
// ML-KEM-768 key exchange mixed into the session keys, so a session recorded
// today stays confidential even against a future quantum computer, as long
// as either X25519 or ML-KEM-768 holds. Both peers authenticate each other's
// Ed25519 key; neither key nor its fingerprint ever crosses the wire in
// clear, and the initiator reveals its identity only to a responder its
// Verify accepted. Sessions have forward secrecy; recorded handshakes and
// sessions cannot be replayed; the transport cipher is chosen fairly from
// both peers' authenticated preference lists; records are AEAD-sealed with
// implicit sequence numbers, so any tampering, reordering or truncation ends
// the connection with an error instead of delivering wrong data. PROTOCOL.md
// in the repository specifies the protocol and argues each decision.
//
// # Session resumption
//
// A responder gives each initiator that asks a ticket, with which the
// initiator can come back in one round trip at a fraction of a full
// handshake's cost: set [Config.ClientSessionCache] on the initiator
// ([NewLRUClientSessionCache]). Resumed sessions keep mutual authentication
// (Verify runs on both sides), forward secrecy, the post-quantum protection
// of the session they resume, identity hiding and replay protection;
// [ConnectionState.DidResume] tells them apart. [Config.SessionTicketsDisabled]
// turns resumption off, and [Config.SetSessionTicketKeys] shares ticket keys
// between servers.
//
// # Limits
//
// securepeer does not hide record sizes or timing (traffic analysis), cannot
// prevent a network attacker from cutting connections, and cannot help once
// an identity's private key is stolen. Peer authentication is classical
// (Ed25519 and X25519): the hybrid protects recorded traffic, not against an
// attacker with a quantum computer during the handshake. Go cannot guarantee
// that secrets are erased from memory; the package clears what it can.
//
// # Key management
//
// Identities are stored as OpenSSH private keys (mode 0600), the format of
// ssh-keygen -t ed25519: unencrypted ([Identity.MarshalOpenSSH]) or encrypted
// with a passphrase ([Identity.MarshalOpenSSHWithPassphrase],
// [LoadIdentityWithPassphrase]). [LoadIdentity] refuses a file that others
// than its owner may read or write, and reports an encrypted one with
// [ErrPassphraseNeeded]. A private key may also stay outside the process, in
// ssh-agent, a hardware token or a KMS ([NewIdentityFromSSHSigner],
// [NewIdentityFromSigner]). Public keys are written
// as authorized_keys lines ("ssh-ed25519 AAAA..."), and [PublicKey.Fingerprint]
// matches ssh-keygen -l. The knownhosts package keeps known_hosts and
// authorized_keys files for Verify. An identity whose key stays in
// ssh-agent or a token ([NewIdentityFromSigner]) has the signer sign anew
// each hour, so removing the key revokes it within 90 minutes.
//
// # Compatibility
//
// The wire protocol has a version byte; this package speaks version 1. The
// legacy package speaks the protocol of the Node module secure-peer 0.2,
// which is insecure and meant only for migrating away from it.
package securepeer
