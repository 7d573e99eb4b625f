package admit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// lineFlight is a FirstFlight for tests: a flight is one line.
func lineFlight(b []byte) int {
	if i := strings.IndexByte(string(b), '\n'); i >= 0 {
		return len(b)
	}
	return len(b) + 1
}

// echoHandshake reads one line, the flight, and answers "ok <line>".
func echoHandshake(ctx context.Context, c net.Conn) (string, error) {
	var b [64]byte
	n, err := c.Read(b[:])
	if err != nil {
		return "", err
	}
	line := strings.TrimSpace(string(b[:n]))
	if line == "fail" {
		return "", errors.New("handshake failed on purpose")
	}
	if _, err := fmt.Fprintf(c, "ok %s\n", line); err != nil {
		return "", err
	}
	return line, nil
}

func listen(t *testing.T, cfg Config[string]) *Listener[string] {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Handshake == nil {
		cfg.Handshake = echoHandshake
	}
	if cfg.FirstFlight == nil {
		cfg.FirstFlight = lineFlight
	}
	l := NewListener(inner, cfg)
	t.Cleanup(func() { l.Close() })
	return l
}

// dialFrom connects to l from the loopback address src.
func dialFrom(t *testing.T, l interface{ Addr() net.Addr }, src string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// greet sends a flight on c and reads the answer, failing after timeout.
func greet(c net.Conn, line string, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return err
	}
	var b [64]byte
	n, err := c.Read(b[:])
	if err != nil {
		return err
	}
	if got := string(b[:n]); got != "ok "+line+"\n" {
		return fmt.Errorf("answer %q", got)
	}
	return nil
}

func acceptOne(t *testing.T, l *Listener[string], timeout time.Duration) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		v, err := l.Accept()
		if err != nil {
			v = "error: " + err.Error()
		}
		got <- v
	}()
	select {
	case v := <-got:
		return v
	case <-time.After(timeout):
		t.Fatal("Accept did not return")
		return ""
	}
}

