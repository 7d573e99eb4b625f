package libp2psec

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"

	lcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/crypto/pb"
)

// ErrKeyBehindSigner is what a [SignerKey]'s Raw returns: the private key
// is held by a signer, which signs but does not give its key out.
var ErrKeyBehindSigner = errors.New("libp2psec: the private key is held by a signer and cannot be read")

// SignerKey returns a go-libp2p private key that signs through signer, an
// Ed25519 key held elsewhere (ssh-agent, say; [securepeer.Identity.Signer]
// gives one), for a host whose key cannot be in the process. Its Raw
// returns [ErrKeyBehindSigner], so anything in go-libp2p that needs the
// key's bytes fails with that error: pair it with Options.Identity for the
// security transport, and keep the host free of the parts that read the
// key (go-libp2p's QUIC transport derives its keys from it).
func SignerKey(signer crypto.Signer) (lcrypto.PrivKey, error) {
	pub, ok := signer.Public().(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("libp2psec: the signer's key is a %T, not Ed25519", signer.Public())
	}
	lpub, err := lcrypto.UnmarshalEd25519PublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("libp2psec: %w", err)
	}
	return &signerKey{signer: signer, pub: lpub}, nil
}

// A signerKey is a go-libp2p Ed25519 private key whose signatures come
// from a crypto.Signer.
type signerKey struct {
	signer crypto.Signer
	pub    lcrypto.PubKey
}

// Sign signs msg with the signer, as Ed25519 signs: the message itself,
// not a hash of it.
func (k *signerKey) Sign(msg []byte) ([]byte, error) {
	sig, err := k.signer.Sign(rand.Reader, msg, crypto.Hash(0))
	if err != nil {
		return nil, fmt.Errorf("libp2psec: signing with the host key: %w", err)
	}
	return sig, nil
}

// GetPublic returns the key's public half.
func (k *signerKey) GetPublic() lcrypto.PubKey { return k.pub }

// Type is Ed25519.
func (k *signerKey) Type() pb.KeyType { return pb.KeyType_Ed25519 }

// Raw returns ErrKeyBehindSigner.
func (k *signerKey) Raw() ([]byte, error) { return nil, ErrKeyBehindSigner }

// Equals reports whether other is a private key with the same public
// half: a signer's key can be compared only by what it shows.
func (k *signerKey) Equals(other lcrypto.Key) bool {
	o, ok := other.(lcrypto.PrivKey)
	return ok && o.Type() == pb.KeyType_Ed25519 && k.pub.Equals(o.GetPublic())
}
