package legacy

// This file holds the modp5 Diffie-Hellman exchange of WIRE.md §5.

import (
	"crypto/subtle"
	"encoding/base64"
	"io"
	"math/big"
)

// modp5P is the 1536-bit MODP group prime of RFC 3526, section 2, which
// crypto.getDiffieHellman('modp5') uses with generator 2.
var modp5P, _ = new(big.Int).SetString(
	"FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1"+
		"29024E088A67CC74020BBEA63B139B22514A08798E3404DD"+
		"EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245"+
		"E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"+
		"EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3D"+
		"C2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"+
		"83655D23DCA3AD961C62F356208552BB9ED529077096966D"+
		"670C354E4ABC9804F1746C08CA237327FFFFFFFFFFFFFFFF", 16)

var (
	modp5G         = big.NewInt(2)
	modp5PMinusOne = new(big.Int).Sub(modp5P, big.NewInt(1))
	bigOne         = big.NewInt(1)
)

// modp5Len is the size of the prime, and of every shared secret, in bytes.
const modp5Len = 192

// dhKey is one side's Diffie-Hellman key pair.
type dhKey struct {
	priv *big.Int
	pub  *big.Int
}

// generateDH reads a private exponent from r: 192 bytes, big-endian,
// retried until it lies in [2, p-2]. Reading a fixed number of bytes keeps
// handshakes reproducible from [Config.Rand].
func generateDH(r io.Reader) (*dhKey, error) {
	buf := make([]byte, modp5Len)
	defer clear(buf)
	for range 100 {
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, errorf("reading randomness: %w", err)
		}
		x := new(big.Int).SetBytes(buf)
		if x.Cmp(bigOne) > 0 && x.Cmp(modp5PMinusOne) < 0 {
			return &dhKey{priv: x, pub: new(big.Int).Exp(modp5G, x, modp5P)}, nil
		}
	}
	return nil, newError("the random source keeps returning out-of-range values")
}

// publicBase64 is the public value as dh.getPublicKey('base64') writes it:
// minimal big-endian, without leading zero bytes.
func (k *dhKey) publicBase64() string {
	return base64.StdEncoding.EncodeToString(k.pub.Bytes())
}

// wipe zeroes the private exponent, as far as Go allows: math/big may have
// left copies behind, and the garbage collector may have moved it.
func (k *dhKey) wipe() {
	clear(k.priv.Bits())
	k.priv.SetInt64(0)
}

var errDHRange = newError("the peer's Diffie-Hellman value is out of range")

// parseDHPublic decodes the peer's dh.public: base64 of at most 192 bytes
// (leading zero bytes are allowed, as Node allows them), with 1 < y < p-1.
// Node's computeSecret throws on values outside that range.
func parseDHPublic(s string) (*big.Int, error) {
	if len(s) > base64.StdEncoding.EncodedLen(modp5Len) {
		return nil, errDHRange
	}
	b, err := decodeBase64(s)
	if err != nil {
		return nil, errHeader("dh.public is not base64")
	}
	if len(b) > modp5Len {
		return nil, errDHRange
	}
	y := new(big.Int).SetBytes(b)
	if y.Cmp(bigOne) <= 0 || y.Cmp(modp5PMinusOne) >= 0 {
		return nil, errDHRange
	}
	return y, nil
}

// sharedPassword returns the createCipher password of WIRE.md §5: the base64
// text of y^x mod p, left-padded to 192 bytes as Node 20 does.
func (k *dhKey) sharedPassword(y *big.Int) ([]byte, error) {
	s := new(big.Int).Exp(y, k.priv, modp5P)
	defer clear(s.Bits())
	secret := make([]byte, modp5Len)
	defer clear(secret)
	s.FillBytes(secret)
	// With 1 < y < p-1 the result has order q or 2q and cannot be 0, 1 or
	// p-1 unless x is a multiple of q; check anyway, in constant time.
	var one, minusOne [modp5Len]byte
	one[modp5Len-1] = 1
	modp5PMinusOne.FillBytes(minusOne[:])
	if subtle.ConstantTimeCompare(secret, one[:]) == 1 || subtle.ConstantTimeCompare(secret, minusOne[:]) == 1 {
		return nil, errDHRange
	}
	password := make([]byte, base64.StdEncoding.EncodedLen(modp5Len))
	base64.StdEncoding.Encode(password, secret)
	return password, nil
}