// waitPending waits until l holds n pending connections.
func waitPending(t *testing.T, l *Listener[string], n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for l.Pending() != n {
		if time.Now().After(deadline) {
			t.Fatalf("pending = %d, want %d", l.Pending(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestAcceptAfterFlight(t *testing.T) {
	l := listen(t, Config[string]{})
	c := dialFrom(t, l, "127.0.0.1")
	if err := greet(c, "hello", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := acceptOne(t, l, 10*time.Second); got != "hello" {
		t.Fatalf("Accept = %q", got)
	}
	waitPending(t, l, 0)
}

// TestDropPolicy fills the table and checks who is dropped for a newcomer,
// table-driven over what fills it.
func TestDropPolicy(t *testing.T) {
	tests := []struct {
		name string
		// fill opens the connections that fill a table of 4, and returns
		// the ones that must survive and the one that must be dropped.
		fill func(t *testing.T, l *Listener[string]) (keep []net.Conn, drop net.Conn)
	}{
		{"heaviest source loses its oldest waiter", func(t *testing.T, l *Listener[string]) ([]net.Conn, net.Conn) {
			old := dialFrom(t, l, "127.0.0.1")
			waitPending(t, l, 1)
			a := dialFrom(t, l, "127.0.0.1")
			b := dialFrom(t, l, "127.0.0.1")
			other := dialFrom(t, l, "127.0.0.2")
			return []net.Conn{a, b, other}, old
		}},
		{"the oldest unproved goes whatever its phase", func(t *testing.T, l *Listener[string]) ([]net.Conn, net.Conn) {
			busy := dialFrom(t, l, "127.0.0.1")
			io.WriteString(busy, "hang\n") // the handshake waits for more: still unproved
			waitStarted(t, l, 1)
			waiter := dialFrom(t, l, "127.0.0.1")
			waitPending(t, l, 2)
			x := dialFrom(t, l, "127.0.0.3")
			y := dialFrom(t, l, "127.0.0.4")
			return []net.Conn{waiter, x, y}, busy
		}},
		{"proved goes after every unproved, however old", func(t *testing.T, l *Listener[string]) ([]net.Conn, net.Conn) {
			var keep []net.Conn
			for range 2 {
				c := dialFrom(t, l, "127.0.0.1")
				io.WriteString(c, "prove\n") // proved, then waits for more
				keep = append(keep, c)
			}
			waitProved(t, l, 2)
			busy := dialFrom(t, l, "127.0.0.2")
			io.WriteString(busy, "hang\n")
			waitStarted(t, l, 3)
			other := dialFrom(t, l, "127.0.0.3")
			return append(keep, other), busy
		}},
		{"a restarted handshake ranks as a newcomer", func(t *testing.T, l *Listener[string]) ([]net.Conn, net.Conn) {
			restarted := dialFrom(t, l, "127.0.0.1")
			waitPending(t, l, 1)
			waiter := dialFrom(t, l, "127.0.0.1")
			waitPending(t, l, 2)
			io.WriteString(restarted, "retry\n") // waits for a new first flight
			waitSeq(t, l, 3)                     // two accepts, one restart
			x := dialFrom(t, l, "127.0.0.3")
			y := dialFrom(t, l, "127.0.0.4")
			return []net.Conn{restarted, x, y}, waiter
		}},
		{"a crowded address's newcomer waits its turn", func(t *testing.T, l *Listener[string]) ([]net.Conn, net.Conn) {
			// .1 holds the most, but only in the younger half: the older
			// half decides.
			x := dialFrom(t, l, "127.0.0.2")
			waitPending(t, l, 1)
			y := dialFrom(t, l, "127.0.0.3")
			waitPending(t, l, 2)
			newcomer := dialFrom(t, l, "127.0.0.1")
			waitPending(t, l, 3)
			reconnected := dialFrom(t, l, "127.0.0.1")
			return []net.Conn{y, newcomer, reconnected}, x
		}},
		{"ties between sources go to the oldest", func(t *testing.T, l *Listener[string]) ([]net.Conn, net.Conn) {
			first := dialFrom(t, l, "127.0.0.5")
			waitPending(t, l, 1)
			var keep []net.Conn
			for _, src := range []string{"127.0.0.6", "127.0.0.7", "127.0.0.8"} {
				keep = append(keep, dialFrom(t, l, src))
			}
			return keep, first
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := listen(t, Config[string]{MaxPending: 4, Handshake: hangOnHang})
			keep, drop := tt.fill(t, l)
			waitPending(t, l, 4)
			newcomer := dialFrom(t, l, "127.0.0.9")
			if !closedByPeer(drop) {
				t.Error("the connection that should have been dropped is still open")
			}
			for i, c := range keep {
				if isClosed(c) {
					t.Errorf("connection %d was dropped", i)
				}
			}
			if err := greet(newcomer, "newcomer", 10*time.Second); err != nil {
				t.Fatalf("newcomer: %v", err)
			}
			if got := acceptOne(t, l, 10*time.Second); got != "newcomer" {
				t.Fatalf("Accept = %q", got)
			}
		})
	}
}

// hangOnHang is echoHandshake, except that the flight "hang" makes it wait
// for the connection to end; "prove" tells the listener the peer proved
// itself, then waits likewise; and "retry" waits for a new first flight
// (Conn.AwaitFirstFlight), then answers it.
func hangOnHang(ctx context.Context, c net.Conn) (string, error) {
	var b [64]byte
	n, err := c.Read(b[:])
	if err != nil {
		return "", err
	}
	line := strings.TrimSpace(string(b[:n]))
	switch line {
	case "prove":
		c.(*Conn).Proved()
		fallthrough
	case "hang":
		_, err := c.Read(b[:])
		return "", fmt.Errorf("hang ended: %w", err)
	case "retry":
		if err := c.(*Conn).AwaitFirstFlight(ctx, lineFlight); err != nil {
			return "", err
		}
		return hangOnHang(ctx, c)
	}
	if _, err := fmt.Fprintf(c, "ok %s\n", line); err != nil {
		return "", err
	}
	return line, nil
}

// waitProved waits until l holds n connections whose peer has proved
// itself.
func waitProved(t *testing.T, l *Listener[string], n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		got := l.ranks[proved].order.Len()
		l.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("proved = %d, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitStarted waits until l holds n connections whose first flight has
// arrived (their handshake runs).
func waitStarted(t *testing.T, l *Listener[string], n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		got := 0
		for _, s := range l.sources {
			for _, r := range []rank{unproved, proved} {
				for el := s.conns[r].Front(); el != nil; el = el.Next() {
					if el.Value.(*entry).cancel != nil {
						got++
					}
				}
			}
		}
		l.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("started = %d, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitSeq waits until l has placed connections in a rank n times.
func waitSeq(t *testing.T, l *Listener[string], n uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		got := l.seq
		l.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("seq = %d, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// closedByPeer waits for c to be closed by the listener.
func closedByPeer(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	_, err := c.Read(make([]byte, 1))
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

// isClosed reports whether the listener has closed c, waiting briefly.
func isClosed(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	defer c.SetReadDeadline(time.Time{})
	_, err := c.Read(make([]byte, 1))
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

// TestCompletedAreDroppedLast: with every slot holding a completed
// connection that the application has not accepted, a newcomer still gets
// in, in place of the heaviest source's oldest completed one.
func TestCompletedAreDroppedLast(t *testing.T) {
	l := listen(t, Config[string]{MaxPending: 3})
	for _, c := range []struct{ name, src string }{{"a", "127.0.0.1"}, {"b", "127.0.0.1"}, {"c", "127.0.0.2"}} {
		conn := dialFrom(t, l, c.src)
		if err := greet(conn, c.name, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// The client has its answer a moment before the listener marks the
	// handshake complete.
	for deadline := time.Now().Add(10 * time.Second); l.Completed() != 3; {
		if time.Now().After(deadline) {
			t.Fatalf("completed = %d, want 3", l.Completed())
		}
		time.Sleep(time.Millisecond)
	}
	d := dialFrom(t, l, "127.0.0.3")
	if err := greet(d, "d", 10*time.Second); err != nil {
		t.Fatalf("a newcomer with every slot completed: %v", err)
	}
	got := map[string]bool{}
	for range 3 {
		got[acceptOne(t, l, 10*time.Second)] = true
	}
	if want := map[string]bool{"b": true, "c": true, "d": true}; !maps.Equal(got, want) {
		t.Errorf("accepted %v, want %v: a, the heaviest source's oldest, should have been dropped", got, want)
	}
}

func TestFirstFlightTimeout(t *testing.T) {
	failed := make(chan error, 10)
	l := listen(t, Config[string]{
		FirstFlightTimeout: 200 * time.Millisecond,
		Failed:             func(_ net.Addr, err error) { failed <- err },
	})
	tests := []struct {
		name string
		send string
	}{
		{"silent", ""},
		{"partial", "no newline yet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialFrom(t, l, "127.0.0.1")
			io.WriteString(c, tt.send)
			if !closedByPeer(c) {
				t.Fatal("not dropped")
			}
			select {
			case err := <-failed:
				if !errors.Is(err, ErrFirstFlight) {
					t.Errorf("Failed got %v, want ErrFirstFlight", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Failed not called")
			}
		})
	}
	// The handshake's own time is not bounded by the first flight's.
	c := dialFrom(t, l, "127.0.0.1")
	time.Sleep(100 * time.Millisecond)
	if err := greet(c, "late but in time", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	acceptOne(t, l, 10*time.Second)
}

func TestFailedHandshake(t *testing.T) {
	failed := make(chan error, 1)
	l := listen(t, Config[string]{Failed: func(_ net.Addr, err error) { failed <- err }})
	c := dialFrom(t, l, "127.0.0.1")
	io.WriteString(c, "fail\n")
	if !closedByPeer(c) {
		t.Fatal("a failed handshake's connection was not closed")
	}
	if err := <-failed; err == nil || !strings.Contains(err.Error(), "on purpose") {
		t.Errorf("Failed got %v", err)
	}
	waitPending(t, l, 0)
}

// flakyListener returns err from Accept n times, then accepts from inner.
type flakyListener struct {
	net.Listener
	mu  sync.Mutex
	n   int
	err error
}

func (f *flakyListener) Accept() (net.Conn, error) {
	f.mu.Lock()
	if f.n > 0 {
		f.n--
		f.mu.Unlock()
		return nil, f.err
	}
	f.mu.Unlock()
	return f.Listener.Accept()
}

func TestAcceptErrorsAreRetried(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{"EMFILE", &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}},
		{"ENFILE", &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.ENFILE)}},
		{"ECONNABORTED", &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.ECONNABORTED)}},
		{"other", errors.New("something odd")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var logged []string
			l := NewListener(&flakyListener{Listener: inner, n: 5, err: tt.err}, Config[string]{
				Handshake:   echoHandshake,
				FirstFlight: lineFlight,
				Logf: func(format string, args ...any) {
					mu.Lock()
					logged = append(logged, fmt.Sprintf(format, args...))
					mu.Unlock()
				},
			})
			defer l.Close()
			c := dialFrom(t, l, "127.0.0.1")
			if err := greet(c, "after errors", 20*time.Second); err != nil {
				t.Fatal(err)
			}
			if got := acceptOne(t, l, 20*time.Second); got != "after errors" {
				t.Fatalf("Accept = %q", got)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(logged) != 5 {
				t.Fatalf("logged %d retries, want 5: %q", len(logged), logged)
			}
			want := []string{"5ms", "10ms", "20ms", "40ms", "80ms"}
			for i, line := range logged {
				if !strings.HasSuffix(line, "retrying in "+want[i]) {
					t.Errorf("retry %d logged %q, want a pause of %s", i, line, want[i])
				}
			}
		})
	}
}

func TestFDExhaustionDropsAWaiter(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	flaky := &flakyListener{Listener: inner}
	l := NewListener(flaky, Config[string]{Handshake: echoHandshake, FirstFlight: lineFlight})
	defer l.Close()
	silent := dialFrom(t, l, "127.0.0.1")
	waitPending(t, l, 1)
	flaky.mu.Lock()
	flaky.n, flaky.err = 1, os.NewSyscallError("accept4", syscall.EMFILE)
	flaky.mu.Unlock()
	// The next Accept of the inner listener fails with EMFILE; the silent
	// waiter is dropped to free a descriptor, then c gets in.
	c := dialFrom(t, l, "127.0.0.1")
	if !closedByPeer(silent) {
		t.Fatal("the waiting connection was not dropped on EMFILE")
	}
	if err := greet(c, "in", 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestClosedInnerEndsAccept(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(inner, Config[string]{Handshake: echoHandshake, FirstFlight: lineFlight})
	defer l.Close()
	waiter := dialFrom(t, l, "127.0.0.1")
	waitPending(t, l, 1)
	inner.Close()
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after the inner listener closed = %v", err)
	}
	if !closedByPeer(waiter) {
		t.Error("a pending connection outlived its listener")
	}
}

func TestCloseEndsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(inner, Config[string]{Handshake: hangOnHang, FirstFlight: lineFlight})
	waiter := dialFrom(t, l, "127.0.0.1")
	busy := dialFrom(t, l, "127.0.0.1")
	io.WriteString(busy, "hang\n")
	done := dialFrom(t, l, "127.0.0.1")
	if err := greet(done, "done", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitPending(t, l, 3)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for i, c := range []net.Conn{waiter, busy, done} {
		if !closedByPeer(c) {
			t.Errorf("connection %d outlived the listener", i)
		}
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines left after Close, %d before", n, before)
	}
}

func TestConnReplaysFlightAndReleasesCPU(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	released := 0
	c := &Conn{Conn: a, flight: []byte("flight"), release: func() { released++ }}
	got := make([]byte, 4)
	if n, _ := c.Read(got); string(got[:n]) != "flig" || released != 0 {
		t.Fatalf("first read %q, released %d", got[:n], released)
	}
	if n, _ := c.Read(got); string(got[:n]) != "ht" || released != 0 {
		t.Fatalf("second read %q, released %d", got[:n], released)
	}
	go b.Write([]byte("net"))
	if n, _ := c.Read(got); string(got[:n]) != "net" || released != 1 {
		t.Fatalf("third read %q, released %d", got[:n], released)
	}
	c.releaseCPU()
	if released != 1 {
		t.Errorf("released %d times", released)
	}
	if c.NetConn() != a {
		t.Error("NetConn is not the connection underneath")
	}
}

// A handshake that computes again after waiting for the peer (a responder
// falling back to a full handshake) takes a new turn, which its next read,
// or ReleaseCPU, gives back; while it holds the turn, the turn is not free.
func TestConnAcquireCPU(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	g := &cpuGate{free: 1}
	src := &source{}
	if err := g.acquire(context.Background(), src, 0); err != nil {
		t.Fatal(err)
	}
	c := &Conn{Conn: a, release: g.release, acquire: func(ctx context.Context, bits int) error { return g.acquire(ctx, src, bits) }}
	free := func() int { g.mu.Lock(); defer g.mu.Unlock(); return g.free }
	if err := c.AcquireCPU(context.Background()); err != nil || free() != 0 {
		t.Fatalf("AcquireCPU while holding the turn: %v, %d free; want a no-op", err, free())
	}
	go b.Write([]byte("x"))
	c.Read(make([]byte, 1)) // waits for the peer: the turn goes back
	if free() != 1 {
		t.Fatalf("%d turns free after the read, want 1", free())
	}
	if err := c.AcquireCPU(context.Background()); err != nil || free() != 0 {
		t.Fatalf("AcquireCPU: %v, %d free; want the turn taken", err, free())
	}
	go b.Write([]byte("y"))
	c.Read(make([]byte, 1))
	if free() != 1 {
		t.Fatalf("%d turns free after the second read, want 1", free())
	}
	c.releaseCPU() // as the listener does when the handshake ends
	if free() != 1 {
		t.Fatalf("the turn was given back twice: %d free", free())
	}
	// A handshake about to wait for the peer on the socket's descriptor,
	// past c, gives the turn back itself, once.
	if err := c.AcquireCPU(context.Background()); err != nil || free() != 0 {
		t.Fatalf("AcquireCPU: %v, %d free; want the turn taken", err, free())
	}
	c.ReleaseCPU()
	c.ReleaseCPU()
	if free() != 1 {
		t.Fatalf("%d turns free after ReleaseCPU twice, want 1", free())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	g.acquire(context.Background(), &source{}, 0) // another handshake holds the turn
	if err := c.AcquireCPU(ctx); err == nil {
		t.Fatal("AcquireCPU with a canceled context and no free turn succeeded")
	}
}

// TestCPUGateRoundRobin queues handshakes from two sources behind a full
// gate and checks they are served alternately, not in arrival order, the
// source that started queueing last first.
func TestCPUGateRoundRobin(t *testing.T) {
	r := newGateRun(t)
	heavy, light := &source{}, &source{}
	for range 3 {
		r.queue(heavy, 0, "heavy")
	}
	r.queue(light, 0, "light")
	r.queue(light, 0, "light")
	if got, want := r.served(), "light heavy light heavy heavy"; got != want {
		t.Errorf("served %v, want %s", got, want)
	}
}

func TestCPUGateCancel(t *testing.T) {
	g := &cpuGate{free: 1}
	s := &source{}
	if err := g.acquire(context.Background(), s, 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- g.acquire(ctx, s, 0) }()
	for {
		g.mu.Lock()
		n := s.cpuq.Len()
		g.mu.Unlock()
		if n == 1 {
			break
		}
		runtime.Gosched()
	}
	cancel(ErrDropped)
	if err := <-errc; !errors.Is(err, ErrDropped) {
		t.Fatalf("acquire = %v", err)
	}
	g.release()
	if g.free != 1 || g.ring.Len() != 0 || s.cpuq.Len() != 0 {
		t.Errorf("after cancel and release: free %d, ring %d, queue %d", g.free, g.ring.Len(), s.cpuq.Len())
	}
}

func TestSourceOf(t *testing.T) {
	tests := []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}, "192.0.2.7/32"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}, "192.0.2.7/32"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 1}, "2001:db8:1:2::/64"},
		{&net.UnixAddr{Name: "/tmp/x", Net: "unix"}, "invalid Prefix"},
	}
	for _, tt := range tests {
		if got := sourceOf(tt.addr).String(); got != tt.want {
			t.Errorf("sourceOf(%v) = %s, want %s", tt.addr, got, tt.want)
		}
	}
}

// TestFirstFlightDeadlineHonoursHandshakeTimeout: a HandshakeTimeout
// shorter than the first flight's own deadline wins, and the handshake's
// context ends that long after the accept.
func TestFirstFlightDeadlineHonoursHandshakeTimeout(t *testing.T) {
	failed := make(chan error, 10)
	deadlines := make(chan time.Time, 1)
	const timeout = 300 * time.Millisecond
	l := listen(t, Config[string]{
		HandshakeTimeout: timeout,
		Failed:           func(_ net.Addr, err error) { failed <- err },
		Handshake: func(ctx context.Context, c net.Conn) (string, error) {
			d, _ := ctx.Deadline()
			deadlines <- d
			return echoHandshake(ctx, c)
		},
	})
	silent := dialFrom(t, l, "127.0.0.1")
	// Half the default first-flight deadline: the listener must not use it.
	silent.SetReadDeadline(time.Now().Add(DefaultFirstFlightTimeout / 2))
	if _, err := silent.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a silent peer was not dropped within %v, with a HandshakeTimeout of %v: %v", DefaultFirstFlightTimeout/2, timeout, err)
	}
	if err := <-failed; !errors.Is(err, ErrFirstFlight) {
		t.Errorf("Failed got %v, want ErrFirstFlight", err)
	}

	before := time.Now()
	c := dialFrom(t, l, "127.0.0.1")
	if err := greet(c, "in time", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	d := <-deadlines
	if d.Before(before.Add(timeout)) || d.After(time.Now().Add(timeout)) {
		t.Errorf("the handshake's deadline is %v after the dial, want %v after the accept", d.Sub(before), timeout)
	}
	acceptOne(t, l, 10*time.Second)
}

// TestAwaitFirstFlight: a handshake that asks its peer to start over waits
// for the new flight under the first flight's deadline, and reads it next.
func TestAwaitFirstFlight(t *testing.T) {
	failed := make(chan error, 10)
	l := listen(t, Config[string]{
		FirstFlightTimeout: 300 * time.Millisecond,
		Handshake:          hangOnHang,
		Failed:             func(_ net.Addr, err error) { failed <- err },
	})
	t.Run("silence", func(t *testing.T) {
		c := dialFrom(t, l, "127.0.0.1")
		io.WriteString(c, "retry\n")
		if !closedByPeer(c) {
			t.Fatal("a peer silent after the restart was not dropped")
		}
		if err := <-failed; !errors.Is(err, ErrFirstFlight) {
			t.Errorf("Failed got %v, want ErrFirstFlight", err)
		}
	})
	t.Run("new flight", func(t *testing.T) {
		l.mu.Lock()
		seq := l.seq
		l.mu.Unlock()
		c := dialFrom(t, l, "127.0.0.1")
		io.WriteString(c, "retry\n")
		waitSeq(t, l, seq+2) // accepted, restarted: the new flight is read apart
		if err := greet(c, "again", 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if got := acceptOne(t, l, 10*time.Second); got != "again" {
			t.Errorf("Accept = %q", got)
		}
	})
}

// keyedLines is a Config.ReplayKey for tests: a line starting "k:" is its
// own key; other lines have none. It records what it was asked.
type keyedLines struct {
	mu    sync.Mutex
	again []bool // the again of each call with a key
}

func (k *keyedLines) key(flight []byte, again bool) ([]byte, bool) {
	line := strings.TrimSpace(string(flight))
	if !strings.HasPrefix(line, "k:") {
		return nil, false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.again = append(k.again, again)
	return []byte(line), true
}

// countHandshakes wraps h to count its calls.
func countHandshakes(h func(context.Context, net.Conn) (string, error), n *atomic.Int64) func(context.Context, net.Conn) (string, error) {
	return func(ctx context.Context, c net.Conn) (string, error) {
		n.Add(1)
		return h(ctx, c)
	}
}

// TestReplayedFlightRefused: with Config.ReplayKey, a first flight whose
// key was seen before is closed before the handshake starts, with nothing
// written and ErrReplayed for Failed; a flight without a key, or with a
// new one, runs as usual.
func TestReplayedFlightRefused(t *testing.T) {
	var handshakes atomic.Int64
	failed := make(chan error, 10)
	keys := &keyedLines{}
	l := listen(t, Config[string]{
		Handshake: countHandshakes(echoHandshake, &handshakes),
		ReplayKey: keys.key,
		Failed:    func(_ net.Addr, err error) { failed <- err },
	})
	steps := []struct {
		line     string
		replayed bool
	}{
		{"k:one", false},
		{"k:one", true},
		{"k:two", false},
		{"unkeyed", false},
		{"unkeyed", false},
		{"k:two", true},
		{"k:one", true},
	}
	want := int64(0)
	for i, s := range steps {
		c := dialFrom(t, l, fmt.Sprintf("127.0.0.%d", 1+i%3))
		if !s.replayed {
			want++
			if err := greet(c, s.line, 10*time.Second); err != nil {
				t.Fatalf("step %d, %q: %v", i, s.line, err)
			}
			acceptOne(t, l, 10*time.Second)
			continue
		}
		io.WriteString(c, s.line+"\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 64)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("step %d, replayed %q: read %d bytes, %v; want the connection closed with nothing written", i, s.line, n, err)
		}
		if err := <-failed; !errors.Is(err, ErrReplayed) {
			t.Fatalf("step %d: Failed got %v, want ErrReplayed", i, err)
		}
	}
	if got := handshakes.Load(); got != want {
		t.Errorf("%d handshakes ran, want %d: a replay reached the handshake", got, want)
	}
	waitPending(t, l, 0)
	if slices.Contains(keys.again, true) {
		t.Errorf("ReplayKey was told again for a first flight: %v", keys.again)
	}
}

// TestAwaitFirstFlightRefusesReplay: a flight a handshake asks for again
// is checked against every flight seen, and remembered, as a first
// flight is; ReplayKey is told it is one asked for again.
func TestAwaitFirstFlightRefusesReplay(t *testing.T) {
	var handshakes atomic.Int64
	failed := make(chan error, 10)
	keys := &keyedLines{}
	l := listen(t, Config[string]{
		Handshake: countHandshakes(hangOnHang, &handshakes),
		ReplayKey: keys.key,
		Failed:    func(_ net.Addr, err error) { failed <- err },
	})
	seq := func() uint64 { l.mu.Lock(); defer l.mu.Unlock(); return l.seq }
	retry := func(line string) net.Conn {
		s := seq()
		c := dialFrom(t, l, "127.0.0.1")
		io.WriteString(c, "retry\n")
		waitSeq(t, l, s+2) // accepted, restarted
		io.WriteString(c, line+"\n")
		return c
	}
	refused := func(c net.Conn) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 64)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read %d bytes, %v; want the connection closed with nothing written", n, err)
		}
		if err := <-failed; !errors.Is(err, ErrReplayed) {
			t.Fatalf("Failed got %v, want ErrReplayed", err)
		}
	}

	// A first flight's key, then the same key after a restart: refused.
	first := dialFrom(t, l, "127.0.0.2")
	if err := greet(first, "k:first", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	acceptOne(t, l, 10*time.Second)
	refused(retry("k:first"))

	// A new key after a restart is answered, and remembered: the same key
	// later as a first flight is refused.
	c := retry("k:second")
	var b [64]byte
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(b[:]); err != nil || string(b[:n]) != "ok k:second\n" {
		t.Fatalf("after the restart: %q, %v", b[:n], err)
	}
	acceptOne(t, l, 10*time.Second)
	again := dialFrom(t, l, "127.0.0.3")
	io.WriteString(again, "k:second\n")
	refused(again)

	keys.mu.Lock()
	defer keys.mu.Unlock()
	if want := []bool{false, true, true, false}; !slices.Equal(keys.again, want) {
		t.Errorf("ReplayKey's again was %v, want %v", keys.again, want)
	}
}

// TestFirstFlightBufferGrowsWithBytesReceived: a peer that promises a
// 64 KiB flight and sends 10 bytes makes the reader hold tens of bytes,
// not what it promised.
func TestFirstFlightBufferGrowsWithBytesReceived(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go a.Write([]byte("0123456789"))
	largest := 0
	need := func(p []byte) int {
		largest = max(largest, cap(p))
		if len(p) < 10 {
			return 10
		}
		return 10 + 65535 // the "length field" promises this much more
	}
	_, err := readFirstFlight(b, need, nil, time.Now().Add(200*time.Millisecond))
	if !errors.Is(err, ErrFirstFlight) {
		t.Fatalf("readFirstFlight = %v, want ErrFirstFlight", err)
	}
	if largest > minFlightBuffer {
		t.Errorf("a 10-byte peer made the buffer %d bytes, want at most %d", largest, minFlightBuffer)
	}
}

// TestCPUGateNewestFirst: a source's queued handshakes are served newest
// first.
func TestCPUGateNewestFirst(t *testing.T) {
	r := newGateRun(t)
	s := &source{}
	for i := range 3 {
		r.queue(s, 0, fmt.Sprint(i))
	}
	if got, want := r.served(), "2 1 0"; got != want {
		t.Errorf("served %v, want newest first: %s", got, want)
	}
}

// fakeConn is a connection from a synthetic address, for tests of the
// drop policy that need no socket.
type fakeConn struct {
	net.Conn
	addr   net.Addr
	closed bool
}

func (c *fakeConn) RemoteAddr() net.Addr { return c.addr }
func (c *fakeConn) Close() error         { c.closed = true; return nil }

// scanVictim is victimLocked the slow way: every connection sorted, the
// older half of the lowest rank present counted by source, every source
// compared.
func scanVictim(l *Listener[string], upTo rank) *entry {
	for r := unproved; r <= upTo; r++ {
		var all []*entry
		for _, s := range l.sources {
			for el := s.conns[r].Front(); el != nil; el = el.Next() {
				all = append(all, el.Value.(*entry))
			}
		}
		if len(all) == 0 {
			continue
		}
		slices.SortFunc(all, func(a, b *entry) int { return cmp.Compare(a.seq, b.seq) })
		older := map[*source][]*entry{}
		for _, e := range all[:(len(all)+1)/2] {
			older[e.src] = append(older[e.src], e)
		}
		var best []*entry
		for _, es := range older {
			if best == nil || len(es) > len(best) || len(es) == len(best) && es[0].seq < best[0].seq {
				best = es
			}
		}
		return best[0]
	}
	return nil
}

// TestVictimMatchesScan drives a table of 4096 slots from 4500 sources
// through random arrivals, proofs, completions, restarts and departures,
// and checks every 10 steps that the heaps pick the victim a scan of every
// connection picks.
func TestVictimMatchesScan(t *testing.T) {
	const sources, slots, steps = 4500, 4096, 3000
	l := newListener(nil, Config[string]{MaxPending: slots})
	rng := rand.New(rand.NewPCG(1, 2))
	var live []*entry
	for step := -slots; step < steps; step++ { // the first slots steps fill the table
		l.mu.Lock()
		switch op := rng.IntN(10); {
		case op < 5 || step < 0: // an arrival, from a few busy sources or any
			i := rng.IntN(sources)
			if rng.IntN(2) == 0 {
				i %= 8
			}
			addr := &net.TCPAddr{IP: net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)), Port: 1}
			l.mu.Unlock()
			e, err := l.admit(&fakeConn{addr: addr})
			if err != nil {
				t.Fatal(err)
			}
			l.mu.Lock()
			live = append(live, e)
		default:
			j := rng.IntN(len(live))
			e := live[j]
			switch {
			case e.gone() || op == 9:
				l.removeLocked(e)
				live = slices.Delete(live, j, j+1)
			case op == 6:
				l.moveLocked(e, unproved) // a restart
			case e.rank < completed:
				l.moveLocked(e, e.rank+1)
			}
		}
		for r := range l.ranks {
			rs := &l.ranks[r]
			if want := (rs.order.Len() + 1) / 2; rs.older != want {
				t.Fatalf("step %d: rank %d has %d in its older half, want %d", step, r, rs.older, want)
			}
		}
		for _, upTo := range []rank{unproved, completed} {
			if step < 0 || step%10 != 0 {
				break // a scan every 10 steps: one costs milliseconds under -race
			}
			if got, want := l.victimLocked(upTo), scanVictim(l, upTo); got != want {
				t.Fatalf("step %d: the heap picks %+v, a scan %+v", step, got, want)
			}
		}
		if l.pending > slots {
			t.Fatalf("step %d: %d pending, more than %d", step, l.pending, slots)
		}
		l.mu.Unlock()
	}
	if n := len(l.sources); n < 1000 {
		t.Errorf("only %d sources took part", n)
	}
}

// BenchmarkAdmitFull measures an arrival at a full table of 4096 slots
// held by 4500 sources: it drops the victim and takes its place.
func BenchmarkAdmitFull(b *testing.B) {
	const sources, slots = 4500, 4096
	l := newListener(nil, Config[string]{MaxPending: slots})
	conns := make([]*fakeConn, sources)
	for i := range conns {
		conns[i] = &fakeConn{addr: &net.TCPAddr{IP: net.IPv4(10, 0, byte(i>>8), byte(i)), Port: 1}}
	}
	for i := range slots {
		if _, err := l.admit(conns[i%sources]); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := range b.N {
		if _, err := l.admit(conns[i%sources]); err != nil {
			b.Fatal(err)
		}
	}
}

// twoPartHandshake answers a first line "hello" with "part2?", reads the
// second part of the first flight (a line) with ReadMoreFirstFlight, and
// answers "ok <line>", as a libp2p listener answers multistream-select
// before the security handshake's message 1 arrives.
func twoPartHandshake(ctx context.Context, c net.Conn) (string, error) {
	return twoPartHandshakeWith(ctx, c, func(c *Conn, ctx context.Context) error {
		return c.ReadMoreFirstFlight(ctx, lineFlight)
	})
}

// twoPartHandshakeWith is twoPartHandshake, which reads the second part
// with read.
func twoPartHandshakeWith(ctx context.Context, c net.Conn, read func(*Conn, context.Context) error) (string, error) {
	var b [64]byte
	n, err := c.Read(b[:])
	if err != nil {
		return "", err
	}
	if got := string(b[:n]); got != "hello\n" {
		return "", fmt.Errorf("first part %q", got)
	}
	if _, err := io.WriteString(c, "part2?\n"); err != nil {
		return "", err
	}
	if err := read(c.(*Conn), ctx); err != nil {
		return "", err
	}
	n, err = c.Read(b[:])
	if err != nil {
		return "", err
	}
	line := strings.TrimSpace(string(b[:n]))
	if _, err := fmt.Fprintf(c, "ok %s\n", line); err != nil {
		return "", err
	}
	return line, nil
}

// TestReadMoreFirstFlight: the second part of a first flight is read after
// the handshake's answer to the first, keeping the connection's rank; it
// has what is left of the first flight's deadline, counted from the
// accept, not from the answer.
func TestReadMoreFirstFlight(t *testing.T) {
	const timeout = 300 * time.Millisecond
	failed := make(chan error, 10)
	l := listen(t, Config[string]{
		FirstFlightTimeout: timeout,
		Handshake:          twoPartHandshake,
		Failed:             func(_ net.Addr, err error) { failed <- err },
	})
	readLine := func(c net.Conn) string {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var b [64]byte
		n, _ := c.Read(b[:])
		return string(b[:n])
	}
	t.Run("in time", func(t *testing.T) {
		l.mu.Lock()
		seq := l.seq
		l.mu.Unlock()
		c := dialFrom(t, l, "127.0.0.1")
		io.WriteString(c, "hello\n")
		if got := readLine(c); got != "part2?\n" {
			t.Fatalf("answer to the first part %q", got)
		}
		if err := greet(c, "second", 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if got := acceptOne(t, l, 10*time.Second); got != "second" {
			t.Errorf("Accept = %q", got)
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.seq != seq+2 {
			t.Errorf("the connection took %d places (accepted, completed, and %d more): the second part changed its rank", l.seq-seq, l.seq-seq-2)
		}
	})
	t.Run("silence", func(t *testing.T) {
		c := dialFrom(t, l, "127.0.0.1")
		io.WriteString(c, "hello\n")
		if got := readLine(c); got != "part2?\n" {
			t.Fatalf("answer to the first part %q", got)
		}
		if !closedByPeer(c) {
			t.Fatal("a peer silent after the first part was not dropped")
		}
		if err := <-failed; !errors.Is(err, ErrFirstFlight) {
			t.Errorf("Failed got %v, want ErrFirstFlight", err)
		}
	})
	t.Run("deadline from the accept", func(t *testing.T) {
		c := dialFrom(t, l, "127.0.0.1")
		start := time.Now()
		io.WriteString(c, "hello\n")
		if got := readLine(c); got != "part2?\n" {
			t.Fatalf("answer to the first part %q", got)
		}
		// Sent after the first flight's deadline has passed, counted from
		// the accept: refused, whenever the first part came.
		time.Sleep(timeout - time.Since(start) + 50*time.Millisecond)
		io.WriteString(c, "late\n")
		if !closedByPeer(c) {
			t.Fatal("a second part after the first flight's deadline was taken")
		}
		if err := <-failed; !errors.Is(err, ErrFirstFlight) {
			t.Errorf("Failed got %v, want ErrFirstFlight", err)
		}
	})
}

// TestDiscard: a handshake's result that does not reach Accept, its
// connection dropped while it waits, goes to Config.Discard.
func TestDiscard(t *testing.T) {
	discarded := make(chan string, 10)
	l := listen(t, Config[string]{MaxPending: 1, Discard: func(v string) { discarded <- v }})
	a := dialFrom(t, l, "127.0.0.1")
	if err := greet(a, "a", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); l.Completed() != 1; {
		if time.Now().After(deadline) {
			t.Fatalf("completed = %d, want 1", l.Completed())
		}
		time.Sleep(time.Millisecond)
	}
	b := dialFrom(t, l, "127.0.0.2")
	if err := greet(b, "b", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-discarded:
		if v != "a" {
			t.Errorf("discarded %q, want a", v)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the dropped connection's result was not discarded")
	}
	if got := acceptOne(t, l, 10*time.Second); got != "b" {
		t.Errorf("Accept = %q, want b", got)
	}
}
