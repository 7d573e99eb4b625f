package admit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
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
		{"waiting goes before handshaking in the same source", func(t *testing.T, l *Listener[string]) ([]net.Conn, net.Conn) {
			busy := dialFrom(t, l, "127.0.0.1")
			io.WriteString(busy, "hang\n") // the handshake waits for more
			waitBusy(t, l, 1)
			waiter := dialFrom(t, l, "127.0.0.1")
			waitPending(t, l, 2)
			x := dialFrom(t, l, "127.0.0.3")
			y := dialFrom(t, l, "127.0.0.4")
			return []net.Conn{busy, x, y}, waiter
		}},
		{"ties between sources go to the oldest waiter", func(t *testing.T, l *Listener[string]) ([]net.Conn, net.Conn) {
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
// for the connection to end.
func hangOnHang(ctx context.Context, c net.Conn) (string, error) {
	var b [64]byte
	n, err := c.Read(b[:])
	if err != nil {
		return "", err
	}
	line := strings.TrimSpace(string(b[:n]))
	if line == "hang" {
		_, err := c.Read(b[:])
		return "", fmt.Errorf("hang ended: %w", err)
	}
	if _, err := fmt.Fprintf(c, "ok %s\n", line); err != nil {
		return "", err
	}
	return line, nil
}

func waitBusy(t *testing.T, l *Listener[string], n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		busy := 0
		for _, s := range l.sources {
			busy += s.busy.Len()
		}
		l.mu.Unlock()
		if busy == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("busy = %d, want %d", busy, n)
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

func TestCompletedAreNeverDropped(t *testing.T) {
	l := listen(t, Config[string]{MaxPending: 2})
	for _, name := range []string{"a", "b"} {
		c := dialFrom(t, l, "127.0.0.1")
		if err := greet(c, name, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// The client has its answer a moment before the listener marks the
	// handshake complete; until then it could still be dropped.
	for deadline := time.Now().Add(10 * time.Second); l.Completed() != 2; {
		if time.Now().After(deadline) {
			t.Fatalf("completed = %d, want 2", l.Completed())
		}
		time.Sleep(time.Millisecond)
	}
	refused := dialFrom(t, l, "127.0.0.2")
	if !closedByPeer(refused) {
		t.Fatal("a third connection was kept while two completed ones waited for Accept")
	}
	first := acceptOne(t, l, 10*time.Second)
	waitPending(t, l, 1)
	c := dialFrom(t, l, "127.0.0.2")
	if err := greet(c, "c", 10*time.Second); err != nil {
		t.Fatalf("after Accept made room: %v", err)
	}
	second, third := acceptOne(t, l, 10*time.Second), acceptOne(t, l, 10*time.Second)
	got := first + second + third
	if len(got) != 3 || !strings.Contains(got, "a") || !strings.Contains(got, "b") || !strings.Contains(got, "c") {
		t.Errorf("accepted %q, %q, %q", first, second, third)
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
// falling back to a full handshake) takes a new turn, which its next read
// gives back; while it holds the turn, the turn is not free.
func TestConnReacquire(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	g := &cpuGate{free: 1}
	src := &source{}
	if err := g.acquire(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	c := &Conn{Conn: a, release: g.release, acquire: func(ctx context.Context) error { return g.acquire(ctx, src) }}
	free := func() int { g.mu.Lock(); defer g.mu.Unlock(); return g.free }
	if err := c.Reacquire(context.Background()); err != nil || free() != 0 {
		t.Fatalf("Reacquire while holding the turn: %v, %d free; want a no-op", err, free())
	}
	go b.Write([]byte("x"))
	c.Read(make([]byte, 1)) // waits for the peer: the turn goes back
	if free() != 1 {
		t.Fatalf("%d turns free after the read, want 1", free())
	}
	if err := c.Reacquire(context.Background()); err != nil || free() != 0 {
		t.Fatalf("Reacquire: %v, %d free; want the turn taken", err, free())
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
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	g.acquire(context.Background(), &source{}) // another handshake holds the turn
	if err := c.Reacquire(ctx); err == nil {
		t.Fatal("Reacquire with a canceled context and no free turn succeeded")
	}
}

// TestCPUGateRoundRobin queues handshakes from two sources behind a full
// gate and checks they are served alternately, not in arrival order.
func TestCPUGateRoundRobin(t *testing.T) {
	g := &cpuGate{free: 1}
	if err := g.acquire(context.Background(), &source{}); err != nil {
		t.Fatal(err)
	}
	heavy, light := &source{}, &source{}
	order := make(chan string, 8)
	var wg sync.WaitGroup
	// queue starts a handshake of s and waits until it is queued, its
	// want-th waiter, so that the arrival order is known.
	queue := func(s *source, name string, want int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := g.acquire(context.Background(), s); err != nil {
				t.Error(err)
				return
			}
			order <- name
			g.release()
		}()
		for {
			g.mu.Lock()
			n := len(s.cpuq)
			g.mu.Unlock()
			if n == want {
				return
			}
			runtime.Gosched()
		}
	}
	for i := range 3 {
		queue(heavy, "heavy", i+1)
	}
	queue(light, "light", 1)
	g.release()
	wg.Wait()
	close(order)
	var got []string
	for name := range order {
		got = append(got, name)
	}
	if want := "heavy light heavy heavy"; strings.Join(got, " ") != want {
		t.Errorf("served %v, want %s", got, want)
	}
}

func TestCPUGateCancel(t *testing.T) {
	g := &cpuGate{free: 1}
	s := &source{}
	if err := g.acquire(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- g.acquire(ctx, s) }()
	for {
		g.mu.Lock()
		n := len(s.cpuq)
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
	if g.free != 1 || len(g.ring) != 0 || len(s.cpuq) != 0 {
		t.Errorf("after cancel and release: free %d, ring %d, queue %d", g.free, len(g.ring), len(s.cpuq))
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
