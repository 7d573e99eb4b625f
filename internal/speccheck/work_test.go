package speccheck

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"testing"
)

// TestWorkExample computes the example of PROTOCOL.md, "Work under load",
// from the section's words alone: SHA-256 of the 19-byte label, the seed,
// the ephemeral key and the nonce as 8 bytes big-endian; the answer is the
// least nonce whose hash begins with b zero bits.
func TestWorkExample(t *testing.T) {
	seed := make([]byte, 16)
	for i := range seed {
		seed[i] = byte(i)
	}
	e := make([]byte, 32)
	for i := range e {
		e[i] = byte(0x20 + i)
	}
	hash := func(nonce uint64) [32]byte {
		in := append([]byte("securepeer v1 work\x00"), seed...)
		in = append(in, e...)
		return sha256.Sum256(binary.BigEndian.AppendUint64(in, nonce))
	}
	zeros := func(h [32]byte) int {
		n := 0
		for _, b := range h {
			for bit := 7; bit >= 0; bit-- {
				if b>>bit&1 != 0 {
					return n
				}
				n++
			}
		}
		return n
	}
	for _, tc := range []struct {
		bits  int
		nonce uint64
		hash  string
	}{
		{8, 145, "00a2313311ee40b77f8c43b169cd26bda8d290863009ffe151a07ae5afc5caed"},
		{16, 22898, "00003585ce826f6d39f264c300248b48126d2be307ef8ac0d9c50d6421a2e677"},
	} {
		var nonce uint64
		for zeros(hash(nonce)) < tc.bits {
			nonce++
		}
		h := hash(nonce)
		if nonce != tc.nonce || hex.EncodeToString(h[:]) != tc.hash {
			t.Errorf("%d bits: nonce %d, hash %x; PROTOCOL.md says %d, %s", tc.bits, nonce, h, tc.nonce, tc.hash)
		}
	}
	if len("securepeer v1 work\x00") != 19 {
		t.Error("the label is not the 19 bytes PROTOCOL.md says")
	}
}
