package securepeer

// End-to-end tests of hostile and broken peers over real loopback TCP
// (issue 2, "Bad input"): garbage, a length prefix claiming the maximum, a
// truncated handshake, an oversized record header, an abort with an unknown
// reason, and silence. Each must end in a clear error within
// HandshakeTimeout, without a panic, a leaked goroutine, or a read (and so
// an allocation) beyond the frame limit.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flynn/noise"

	"github.com/securepeer/securepeer/internal/testenv"
	"github.com/securepeer/securepeer/internal/wire"
)

// badTimeout is the HandshakeTimeout of victims that are expected to time
// out; badSlack is how much longer than that they may take on a loaded
// machine before it counts as a hang. Victims that are expected to fail at
// once get badPromptTimeout instead, so that a loaded machine cannot turn a
// slow but prompt failure into a timeout: their failure must simply not be
// a timeout.
const (
	badTimeout       = 2 * time.Second
	badSlack         = 15 * time.Second
	badPromptTimeout = 20 * time.Second
)

// badLeakCheck fails t if, after t and its subtests end, more goroutines run
// than at the start, once a bounded grace period has passed. Call it first,
// so that its cleanup runs after every other.
func badLeakCheck(t *testing.T) {
	t.Helper()
	testenv.CheckNoLeaks(t, badSlack)
}

// badCountingConn counts the bytes its reader took from the connection.
type badCountingConn struct {
	net.Conn
	mu sync.Mutex
	n  int
}

func (c *badCountingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.n += n
	c.mu.Unlock()
	return n, err
}

func (c *badCountingConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// badTCPPair returns the two ends of a loopback TCP connection, closed when
// the test ends.
func badTCPPair(t *testing.T) (a, b *net.TCPConn) {
	t.Helper()
	return testenv.TCPPair(t)
}

// A badRole is the side of the handshake the victim plays.
type badRole struct {
	name string
	// victim wraps conn in a securepeer connection of this role, with the
	// given HandshakeTimeout and fresh randomness.
	victim func(conn net.Conn, timeout time.Duration) *Conn
	// peerMode is the hello mode a hostile peer announces to get past the
	// victim's hello check.
	peerMode wire.Mode
}

// maxFirstMessage is the longest first handshake message the role's victim
// reads from a peer: a message 1 for a side that may respond, a message 2
// for a client.
func (r badRole) maxFirstMessage() int {
	if r.peerMode == wire.ModeResponder {
		return wire.MaxHandshakeMessage
	}
	return wire.MaxMessage1
}

var badRoles = []badRole{
	{"server", func(c net.Conn, d time.Duration) *Conn {
		return Server(c, &Config{Identity: fzResponderID, HandshakeTimeout: d})
	}, wire.ModeInitiator},
	{"client", func(c net.Conn, d time.Duration) *Conn {
		return Client(c, &Config{Identity: fzInitiatorID, HandshakeTimeout: d})
	}, wire.ModeResponder},
	{"newconn", func(c net.Conn, d time.Duration) *Conn {
		return NewConn(c, &Config{Identity: fzResponderID, HandshakeTimeout: d})
	}, wire.ModeInitiator},
}

func badHello(mode wire.Mode) []byte {
	h := wire.Hello{Version: wire.Version, Mode: mode}.Marshal()
	return h[:]
}

// A badResult is the outcome of one attack.
type badResult struct {
	err      error
	elapsed  time.Duration // of the victim's Handshake
	problems []string      // broken promises seen along the way
}

// badRunAttack runs the victim's handshake, with HandshakeTimeout timeout,
// over loopback TCP against a hostile peer that writes send, then
// half-closes if closeAfter, or else stays silent with the connection open.
// The hostile peer reads everything the victim writes. It is safe to call
// from any goroutine.
func badRunAttack(role badRole, timeout time.Duration, send []byte, closeAfter bool) (r badResult) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.problems = append(r.problems, "listen: "+err.Error())
		return r
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	hostileConn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		ln.Close() // ends the Accept
	}
	victimRaw := <-accepted
	ln.Close()
	if err != nil || victimRaw == nil {
		if hostileConn != nil {
			hostileConn.Close()
		}
		r.problems = append(r.problems, fmt.Sprintf("setting up: dial %v, accept %v", err, victimRaw))
		return r
	}
	hostile := hostileConn.(*net.TCPConn)
	defer hostile.Close()
	defer victimRaw.Close()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		io.Copy(io.Discard, hostile)
	}()
	// The write may outlast the handshake when the victim stops reading
	// early; closing victimRaw below ends it.
	written := make(chan struct{})
	go func() {
		defer close(written)
		hostile.Write(send)
		if closeAfter {
			hostile.CloseWrite()
		}
	}()

	c := role.victim(victimRaw, timeout)
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- c.Handshake() }()
	select {
	case r.err = <-errc:
	case <-time.After(timeout + badSlack):
		r.problems = append(r.problems, fmt.Sprintf("Handshake still running %v after its %v timeout", badSlack, timeout))
		return r
	}
	r.elapsed = time.Since(start)
	// The error is sticky, and Read and Write report it without I/O.
	if r.err != nil {
		if err2 := c.Handshake(); !fzSameError(r.err, err2) {
			r.problems = append(r.problems, fmt.Sprintf("second Handshake = %v, want %v", err2, r.err))
		}
		if n, err2 := c.Read(make([]byte, 10)); n != 0 || !fzSameError(r.err, err2) {
			r.problems = append(r.problems, fmt.Sprintf("Read after a failed handshake = %d, %v; want 0, %v", n, err2, r.err))
		}
		if n, err2 := c.Write([]byte("x")); n != 0 || !fzSameError(r.err, err2) {
			r.problems = append(r.problems, fmt.Sprintf("Write after a failed handshake = %d, %v; want 0, %v", n, err2, r.err))
		}
	}
	victimRaw.Close()
	<-written
	<-drained
	return r
}

