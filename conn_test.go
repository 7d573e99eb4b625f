package securepeer

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/securepeer/securepeer/internal/wire"
)

func TestManySmallWrites(t *testing.T) {
	eachTransport(t, func(t *testing.T, pair pairFunc) {
		a, b := pair(t)
		client := Client(a, &Config{Identity: testIdentity(t, 1)})
		server := Server(b, &Config{Identity: testIdentity(t, 2)})
		var want bytes.Buffer
		for i := range 2000 {
			fmt.Fprintf(&want, "%d,", i)
		}
		done := run(func() error {
			for _, part := range strings.SplitAfter(want.String(), ",") {
				if _, err := client.Write([]byte(part)); err != nil {
					return err
				}
			}
			return client.CloseWrite()
		})
		got, err := io.ReadAll(server)
		if err != nil {
			t.Fatal(err)
		}
		if err := wait(t, done); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("received %d bytes that differ from the %d sent", len(got), want.Len())
		}
	})
}

func TestTamperingProxy(t *testing.T) {
	// Flip one bit in each unit in turn, in each direction: the hellos, the
	// handshake messages and the records. The receiver must fail and never
	// deliver data other than what was sent.
	const msg = "beep boop"
	for _, dir := range []string{"c2s", "s2c"} {
		units := map[string]int{"c2s": 5, "s2c": 3} // hello, handshake messages, data, end
		for unit := range units[dir] {
			t.Run(fmt.Sprintf("%s/unit%d", dir, unit), func(t *testing.T) {
				checkNoLeaks(t)
				p := &proxy{
					handshakeMessages: map[string]int{"c2s": 2, "s2c": 1},
					filter: func(d string, i int, u []byte) [][]byte {
						if d == dir && i == unit {
							u = append([]byte(nil), u...)
							u[len(u)/2] ^= 0x10
						}
						return [][]byte{u}
					},
				}
				a, b := p.start(t)
				client := Client(a, &Config{Identity: testIdentity(t, 1), HandshakeTimeout: 5 * time.Second})
				server := Server(b, &Config{Identity: testIdentity(t, 2), HandshakeTimeout: 5 * time.Second})
				srv := run(func() error {
					defer server.Close()
					got, err := io.ReadAll(server)
					if err == nil {
						return fmt.Errorf("server read %q without error", got)
					}
					if len(got) > 0 && !strings.HasPrefix(msg, string(got)) {
						return fmt.Errorf("server delivered wrong data %q", got)
					}
					return nil
				})
				cli := run(func() error {
					defer client.Close()
					if _, err := client.Write([]byte(msg)); err != nil {
						return err
					}
					client.CloseWrite()
					_, err := io.ReadAll(client)
					return err
				})
				serr := wait(t, srv)
				cerr := wait(t, cli)
				if dir == "c2s" && serr != nil {
					t.Fatal(serr)
				}
				if dir == "s2c" && cerr == nil {
					t.Fatal("client read to EOF although the responder's stream was altered")
				}
			})
		}
	}
}

func TestTruncation(t *testing.T) {
	// Cut the responder's stream just before its end-of-stream record: the
	// client must see io.ErrUnexpectedEOF, never a clean io.EOF.
	p := &proxy{
		handshakeMessages: map[string]int{"c2s": 2, "s2c": 1},
		filter: func(d string, i int, u []byte) [][]byte {
			if d == "s2c" && i >= 2 && u[0] == 2 { // RecordEnd
				return nil
			}
			return [][]byte{u}
		},
	}
	a, b := p.start(t)
	client := Client(a, &Config{Identity: testIdentity(t, 1)})
	server := Server(b, &Config{Identity: testIdentity(t, 2)})
	srv := run(func() error {
		if _, err := server.Write([]byte("partial")); err != nil {
			return err
		}
		return server.Close()
	})
	got, err := io.ReadAll(client)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Read error %v, want io.ErrUnexpectedEOF", err)
	}
	if string(got) != "partial" {
		t.Errorf("got %q before the cut", got)
	}
	if err := wait(t, srv); err != nil {
		t.Fatal(err)
	}
}

