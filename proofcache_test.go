package securepeer

import (
	"crypto/ed25519"
	"testing"
)

func TestProofCache(t *testing.T) {
	id := testIdentity(t, 5)
	other := testIdentity(t, 6)
	msg := staticSignedMessage(id.static.PublicKey().Bytes())
	sig := ed25519.Sign(id.priv, msg)
	pub := id.pub.key[:]
	pc := &proofCache{entries: make(map[[32]byte]struct{})}

	tests := []struct {
		name      string
		pub, msg  []byte
		sig       []byte
		want      bool
		wantCache int
	}{
		{"valid proof is accepted and cached", pub, msg, sig, true, 1},
		{"the same proof again comes from the cache", pub, msg, sig, true, 1},
		{"another identity's key with the cached proof", other.pub.key[:], msg, sig, false, 1},
		{"another message with the cached signature", pub, append([]byte("x"), msg...), sig, false, 1},
		{"a flipped signature", pub, msg, append([]byte{sig[0] ^ 1}, sig[1:]...), false, 1},
	}
	for _, tt := range tests {
		if got := pc.verify(tt.pub, tt.msg, tt.sig); got != tt.want {
			t.Errorf("%s: verify = %v, want %v", tt.name, got, tt.want)
		}
		if len(pc.entries) != tt.wantCache {
			t.Errorf("%s: %d cache entries, want %d", tt.name, len(pc.entries), tt.wantCache)
		}
	}

	// The cache stays bounded.
	for i := range maxProofCacheEntries + 10 {
		m := []byte{byte(i), byte(i >> 8), byte(i >> 16)}
		if !pc.verify(pub, m, ed25519.Sign(id.priv, m)) {
			t.Fatal("a valid signature failed")
		}
	}
	if len(pc.entries) > maxProofCacheEntries {
		t.Errorf("cache grew to %d entries", len(pc.entries))
	}
}
