package p2p

import (
	"crypto/ed25519"
	"fmt"
	"slices"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/crypto/ssh"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/pkgerr"
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

// hostKey returns id's private key as the libp2p host key. go-libp2p takes
// its host key as a value (it signs peer records with it, and libp2psec
// builds its securepeer identity from the key's bytes), so an identity
// whose private key is behind a signer, such as ssh-agent, cannot be
// used: that is ErrSignerIdentity. The key leaves the Identity only
// through its OpenSSH encoding, which is what MarshalOpenSSH gives.
func hostKey(id *securepeer.Identity) (crypto.PrivKey, error) {
	if id == nil {
		return nil, pkgerr.Errorf("p2p", "no identity")
	}
	pemBytes, err := id.MarshalOpenSSH("")
	if err != nil {
		return nil, fmt.Errorf("%w (%w)", ErrSignerIdentity, err)
	}
	defer clear(pemBytes)
	raw, err := ssh.ParseRawPrivateKey(pemBytes)
	if err != nil {
		return nil, pkgerr.Errorf("p2p", "reading the identity's private key: %w", err)
	}
	priv, ok := raw.(*ed25519.PrivateKey)
	if !ok {
		return nil, pkgerr.Errorf("p2p", "the identity's private key is not Ed25519: %w", securepeer.ErrNotEd25519)
	}
	// UnmarshalEd25519PrivateKey keeps the slice it is given: give it a
	// copy, and clear the parser's.
	key, err := crypto.UnmarshalEd25519PrivateKey(slices.Clone(*priv))
	clear(*priv)
	if err != nil {
		return nil, pkgerr.Errorf("p2p", "%w", err)
	}
	want := id.PublicKey()
	got, err := key.GetPublic().Raw()
	if err != nil || !ed25519.PublicKey(got).Equal(want.Ed25519()) {
		return nil, pkgerr.Errorf("p2p", "the identity's private key does not match its public key")
	}
	return key, nil
}