func TestReorderingProxy(t *testing.T) {
	// Swap the first two data records from the client.
	var held []byte
	p := &proxy{
		handshakeMessages: map[string]int{"c2s": 2, "s2c": 1},
		filter: func(d string, i int, u []byte) [][]byte {
			if d != "c2s" {
				return [][]byte{u}
			}
			switch i {
			case 3:
				held = u
				return nil
			case 4:
				return [][]byte{u, held}
			}
			return [][]byte{u}
		},
	}
	a, b := p.start(t)
	client := Client(a, &Config{Identity: testIdentity(t, 1)})
	server := Server(b, &Config{Identity: testIdentity(t, 2)})
	cli := run(func() error {
		for _, s := range []string{"first", "second", "third"} {
			if _, err := client.Write([]byte(s)); err != nil {
				return err
			}
		}
		return client.CloseWrite()
	})
	got, err := io.ReadAll(server)
	if !errors.Is(err, errAuth) {
		t.Fatalf("Read error %v, want the authentication failure", err)
	}
	if len(got) != 0 {
		t.Errorf("delivered %q from reordered records", got)
	}
	wait(t, cli)
}

func TestDuplicatedRecord(t *testing.T) {
	p := &proxy{
		handshakeMessages: map[string]int{"c2s": 2, "s2c": 1},
		filter: func(d string, i int, u []byte) [][]byte {
			if d == "c2s" && i == 3 {
				return [][]byte{u, u}
			}
			return [][]byte{u}
		},
	}
	a, b := p.start(t)
	client := Client(a, &Config{Identity: testIdentity(t, 1)})
	server := Server(b, &Config{Identity: testIdentity(t, 2)})
	cli := run(func() error {
		if _, err := client.Write([]byte("once")); err != nil {
			return err
		}
		return client.CloseWrite()
	})
	got, err := io.ReadAll(server)
	if !errors.Is(err, errAuth) || string(got) != "once" {
		t.Fatalf("got %q, %v; want \"once\" then the authentication failure", got, err)
	}
	wait(t, cli)
}

// recorder wraps a connection and keeps a copy of what it reads.
type recorder struct {
	net.Conn
	mu  sync.Mutex
	got bytes.Buffer
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.mu.Lock()
	r.got.Write(p[:n])
	r.mu.Unlock()
	return n, err
}

func (r *recorder) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.got.Bytes()...)
}

// record runs a full session and returns what each side received.
func record(t *testing.T) (toServer, toClient []byte) {
	a, b := tcpPair(t)
	ra, rb := &recorder{Conn: a}, &recorder{Conn: b}
	client := Client(ra, &Config{Identity: testIdentity(t, 1)})
	server := Server(rb, &Config{Identity: testIdentity(t, 2)})
	srv := run(func() error { return echoUpper(server) })
	client.Write([]byte("secret command"))
	client.CloseWrite()
	if got, err := io.ReadAll(client); err != nil || string(got) != "SECRET COMMAND" {
		t.Fatalf("recording: %q, %v", got, err)
	}
	if err := wait(t, srv); err != nil {
		t.Fatal(err)
	}
	return rb.bytes(), ra.bytes()
}

func TestReplay(t *testing.T) {
	toServer, toClient := record(t)
	t.Run("to a fresh server", func(t *testing.T) {
		checkNoLeaks(t)
		a, b := tcpPair(t)
		server := Server(b, &Config{Identity: testIdentity(t, 2), HandshakeTimeout: 5 * time.Second})
		go func() {
			a.Write(toServer)
			io.Copy(io.Discard, a)
		}()
		got, err := io.ReadAll(server)
		if err == nil || len(got) != 0 {
			t.Fatalf("replayed session delivered %q, %v", got, err)
		}
		if !errors.Is(err, errAuth) {
			t.Errorf("error %v, want the authentication failure", err)
		}
		server.Close()
	})
	t.Run("to a fresh client", func(t *testing.T) {
		checkNoLeaks(t)
		a, b := tcpPair(t)
		client := Client(a, &Config{Identity: testIdentity(t, 1), HandshakeTimeout: 5 * time.Second})
		go func() {
			b.Write(toClient)
			io.Copy(io.Discard, b)
		}()
		got, err := io.ReadAll(client)
		if err == nil || len(got) != 0 {
			t.Fatalf("replayed session delivered %q, %v", got, err)
		}
		client.Close()
	})
}

