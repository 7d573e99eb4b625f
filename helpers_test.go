package securepeer

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flynn/noise"
	"github.com/securepeer/securepeer/internal/testenv"
	"github.com/securepeer/securepeer/internal/wire"
)

// testIdentity returns a fixed identity, the same for the same seed byte.
func testIdentity(t testing.TB, seed byte) *Identity {
	t.Helper()
	s := make([]byte, ed25519.SeedSize)
	for i := range s {
		s[i] = seed
	}
	id, err := NewIdentity(ed25519.NewKeyFromSeed(s))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// A transport makes a connected pair of plain connections.
type transport struct {
	name string
	pair pairFunc
}

var transports = []transport{
	{"tcp", tcpPair},
	{"pipe", func(t testing.TB) (net.Conn, net.Conn) { return net.Pipe() }},
}

// A pairFunc returns the two ends of a connection.
type pairFunc func(testing.TB) (net.Conn, net.Conn)

// eachTransport runs f as a subtest over each transport: loopback TCP, and
// a net.Pipe, whose writes block until read.
func eachTransport(t *testing.T, f func(t *testing.T, pair pairFunc)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { f(t, tr.pair) })
	}
}

// tcpPair returns both ends of a real loopback TCP connection.
func tcpPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	a, b := testenv.TCPPair(t)
	return a, b
}

// run runs f in a goroutine and returns a channel with its error.
func run(f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

// handshakeClosing runs the handshakes of x, a client on a, and y, a
// server on b, at once, and returns their errors. A side whose handshake
// fails closes its connection, as Dial and the listener do, so that the
// other side learns at once; nothing waits for a timeout.
func handshakeClosing(t testing.TB, x, y *Conn, a, b net.Conn) (cerr, serr error) {
	t.Helper()
	srv := run(func() error {
		err := y.Handshake()
		if err != nil {
			b.Close()
		}
		return err
	})
	cerr = x.Handshake()
	if cerr != nil {
		a.Close()
	}
	return cerr, wait(t, srv)
}

// wait returns the error from ch, failing the test if it takes longer than
// a generous bound (the test is about hangs, not speed).
func wait(t testing.TB, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("timed out: something hangs")
		return nil
	}
}

// echoUpper reads everything from c until EOF, writes it back upper-cased,
// and ends its stream.
func echoUpper(c *Conn) error {
	data, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if _, err := c.Write([]byte(strings.ToUpper(string(data)))); err != nil {
		return err
	}
	return c.CloseWrite()
}

// A proxy forwards two plain connections through a filter per direction,
// unit by unit: the hello, each handshake message, each record.
type proxy struct {
	// filter sees each unit in order and returns what to send instead
	// (nil to drop it, or several units). dir is "c2s" or "s2c"; index
	// counts units in that direction.
	filter func(dir string, index int, unit []byte) [][]byte
	// handshakeMessages is how many handshake messages each direction
	// carries before its records (Client/Server: 2 from the initiator, 1
	// from the responder).
	handshakeMessages map[string]int
}

// start places the proxy between a client and a server and returns the
// client's end and the server's end.
func (p *proxy) start(t testing.TB) (client, server net.Conn) {
	c1, c2 := tcpPair(t)
	s1, s2 := tcpPair(t)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pump("c2s", c2, s1) }()
	go func() { defer wg.Done(); p.pump("s2c", s1, c2) }()
	t.Cleanup(func() { c1.Close(); c2.Close(); s1.Close(); s2.Close(); wg.Wait() })
	return c1, s2
}

