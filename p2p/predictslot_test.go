package p2p

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestPredictSlot: one punch holds the slot at a time; only an end of a
// punch with the holder's peer, or the holder's own lease, gives it back.
func TestPredictSlot(t *testing.T) {
	const a, b = peer.ID("a"), peer.ID("b")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name     string
		give     func(s *predictSlot, hold uint64) // after a takes the slot
		wantFree bool
	}{
		{"released by its peer", func(s *predictSlot, _ uint64) { s.release(a) }, true},
		{"released twice", func(s *predictSlot, _ uint64) { s.release(a); s.release(a) }, true},
		{"its lease expires", func(s *predictSlot, hold uint64) { s.expire(hold) }, true},
		{"another peer's end", func(s *predictSlot, _ uint64) { s.release(b) }, false},
		{"an earlier hold's lease", func(s *predictSlot, hold uint64) { s.expire(hold - 1) }, false},
		{"nothing", func(*predictSlot, uint64) {}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newPredictSlot()
			if !s.take(context.Background(), b) {
				t.Fatal("take of a free slot failed")
			}
			s.release(b)
			if !s.take(context.Background(), a) {
				t.Fatal("take of a released slot failed")
			}
			tc.give(s, s.hold)
			free := len(s.sem) == 0
			if free != tc.wantFree {
				t.Errorf("slot free = %v, want %v", free, tc.wantFree)
			}
			if !free && s.take(cancelled, b) {
				t.Error("a punch whose context is done took a held slot")
			}
			s.release(a)
			s.expire(s.hold)
			if !s.take(context.Background(), a) {
				t.Error("the slot did not come back")
			}
		})
	}
}

// TestPredictSlotDialing: once its dials start, a punch keeps the slot
// for dialGrace, not for the rest of its lease; another peer's start
// changes nothing.
func TestPredictSlotDialing(t *testing.T) {
	s := newPredictSlot()
	s.take(context.Background(), "a")
	s.dialing("b")
	// Four times the grace, then half the lease: only a cut lease gives
	// the slot back within either.
	ctx, cancel := context.WithTimeout(context.Background(), 4*dialGrace)
	defer cancel()
	if s.take(ctx, "c") {
		t.Fatal("another peer's start cut the holder's lease")
	}
	s.dialing("a")
	ctx, cancel = context.WithTimeout(context.Background(), predictLease/2)
	defer cancel()
	if !s.take(ctx, "c") {
		t.Fatalf("the slot was not given back within %v of the holder's dials", predictLease/2)
	}
}

// TestPredictSlotMany drives 5000 punches at the slot at once, as 5000
// peers' hole punch streams could: each holds it alone, and every one
// gets it in turn; with a holder that never gives it back, every waiter
// gives up at its deadline (predictWait in the node) and holds nothing.
func TestPredictSlotMany(t *testing.T) {
	const peers = 5000
	t.Run("in turn", func(t *testing.T) {
		s := newPredictSlot()
		var holding, took atomic.Int32
		var wg sync.WaitGroup
		for i := range peers {
			p := peer.ID(rune(i))
			wg.Go(func() {
				if !s.take(context.Background(), p) {
					t.Error("take failed")
					return
				}
				if holding.Add(1) != 1 {
					t.Error("two punches held the slot at once")
				}
				took.Add(1)
				holding.Add(-1)
				s.release(p)
			})
		}
		wg.Wait()
		if took.Load() != peers {
			t.Errorf("%d punches took the slot, want %d", took.Load(), peers)
		}
	})
	t.Run("held", func(t *testing.T) {
		s := newPredictSlot()
		s.take(context.Background(), "holder")
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout/100)
		defer cancel()
		var took atomic.Int32
		var wg sync.WaitGroup
		for i := range peers {
			wg.Go(func() {
				if s.take(ctx, peer.ID(rune(i))) {
					took.Add(1)
				}
			})
		}
		wg.Wait()
		if took.Load() != 0 {
			t.Errorf("%d punches took a held slot", took.Load())
		}
		if len(s.sem) != 1 || s.holder != "holder" {
			t.Errorf("the holder lost the slot to the waiters")
		}
	})
}