func TestLargeTransfer(t *testing.T) {
	const size = 64 << 20
	a, b := tcpPair(t)
	client := Client(a, &Config{Identity: testIdentity(t, 1)})
	server := Server(b, &Config{Identity: testIdentity(t, 2)})
	sent := sha256.New()
	cli := run(func() error {
		buf := make([]byte, 1<<20+123) // not a multiple of the record size
		for left := size; left > 0; {
			n := min(left, len(buf))
			rand.Read(buf[:n])
			sent.Write(buf[:n])
			if _, err := client.Write(buf[:n]); err != nil {
				return err
			}
			left -= n
		}
		return client.CloseWrite()
	})
	got := sha256.New()
	n, err := io.Copy(got, server)
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(t, cli); err != nil {
		t.Fatal(err)
	}
	if n != size || !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
		t.Fatalf("received %d bytes with a different hash", n)
	}
}

func TestKeyRotation(t *testing.T) {
	old := rekeyInterval
	rekeyInterval = 3
	defer func() { rekeyInterval = old }()
	a, b := tcpPair(t)
	client := Client(a, &Config{Identity: testIdentity(t, 1), Ciphers: []Cipher{ChaCha20Poly1305}})
	server := Server(b, &Config{Identity: testIdentity(t, 2), Ciphers: []Cipher{ChaCha20Poly1305}})
	var want bytes.Buffer
	cli := run(func() error {
		for i := range 20 {
			s := fmt.Sprintf("record %d;", i)
			want.WriteString(s)
			if _, err := client.Write([]byte(s)); err != nil {
				return err
			}
		}
		return client.CloseWrite()
	})
	got, err := io.ReadAll(server)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, cli)
	if string(got) != want.String() {
		t.Fatalf("got %q", got)
	}
	if server.in.seq != 21 {
		t.Errorf("read %d records, want 21", server.in.seq)
	}
}

func TestDeadlines(t *testing.T) {
	a, b := tcpPair(t)
	client := Client(a, &Config{Identity: testIdentity(t, 1)})
	server := Server(b, &Config{Identity: testIdentity(t, 2)})
	srv := run(server.Handshake)
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, srv); err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := server.Read(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read error %v, want a timeout", err)
	}
	// A timed-out Read is not fatal: clear the deadline and go on.
	server.SetReadDeadline(time.Time{})
	echoOnce(t, client, server)
}

func TestHandshakeTimeout(t *testing.T) {
	checkNoLeaks(t)
	a, b := tcpPair(t)
	defer b.Close() // a silent peer
	client := Client(a, &Config{Identity: testIdentity(t, 1), HandshakeTimeout: 200 * time.Millisecond})
	err := client.Handshake()
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Handshake error %v, want a timeout", err)
	}
	if _, err2 := client.Write([]byte("x")); err2 == nil {
		t.Fatal("Write after a failed handshake succeeded")
	}
}

func TestHandshakeContextCanceled(t *testing.T) {
	a, b := tcpPair(t)
	defer b.Close()
	client := Client(a, &Config{Identity: testIdentity(t, 1)})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if err := client.HandshakeContext(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

func TestConcurrentReadWrite(t *testing.T) {
	a, b := tcpPair(t)
	client := Client(a, &Config{Identity: testIdentity(t, 1)})
	server := Server(b, &Config{Identity: testIdentity(t, 2)})
	const n = 4 << 20
	payload := make([]byte, n)
	rand.Read(payload)
	// Both sides write and read at the same time, in two goroutines each.
	side := func(c *Conn) func() error {
		return func() error {
			w := run(func() error {
				if _, err := c.Write(payload); err != nil {
					return err
				}
				return c.CloseWrite()
			})
			got, err := io.ReadAll(c)
			if err != nil {
				return err
			}
			if !bytes.Equal(got, payload) {
				return errors.New("payload mismatch")
			}
			return <-w
		}
	}
	x, y := run(side(client)), run(side(server))
	if err := wait(t, x); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, y); err != nil {
		t.Fatal(err)
	}
}

func TestHTTPOverSecurepeer(t *testing.T) {
	checkNoLeaks(t)
	alice, bob := testIdentity(t, 1), testIdentity(t, 2)
	ln, err := Listen("tcp", "127.0.0.1:0", &Config{Identity: bob, Verify: pin(alice.PublicKey())})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Context().Value(connKey{}).(*Conn).RemoteKey()
		fmt.Fprintf(w, "hello %s", key.Fingerprint())
	}), ConnContext: func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, c)
	}}
	served := run(func() error { return srv.Serve(ln) })
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return Dial(ctx, network, addr, &Config{Identity: alice, Verify: pin(bob.PublicKey())})
	}}
	resp, err := (&http.Client{Transport: tr}).Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "hello " + alice.PublicKey().Fingerprint(); string(body) != want {
		t.Errorf("body %q, want %q", body, want)
	}
	tr.CloseIdleConnections()
	srv.Close()
	if err := wait(t, served); !errors.Is(err, http.ErrServerClosed) {
		t.Fatal(err)
	}
}

