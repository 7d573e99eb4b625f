package securepeer

import (
	"crypto/ed25519"
	"crypto/sha256"
	"sync"
)

// proofCache remembers identity proofs that verified, so that a peer that
// connects again costs a hash instead of an Ed25519 verification. A proof
// is a pure function of its bytes, so a cached "valid" can never be wrong:
// the key is the SHA-256 of everything the verification reads. Only
// successes are stored, so invalid proofs cannot fill it.
type proofCache struct {
	mu      sync.Mutex
	entries map[[32]byte]struct{}
}

// maxProofCacheEntries bounds the cache (about 100 bytes per entry). When
// it is full an arbitrary entry makes room: Go's map iteration order is
// random, which is good enough for a cache whose misses only cost time.
const maxProofCacheEntries = 4096

var proofs = &proofCache{entries: make(map[[32]byte]struct{})}

// verify reports whether sig is identity's signature over msg.
func (pc *proofCache) verify(identity ed25519.PublicKey, msg, sig []byte) bool {
	h := sha256.New()
	h.Write(identity)
	h.Write(sig)
	h.Write(msg)
	var key [32]byte
	h.Sum(key[:0])

	pc.mu.Lock()
	_, ok := pc.entries[key]
	pc.mu.Unlock()
	if ok {
		return true
	}
	if !ed25519.Verify(identity, msg, sig) {
		return false
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if len(pc.entries) >= maxProofCacheEntries {
		for k := range pc.entries {
			delete(pc.entries, k)
			break
		}
	}
	pc.entries[key] = struct{}{}
	return true
}
