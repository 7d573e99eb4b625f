package securepeer

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/sys/cpu"
)

// A Cipher is an AEAD that protects the transport records of a connection.
// Its value is its identifier on the wire.
type Cipher uint16

// The supported ciphers.
const (
	AES128GCM        Cipher = 0x0001 // AES-128 in GCM mode
	AES256GCM        Cipher = 0x0002 // AES-256 in GCM mode
	ChaCha20Poly1305 Cipher = 0x0003 // ChaCha20-Poly1305 (RFC 8439)
)

// String returns the cipher's name, such as "AES-256-GCM".
func (c Cipher) String() string {
	switch c {
	case AES128GCM:
		return "AES-128-GCM"
	case AES256GCM:
		return "AES-256-GCM"
	case ChaCha20Poly1305:
		return "ChaCha20-Poly1305"
	}
	return fmt.Sprintf("Cipher(0x%04x)", uint16(c))
}

// keySize returns the cipher's key size, or 0 for an unknown cipher.
func (c Cipher) keySize() int {
	switch c {
	case AES128GCM:
		return 16
	case AES256GCM, ChaCha20Poly1305:
		return 32
	}
	return 0
}

func (c Cipher) newAEAD(key []byte) (cipher.AEAD, error) {
	switch c {
	case AES128GCM, AES256GCM:
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		return cipher.NewGCM(block)
	case ChaCha20Poly1305:
		return chacha20poly1305.New(key)
	}
	return nil, errorf("unsupported cipher %v", c)
}

// tieOrder breaks ties in the cipher choice: the stronger cipher first.
var tieOrder = []Cipher{AES256GCM, ChaCha20Poly1305, AES128GCM}

var defaultCiphers = func() []Cipher {
	hasAES := (cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ) || cpu.ARM64.HasAES || cpu.S390X.HasAESGCM
	if hasAES {
		return []Cipher{AES256GCM, ChaCha20Poly1305, AES128GCM}
	}
	return []Cipher{ChaCha20Poly1305, AES256GCM, AES128GCM}
}()

// chooseCipher picks the transport cipher from the initiator's and the
// responder's preference lists (PROTOCOL.md, "Cipher choice"): among the
// ciphers both list and this implementation supports, the one with the
// lowest sum of its two positions; ties go to the earlier in tieOrder. The
// result depends only on the two lists, never on the roles or on random
// values, so both sides compute the same cipher and neither can steer it
// beyond what its own list says.
func chooseCipher(initiator, responder []Cipher) (Cipher, bool) {
	best, bestScore := Cipher(0), -1
	for _, c := range tieOrder {
		i, r := indexOf(initiator, c), indexOf(responder, c)
		if i < 0 || r < 0 {
			continue
		}
		if score := i + r; bestScore < 0 || score < bestScore {
			best, bestScore = c, score
		}
	}
	return best, bestScore >= 0
}

func indexOf(list []Cipher, c Cipher) int {
	for i, x := range list {
		if x == c {
			return i
		}
	}
	return -1
}
