package legacy

// This file holds cipher choice (WIRE.md §4) and the per-frame encryption of
// crypto.createCipher (WIRE.md §6).

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/md5"
	"crypto/rc4"
	"slices"
	"strings"
)

// DefaultCiphers is the preference list used when [Config.Ciphers] is nil.
// The Node module's default is ["RC4"]; listing AES-256-CBC first makes two
// peers that both know it use it, while a peer left at the Node default still
// gets RC4 (the vote is a tie only between names both sides list).
var DefaultCiphers = []string{"AES-256-CBC", "RC4"}

// cipherSpec is one OpenSSL cipher as crypto.createCipher uses it.
type cipherSpec struct {
	keyLen, ivLen int
	block         bool // AES-CBC with PKCS #7 padding; otherwise RC4
}

// cipherSpecs maps lower-case OpenSSL names, including the aliases OpenSSL
// accepts, to what they mean. OpenSSL looks names up case-insensitively, but
// the vote compares them case-sensitively: a name must be spelled the same
// on both sides to count.
var cipherSpecs = map[string]cipherSpec{
	"aes-128-cbc": {16, 16, true},
	"aes-192-cbc": {24, 16, true},
	"aes-256-cbc": {32, 16, true},
	"aes128":      {16, 16, true},
	"aes192":      {24, 16, true},
	"aes256":      {32, 16, true},
	"rc4":         {16, 0, false},
}

// SupportedCiphers returns the cipher names this package implements, in
// lower case; any capitalisation of them may be used in [Config.Ciphers].
func SupportedCiphers() []string {
	names := make([]string, 0, len(cipherSpecs))
	for n := range cipherSpecs {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func lookupCipher(name string) (cipherSpec, bool) {
	s, ok := cipherSpecs[strings.ToLower(name)]
	return s, ok
}

// pickCipher is lib/pick_cipher.js (WIRE.md §4): an ordinal vote. xs is the
// list of the peer whose token is greater. It returns "" if the lists share
// no name. Names are compared exactly; the sums are float64 in the same
// order as JavaScript adds them, so duplicates round the same way; ties go
// to the name that sorts first.
func pickCipher(xs, ys []string) string {
	fx := slices.DeleteFunc(slices.Clone(xs), func(x string) bool { return !slices.Contains(ys, x) })
	fy := slices.DeleteFunc(slices.Clone(ys), func(y string) bool { return !slices.Contains(xs, y) })
	votes := make(map[string]float64)
	for _, list := range [][]string{fx, fy} {
		for i, v := range list {
			votes[v] += float64(i+1) / float64(len(list))
		}
	}
	names := make([]string, 0, len(votes))
	for n := range votes {
		names = append(names, n)
	}
	// JavaScript's default sort compares UTF-16 code units. Every name in
	// the vote is also in this side's list, which holds only ASCII cipher
	// names, so byte order is the same order.
	slices.Sort(names)
	winner := ""
	for _, n := range names {
		if winner == "" || votes[n] < votes[winner] {
			winner = n
		}
	}
	return winner
}

// evpBytesToKey is OpenSSL's EVP_BytesToKey with MD5, no salt and one
// iteration, which crypto.createCipher(alg, password) uses:
// D1 = MD5(pw), Di = MD5(D(i-1) || pw), key || iv = D1 || D2 || ...
func evpBytesToKey(password []byte, keyLen, ivLen int) (key, iv []byte) {
	out := make([]byte, 0, keyLen+ivLen+md5.Size)
	var prev []byte
	for len(out) < keyLen+ivLen {
		h := md5.New()
		h.Write(prev)
		h.Write(password)
		prev = h.Sum(nil)
		out = append(out, prev...)
	}
	clear(prev)
	return out[:keyLen:keyLen], out[keyLen : keyLen+ivLen : keyLen+ivLen]
}

// suite is the negotiated cipher with its key and IV, the same for every
// frame in both directions (WIRE.md §6). It is immutable after newSuite.
type suite struct {
	name  string
	spec  cipherSpec
	key   []byte
	iv    []byte
	block cipher.Block // AES only
}

func newSuite(name string, password []byte) (*suite, error) {
	spec, ok := lookupCipher(name)
	if !ok {
		return nil, errorf("unsupported cipher %q", name)
	}
	s := &suite{name: name, spec: spec}
	s.key, s.iv = evpBytesToKey(password, spec.keyLen, spec.ivLen)
	var err error
	if spec.block {
		s.block, err = aes.NewCipher(s.key)
	} else {
		_, err = rc4.NewCipher(s.key)
	}
	if err != nil {
		return nil, errorf("%w", err)
	}
	return s, nil
}

// encrypt returns the ciphertext of one frame: a fresh createCipher on
// plaintext p.
func (s *suite) encrypt(p []byte) []byte {
	if !s.spec.block {
		c, _ := rc4.NewCipher(s.key) // the key size was checked by newSuite
		out := make([]byte, len(p))
		c.XORKeyStream(out, p)
		return out
	}
	n := aes.BlockSize - len(p)%aes.BlockSize
	out := make([]byte, len(p)+n)
	copy(out, p)
	for i := len(p); i < len(out); i++ {
		out[i] = byte(n)
	}
	cipher.NewCBCEncrypter(s.block, s.iv).CryptBlocks(out, out)
	return out
}

var errBadPadding = newError("the peer sent a signed frame that does not decrypt (bad CBC length or padding)")

// decrypt returns the plaintext of one frame's ciphertext. The frame's
// signature has already been checked, so a padding error here is a faulty
// peer, not an oracle for an attacker.
func (s *suite) decrypt(ct []byte) ([]byte, error) {
	if !s.spec.block {
		c, _ := rc4.NewCipher(s.key) // the key size was checked by newSuite
		c.XORKeyStream(ct, ct)
		return ct, nil
	}
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, errBadPadding
	}
	cipher.NewCBCDecrypter(s.block, s.iv).CryptBlocks(ct, ct)
	n := int(ct[len(ct)-1])
	if n == 0 || n > aes.BlockSize {
		return nil, errBadPadding
	}
	for _, b := range ct[len(ct)-n:] {
		if int(b) != n {
			return nil, errBadPadding
		}
	}
	return ct[:len(ct)-n], nil
}