// badAttack is badRunAttack for one test: it reports the problems.
func badAttack(t *testing.T, role badRole, timeout time.Duration, send []byte, closeAfter bool) (time.Duration, error) {
	t.Helper()
	r := badRunAttack(role, timeout, send, closeAfter)
	for _, p := range r.problems {
		t.Error(p)
	}
	if t.Failed() {
		t.FailNow()
	}
	return r.elapsed, r.err
}

func badIsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// badPrompt checks err is a prompt, clear failure of a victim with
// badPromptTimeout: not nil, not a timeout, prefixed "securepeer:".
func badPrompt(t *testing.T, err error, elapsed time.Duration) {
	t.Helper()
	if err == nil {
		t.Fatal("the handshake succeeded")
	}
	if badIsTimeout(err) {
		t.Fatalf("got a timeout (%v after %v), want an immediate error", err, elapsed)
	}
	if elapsed >= badPromptTimeout {
		t.Fatalf("the error took %v, the handshake timeout is %v: %v", elapsed, badPromptTimeout, err)
	}
	if !strings.HasPrefix(err.Error(), "securepeer: ") {
		t.Errorf("error %q does not say where it comes from", err)
	}
}

// badTimedOut checks err is the handshake timing out, on time.
func badTimedOut(t *testing.T, err error, elapsed time.Duration) {
	t.Helper()
	if !badIsTimeout(err) {
		t.Fatalf("got %v after %v, want a timeout (net.Error)", err, elapsed)
	}
	if elapsed < badTimeout-50*time.Millisecond {
		t.Errorf("timed out after %v, before the %v timeout", elapsed, badTimeout)
	}
}

