package securepeer

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"filippo.io/edwards25519"
)

// x25519FixedBase returns the X25519 public key of the 32-byte private key
// seed (clamped, as X25519 uses it) by a fixed-base multiplication on the
// twisted Edwards form (filippo.io/edwards25519's precomputed table) and
// the birational map to the Montgomery u-coordinate. X25519(k, 9) is the
// u-coordinate of k·B, B the base point; k·B has prime order, so reducing
// the clamped k modulo the group order (SetBytesWithClamping) leaves it
// unchanged.
//
// It is the key generation BENCHMARKS.md weighs ("Speed at the floor"):
// about 2.5 times as fast as crypto/ecdh's ladder, but it saves nothing
// while the DH stays in crypto/ecdh, whose only way to a private key,
// ecdh.X25519().NewPrivateKey, runs the ladder for the public key anyway.
// So it is measured here and not used by the handshake.
func x25519FixedBase(seed []byte) ([]byte, error) {
	s, err := new(edwards25519.Scalar).SetBytesWithClamping(seed)
	if err != nil {
		return nil, err
	}
	return new(edwards25519.Point).ScalarBaseMult(s).BytesMontgomery(), nil
}

// TestX25519FixedBase checks x25519FixedBase against RFC 7748's test
// vectors and against crypto/ecdh's public key for random private keys,
// which crypto/ecdh can then use for the DH.
func TestX25519FixedBase(t *testing.T) {
	tests := []struct {
		name, private, public string
	}{
		// RFC 7748, section 6.1: Alice's and Bob's key pairs.
		{"rfc7748 alice", "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a", "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"},
		{"rfc7748 bob", "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb", "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"},
		// RFC 7748, section 5.2: X25519(9, 9), the first iteration.
		{"rfc7748 one iteration", "0900000000000000000000000000000000000000000000000000000000000000", "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"},
		// Clamping: the bits X25519 clears and sets make no difference.
		{"all ones", "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", ""},
		{"all zeros", "0000000000000000000000000000000000000000000000000000000000000000", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			priv, _ := hex.DecodeString(tt.private)
			checkFixedBase(t, priv, tt.public)
		})
	}
	t.Run("random", func(t *testing.T) {
		priv := make([]byte, 32)
		for range 2000 {
			rand.Read(priv)
			checkFixedBase(t, priv, "")
		}
	})
	if _, err := x25519FixedBase(make([]byte, 31)); err == nil {
		t.Error("x25519FixedBase accepted a 31-byte private key")
	}
}

// checkFixedBase checks that x25519FixedBase(priv) is crypto/ecdh's public
// key of priv and, if want is not empty, that it is want (hex).
func checkFixedBase(t *testing.T, priv []byte, want string) {
	t.Helper()
	got, err := x25519FixedBase(priv)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, k.PublicKey().Bytes()) {
		t.Fatalf("private key %x: fixed base gives %x, crypto/ecdh %x", priv, got, k.PublicKey().Bytes())
	}
	if want != "" && hex.EncodeToString(got) != want {
		t.Fatalf("private key %x: fixed base gives %x, want %s", priv, got, want)
	}
}