type connKey struct{}

func TestCloseSendsEndOfStream(t *testing.T) {
	a, b := tcpPair(t)
	client := Client(a, &Config{Identity: testIdentity(t, 1)})
	server := Server(b, &Config{Identity: testIdentity(t, 2)})
	srv := run(func() error {
		if _, err := server.Write([]byte("bye")); err != nil {
			return err
		}
		return server.Close()
	})
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "bye" {
		t.Fatalf("got %q, %v; want a clean EOF after Close", got, err)
	}
	if err := wait(t, srv); err != nil {
		t.Fatal(err)
	}
	if err := server.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v", err)
	}
	if _, err := client.Write([]byte("x")); err != nil {
		// The peer closed; the write may or may not fail, but must not panic.
		t.Log(err)
	}
}

func TestAbort(t *testing.T) {
	tests := []struct {
		name       string
		closeWrite bool // the aborting side ended its stream first
		wantErr    error
	}{
		{"mid-stream", false, ErrAborted},
		{"after CloseWrite", true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := tcpPair(t)
			client := Client(a, &Config{Identity: testIdentity(t, 1)})
			server := Server(b, &Config{Identity: testIdentity(t, 2)})
			defer client.Close()
			srv := run(func() error {
				if _, err := server.Write([]byte("partial")); err != nil {
					return err
				}
				if tt.closeWrite {
					if err := server.CloseWrite(); err != nil {
						return err
					}
				}
				return server.Abort()
			})
			got, err := io.ReadAll(client)
			if string(got) != "partial" {
				t.Errorf("read %q before the abort, want %q", got, "partial")
			}
			if tt.wantErr == nil && err != nil {
				t.Errorf("ReadAll = %v, want a clean end", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("ReadAll = %v, want %v", err, tt.wantErr)
			}
			if _, rerr := client.Read(make([]byte, 1)); tt.wantErr != nil && !errors.Is(rerr, tt.wantErr) {
				t.Errorf("second Read = %v, want the same error", rerr)
			}
			if err := wait(t, srv); err != nil {
				t.Fatal(err)
			}
			if _, err := server.Write([]byte("x")); err == nil {
				t.Error("Write after Abort succeeded")
			}
			if err := server.Abort(); !errors.Is(err, net.ErrClosed) {
				t.Errorf("second Abort = %v, want net.ErrClosed", err)
			}
		})
	}
}

func TestWriteAfterCloseWrite(t *testing.T) {
	a, b := tcpPair(t)
	client := Client(a, &Config{Identity: testIdentity(t, 1)})
	server := Server(b, &Config{Identity: testIdentity(t, 2)})
	srv := run(func() error { return echoUpper(server) })
	client.Write([]byte("x"))
	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write([]byte("y")); !errors.Is(err, errShutdown) {
		t.Errorf("Write after CloseWrite = %v", err)
	}
	if got, err := io.ReadAll(client); err != nil || string(got) != "X" {
		t.Errorf("half-closed side read %q, %v", got, err)
	}
	wait(t, srv)
}