func TestBadInputGarbage(t *testing.T) {
	badLeakCheck(t)
	for _, role := range badRoles {
		for _, tc := range []struct {
			name, in, want string
		}{
			{"http", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", "not speaking the securepeer protocol"},
			{"binary", strings.Repeat("\xff\x00\x13", 50), "not speaking the securepeer protocol"},
			{"tls client hello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "not speaking the securepeer protocol"},
			{"legacy node peer", `{"type":"hello","version":"0.2"}` + "\n", "legacy"},
			{"future version", "speer\x02\x01\x00 and more", "version 2"},
			{"bad mode", "speer\x01\x09\x00", "malformed hello"},
			{"reserved flags", "speer\x01\x01\x80", "malformed hello"},
			// 0xa5a5 is taken as a message length; the message is garbage.
			{"garbage after hello", string(badHello(role.peerMode)) + strings.Repeat("\xa5", 0xa5a5+100), "securepeer: "},
		} {
			t.Run(role.name+"/"+tc.name, func(t *testing.T) {
				elapsed, err := badAttack(t, role, badPromptTimeout, []byte(tc.in), false)
				badPrompt(t, err, elapsed)
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error %q does not mention %q", err, tc.want)
				}
			})
		}
	}
}

// TestBadInputMaxLengthPrefix sends the longest handshake message length
// the victim accepts (65535 for message 2, wire.MaxMessage1 for message 1)
// and then that many bytes of garbage (the victim rejects them) or a few
// bytes and the end of the stream. TestBadInputSilence has the prefix
// followed by silence, TestBadInputOverlongMessage1 a longer message 1.
func TestBadInputMaxLengthPrefix(t *testing.T) {
	badLeakCheck(t)
	for _, role := range badRoles {
		n := role.maxFirstMessage()
		t.Run(role.name+"/then garbage", func(t *testing.T) {
			in := binary.BigEndian.AppendUint16(badHello(role.peerMode), uint16(n))
			in = append(in, bytes.Repeat([]byte{0x5a}, n)...)
			elapsed, err := badAttack(t, role, badPromptTimeout, in, false)
			badPrompt(t, err, elapsed)
		})
		t.Run(role.name+"/then close", func(t *testing.T) {
			in := binary.BigEndian.AppendUint16(badHello(role.peerMode), uint16(n))
			in = append(in, bytes.Repeat([]byte{0x5a}, n/2)...)
			elapsed, err := badAttack(t, role, badPromptTimeout, in, true)
			badPrompt(t, err, elapsed)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("got %v, want an error wrapping io.ErrUnexpectedEOF", err)
			}
		})
	}
}

// TestBadInputOverlongMessage1: a message 1 whose length field says more
// than any valid one holds is refused as soon as the length arrives, with
// the rest never sent: the victim neither waits for nor buffers what a peer
// only promises.
func TestBadInputOverlongMessage1(t *testing.T) {
	badLeakCheck(t)
	resuming := wire.Hello{Version: wire.Version, Mode: wire.ModeInitiator, Resume: true}.Marshal()
	for _, role := range badRoles {
		if role.peerMode == wire.ModeResponder {
			continue // a client reads no message 1
		}
		for _, tc := range []struct {
			name  string
			hello []byte
			n     int
		}{
			{"one byte too long", badHello(role.peerMode), wire.MaxMessage1 + 1},
			{"64 KiB", badHello(role.peerMode), 0xffff},
			{"resumption one byte too long", resuming[:], wire.MaxResumeMessage1 + 1},
		} {
			t.Run(role.name+"/"+tc.name, func(t *testing.T) {
				in := binary.BigEndian.AppendUint16(slices.Clone(tc.hello), uint16(tc.n))
				elapsed, err := badAttack(t, role, badPromptTimeout, in, false)
				badPrompt(t, err, elapsed)
				if want := fmt.Sprintf("%d bytes", tc.n); !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say the message announced %s", err, want)
				}
			})
		}
	}
}

// TestBadInputSilence: a peer that sends nothing at all, only its hello,
// or a hello and a length prefix claiming the maximum, and then keeps the
// connection open without a word: the victim must time out, on time, with
// an error that says so. The attacks run at once, since each only waits.
// A peer that sends nothing and closes gets an immediate error.
func TestBadInputSilence(t *testing.T) {
	badLeakCheck(t)
	type attack struct {
		name string
		role badRole
		send []byte
		r    badResult
	}
	var attacks []*attack
	for _, role := range badRoles {
		attacks = append(attacks,
			&attack{name: role.name + "/nothing", role: role},
			&attack{name: role.name + "/hello only", role: role, send: badHello(role.peerMode)},
			&attack{name: role.name + "/max length prefix", role: role, send: binary.BigEndian.AppendUint16(badHello(role.peerMode), uint16(role.maxFirstMessage()))},
		)
	}
	var wg sync.WaitGroup
	for _, a := range attacks {
		wg.Go(func() { a.r = badRunAttack(a.role, badTimeout, a.send, false) })
	}
	wg.Wait()
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			for _, p := range a.r.problems {
				t.Error(p)
			}
			if !t.Failed() {
				badTimedOut(t, a.r.err, a.r.elapsed)
			}
			// The I/O error alone ("read tcp ...: i/o timeout") does not
			// tell the user that the handshake ran out of time, or what to
			// check.
			t.Run("error says handshake timed out", func(t *testing.T) {
				if a.r.err != nil && !strings.Contains(a.r.err.Error(), "handshake timed out") {
					t.Errorf("the handshake timed out with the error %q, which does not say so", a.r.err)
				}
			})
		})
	}
	for _, role := range badRoles {
		t.Run(role.name+"/nothing then close", func(t *testing.T) {
			elapsed, err := badAttack(t, role, badPromptTimeout, nil, true)
			badPrompt(t, err, elapsed)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("got %v, want an error wrapping io.ErrUnexpectedEOF", err)
			}
		})
	}
}

