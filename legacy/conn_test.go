package legacy

import (
	"bytes"
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// testTimeout bounds in-memory tests; generous for a loaded machine.
const testTimeout = 60 * time.Second

// goPair returns two Conns over loopback TCP (or net.Pipe if pipe is set),
// with keys a and b, not yet handshaken. Deadlines bound every operation.
func goPair(t *testing.T, pipe bool, ca, cb *Config) (*Conn, *Conn) {
	t.Helper()
	var x, y net.Conn
	if pipe {
		x, y = net.Pipe()
	} else {
		x, y = tcpPair(t)
	}
	dl := time.Now().Add(testTimeout)
	x.SetDeadline(dl)
	y.SetDeadline(dl)
	if ca.Keys == nil {
		ca.Keys = testKeys(t, "a")
	}
	if cb.Keys == nil {
		cb.Keys = testKeys(t, "b")
	}
	a, b := NewConn(x, ca), NewConn(y, cb)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// handshakeBoth runs both handshakes at once and returns their errors.
func handshakeBoth(a, b *Conn) (errA, errB error) {
	var wg sync.WaitGroup
	wg.Go(func() { errA = a.Handshake() })
	wg.Go(func() { errB = b.Handshake() })
	wg.Wait()
	return errA, errB
}

func TestGoToGo(t *testing.T) {
	for _, cipher := range []string{"RC4", "aes-128-cbc", "aes-192-cbc", "AES-256-CBC", "aes128", "aes192", "aes256"} {
		for _, pipe := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/pipe=%v", cipher, pipe), func(t *testing.T) {
				a, b := goPair(t, pipe,
					&Config{Ciphers: []string{cipher}, Verify: pin(testKeys(t, "b").Public())},
					&Config{Ciphers: slices.Compact([]string{"RC4", cipher}), Verify: pin(testKeys(t, "a").Public())})
				// No explicit handshake: the first Write and Read run it.
				dataA := randomBytes(t, 200<<10+3)
				dataB := []byte("short reply")
				var wg sync.WaitGroup
				var gotA, gotB []byte
				var errs [4]error
				wg.Go(func() {
					if _, errs[0] = a.Write(dataA); errs[0] == nil {
						errs[0] = a.CloseWrite()
					}
				})
				wg.Go(func() {
					if _, errs[1] = b.Write(dataB); errs[1] == nil {
						errs[1] = b.CloseWrite()
					}
				})
				wg.Go(func() { gotB, errs[2] = io.ReadAll(b) })
				wg.Go(func() { gotA, errs[3] = io.ReadAll(a) })
				wg.Wait()
				for i, err := range errs {
					if err != nil {
						t.Fatalf("step %d: %v", i, err)
					}
				}
				if !bytes.Equal(gotB, dataA) || !bytes.Equal(gotA, dataB) {
					t.Fatalf("data differs: got %d and %d bytes", len(gotB), len(gotA))
				}
				if a.Cipher() != cipher || b.Cipher() != cipher {
					t.Errorf("ciphers %q and %q, want %q", a.Cipher(), b.Cipher(), cipher)
				}
				if !a.RemoteKey().Equal(testKeys(t, "b").Public()) || !b.RemoteKey().Equal(testKeys(t, "a").Public()) {
					t.Error("RemoteKey is not the peer's key")
				}
				if a.RemoteKeyPEM() != testKeys(t, "b").PublicPEM() {
					t.Error("RemoteKeyPEM is not the peer's PEM")
				}
			})
		}
	}
}

func TestAccessorsBeforeHandshake(t *testing.T) {
	c := NewConn(&scriptConn{in: bytes.NewReader(nil)}, &Config{Keys: testKeys(t, "a")})
	if c.RemoteKey() != nil || c.RemoteKeyPEM() != "" || c.Cipher() != "" {
		t.Error("accessors return values before the handshake")
	}
	if c.NetConn() == nil || c.LocalAddr() == nil || c.RemoteAddr() == nil {
		t.Error("nil address or connection")
	}
}