// TestBlockedReaderHoldsNoRecordBuffer checks that a Read waiting on an
// idle connection holds no record buffer, after the connection has carried
// data: the usual server loop, one goroutine per connection blocked in
// Read, must not cost 64 KiB a connection. Over TCP the wait is on the
// descriptor; over a net.Pipe, on a small array of the Conn's own.
func TestBlockedReaderHoldsNoRecordBuffer(t *testing.T) {
	const conns = 32
	pipePair := func(testing.TB) (net.Conn, net.Conn) { return net.Pipe() }
	for _, tt := range []struct {
		name string
		pair func(testing.TB) (net.Conn, net.Conn)
	}{{"tcp", tcpPair}, {"pipe", pipePair}} {
		t.Run(tt.name, func(t *testing.T) {
			var servers []*Conn
			for range conns {
				a, b := tt.pair(t)
				client := Client(a, &Config{Identity: testIdentity(t, 1)})
				server := Server(b, &Config{Identity: testIdentity(t, 2)})
				t.Cleanup(func() { a.Close(); b.Close() })
				// A full record, so that buffers have been used.
				big := make([]byte, 64<<10)
				sent := run(func() error { _, err := client.Write(big); return err })
				if _, err := io.ReadFull(server, big); err != nil {
					t.Fatal(err)
				}
				if err := wait(t, sent); err != nil {
					t.Fatal(err)
				}
				servers = append(servers, server)
			}
			before := liveHeap()
			var readers sync.WaitGroup
			for _, s := range servers {
				readers.Add(1)
				go func() {
					defer readers.Done()
					s.Read(make([]byte, 1))
				}()
			}
			time.Sleep(100 * time.Millisecond) // for every reader to block
			perConn := (liveHeap() - before) / conns
			for _, s := range servers {
				s.NetConn().Close() // no end of stream: nobody reads a pipe
			}
			readers.Wait()
			// A record buffer is 65556 bytes; what is left is the goroutines'
			// bookkeeping and the 1-byte slices.
			if perConn > 4<<10 {
				t.Errorf("a blocked Read holds %d bytes of heap, want no record buffer (under 4 KiB)", perConn)
			}
		})
	}
}

// TestRecordSemantics sends records an honest Conn never sends, sealed with
// the real keys, and checks what the receiver makes of each (PROTOCOL.md,
// "Records").
func TestRecordSemantics(t *testing.T) {
	type rec struct {
		typ     uint8
		payload string
	}
	tests := []struct {
		name     string
		records  []rec
		wantData string
		wantErr  func(error) bool
		errText  string
	}{
		{"empty data record carries nothing", []rec{{wire.RecordData, ""}, {wire.RecordData, "x"}, {wire.RecordEnd, ""}}, "x",
			func(err error) bool { return err == nil }, "a clean end"},
		{"nothing after the end is read", []rec{{wire.RecordData, "a"}, {wire.RecordEnd, ""}, {wire.RecordData, "late"}}, "a",
			func(err error) bool { return err == nil }, "a clean end"},
		{"end record with data", []rec{{wire.RecordData, "a"}, {wire.RecordEnd, "x"}}, "a",
			func(err error) bool {
				return err != nil && strings.Contains(err.Error(), "end-of-stream record that carries data")
			}, "the broken end record"},
		{"unknown alert reason", []rec{{wire.RecordAlert, "\x7f"}}, "",
			func(err error) bool { return err != nil && strings.Contains(err.Error(), "unknown alert") }, "an unknown alert"},
		{"alert with two bytes", []rec{{wire.RecordAlert, "\x01\x01"}}, "",
			func(err error) bool { return err != nil && strings.Contains(err.Error(), "unknown alert") }, "an unknown alert"},
		{"rejection alert from either side", []rec{{wire.RecordAlert, "\x01"}}, "",
			func(err error) bool { return errors.Is(err, ErrRejected) }, "ErrRejected"},
		{"abort alert", []rec{{wire.RecordData, "half"}, {wire.RecordAlert, "\x02"}}, "half",
			func(err error) bool { return errors.Is(err, ErrAborted) }, "ErrAborted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := tcpPair(t)
			sender := Client(a, &Config{Identity: testIdentity(t, 1)})
			receiver := Server(b, &Config{Identity: testIdentity(t, 2)})
			srv := run(receiver.Handshake)
			if err := sender.Handshake(); err != nil {
				t.Fatal(err)
			}
			if err := wait(t, srv); err != nil {
				t.Fatal(err)
			}
			sender.out.Lock()
			for _, r := range tt.records {
				if err := sender.writeRecordLocked(r.typ, []byte(r.payload)); err != nil {
					t.Fatal(err)
				}
			}
			sender.out.Unlock()
			got, err := io.ReadAll(receiver)
			if string(got) != tt.wantData {
				t.Errorf("read %q, want %q", got, tt.wantData)
			}
			if !tt.wantErr(err) {
				t.Errorf("ReadAll error %v, want %s", err, tt.errText)
			}
			a.Close()
		})
	}
}

