package p2p

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// predictLease bounds how long one hole punch holds the prediction slot
// (predictSlot): its fresh observation (observeTimeout), its dials
// (punchTimeout), and 3 s for the exchange of addresses over the relay.
const predictLease = observeTimeout + punchTimeout + 3*time.Second

// dialGrace is how long a punch keeps the prediction slot once go-libp2p
// reports that its dials start (they all start at once, with no ranking
// delay, for a simultaneous open): time for their SYNs to leave before
// another punch's observation, and much less than an attempt that fails
// takes (punchTimeout), which would otherwise hold up every other punch
// of the node.
const dialGrace = 500 * time.Millisecond

// predictWait bounds how long a hole punch waits for the prediction slot
// before it predicts without it, as it would with no slot at all.
const predictWait = predictLease

// A predictSlot lets one hole punch at a time make and use a prediction.
// The ports a node predicts are the next ones its NAT gives out; a second
// punch that ran at the same time would take some of them with its own
// observation and dials, and the first one's dial would leave from a port
// its peer did not aim at. Nor do the later rounds with that peer mend a
// miss: a NAT keeps the mapping it made for the missed dial for every
// later dial from the same port to the same address, as long as the
// mapping lives (Linux: two minutes after its last SYN). A punch takes
// the slot before its fresh observation and gives it back dialGrace after
// go-libp2p reports that its dials start, or when go-libp2p reports the
// attempt's end or failure (punchTracer), or when its lease runs out.
// Waiters get the slot in the order they came (a Go channel's blocked
// senders are woken first in, first out).
type predictSlot struct {
	sem chan struct{} // holds a value while a punch holds the slot

	mu     sync.Mutex
	holder peer.ID     // the peer of the punch that holds it
	hold   uint64      // counts holds, so that a lease ends only its own
	lease  *time.Timer // nil while the slot is free
}

func newPredictSlot() *predictSlot {
	return &predictSlot{sem: make(chan struct{}, 1)}
}

// take waits for the slot, at most predictWait or until ctx is done, and
// takes it for a punch with p. It reports whether it took it.
func (s *predictSlot) take(ctx context.Context, p peer.ID) bool {
	t := time.NewTimer(predictWait)
	defer t.Stop()
	select {
	case s.sem <- struct{}{}:
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold++
	hold := s.hold
	s.holder = p
	s.lease = time.AfterFunc(predictLease, func() { s.expire(hold) })
	return true
}

// dialing cuts the lease of a punch with p, if one holds the slot, to
// dialGrace: its dials start.
func (s *predictSlot) dialing(p peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lease != nil && s.holder == p {
		s.lease.Reset(dialGrace)
	}
}

// release gives the slot back if a punch with p holds it.
func (s *predictSlot) release(p peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lease != nil && s.holder == p {
		s.free()
	}
}

// expire gives the slot back if hold still holds it.
func (s *predictSlot) expire(hold uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lease != nil && s.hold == hold {
		s.free()
	}
}

// free gives the slot back; s.mu is held, and so is the slot.
func (s *predictSlot) free() {
	s.lease.Stop()
	s.lease = nil
	s.holder = ""
	<-s.sem
}
