package wire

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
)

// Proof of work under load (PROTOCOL.md, "Work under load"): a responder
// whose handshake CPU is oversubscribed answers a full message 1 that
// lists WorkSignal with a demand for work, 00 00 06 then the number of
// bits and a seed, instead of message 2; the initiator answers with a
// handshake message of WorkNonceSize bytes, a nonce whose work hash has
// that many leading zero bits.

// WorkSignal is not a cipher: an initiator that answers a demand for work
// lists it after its ciphers (and after TicketsSignal, if it asks for a
// ticket), where it moves no cipher's position.
const WorkSignal = 0xFF02

// DemandWork is not an abort: a responder sends it, in place of message 2,
// to an initiator that listed WorkSignal, and follows it with
// WorkDemandSize bytes: the number of bits, then the seed.
const DemandWork = 6

const (
	// WorkSeedSize is the size of the responder's random seed in a demand.
	WorkSeedSize = 16
	// WorkDemandSize is what follows 00 00 06: one byte of bits, the seed.
	WorkDemandSize = 1 + WorkSeedSize
	// WorkNonceSize is the size of the initiator's answer, a handshake
	// message that holds the nonce, big-endian.
	WorkNonceSize = 8
	// MaxWorkBits is the most work an initiator does: 2^24 hashes, a few
	// seconds of one core. A demand for more is malformed, so that nobody
	// on the path can make an initiator compute for long.
	MaxWorkBits = 24
)

// workLabel starts every work hash, so that no other hash of the
// protocol can serve as one.
const workLabel = "securepeer v1 work\x00"

// workInputSize is the size of what a work hash hashes.
const workInputSize = len(workLabel) + WorkSeedSize + EphemeralKeySize + WorkNonceSize

// AppendWorkDemand appends a demand for bits of work with seed to b.
func AppendWorkDemand(b []byte, bits byte, seed *[WorkSeedSize]byte) []byte {
	b = AppendAbort(b, DemandWork)
	b = append(b, bits)
	return append(b, seed[:]...)
}

// ParseWorkDemand parses the WorkDemandSize bytes that follow 00 00 06. ok
// is false for a demand of no bits or of more than MaxWorkBits.
func ParseWorkDemand(b []byte) (bits int, seed [WorkSeedSize]byte, ok bool) {
	if len(b) != WorkDemandSize || b[0] == 0 || b[0] > MaxWorkBits {
		return 0, seed, false
	}
	copy(seed[:], b[1:])
	return int(b[0]), seed, true
}

// WorkAnswerLen returns the length of the initiator's answer to a demand,
// given its first bytes: a handshake message of WorkNonceSize bytes, or an
// abort and its reason. It is what a responder reads, as it reads a first
// flight, before it parses the answer.
func WorkAnswerLen(b []byte) int {
	if len(b) >= 2 && b[0] == 0 && b[1] == 0 {
		return 3
	}
	return 2 + WorkNonceSize
}

// WorkHash is SHA-256(workLabel || seed || ephemeral || nonce), the nonce
// as 8 bytes big-endian; ephemeral is the 32-byte ephemeral key of the
// initiator's message 1.
func WorkHash(seed *[WorkSeedSize]byte, ephemeral []byte, nonce uint64) [32]byte {
	var in [workInputSize]byte
	fillWorkInput(&in, seed, ephemeral)
	binary.BigEndian.PutUint64(in[workInputSize-WorkNonceSize:], nonce)
	return sha256.Sum256(in[:])
}

func fillWorkInput(in *[workInputSize]byte, seed *[WorkSeedSize]byte, ephemeral []byte) {
	n := copy(in[:], workLabel)
	n += copy(in[n:], seed[:])
	copy(in[n:n+EphemeralKeySize], ephemeral)
}

// leadingZeros counts the leading zero bits of h, up to 64.
func leadingZeros(h *[32]byte) int {
	return bits.LeadingZeros64(binary.BigEndian.Uint64(h[:8]))
}

// CheckWork reports whether nonce proves bits of work for seed and the
// initiator's ephemeral key: whether its work hash starts with bits zero
// bits. It costs one hash.
func CheckWork(bits int, seed *[WorkSeedSize]byte, ephemeral []byte, nonce uint64) bool {
	h := WorkHash(seed, ephemeral, nonce)
	return leadingZeros(&h) >= bits
}

// SolveWork returns the least nonce that proves bits of work for seed and
// ephemeral, trying nonces from zero up: 2^bits hashes on average. It
// stops with ctx's cause if ctx ends first.
func SolveWork(ctx context.Context, bits int, seed *[WorkSeedSize]byte, ephemeral []byte) (uint64, error) {
	var in [workInputSize]byte
	fillWorkInput(&in, seed, ephemeral)
	for nonce := uint64(0); ; nonce++ {
		if nonce%(1<<12) == 0 && ctx.Err() != nil {
			return 0, context.Cause(ctx)
		}
		binary.BigEndian.PutUint64(in[workInputSize-WorkNonceSize:], nonce)
		h := sha256.Sum256(in[:])
		if leadingZeros(&h) >= bits {
			return nonce, nil
		}
	}
}