// TestBadInputAbort sends a zero length (an abort) with each reason, known
// and unknown, and an abort cut before its reason byte.
func TestBadInputAbort(t *testing.T) {
	badLeakCheck(t)
	for _, role := range badRoles {
		for _, tc := range []struct {
			name   string
			reason []byte
			check  func(t *testing.T, err error)
		}{
			// No securepeer peer sends a rejection in place of message 1
			// or 2 (PROTOCOL.md, "Handshake messages and aborts").
			{"rejected", []byte{wire.AbortRejected}, func(t *testing.T, err error) {
				if errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "tampered") {
					t.Errorf("got %v, want a tampering error, not ErrRejected", err)
				}
			}},
			// Only a responder says "no cipher in common", in place of
			// message 2; no one says "no application protocol in
			// common" in place of message 1 or 2 of a full handshake.
			{"no cipher", []byte{wire.AbortNoCipher}, func(t *testing.T, err error) {
				if role.peerMode == wire.ModeResponder {
					if !errors.Is(err, ErrNoCommonCipher) {
						t.Errorf("got %v, want ErrNoCommonCipher", err)
					}
				} else if errors.Is(err, ErrNoCommonCipher) || !strings.Contains(err.Error(), "tampered") {
					t.Errorf("got %v, want a tampering error, not ErrNoCommonCipher", err)
				}
			}},
			{"no protocol", []byte{wire.AbortNoALPN}, func(t *testing.T, err error) {
				if errors.Is(err, ErrNoCommonProtocol) || errors.Is(err, ErrPeerNoCommonProtocol) || !strings.Contains(err.Error(), "tampered") {
					t.Errorf("got %v, want a tampering error, not a missing protocol", err)
				}
			}},
			{"full handshake asked of a side that offered no ticket", []byte{wire.RetryFull}, func(t *testing.T, err error) {
				if !strings.Contains(err.Error(), "tampered") {
					t.Errorf("got %v, want a tampering error", err)
				}
			}},
		} {
			t.Run(role.name+"/"+tc.name, func(t *testing.T) {
				elapsed, err := badAttack(t, role, badPromptTimeout, append(badHello(role.peerMode), append([]byte{0, 0}, tc.reason...)...), false)
				badPrompt(t, err, elapsed)
				tc.check(t, err)
			})
		}
		for _, reason := range []byte{0, wire.AbortProtocol, 7, 0x7f, 0xff} {
			t.Run(fmt.Sprintf("%s/reason %d", role.name, reason), func(t *testing.T) {
				elapsed, err := badAttack(t, role, badPromptTimeout, append(badHello(role.peerMode), 0, 0, reason), false)
				badPrompt(t, err, elapsed)
				if errors.Is(err, ErrRejected) || errors.Is(err, ErrNoCommonCipher) || errors.Is(err, ErrNoCommonProtocol) {
					t.Errorf("abort reason %d gave %v", reason, err)
				}
				if !strings.Contains(err.Error(), "abort") {
					t.Errorf("abort reason %d: error %q does not say the peer aborted", reason, err)
				}
			})
		}
		t.Run(role.name+"/reason cut", func(t *testing.T) {
			elapsed, err := badAttack(t, role, badPromptTimeout, append(badHello(role.peerMode), 0, 0), true)
			badPrompt(t, err, elapsed)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("got %v, want an error wrapping io.ErrUnexpectedEOF", err)
			}
		})
	}
}

