package p2p

import (
	"crypto/rand"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/transport/quicreuse"
	"github.com/quic-go/quic-go"
	"go.uber.org/fx"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/pkgerr"
	"github.com/securepeer/securepeer/libp2psec"
)

// PeerID returns the libp2p peer ID of a securepeer key: the identity
// multihash of the protobuf-encoded Ed25519 public key, as libp2p derives
// any Ed25519 peer ID. The mapping is one to one, so a peer ID names a key
// exactly as the key itself does.
func PeerID(key securepeer.PublicKey) (peer.ID, error) {
	if key.IsZero() {
		return "", pkgerr.Errorf("p2p", "no peer key")
	}
	pub, err := crypto.UnmarshalEd25519PublicKey(key.Ed25519())
	if err != nil {
		return "", pkgerr.Errorf("p2p", "%w", err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		return "", pkgerr.Errorf("p2p", "%w", err)
	}
	return id, nil
}

// KeyOf returns the securepeer key that a peer ID names. Only Ed25519
// peer IDs name a key, since only they embed it.
func KeyOf(id peer.ID) (securepeer.PublicKey, error) {
	pub, err := id.ExtractPublicKey()
	if err != nil {
		return securepeer.PublicKey{}, pkgerr.Errorf("p2p", "peer ID %s does not embed an Ed25519 key: %w", id, err)
	}
	if _, ok := pub.(*crypto.Ed25519PublicKey); !ok {
		return securepeer.PublicKey{}, pkgerr.Errorf("p2p", "peer ID %s is not an Ed25519 key: %w", id, securepeer.ErrNotEd25519)
	}
	raw, err := pub.Raw()
	if err != nil {
		return securepeer.PublicKey{}, pkgerr.Errorf("p2p", "%w", err)
	}
	return securepeer.NewPublicKey(raw)
}

// hostOptions returns the libp2p options that make id the host's key. The
// host key signs through id.Signer(), so the private key never leaves the
// Identity, whether it is in this process or behind ssh-agent. go-libp2p
// reads a host key's bytes in one place, the keys of its QUIC connection
// manager, which every host builds (quicReuse); the security transport is
// given the Identity itself (libp2psec.Options.Identity).
func hostOptions(id *securepeer.Identity) ([]libp2p.Option, error) {
	if id == nil {
		return nil, pkgerr.Errorf("p2p", "no identity")
	}
	key, err := libp2psec.SignerKey(id.Signer())
	if err != nil {
		return nil, pkgerr.Errorf("p2p", "%w", err)
	}
	return []libp2p.Option{libp2p.Identity(key), libp2p.QUICReuse(quicReuse)}, nil
}

// quicReuse makes the QUIC connection manager that go-libp2p builds for
// every host, though this engine listens and dials on TCP only (PROTOCOL.md,
// "TCP only"), so that it never carries a connection. go-libp2p would
// derive its stateless-reset and token keys from the host key's bytes,
// which a key behind a signer does not give: random keys serve, for as long
// as the process runs.
func quicReuse(lc fx.Lifecycle) (*quicreuse.ConnManager, error) {
	var reset quic.StatelessResetKey
	var token quic.TokenGeneratorKey
	rand.Read(reset[:])
	rand.Read(token[:])
	cm, err := quicreuse.NewConnManager(reset, token)
	if err != nil {
		return nil, pkgerr.Errorf("p2p", "%w", err)
	}
	lc.Append(fx.StopHook(cm.Close))
	return cm, nil
}
