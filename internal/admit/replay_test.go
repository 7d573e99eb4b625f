package admit

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"unsafe"
)

// contains reports whether bucket b holds fingerprint fp, as seenHash
// would find it, without recording anything.
func (c *replayCache) contains(b uint64, fp uint32) bool {
	fp &= c.fpMask
	if fp == 0 {
		fp = 1
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.buckets[b&uint64(len(c.buckets)-1)] {
		if f == fp {
			return true
		}
	}
	return false
}

// A hashedKey is a key's bucket and fingerprint, as seen computes them:
// uniformly random, since HMAC-SHA256 is a PRF, so the tests of the table
// draw them from a seeded generator, which is fast and repeatable.
type hashedKey struct {
	b  uint64
	fp uint32
}

func randomKeys(r *rand.Rand, n int) []hashedKey {
	ks := make([]hashedKey, n)
	for i := range ks {
		ks[i] = hashedKey{r.Uint64(), r.Uint32()}
	}
	return ks
}

func TestReplayCacheSeen(t *testing.T) {
	c := newReplayCache(replayBuckets)
	k1, k2 := []byte("ephemeral key one"), []byte("ephemeral key two")
	steps := []struct {
		key  []byte
		seen bool
	}{
		{k1, false}, {k1, true}, {k2, false}, {k1, true}, {k2, true},
	}
	for i, s := range steps {
		if got := c.seen(s.key); got != s.seen {
			t.Fatalf("step %d: seen(%q) = %v, want %v", i, s.key, got, s.seen)
		}
	}
	// Another listener's cache has another key: the same flight falls
	// elsewhere, so no one can aim keys at a bucket of every listener.
	d := newReplayCache(replayBuckets)
	if c.key == d.key {
		t.Fatal("two caches got the same HMAC key")
	}
	if d.seen(k1) {
		t.Error("a new cache has seen a key")
	}
}

// TestReplayCacheSize: the table has the size the package comment and
// PROTOCOL.md give, and recording keys allocates nothing that stays.
func TestReplayCacheSize(t *testing.T) {
	c := newReplayCache(replayBuckets)
	size := uintptr(len(c.buckets)) * unsafe.Sizeof(c.buckets[0])
	if size != 4<<20 {
		t.Errorf("the table takes %d bytes, want 4 MiB", size)
	}
	r := rand.New(rand.NewPCG(1, 2))
	ks := randomKeys(r, 1000)
	if n := testing.AllocsPerRun(10, func() {
		for _, k := range ks {
			c.seenHash(k.b, k.fp)
		}
	}); n != 0 {
		t.Errorf("recording a key allocated %v times", n)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	key := make([]byte, 32)
	for i := range 1 << 16 {
		key[0], key[1], key[2] = byte(i), byte(i>>8), byte(i>>16)
		c.seen(key)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 256<<10 {
		t.Errorf("the heap grew by %d bytes while the cache recorded 2^16 keys", grew)
	}
}

// testBuckets is the size of the table for the statistical tests: the
// real one, or a sixteenth under the race detector. The figures depend
// only on how many keys are recorded per bucket, so the tests count keys
// in slots of the table, and give the same fractions at either size.
func testBuckets() int {
	if raceEnabled {
		return replayBuckets / 16
	}
	return replayBuckets
}

// TestReplayCacheWindow measures how long a key is remembered, in distinct
// keys recorded after it, against the figures of the package comment for
// the real table of 2^20 slots: a key is kept across the next 2^18 (a
// quarter of the slots) but with probability 5e-6 each, across 2^19 but
// with 0.8%, and forgotten after 2^21 but with 0.07%.
func TestReplayCacheWindow(t *testing.T) {
	c := newReplayCache(testBuckets())
	slots := len(c.buckets) * replayWays
	r := rand.New(rand.NewPCG(3, 4))
	ks := randomKeys(r, slots)
	for _, k := range ks {
		if c.seenHash(k.b, k.fp) {
			t.Fatal("a fresh key was found in a table not yet full: the fingerprint match is wrong")
		}
	}
	// kept returns the fraction of ks[i:j] that the table still holds.
	kept := func(i, j int) float64 {
		n := 0
		for _, k := range ks[i:j] {
			if c.contains(k.b, k.fp) {
				n++
			}
		}
		return float64(n) / float64(j-i)
	}
	bands := []struct {
		from, to int // keys ago, in slots
		atLeast  float64
		atMost   float64
	}{
		{0, slots / 4, 1 - 1e-5, 1},      // P(evicted) ≤ 4.9e-6 each, less for younger ones
		{slots / 4, slots / 2, 0.995, 1}, // ≤ 0.8% each, 0.2% on average
		{slots / 2, slots, 0.7, 0.9},     // 80%: a key is forgotten after about a table's worth
	}
	for _, b := range bands {
		t.Run(fmt.Sprintf("%.2f-%.2f tables ago", float64(b.from)/float64(slots), float64(b.to)/float64(slots)), func(t *testing.T) {
			got := kept(len(ks)-b.to, len(ks)-b.from)
			t.Logf("kept %.6f of them", got)
			if got < b.atLeast || got > b.atMost {
				t.Errorf("kept %.6f of them, want %v to %v", got, b.atLeast, b.atMost)
			}
		})
	}
	// Two tables' worth more: the first are forgotten, so an old replay is
	// answered again, and memory stays what it was.
	for _, k := range randomKeys(r, 2*slots) {
		c.seenHash(k.b, k.fp)
	}
	got := kept(0, len(ks))
	t.Logf("kept %.6f of the keys recorded 2 to 3 tables ago", got)
	if got > 0.0007 {
		t.Errorf("kept %.6f of the keys recorded 2 to 3 tables ago, want at most 0.0007", got)
	}
}

// TestReplayCacheKeepsWhatIsReplayed: a key seen again moves to the front
// of its bucket, so that a flight replayed in a loop is never forgotten
// however many fresh flights come between.
func TestReplayCacheKeepsWhatIsReplayed(t *testing.T) {
	c := newReplayCache(testBuckets())
	slots := len(c.buckets) * replayWays
	r := rand.New(rand.NewPCG(5, 6))
	replayed := hashedKey{r.Uint64(), r.Uint32()}
	c.seenHash(replayed.b, replayed.fp)
	for i, k := range randomKeys(r, 4*slots) {
		c.seenHash(k.b, k.fp)
		// Replayed once every 2 keys per bucket, on average.
		if i%(2*len(c.buckets)) == 0 && !c.seenHash(replayed.b, replayed.fp) {
			t.Fatalf("the replayed key was forgotten after %d fresh keys", i)
		}
	}
	// A bucket's worth of fresh keys in its own bucket evicts it.
	for i := range replayWays {
		c.seenHash(replayed.b, uint32(i+2)^replayed.fp)
	}
	if c.contains(replayed.b, replayed.fp) {
		t.Error("16 newer keys in its bucket did not evict a key")
	}
}

// TestReplayCacheFalsePositives measures how often a fresh key is taken
// for one seen, in a full table: at most replayWays in 2^bits per lookup.
// With 16-bit fingerprints the rate is measurable (2.4e-4); with the real
// 32 bits (3.7e-9) none is expected in millions of lookups.
func TestReplayCacheFalsePositives(t *testing.T) {
	lookups := 1 << 22
	if raceEnabled {
		lookups = 1 << 18
	}
	for _, bits := range []uint{16, 32} {
		t.Run(fmt.Sprintf("%d-bit", bits), func(t *testing.T) {
			c := newReplayCache(testBuckets())
			c.fpMask = uint32(1<<bits - 1)
			r := rand.New(rand.NewPCG(7, uint64(bits)))
			for _, k := range randomKeys(r, 4*len(c.buckets)*replayWays) { // every bucket full
				c.seenHash(k.b, k.fp)
			}
			n := 0
			for _, k := range randomKeys(r, lookups) {
				if c.seenHash(k.b, k.fp) {
					n++
				}
			}
			bound := replayWays / float64(uint64(1)<<bits)
			want := bound * float64(lookups)
			sigma := math.Sqrt(want)
			t.Logf("%d false positives in %d lookups: %.3g, bound %.3g", n, lookups, float64(n)/float64(lookups), bound)
			if lo, hi := want-4*sigma, want+4*sigma+0.5; float64(n) < lo || float64(n) > hi {
				t.Errorf("%d false positives in %d lookups, want %.0f to %.0f (%.3g each)", n, lookups, max(lo, 0), hi, bound)
			}
		})
	}
}

func BenchmarkReplayCacheSeen(b *testing.B) {
	c := newReplayCache(replayBuckets)
	key := make([]byte, 32)
	for i := 0; b.Loop(); i++ {
		key[0], key[1], key[2], key[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24)
		c.seen(key)
	}
}
