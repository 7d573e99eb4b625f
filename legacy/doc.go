// Package legacy speaks the wire protocol of the Node.js module secure-peer
// 0.2.1, so that a Go program can talk to existing Node deployments while
// they are migrated, one side at a time, to securepeer's native protocol.
//
// THE LEGACY PROTOCOL IS INSECURE. Use this package only to migrate off it,
// only with peers that cannot yet speak the native protocol, and never for
// anything new. It is never used unless asked for by name: the securepeer
// package does not import it, and it does not import securepeer. Its
// weaknesses are listed below; none of them can be fixed without breaking
// compatibility, which is the whole reason the package exists.
//
// The wire format, the cipher vote and every error case follow the module as
// it runs on Node 20, as WIRE.md in this directory describes it; the tests
// check them against sessions captured from the module (testdata/) and live
// against the npm package itself. Comments cite WIRE.md sections as §N.
//
// # Use
//
// Both sides are the same: each sends its header as soon as the connection
// opens. Wrap any net.Conn:
//
//	keys, err := legacy.LoadKeys("keys.json") // rsa-json: {"private": PEM, "public": PEM}
//	...
//	c := legacy.NewConn(tcpConn, &legacy.Config{
//		Keys:    keys,
//		Ciphers: []string{"AES-256-CBC", "RC4"},
//		Verify: func(ctx context.Context, pub *rsa.PublicKey) error {
//			if !pub.Equal(pinned) {
//				return errors.New("unknown key")
//			}
//			return nil
//		},
//	})
//	defer c.Close()
//
// [Conn.Handshake] returns once the peer's key passed Verify. Read returns
// [io.EOF] only after the peer's end frame, which [Conn.CloseWrite] and
// [Conn.Close] send. The protocol has no way to say "rejected": a Node peer
// that rejects this side's key just closes the connection, which Read
// reports as [ErrRejected].
//
// # Weaknesses of the legacy protocol
//
// Identities in clear. Each header carries the sender's RSA public key in
// plain text, so anyone on the path learns who talks to whom. The native
// protocol runs Noise XX: both identities travel encrypted, and the
// initiator's is hidden even from an active attacker.
//
// Self-signed, replayable handshake. The header signature covers only the
// sender's own token, key and Diffie-Hellman value, never the peer's token.
// It proves possession of the key, not that the header is fresh: a recorded
// header can be replayed to any peer, forever, and the peer sees that
// identity connect (it cannot read or send data without the DH private
// key). Only [Config.Verify] decides whether a key is trusted, and an
// attacker in the middle can replace both headers with its own. In the
// native protocol every handshake message is bound to both fresh ephemeral
// keys through the Noise transcript hash, so a replay never completes.
//
// Forceable cipher choice. The cipher is voted on in the open, among names
// both lists share: a peer that lists only RC4 (the module's default) gets
// RC4, and an attacker who substitutes its own header picks whatever it
// likes. The module's readme says the peer with the greater token picks; in
// fact the vote is symmetric and ties go to the name that sorts first
// ("RC4" before "aes-..." because capitals sort first). The native protocol
// offers only AEAD ciphers, and its choice is made inside the authenticated
// handshake, so no one in the middle can change it.
//
// Fixed key and IV for every frame. Every frame, in both directions, is
// encrypted with a fresh crypto.createCipher from the same password, so with
// the same key and IV. With RC4 each frame restarts the same keystream: the
// XOR of any two ciphertexts is the XOR of their plaintexts (a two-time
// pad). With AES-CBC, equal plaintexts (and equal leading blocks) give equal
// ciphertexts. The key comes from EVP_BytesToKey: one round of MD5, no salt.
// The native protocol derives separate keys per direction with HKDF and
// gives every record a unique nonce under an AEAD.
//
// RSA signatures instead of a MAC. Each frame is authenticated by an RSA
// PKCS #1 v1.5 signature over its sequence number, the session token and its
// ciphertext. That costs a private-key operation per frame (about a
// millisecond for 2048 bits), and the signatures are transferable evidence:
// a recording proves to anyone that the key holder sent those frames. The
// native protocol authenticates records with AEAD tags: cheap, and deniable.
//
// No forward secrecy in practice. The module makes one modp5 (1536-bit)
// Diffie-Hellman key per secure() factory and reuses it for every
// connection the factory serves, for the life of the process, so whoever
// obtains it decrypts every recorded session with that process, including
// those with this package, which uses a fresh key per connection. 1536-bit
// MODP is below current recommendations, and this package's modular
// exponentiation (math/big) is not constant-time. The native protocol uses
// X25519 plus ML-KEM-768, ephemeral per connection, and rotates keys.
//
// Weak end of stream. The end frame is a signature over the next sequence
// number and the token; with RC4, an empty data frame carries exactly that
// signature, so an attacker could turn it into an early end. This package
// never sends empty frames. A peer that sees its peer's TCP connection close
// before the end frame cannot tell a cut from a crash.
//
// No limits. The module accepts lines of any length, and crashes on several
// malformed inputs (a bad CBC padding, a non-JSON header payload, a
// Diffie-Hellman value out of range). This package bounds everything (see
// Limits) and turns each such input into an error that closes the
// connection.
//
// # Limits
//
// A header line may be at most [MaxHeaderLine] (16 KiB). A received frame
// may carry at most [Config.MaxFrameSize] bytes of plaintext,
// [DefaultMaxFrameSize] (1 MiB) unless set, at most [MaxFrameSizeLimit]
// (64 MiB); the Node module sends one frame per write() chunk, so a Node
// application writing larger Buffers needs a larger limit. This side sends
// at most [SendChunkSize] (64 KiB) per frame. RSA keys must have
// [MinKeyBits] to [MaxKeyBits] bits (1024 to 8192); [GenerateKeys] makes
// keys of at least 2048 bits. Key files are at most 64 KiB. Sequence
// numbers stop at 2^53-1, where JavaScript numbers stop counting.
//
// # Compatibility
//
// Supported ciphers: aes-128-cbc, aes-192-cbc, aes-256-cbc (also aes128,
// aes192, aes256) and rc4, in any capitalisation; a name is sent as spelled
// in [Config.Ciphers] and must be spelled as on the Node side to count in
// the vote. The default list, [DefaultCiphers], is AES-256-CBC then RC4,
// which gives AES-256-CBC with a peer that lists it and RC4 with a peer left
// at the module's default.
//
// On the Node side: crypto.createCipher exists up to Node 21, and from Node
// 17 on OpenSSL 3 provides RC4 only with node --openssl-legacy-provider;
// without it a Node peer that negotiated RC4 crashes on its first frame.
// The module's own example keys are 1008 bits, which Go refuses; generate
// new ones (for example with [GenerateKeys]) if a deployment still uses them.
//
// Where the module is lax this package is strict, without effect on what a
// real module sends: tokens must be 64 bytes of base64, base64 must be
// canonical, frames must be exactly as JSON.stringify writes them (a
// trailing "\r" is allowed, as the module splits on \r?\n), a header that
// reflects this side's own token is refused, and bytes after the last
// newline when the connection ends are an error rather than a last frame.
package legacy
