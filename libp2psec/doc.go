// Package libp2psec makes securepeer a go-libp2p security transport, next to
// or in place of Noise and TLS:
//
//	h, err := libp2p.New(libp2p.Security(libp2psec.ID, libp2psec.New))
//
// # What it adds over Noise
//
// Every connection runs securepeer's handshake (PROTOCOL.md in the parent
// module): Noise XX with an ML-KEM-768 hybrid, so a recorded session stays
// secret against an attacker who later breaks X25519; the initiator reveals
// its identity only after it has checked the responder's peer ID; and each
// record stream ends with an authenticated end of stream. Stream
// multiplexers are negotiated inside the handshake, at no extra round trip.
//
// # Post-quantum status
//
// A connection whose [network.ConnectionState].Security is [ID] always has
// session keys that include the ML-KEM-768 shared secret: the transport
// refuses to complete a handshake without the hybrid (a peer that sets
// securepeer's DisablePostQuantum cannot connect). [Conn.SecurepeerState]
// gives the full securepeer state of a connection.
//
// # Downgrade
//
// libp2p negotiates the security protocol with multistream-select, in clear
// and unauthenticated: between hosts that list securepeer and Noise, an
// attacker on the path can make them use Noise, without the hybrid. A host
// that lists securepeer alone cannot be downgraded; one that lists others
// too refuses the downgrade for the peers it knows to speak securepeer
// with the connection gater [RequireSecurepeer]. [SecurepeerState] reads the
// securepeer state of a host's connection, relayed ones included.
//
// # Identities
//
// securepeer identities are Ed25519 keys, so the host's libp2p key must be
// Ed25519 (go-libp2p's default); [New] refuses RSA, secp256k1 and ECDSA
// keys. The peer's securepeer key is its libp2p public key: the peer ID is
// derived from it as for any Ed25519 libp2p key.
//
// # Compatibility
//
// PROTOCOL.md in this directory states how libp2p's notions map onto the
// securepeer protocol (roles, peer IDs, multiplexer negotiation, the
// post-quantum requirement), so that other implementations can
// interoperate.
package libp2psec