func TestConfigErrors(t *testing.T) {
	keys := testKeys(t, "a")
	tests := []struct {
		name   string
		config *Config
		errSub string
	}{
		{"nil config", nil, "nil Config"},
		{"no keys", &Config{}, "Config.Keys is not set"},
		{"empty keys", &Config{Keys: &Keys{}}, "Config.Keys is not set"},
		{"empty ciphers", &Config{Keys: keys, Ciphers: []string{}}, "Config.Ciphers is empty"},
		{"unknown cipher", &Config{Keys: keys, Ciphers: []string{"RC4", "des-cbc"}}, `unsupported cipher "des-cbc"`},
		{"duplicate cipher", &Config{Keys: keys, Ciphers: []string{"RC4", "RC4"}}, `lists "RC4" twice`},
		{"negative frame size", &Config{Keys: keys, MaxFrameSize: -1}, "MaxFrameSize"},
		{"huge frame size", &Config{Keys: keys, MaxFrameSize: MaxFrameSizeLimit + 1}, "MaxFrameSize"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := &scriptConn{in: bytes.NewReader(nil)}
			c := NewConn(sc, tt.config)
			err := c.Handshake()
			if err == nil || !strings.Contains(err.Error(), tt.errSub) {
				t.Fatalf("Handshake = %v, want %q", err, tt.errSub)
			}
			if sc.out.Len() != 0 {
				t.Error("a bad Config still sent a header")
			}
			// Sticky.
			if _, err2 := c.Write([]byte("x")); err2 != err {
				t.Errorf("Write = %v, want %v", err2, err)
			}
			if _, err2 := c.Read(make([]byte, 1)); err2 != err {
				t.Errorf("Read = %v, want %v", err2, err)
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	errNo := errors.New("no thanks")
	var seen *rsa.PublicKey
	a, b := goPair(t, false,
		&Config{Verify: func(ctx context.Context, pub *rsa.PublicKey) error {
			if ctx == nil {
				return errors.New("nil context")
			}
			seen = pub
			return errNo
		}},
		&Config{})
	errA, errB := handshakeBoth(a, b)
	if !errors.Is(errA, errNo) || !strings.Contains(errA.Error(), Fingerprint(testKeys(t, "b").Public())) {
		t.Errorf("rejecting side: %v", errA)
	}
	if !seen.Equal(testKeys(t, "b").Public()) {
		t.Error("Verify did not see the peer's key")
	}
	if errB != nil {
		t.Fatalf("rejected side's handshake: %v", errB)
	}
	if _, err := b.Read(make([]byte, 1)); !errors.Is(err, ErrRejected) {
		t.Errorf("rejected side's Read = %v, want ErrRejected", err)
	}
}

func TestNoCommonCipher(t *testing.T) {
	a, b := goPair(t, true, &Config{Ciphers: []string{"aes-128-cbc"}}, &Config{Ciphers: []string{"AES-128-CBC"}})
	errA, errB := handshakeBoth(a, b)
	for _, err := range []error{errA, errB} {
		if !errors.Is(err, ErrNoCommonCipher) {
			t.Errorf("Handshake = %v, want ErrNoCommonCipher", err)
		}
	}
}

func TestHandshakeTimeout(t *testing.T) {
	// A peer that accepts the connection and says nothing.
	x, y := net.Pipe()
	defer y.Close()
	go io.Copy(io.Discard, y)
	start := time.Now()
	c := NewConn(x, &Config{Keys: testKeys(t, "a"), HandshakeTimeout: 100 * time.Millisecond})
	err := c.Handshake()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Handshake = %v, want a deadline error", err)
	}
	if d := time.Since(start); d > testTimeout/2 {
		t.Errorf("took %v", d)
	}
	if _, err2 := c.Write([]byte("x")); !errors.Is(err2, context.DeadlineExceeded) {
		t.Errorf("Write after = %v", err2)
	}
}

func TestHandshakeContextCancel(t *testing.T) {
	// A peer that reads nothing: even our header write blocks.
	x, y := net.Pipe()
	defer y.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancelled := make(chan struct{})
	c := NewConn(x, &Config{Keys: testKeys(t, "a")})
	done := make(chan error, 1)
	go func() { done <- c.HandshakeContext(ctx) }()
	go func() {
		// Cancel once the handshake is blocked on the pipe.
		buf := make([]byte, 1)
		y.Read(buf)
		cancel()
		close(cancelled)
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("HandshakeContext = %v, want context.Canceled", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("HandshakeContext did not return after cancel")
	}
	<-cancelled
}

func TestVerifySeesContextDeadline(t *testing.T) {
	a, b := goPair(t, false, &Config{
		HandshakeTimeout: time.Hour,
		Verify: func(ctx context.Context, _ *rsa.PublicKey) error {
			if _, ok := ctx.Deadline(); !ok {
				return errors.New("no deadline")
			}
			return nil
		},
	}, &Config{})
	if errA, errB := handshakeBoth(a, b); errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
}

func TestReflectedHeader(t *testing.T) {
	x, y := net.Pipe()
	go io.Copy(y, y) // send everything back
	defer y.Close()
	c := NewConn(x, &Config{Keys: testKeys(t, "a")})
	if err := c.Handshake(); err == nil || !strings.Contains(err.Error(), "reflected") {
		t.Fatalf("Handshake = %v, want a reflected-header error", err)
	}
}

func TestNotAPeer(t *testing.T) {
	tests := []struct{ name, input, errSub string }{
		{"closed at once", "", "closed before the peer's header"},
		{"half a header", `{"hash":`, "closed before the peer's header"},
		{"HTTP", "GET / HTTP/1.1\r\n\r\n", "not a JSON object"},
		{"endless line", strings.Repeat("x", MaxHeaderLine+10), "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewConn(&scriptConn{in: bytes.NewReader([]byte(tt.input))}, &Config{Keys: testKeys(t, "a")})
			if err := c.Handshake(); err == nil || !strings.Contains(err.Error(), tt.errSub) {
				t.Fatalf("Handshake = %v, want %q", err, tt.errSub)
			}
		})
	}
}

func TestCloseWrite(t *testing.T) {
	a, b := goPair(t, false, &Config{}, &Config{})
	if errA, errB := handshakeBoth(a, b); errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if _, err := a.Write([]byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := a.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := a.CloseWrite(); err != nil {
		t.Errorf("second CloseWrite = %v", err)
	}
	if _, err := a.Write([]byte("two")); !errors.Is(err, errShutdown) {
		t.Errorf("Write after CloseWrite = %v", err)
	}
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "one" {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
	// EOF is sticky, and the other direction still works.
	if n, err := b.Read(make([]byte, 5)); n != 0 || err != io.EOF {
		t.Errorf("Read after EOF = %d, %v", n, err)
	}
	if _, err := b.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(a)
	if err != nil || string(got) != "reply" {
		t.Errorf("ReadAll after CloseWrite = %q, %v", got, err)
	}
}

func TestCloseSendsEndFrame(t *testing.T) {
	a, b := goPair(t, false, &Config{}, &Config{})
	if errA, errB := handshakeBoth(a, b); errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if _, err := a.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(b); err != nil || string(got) != "bye" {
		t.Errorf("ReadAll = %q, %v; want a clean end", got, err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestTruncated(t *testing.T) {
	x, y := tcpPair(t)
	a := NewConn(x, &Config{Keys: testKeys(t, "a")})
	b := NewConn(y, &Config{Keys: testKeys(t, "b")})
	if errA, errB := handshakeBoth(a, b); errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if _, err := a.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	x.Close() // no end frame
	buf := make([]byte, 100)
	n, err := b.Read(buf)
	if err != nil || string(buf[:n]) != "partial" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	if _, err := b.Read(buf); !errors.Is(err, ErrTruncated) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Read = %v, want ErrTruncated", err)
	}
}

func TestReadDeadlineIsNotPermanent(t *testing.T) {
	a, b := goPair(t, false, &Config{}, &Config{})
	if errA, errB := handshakeBoth(a, b); errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	b.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	buf := make([]byte, 10)
	if _, err := b.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read = %v, want a timeout", err)
	}
	b.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := a.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Read(buf); err != nil || string(buf[:n]) != "late" {
		t.Errorf("Read after a timeout = %q, %v", buf[:n], err)
	}
}

func TestMaxFrameSize(t *testing.T) {
	a, b := goPair(t, false, &Config{}, &Config{MaxFrameSize: 1000})
	if errA, errB := handshakeBoth(a, b); errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	go func() {
		a.Write(make([]byte, 1000))
		a.Write(make([]byte, 5000))
	}()
	buf := make([]byte, 10000)
	if n, err := io.ReadFull(b, buf[:1000]); err != nil {
		t.Fatalf("a frame at the limit: %d, %v", n, err)
	}
	if _, err := b.Read(buf); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("Read = %v, want ErrFrameTooLarge", err)
	}
}

func TestLargeWriteIsSplit(t *testing.T) {
	x, y := tcpPair(t)
	a := NewConn(x, &Config{Keys: testKeys(t, "a")})
	b := NewConn(&countingConn{Conn: y}, &Config{Keys: testKeys(t, "b")})
	t.Cleanup(func() { a.Close(); b.Close() })
	data := randomBytes(t, 3*SendChunkSize+1)
	go func() {
		a.Write(data)
		a.Write(nil) // sends nothing
		a.CloseWrite()
	}()
	got, err := io.ReadAll(b)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadAll: %d bytes, %v", len(got), err)
	}
	if b.in.seq != 5 { // 4 data frames and the end frame
		t.Errorf("received %d frames, want 5", b.in.seq)
	}
}

func TestSequenceLimit(t *testing.T) {
	a, b := goPair(t, false, &Config{}, &Config{})
	if errA, errB := handshakeBoth(a, b); errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	a.out.seq = maxSeq + 1
	if _, err := a.Write([]byte("x")); err == nil || !strings.Contains(err.Error(), "exhausted") {
		t.Errorf("Write at the limit = %v", err)
	}
}

func TestConcurrentReadWrite(t *testing.T) {
	a, b := goPair(t, false, &Config{}, &Config{})
	const n = 20
	var wg sync.WaitGroup
	for _, c := range []*Conn{a, b} {
		wg.Go(func() {
			for i := range n {
				if _, err := fmt.Fprintf(c, "%04d", i); err != nil {
					t.Error(err)
					return
				}
			}
			c.CloseWrite()
		})
		wg.Go(func() {
			got, err := io.ReadAll(c)
			if err != nil || len(got) != 4*n {
				t.Errorf("ReadAll = %d bytes, %v", len(got), err)
			}
		})
		// Accessors race with the handshake.
		wg.Go(func() { _ = c.Cipher(); _ = c.RemoteKey() })
	}
	wg.Wait()
}

// countingConn is a net.Conn wrapper; it only exists to show that the Conn
// works over any net.Conn, not just *net.TCPConn.
type countingConn struct {
	net.Conn
	mu sync.Mutex
	n  int
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.mu.Lock()
	c.n += n
	c.mu.Unlock()
	return n, err
}

func TestDialListen(t *testing.T) {
	if _, err := Listen("tcp", "127.0.0.1:0", &Config{}); err == nil {
		t.Error("Listen accepted a Config without keys")
	}
	if _, err := Dial(context.Background(), "tcp", "127.0.0.1:1", nil); err == nil {
		t.Error("Dial accepted a nil Config")
	}
	ln, err := Listen("tcp", "127.0.0.1:0", &Config{Keys: testKeys(t, "b"), HandshakeTimeout: testTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		c := raw.(*Conn)
		defer c.Close()
		c.SetDeadline(time.Now().Add(testTimeout))
		if _, err := io.Copy(c, c); err != nil {
			served <- err
			return
		}
		served <- c.CloseWrite()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := Dial(ctx, "tcp", ln.Addr().String(), &Config{Keys: testKeys(t, "a"), Verify: pin(testKeys(t, "b").Public())})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(c); err != nil || string(got) != "ping" {
		t.Errorf("ReadAll = %q, %v", got, err)
	}
	if err := <-served; err != nil {
		t.Errorf("server: %v", err)
	}
}

func TestNoCommonCipherErrorCarriesLists(t *testing.T) {
	err := error(&NoCommonCipherError{Local: []string{"rc4"}, Peer: []string{"RC4"}})
	var nc *NoCommonCipherError
	if !errors.Is(err, ErrNoCommonCipher) || !errors.As(err, &nc) {
		t.Fatalf("%v does not wrap ErrNoCommonCipher as a *NoCommonCipherError", err)
	}
	if nc.Local[0] != "rc4" || nc.Peer[0] != "RC4" || !strings.Contains(err.Error(), `this side: ["rc4"], peer: ["RC4"]`) {
		t.Errorf("error %q", err)
	}
}

func TestHandshakeTimeoutDefault(t *testing.T) {
	tests := []struct {
		cfg  *Config
		want time.Duration
	}{
		{nil, defaultHandshakeTimeout},
		{&Config{}, defaultHandshakeTimeout},
		{&Config{HandshakeTimeout: time.Second}, time.Second},
		{&Config{HandshakeTimeout: -1}, 0},
	}
	for _, tt := range tests {
		if got := tt.cfg.handshakeTimeout(); got != tt.want {
			t.Errorf("handshakeTimeout of %+v = %v, want %v", tt.cfg, got, tt.want)
		}
	}
}
