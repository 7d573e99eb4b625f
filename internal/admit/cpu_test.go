package admit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// queuedCount returns how many handshakes wait at g: without work, with.
func queuedCount(g *cpuGate) (plain, worked int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.queued, len(g.worked)
}

// gateRun queues handshakes behind a gate whose turns are all taken, one
// at a time, each queued before the next starts, then serves them and
// tells the order.
type gateRun struct {
	t     *testing.T
	g     *cpuGate
	order chan string
	wg    sync.WaitGroup
}

// newGateRun returns a run on a gate of one turn, taken.
func newGateRun(t *testing.T) *gateRun {
	g := &cpuGate{turns: 1, free: 1}
	if err := g.acquire(context.Background(), &source{}, 0); err != nil {
		t.Fatal(err)
	}
	return &gateRun{t: t, g: g, order: make(chan string, 16)}
}

// queue starts a handshake of s whose peer proved bits of work, named
// name, and waits until it is queued, so that the arrival order is known.
func (r *gateRun) queue(s *source, bits int, name string) {
	plain, worked := queuedCount(r.g)
	r.wg.Go(func() {
		if err := r.g.acquire(context.Background(), s, bits); err != nil {
			r.t.Error(err)
			return
		}
		r.order <- name
		r.g.release()
	})
	for {
		p, w := queuedCount(r.g)
		if p+w == plain+worked+1 {
			return
		}
		runtime.Gosched()
	}
}

// served gives the turn back and returns the names in the order the
// handshakes were served, space-separated.
func (r *gateRun) served() string {
	r.g.release()
	r.wg.Wait()
	close(r.order)
	var got []string
	for name := range r.order {
		got = append(got, name)
	}
	return strings.Join(got, " ")
}

// TestCPUGateWork queues handshakes that proved work and handshakes that
// did not behind a full gate: those that proved work are served first,
// the most work first, then in arrival order; the others after them,
// round robin as before.
func TestCPUGateWork(t *testing.T) {
	r := newGateRun(t)
	a, b := &source{}, &source{}
	r.queue(a, 0, "a")
	r.queue(a, 16, "a16")
	r.queue(b, 0, "b")
	r.queue(b, 17, "b17")
	r.queue(a, 16, "a16'")
	if got, want := r.served(), "b17 a16 a16' b a"; got != want {
		t.Errorf("served %v, want %s", got, want)
	}
}

// TestCPUGateWorkCancel: a handshake that proved work and is dropped while
// it waits leaves the queue, and the turn it did not get stays free.
func TestCPUGateWorkCancel(t *testing.T) {
	g := &cpuGate{turns: 1, free: 1}
	s := &source{}
	if err := g.acquire(context.Background(), s, 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- g.acquire(ctx, s, 16) }()
	for _, w := queuedCount(g); w != 1; _, w = queuedCount(g) {
		runtime.Gosched()
	}
	cancel(ErrDropped)
	if err := <-errc; !errors.Is(err, ErrDropped) {
		t.Fatalf("acquire = %v", err)
	}
	g.release()
	if p, w := queuedCount(g); g.free != 1 || p != 0 || w != 0 {
		t.Errorf("after cancel and release: free %d, queued %d and %d", g.free, p, w)
	}
}

