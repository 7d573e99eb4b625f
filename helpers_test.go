package securepeer

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/securepeer/securepeer/internal/testenv"
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
