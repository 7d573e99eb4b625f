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
	return pc.has(identity, msg, sig) || pc.check(identity, msg, sig)
}

// check is verify without looking in the cache first: it verifies the
// signature, and remembers it if it is valid.
func (pc *proofCache) check(identity ed25519.PublicKey, msg, sig []byte) bool {
	if !ed25519.Verify(identity, msg, sig) {
		return false
	}
	key := proofKey(identity, msg, sig)
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

// has reports whether sig is identity's signature over msg by the cache
// alone: false means only that it did not verify here lately.
func (pc *proofCache) has(identity ed25519.PublicKey, msg, sig []byte) bool {
	key := proofKey(identity, msg, sig)
	pc.mu.Lock()
	defer pc.mu.Unlock()
	_, ok := pc.entries[key]
	return ok
}

// proofKey is the cache's key for a proof: the SHA-256 of everything its
// verification reads.
func proofKey(identity ed25519.PublicKey, msg, sig []byte) [32]byte {
	h := sha256.New()
	h.Write(identity)
	h.Write(sig)
	h.Write(msg)
	var key [32]byte
	h.Sum(key[:0])
	return key
}
