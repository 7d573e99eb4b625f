package securepeer

import (
	"crypto/ecdh"
	"crypto/subtle"
	"io"

	"github.com/flynn/noise"
)

// x25519 is a noise.DHFunc backed by crypto/ecdh. It belongs to one
// handshake and remembers the private keys it generated (and the static key
// it was given), so that each DH costs one scalar multiplication: rebuilding
// an ecdh.PrivateKey from bytes, as a stateless DHFunc must, costs a second
// one to recompute the public key.
type x25519 struct {
	keys []*ecdh.PrivateKey
}

var _ noise.DHFunc = (*x25519)(nil)

func (d *x25519) GenerateKeypair(r io.Reader) (noise.DHKey, error) {
	var seed [32]byte
	defer clear(seed[:])
	if _, err := io.ReadFull(r, seed[:]); err != nil {
		return noise.DHKey{}, errorf("reading randomness: %w", err)
	}
	k, err := ecdh.X25519().NewPrivateKey(seed[:])
	if err != nil {
		return noise.DHKey{}, err
	}
	d.keys = append(d.keys, k)
	return noise.DHKey{Private: k.Bytes(), Public: k.PublicKey().Bytes()}, nil
}

// add registers a key made elsewhere (the identity's static key).
func (d *x25519) add(k *ecdh.PrivateKey) noise.DHKey {
	d.keys = append(d.keys, k)
	return noise.DHKey{Private: k.Bytes(), Public: k.PublicKey().Bytes()}
}

// DH computes X25519(priv, pub). crypto/ecdh rejects an all-zero result, so
// a low-order peer key fails the handshake.
func (d *x25519) DH(priv, pub []byte) ([]byte, error) {
	var k *ecdh.PrivateKey
	for _, c := range d.keys {
		if subtle.ConstantTimeCompare(c.Bytes(), priv) == 1 {
			k = c
		}
	}
	if k == nil {
		var err error
		if k, err = ecdh.X25519().NewPrivateKey(priv); err != nil {
			return nil, err
		}
	}
	p, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	shared, err := k.ECDH(p)
	if err != nil {
		return nil, errLowOrder
	}
	return shared, nil
}

// errLowOrder is the error of a DH with a low-order peer key, whose result is
// all zeros: only a broken or hostile peer sends one.
var errLowOrder = newError("handshake failed: the peer's X25519 key is a low-order point; the peer is broken or hostile")

func (d *x25519) DHLen() int     { return 32 }
func (d *x25519) DHName() string { return "25519" }