func (p *proxy) pump(dir string, src, dst net.Conn) {
	defer func() {
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	hsLeft := p.handshakeMessages[dir]
	for i := 0; ; i++ {
		var unit []byte
		var err error
		switch {
		case i == 0:
			unit, err = readN(src, 8)
		case hsLeft > 0:
			hsLeft--
			unit, err = readPrefixed(src, 2)
		default:
			unit, err = readPrefixed(src, 4)
		}
		if err != nil {
			return
		}
		out := [][]byte{unit}
		if p.filter != nil {
			out = p.filter(dir, i, unit)
		}
		for _, u := range out {
			if _, err := dst.Write(u); err != nil {
				return
			}
		}
	}
}

func readN(r io.Reader, n int) ([]byte, error) {
	b := make([]byte, n)
	_, err := io.ReadFull(r, b)
	return b, err
}

// readPrefixed reads a handshake message (hdr 2) or a record (hdr 4) with
// its header.
func readPrefixed(r io.Reader, hdr int) ([]byte, error) {
	h, err := readN(r, hdr)
	if err != nil {
		return nil, err
	}
	var n int
	if hdr == 2 {
		n = int(binary.BigEndian.Uint16(h))
		if n == 0 {
			n = 1 // abort reason
		}
	} else {
		n = int(h[1])<<16 | int(h[2])<<8 | int(h[3])
	}
	body, err := readN(r, n)
	return append(h, body...), err
}

// checkNoLeaks fails the test if goroutines started during it are still
// running after a grace period.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	testenv.CheckNoLeaks(t, 10*time.Second)
}

// rejectAll is a Verify that refuses every key.
var errNotAllowed = errors.New("not on the allow list")

func rejectAll(context.Context, PublicKey) error { return errNotAllowed }

// pin returns a Verify that accepts only want.
func pin(want PublicKey) func(context.Context, PublicKey) error {
	return func(_ context.Context, k PublicKey) error {
		if !k.Equal(want) {
			return errNotAllowed
		}
		return nil
	}
}

// closeBoth closes two connections at once: on a net.Pipe, a Close that
// sends the end of stream waits for the other side to read or close.
// So b reads until a's end of stream (or an error) before it closes.
func closeBoth(a, b net.Conn) {
	done := run(a.Close)
	io.Copy(io.Discard, b)
	b.Close()
	<-done
}

// craftMessage1 returns a full message 1 carrying payload, as an initiator
// whose hello is hello writes it, unframed. Its static key is never used.
func craftMessage1(t testing.TB, hello [wire.HelloSize]byte, payload []byte) []byte {
	t.Helper()
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:           noise.NewCipherSuite(new(x25519), noise.CipherChaChaPoly, noise.HashSHA256),
		Random:                rand.Reader,
		Pattern:               noise.HandshakeXX,
		Initiator:             true,
		Prologue:              append([]byte(labelPrologue), hello[:]...),
		PresharedKeyPlacement: 3,
		StaticKeypair:         noise.DHKey{Private: make([]byte, 32), Public: make([]byte, 32)},
	})
	if err != nil {
		t.Fatal(err)
	}
	msg, _, _, err := hs.WriteMessage(nil, payload)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// peerAnswer writes flight, then the end of its stream, to a side whose
// handshake runs in handshake, and returns what that side sends after its
// own first flight (its hello, and the framed message 1 that follows it if
// withMsg1): the three bytes of an abort, the length field of the next
// frame, or nil if it sent nothing more before its handshake failed. It
// returns the side's handshake error too.
func peerAnswer(t *testing.T, handshake func(net.Conn) error, flight []byte, withMsg1 bool) (answer []byte, err error) {
	t.Helper()
	a, b := tcpPair(t)
	defer a.Close()
	done := run(func() error {
		err := handshake(a)
		// A half-close, not a close: data left unread must not turn into
		// a reset that could overtake an abort.
		a.(*net.TCPConn).CloseWrite()
		return err
	})
	go func() {
		b.Write(flight)
		b.(*net.TCPConn).CloseWrite()
	}()
	skip := wire.HelloSize
	if withMsg1 {
		first, rerr := readN(b, wire.HelloSize+2)
		if rerr != nil {
			t.Fatal(rerr)
		}
		skip = int(binary.BigEndian.Uint16(first[wire.HelloSize:]))
	}
	if _, rerr := readN(b, skip); rerr != nil {
		t.Fatal(rerr)
	}
	answer, rerr := readN(b, 2)
	if rerr == nil && answer[0] == 0 && answer[1] == 0 {
		var reason []byte
		reason, rerr = readN(b, 1)
		answer = append(answer, reason...)
	}
	if rerr != nil {
		answer = nil // it sent nothing more
	}
	// Close only once the handshake has ended: closing with the rest of
	// its message unread sends a reset, which the side could read in
	// place of the end of the stream.
	err = wait(t, done)
	b.Close()
	return answer, err
}