// TestCPUGateDemand checks the work demanded for each length of the
// queues, with two turns: none while fewer than 64 handshakes per turn
// wait without work, whatever waits with it; then WorkBits, one bit more
// for each doubling of those that proved work, up to MaxWorkBits.
func TestCPUGateDemand(t *testing.T) {
	const long = 2 * workQueuePerTurn
	for _, tc := range []struct {
		plain, worked, want int
	}{
		{0, 0, 0},
		{long - 1, 0, 0},
		{long - 1, 10 * long, 0},
		{long, 0, WorkBits},
		{long, long - 1, WorkBits},
		{long, long, WorkBits + 1},
		{long, 2*long - 1, WorkBits + 1},
		{long, 2 * long, WorkBits + 2},
		{long, 4 * long, WorkBits + 3},
		{long, 1000 * long, MaxWorkBits},
	} {
		t.Run(fmt.Sprintf("%d/%d", tc.plain, tc.worked), func(t *testing.T) {
			g := &cpuGate{turns: 2, queued: tc.plain, worked: make(workHeap, tc.worked)}
			if got := g.demand(); got != tc.want {
				t.Errorf("demand = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestReadWork: the answer to a demand for work is read as the rest of
// the first flight, as ReadMoreFirstFlight reads one, but not checked for
// replays: it is bound to the first flight, which was. Two connections
// that send the same second part both get through with ReadWork; with
// ReadMoreFirstFlight, the second is refused as a replay.
func TestReadWork(t *testing.T) {
	for _, tc := range []struct {
		name       string
		read       func(c *Conn, ctx context.Context) error
		secondGets bool
	}{
		{"ReadWork", func(c *Conn, ctx context.Context) error { return c.ReadWork(ctx, lineFlight) }, true},
		{"ReadMoreFirstFlight", func(c *Conn, ctx context.Context) error { return c.ReadMoreFirstFlight(ctx, lineFlight) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failed := make(chan error, 10)
			l := listen(t, Config[string]{
				Handshake: func(ctx context.Context, c net.Conn) (string, error) {
					return twoPartHandshakeWith(ctx, c, tc.read)
				},
				// Every part but the first keys itself.
				ReplayKey: func(flight []byte, _ bool) ([]byte, bool) {
					return flight, string(flight) != "hello\n"
				},
				Failed: func(_ net.Addr, err error) { failed <- err },
			})
			for i, src := range []string{"127.0.0.1", "127.0.0.2"} {
				c := dialFrom(t, l, src)
				io.WriteString(c, "hello\n")
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				var b [64]byte
				if n, _ := c.Read(b[:]); string(b[:n]) != "part2?\n" {
					t.Fatalf("answer to the first part %q", b[:n])
				}
				err := greet(c, "same", 10*time.Second)
				if i == 0 || tc.secondGets {
					if err != nil {
						t.Fatalf("connection %d: %v", i, err)
					}
					if got := acceptOne(t, l, 10*time.Second); got != "same" {
						t.Errorf("Accept = %q", got)
					}
					continue
				}
				if err := <-failed; !errors.Is(err, ErrReplayed) {
					t.Errorf("Failed got %v, want ErrReplayed", err)
				}
			}
		})
	}
}

// TestWorkedRank: a connection whose peer did the work demanded of it
// ranks above every unproved one, however much older: when the table is
// full, a newcomer takes the place of an unproved connection, never of
// the worked one.
func TestWorkedRank(t *testing.T) {
	failed := make(chan error, 10)
	l := listen(t, Config[string]{
		MaxPending: 2,
		Handshake: func(ctx context.Context, c net.Conn) (string, error) {
			var b [64]byte
			n, err := c.Read(b[:])
			if err != nil {
				return "", err
			}
			if strings.TrimSpace(string(b[:n])) == "work" {
				c.(*Conn).Worked(16)
			}
			io.WriteString(c, "held\n")
			<-ctx.Done() // holds the connection in its rank
			return "", context.Cause(ctx)
		},
		Failed: func(_ net.Addr, err error) { failed <- err },
	})
	held := func(c net.Conn, line string) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, line+"\n")
		var b [16]byte
		if n, _ := c.Read(b[:]); string(b[:n]) != "held\n" {
			t.Fatalf("%s: answer %q", line, b[:n])
		}
	}
	worker := dialFrom(t, l, "127.0.0.1")
	held(worker, "work")
	idler := dialFrom(t, l, "127.0.0.2")
	held(idler, "idle")
	newcomer := dialFrom(t, l, "127.0.0.3")
	held(newcomer, "idle")
	if err := <-failed; !errors.Is(err, ErrDropped) {
		t.Fatalf("Failed got %v, want ErrDropped", err)
	}
	if !closedByPeer(idler) {
		t.Error("the unproved connection was not the one dropped")
	}
	worker.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := worker.Read(make([]byte, 1)); !isTimeout(err) {
		t.Errorf("the worked connection was dropped: %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
