package admit

import (
	"container/heap"
	"container/list"
	"context"
	"math/bits"
	"sync"
)

// Work demanded of a peer whose handshake would queue behind many others
// (Config.DemandWork, the package comment's "Work under load").
const (
	// WorkBits is the work demanded while the queue is long and the
	// handshakes that proved work are few: 2^16 hashes, about 10 ms of one
	// core, some 30 times what the handshake costs the server.
	WorkBits = 16
	// MaxWorkBits is the most demanded: 2^20 hashes, about 0.15 s.
	MaxWorkBits = 20
	// workQueuePerTurn is how many handshakes may wait per turn of CPU
	// before work is demanded: about 20 ms of handshakes, more than a
	// burst of honest peers builds.
	workQueuePerTurn = 64
)

// cpuGate shares the handshake CPU, as the package comment describes:
// handshakes whose peers proved work first, most work first; then the
// others, round robin between sources.
type cpuGate struct {
	mu     sync.Mutex
	turns  int       // in all: GOMAXPROCS, so at least 1 (demand divides by it)
	free   int       // turns not taken
	ring   list.List // of *source with handshakes queued, served in turn
	queued int       // handshakes queued in the ring's sources
	worked workHeap  // handshakes whose peers proved work
	seq    uint64    // orders worked by arrival
}

// A waiter is a handshake queued for a turn.
type waiter struct {
	ready chan struct{} // closed when the turn is given
	// Guarded by cpuGate.mu. A waiter is queued while elem is not nil (in
	// its source's cpuq) or index is not -1 (in worked).
	elem  *list.Element
	index int
	bits  int    // the work its peer proved
	seq   uint64 // its arrival, among worked
}

func (w *waiter) queued() bool { return w.elem != nil || w.index >= 0 }

// acquire waits for a turn for a handshake of s whose peer proved bits of
// work (0 for none).
func (g *cpuGate) acquire(ctx context.Context, s *source, bits int) error {
	g.mu.Lock()
	if g.free > 0 && g.ring.Len() == 0 && len(g.worked) == 0 {
		g.free--
		g.mu.Unlock()
		return nil
	}
	w := &waiter{ready: make(chan struct{}), index: -1, bits: bits}
	g.enqueue(w, s)
	g.mu.Unlock()

	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	g.mu.Lock()
	if w.queued() {
		g.dequeue(w, s)
		g.mu.Unlock()
		return context.Cause(ctx)
	}
	g.mu.Unlock()
	// The turn came as the context ended: pass it on.
	g.release()
	return context.Cause(ctx)
}

// enqueue queues w, a handshake of s. g.mu is held.
func (g *cpuGate) enqueue(w *waiter, s *source) {
	if w.bits > 0 {
		g.seq++
		w.seq = g.seq
		heap.Push(&g.worked, w)
		return
	}
	g.queued++
	w.elem = s.cpuq.PushBack(w)
	if s.ring == nil {
		// A source with nothing queued goes first; the sources already
		// queued take turns behind it.
		s.ring = g.ring.PushFront(s)
	}
}

// dequeue removes w, queued for s, from its queue. g.mu is held.
func (g *cpuGate) dequeue(w *waiter, s *source) {
	if w.index >= 0 {
		heap.Remove(&g.worked, w.index)
		return
	}
	g.queued--
	s.cpuq.Remove(w.elem)
	w.elem = nil
	if s.cpuq.Len() == 0 {
		g.ring.Remove(s.ring)
		s.ring = nil
	}
}

// release gives a turn back: to the handshake that proved the most work,
// if any; otherwise to the newest handshake of the source at the front of
// the ring, which then goes to the back if it has more.
func (g *cpuGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.worked) > 0 {
		close(heap.Pop(&g.worked).(*waiter).ready)
		return
	}
	front := g.ring.Front()
	if front == nil {
		g.free++
		return
	}
	s := front.Value.(*source)
	w := s.cpuq.Back().Value.(*waiter)
	g.dequeue(w, s)
	if s.ring != nil {
		g.ring.MoveToBack(front)
	}
	close(w.ready)
}

// demand returns the bits of work to demand of a peer whose handshake is
// about to queue: none while fewer than workQueuePerTurn handshakes wait
// per turn without work; then WorkBits, one more for each doubling of the
// handshakes that proved work and wait, up to MaxWorkBits. So a peer that
// arrives behind many who proved work proves more, and goes first.
func (g *cpuGate) demand() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	long := workQueuePerTurn * g.turns
	if g.queued < long {
		return 0
	}
	return min(WorkBits+bits.Len(uint(len(g.worked)/long)), MaxWorkBits)
}

// workHeap orders the handshakes whose peers proved work: most bits
// first, then the earliest.
type workHeap []*waiter

func (h workHeap) Len() int { return len(h) }

func (h workHeap) Less(i, j int) bool {
	if h[i].bits != h[j].bits {
		return h[i].bits > h[j].bits
	}
	return h[i].seq < h[j].seq
}

func (h workHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}

func (h *workHeap) Push(x any) {
	w := x.(*waiter)
	w.index = len(*h)
	*h = append(*h, w)
}

func (h *workHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	w.index = -1
	return w
}