// TestAlertsUnderConcurrency has many connections receive alerts at once,
// so that record buffers go back to the pool and out again while alerts
// are read: each reason must be read from the alert's own record (run
// with -race to see a buffer reused too early).
func TestAlertsUnderConcurrency(t *testing.T) {
	const pairs = 32
	var wg sync.WaitGroup
	for i := range pairs {
		a, b := tcpPair(t)
		client := Client(a, &Config{Identity: testIdentity(t, 1)})
		server := Server(b, &Config{Identity: testIdentity(t, 2)})
		wg.Add(2)
		go func() {
			defer wg.Done()
			server.Write(bytes.Repeat([]byte{byte(i)}, 1000))
			server.Abort()
		}()
		go func() {
			defer wg.Done()
			_, err := io.ReadAll(client)
			if !errors.Is(err, ErrAborted) {
				t.Errorf("pair %d read %v, want ErrAborted", i, err)
			}
			client.Close()
		}()
	}
	wg.Wait()
}

// Steady-state Write and Read allocate nothing: records are sealed and
// opened in pooled buffers, and waiting for a record on a raw descriptor
// reuses one callback.
func TestSteadyStateAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	a, b := tcpPair(t)
	x, y := Client(a, &Config{Identity: testIdentity(t, 1)}), Server(b, &Config{Identity: testIdentity(t, 2)})
	other := run(y.Handshake)
	if err := x.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, other); err != nil {
		t.Fatal(err)
	}
	defer closeBoth(x, y)
	out, in := bytes.Repeat([]byte("a"), 1024), make([]byte, 1024)
	step := func() {
		if _, err := x.Write(out); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(y, in); err != nil {
			t.Fatal(err)
		}
	}
	step() // warm the pool
	if n := testing.AllocsPerRun(200, step); n > 0 {
		t.Fatalf("a write and a read allocate %v times", n)
	}
}

// FuzzRecordReader completes a real handshake (the replayed capture) and
// then feeds the Server's record reader arbitrary bytes, made from the
// records the captured Client sent. Read must never return data that was not
// sent, in the order sent; it must end with io.EOF only after all of it and
// the end-of-stream record; it must never panic or ask to read more than one
// record at a time.
func FuzzRecordReader(f *testing.F) {
	fzRequireSeeds(f)
	cs := fzGetCaptures(f)
	hs := cs.clientServer.sent
	want := fzScriptData()
	f.Fuzz(func(t *testing.T, records []byte) {
		base := runtime.NumGoroutine()
		conn := newFzConn(append(hs[:len(hs):len(hs)], records...))
		c := Server(conn, fzConfig(fzResponderID, fzRandServer))
		if err := fzHandshake(t, c, base); err != nil {
			t.Fatalf("the captured handshake no longer replays (run go test -run TestFuzzSeeds -update-fuzz?): %v", err)
		}
		if n := conn.mark(); n != len(hs) {
			t.Fatalf("the handshake consumed %d bytes, the capture has %d", n, len(hs))
		}
		var got []byte
		buf := make([]byte, 1000)
		var err error
		for i := 0; ; i++ {
			var n int
			n, err = c.Read(buf)
			if n < 0 || n > len(buf) {
				t.Fatalf("Read returned n=%d", n)
			}
			got = append(got, buf[:n]...)
			if !bytes.HasPrefix(want, got) {
				t.Fatalf("Read returned data that was not sent: got %d bytes, %q... ", len(got), got[:min(len(got), 40)])
			}
			if err != nil {
				break
			}
			if n == 0 {
				t.Fatal("Read returned 0, nil")
			}
			if i > len(records)+10 {
				t.Fatal("Read keeps returning data the input cannot hold")
			}
		}
		if err == io.EOF && !bytes.Equal(got, want) {
			t.Fatalf("Read returned io.EOF after %d of %d bytes", len(got), len(want))
		}
		if n, err2 := c.Read(buf); n != 0 || err2 == nil || !fzSameError(err, err2) {
			t.Fatalf("Read after %v returned %d, %v: errors must be sticky", err, n, err2)
		}
		if conn.maxReq > wire.RecordHeaderSize+wire.MaxRecordLength {
			t.Fatalf("the record reader asked to read %d bytes at once, more than a record with its header", conn.maxReq)
		}
		if conn.read > len(conn.in) {
			t.Fatal("read past the input")
		}
		fzNoLeak(t, base)
	})
}
