// Package p2p reaches peers by their securepeer keys wherever they are:
// directly when one side can reach the other, through a circuit relay
// when neither can, and directly again by hole punching where the NATs in
// between allow it. It runs on go-libp2p (circuit relay v2, DCUtR hole
// punching over TCP, yamux), with securepeer as the only security
// protocol, through [github.com/securepeer/securepeer/libp2psec].
//
// It is a module of its own, so that the securepeer library never
// requires go-libp2p.
//
//	node, err := p2p.Start(ctx, p2p.Config{Identity: id, Relays: []string{relayAddr}})
//	ln, err := node.Listen("chat/1")   // and hold a reservation on the relay
//	s, err := node.Dial(ctx, peerKey, "chat/1")
//	fmt.Println(s.Path())              // "direct, /ip4/…" or "relayed through SHA256:…"
//
// A relay is [RunRelay]; its [Relay.Addrs] are what [Config.Relays]
// takes.
//
// # Keys and peer IDs
//
// A securepeer identity is an Ed25519 key, and so is a libp2p peer ID
// ([PeerID], [KeyOf]): a peer is dialed by the key its users pin, and the
// securepeer handshake checks that key inside the handshake, before the
// dialer's own identity is sent. A host with another key, at an address or
// behind a relay, is refused ([ErrWrongKey]). An identity held by
// ssh-agent or another signer runs a node as one in memory does: the
// host key signs through it.
//
// # Paths
//
// [Node.Dial] uses a connection already open to the peer, or dials the
// peer's known direct addresses and a circuit through each relay at once.
// A relayed connection starts hole punching (go-libp2p's DCUtR): the peers
// exchange the addresses their relays saw and dial each other at the same
// moment. Dial waits up to [Config.DirectWait] for that to give a direct
// connection before it opens its stream; streams opened later use the
// direct connection, and [EventDirect] says when it appears. A stream
// stays on the connection it was opened on: it does not move from a
// relayed connection to a direct one.
//
// # What a relay sees
//
// A relay carries securepeer records end to end: it sees ciphertext, the
// two peers' keys (as peer IDs, in the circuit request), when and how much
// they talk, and their addresses. A reservation tells the relay the
// listener's key. A relay cannot stand in for either peer: the handshake
// through it checks the peer's key. A relay's limits cut circuits; the
// streams on a cut circuit say why ([*CircuitError]).
//
// # Errors
//
// Errors are sentences that can be matched: [*DialError] for a failed
// dial, with a [*RelayError] per relay and an [*AddrError] per direct
// address, and the sentinels ErrNoPath, ErrNoRelay, ErrNoReservation,
// ErrWrongKey, ErrNotSecurepeer and the others this package declares.
//
// PROTOCOL.md in this directory says what the engine negotiates, with
// whom, and why.
package p2p