// TestBadInputTruncatedHandshake replays every strict prefix of a real
// peer's handshake bytes, then half-closes: each must fail at once with an
// error wrapping io.ErrUnexpectedEOF, never wait for the timeout.
func TestBadInputTruncatedHandshake(t *testing.T) {
	badLeakCheck(t)
	cs := fzGetCaptures(t)
	for _, tc := range []struct {
		role   badRole
		stream []byte // what a real peer of that role sends
	}{
		// A Client's hello, message 1 and message 3.
		{badRoles[0], cs.serverClient.received},
		// A Server's hello and message 2.
		{badRoles[1], cs.clientServer.received},
		// To a NewConn: a Client's hello, message 1 and message 3.
		{badRoles[2], cs.newConnClient.received},
	} {
		t.Run(tc.role.name, func(t *testing.T) {
			// The prefixes run a few at a time; each uses its own connection.
			const workers = 4
			lengths := make(chan int)
			var wg sync.WaitGroup
			var mu sync.Mutex
			failures := 0
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n := range lengths {
						mu.Lock()
						stop := failures > 5
						mu.Unlock()
						if stop {
							continue // enough said; do not wait out more timeouts
						}
						r := badRunAttack(tc.role, badPromptTimeout, tc.stream[:n], true)
						err, elapsed := r.err, r.elapsed
						msg := strings.Join(r.problems, "; ")
						switch {
						case msg != "":
						case err == nil:
							msg = "the handshake succeeded"
						case badIsTimeout(err) || elapsed >= badPromptTimeout:
							msg = "waited for the timeout: " + err.Error()
						case !errors.Is(err, io.ErrUnexpectedEOF):
							msg = "error does not wrap io.ErrUnexpectedEOF: " + err.Error()
						}
						if msg != "" {
							mu.Lock()
							failures++
							if failures <= 5 {
								t.Errorf("prefix of %d of %d bytes: %s", n, len(tc.stream), msg)
							}
							mu.Unlock()
						}
					}
				}()
			}
			for n := 0; n < len(tc.stream); n++ {
				lengths <- n
			}
			close(lengths)
			wg.Wait()
			if failures > 5 {
				t.Errorf("%d prefixes failed in all", failures)
			}
		})
	}
}

