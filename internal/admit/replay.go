package admit

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"sync"
)

// The replay cache's size: replayBuckets buckets of replayWays 32-bit
// fingerprints, 4 MiB in all. The package comment ("Exact replays are
// refused") argues the figures.
const (
	replayBuckets = 1 << 16
	replayWays    = 16
)

// A replayBucket holds the fingerprints of the keys that fell in it, the
// most recently seen first; 0 marks an empty slot.
type replayBucket [replayWays]uint32

// A replayCache remembers the keys of recent first flights (Config.ReplayKey),
// as truncated keyed hashes in a fixed table, so that a repeated one is
// refused before the handshake computes anything. Nothing an attacker sends
// makes it grow: a key evicts the least recently seen of its bucket. The
// bucket and fingerprint come from HMAC-SHA256 under a random key of the
// listener's own, so an attacker can neither aim keys at the bucket of a
// flight it wants forgotten nor make an honest key look seen.
type replayCache struct {
	key    [32]byte  // of the HMAC; random
	fpMask uint32    // fingerprint bits kept: all 32 but in tests of the false-positive rate
	macs   sync.Pool // of hash.Hash: HMAC-SHA256 under key, reset

	mu      sync.Mutex
	buckets []replayBucket // a power of two of them
}

// newReplayCache returns an empty cache of n buckets, a power of two, under
// a random key.
func newReplayCache(n int) *replayCache {
	c := &replayCache{fpMask: ^uint32(0), buckets: make([]replayBucket, n)}
	rand.Read(c.key[:]) // never fails: crypto/rand aborts the program instead
	return c
}

// seen records k as seen and reports whether it had been already (or, with
// probability at most replayWays in 2^32, another key with its bucket and
// fingerprint). It does not retain k.
func (c *replayCache) seen(k []byte) bool {
	m, _ := c.macs.Get().(hash.Hash)
	if m == nil {
		m = hmac.New(sha256.New, c.key[:])
	}
	m.Write(k)
	h := m.Sum(nil)
	m.Reset()
	c.macs.Put(m)
	return c.seenHash(binary.LittleEndian.Uint64(h), binary.LittleEndian.Uint32(h[8:]))
}

// seenHash is seen for a key whose hash gives bucket b (its low bits) and
// fingerprint fp.
func (c *replayCache) seenHash(b uint64, fp uint32) bool {
	fp &= c.fpMask
	if fp == 0 {
		fp = 1 // 0 marks an empty slot
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	bk := &c.buckets[b&uint64(len(c.buckets)-1)]
	i := 0
	for i < replayWays-1 && bk[i] != fp {
		i++
	}
	found := bk[i] == fp
	// Move to the front, the most recently seen: a new key from the back,
	// evicting the least recently seen; a key seen again from where it
	// was, so that a flight replayed in a loop is never forgotten.
	copy(bk[1:i+1], bk[:i])
	bk[0] = fp
	return found
}