// TestBadInputRecordHeader completes a real handshake with a hostile peer,
// which then sends a record header that claims 16 MiB, or is otherwise
// invalid, followed by plenty of bytes. The victim's Read must fail at once,
// having read the 4 header bytes and not one byte of the claimed body: so
// it cannot have allocated for it.
func TestBadInputRecordHeader(t *testing.T) {
	badLeakCheck(t)
	hdr := func(typ uint8, n int) []byte {
		b := make([]byte, wire.RecordHeaderSize)
		wire.PutRecordHeader(b, typ, n)
		return b
	}
	for _, dir := range []string{"client reads", "server reads"} {
		for _, tc := range []struct {
			name string
			hdr  []byte
		}{
			{"16 MiB", hdr(wire.RecordData, 1<<24-1)},
			{"1 MiB", hdr(wire.RecordData, 1<<20)},
			{"one past the limit", hdr(wire.RecordData, wire.MaxRecordLength+1)},
			{"end record 16 MiB", hdr(wire.RecordEnd, 1<<24-1)},
			{"zero length", hdr(wire.RecordData, 0)},
			{"shorter than a tag", hdr(wire.RecordData, wire.TagSize-1)},
			{"type 0", hdr(0, 100)},
			{"type 5", hdr(5, 100)},
			{"type 255", hdr(255, wire.MaxRecordLength)},
		} {
			t.Run(dir+"/"+tc.name, func(t *testing.T) {
				a, b := badTCPPair(t)
				counted := &badCountingConn{Conn: a}
				var victim, hostile *Conn
				if dir == "client reads" {
					victim = Client(counted, &Config{Identity: fzInitiatorID, HandshakeTimeout: badPromptTimeout})
					hostile = Server(b, &Config{Identity: fzResponderID, HandshakeTimeout: badPromptTimeout})
				} else {
					victim = Server(counted, &Config{Identity: fzResponderID, HandshakeTimeout: badPromptTimeout})
					hostile = Client(b, &Config{Identity: fzInitiatorID, HandshakeTimeout: badPromptTimeout})
				}
				errc := make(chan error, 1)
				go func() { errc <- hostile.Handshake() }()
				if err := victim.Handshake(); err != nil {
					t.Fatal(err)
				}
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
				afterHandshake := counted.count()

				// A valid record first, so the attack comes mid-stream.
				if _, err := hostile.Write([]byte("hello")); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 100)
				if n, err := io.ReadFull(victim, buf[:5]); err != nil || string(buf[:n]) != "hello" {
					t.Fatalf("valid record: %q, %v", buf[:n], err)
				}
				afterRecord := counted.count()
				if afterRecord-afterHandshake != wire.RecordHeaderSize+5+wire.TagSize {
					t.Fatalf("a 5-byte record took %d bytes to read", afterRecord-afterHandshake)
				}

				// Then the bad header, and more than a frame of bytes behind it.
				raw := hostile.NetConn()
				payload := append(bytes.Clone(tc.hdr), bytes.Repeat([]byte{0xee}, 2*wire.MaxRecordLength)...)
				go raw.Write(payload) // may block once the victim stops reading; ended by Close below

				victim.SetReadDeadline(time.Now().Add(badPromptTimeout)) // backstop only
				start := time.Now()
				n, err := victim.Read(buf)
				elapsed := time.Since(start)
				if n != 0 || err == nil {
					t.Fatalf("Read = %d, %v; want an error", n, err)
				}
				if badIsTimeout(err) {
					t.Fatalf("Read waited %v for %v; want an immediate error", elapsed, err)
				}
				if !strings.Contains(err.Error(), "record header") {
					t.Errorf("error %q does not say the record header is bad", err)
				}
				// The reader may read ahead, but never more than one
				// buffer: the claimed length is refused, not awaited.
				first := counted.count()
				if got := first - afterRecord; got > wire.RecordHeaderSize+wire.MaxRecordLength {
					t.Errorf("the victim read %d bytes after the bad header began, more than one record buffer (%d)", got, wire.RecordHeaderSize+wire.MaxRecordLength)
				}
				if n, err2 := victim.Read(buf); n != 0 || !fzSameError(err, err2) {
					t.Errorf("second Read = %d, %v; want the same error", n, err2)
				}
				if got := counted.count() - first; got != 0 {
					t.Errorf("a second Read read %d more bytes after a permanent error", got)
				}
				a.Close()
				b.Close()
			})
		}
	}
}

// lowOrderDH is an X25519 that "generates" the all-zero public key, a
// low-order point, as a hostile initiator's ephemeral key.
type lowOrderDH struct{ *x25519 }

func (lowOrderDH) GenerateKeypair(io.Reader) (noise.DHKey, error) {
	return noise.DHKey{Private: make([]byte, 32), Public: make([]byte, 32)}, nil
}

// TestBadInputLowOrderEphemeral sends a well-formed message 1 whose
// ephemeral key is a low-order point: the responder's first DH, ee, gives
// all zeros, and the handshake must fail with a clear error at once.
func TestBadInputLowOrderEphemeral(t *testing.T) {
	a, b := tcpPair(t)
	hello := wire.Hello{Version: wire.Version, Mode: wire.ModeInitiator}.Marshal()
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:           noise.NewCipherSuite(lowOrderDH{new(x25519)}, noise.CipherChaChaPoly, noise.HashSHA256),
		Pattern:               noise.HandshakeXX,
		Initiator:             true,
		Prologue:              append([]byte(labelPrologue), hello[:]...),
		PresharedKeyPlacement: 3,
		StaticKeypair:         noise.DHKey{Private: make([]byte, 32), Public: make([]byte, 32)},
	})
	if err != nil {
		t.Fatal(err)
	}
	msg1, _, _, err := hs.WriteMessage(nil, (&wire.InitPayload{Ciphers: []uint16{uint16(AES256GCM)}}).Marshal(nil))
	if err != nil {
		t.Fatal(err)
	}
	go a.Write(wire.AppendHandshakeMessage(hello[:], msg1))
	err = Server(b, &Config{Identity: testIdentity(t, 2), HandshakeTimeout: 10 * time.Second}).Handshake()
	if !errors.Is(err, errLowOrder) {
		t.Errorf("responder got %v, want the low-order error", err)
	}
}
