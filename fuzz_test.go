package securepeer

// What the fuzz targets of the handshake readers and the record reader
// share: the reproducible captures they are seeded from, and the checks
// they make. The targets are next to the code they fuzz: FuzzRecordReader
// in conn_test.go, FuzzHandshakeInitiator and FuzzResumingInitiator in
// handshake_initiator_test.go, FuzzHandshakeResponder and
// FuzzResumingResponder in handshake_responder_test.go, the ticket parsers'
// in ticket_test.go. The captures come from real
// handshakes whose randomness is fixed (Config.Rand), so a victim given the
// same fixed randomness can replay them: that lets the record fuzzer reach
// the record layer without a live peer, and lets the handshake fuzzers check
// that nothing but the real handshake ever yields a session.

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/securepeer/securepeer/internal/testenv"
	"github.com/securepeer/securepeer/internal/testenv/fuzzseed"
	"github.com/securepeer/securepeer/internal/wire"
)

var updateFuzzSeeds = flag.Bool("update-fuzz", false, "rewrite testdata/fuzz/Fuzz* seed corpora from fresh captures")

// fzTimeout is the HandshakeTimeout of every fuzzed connection, and
// fzSlack how much longer a call may take on a loaded machine before the
// test calls it a hang.
const (
	fzTimeout = 2 * time.Second
	fzSlack   = 20 * time.Second
)

// fzRand is a deterministic stream for Config.Rand: SHA-256 of a label and a
// counter. It is for tests only.
type fzRand struct {
	label string
	n     uint64
	buf   []byte
}

func newFzRand(label string) *fzRand { return &fzRand{label: label} }

func (r *fzRand) Read(p []byte) (int, error) {
	for i := range p {
		if len(r.buf) == 0 {
			h := sha256.New()
			h.Write([]byte(r.label))
			binary.Write(h, binary.BigEndian, r.n)
			r.n++
			r.buf = h.Sum(nil)
		}
		p[i] = r.buf[0]
		r.buf = r.buf[1:]
	}
	return len(p), nil
}

func fzIdentity(label string) *Identity {
	seed := sha256.Sum256([]byte("securepeer fuzz identity " + label))
	id, err := NewIdentity(ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		panic(err)
	}
	return id
}

var (
	fzInitiatorID = fzIdentity("initiator")
	fzResponderID = fzIdentity("responder")
)

// fzConfig returns the config of one fuzzing party: a fixed identity, a
// fixed cipher (so captures do not depend on the CPU), and, unless rand is
// empty, fixed randomness.
func fzConfig(id *Identity, rand string) *Config {
	cfg := &Config{
		Identity:         id,
		Ciphers:          []Cipher{ChaCha20Poly1305, AES256GCM},
		HandshakeTimeout: fzTimeout,
	}
	if rand != "" {
		cfg.Rand = newFzRand(rand)
	}
	return cfg
}

// The fixed randomness of each party. A victim built with the same label as
// the party in a capture behaves exactly as that party did.
const (
	fzRandClient    = "client"
	fzRandServer    = "server"
	fzRandNewConn   = "newconn"
	fzRandNewConnB  = "newconn-peer"
	fzPostHandshake = "beep boop"
)

// fzScript is what the initiator of the record capture sends after the
// handshake, in this order, then CloseWrite: two short records, a full one
// and the 1-byte rest of that Write. Only the seed with every record holds
// the full one, to keep the corpus small.
var fzScript = [][]byte{
	[]byte(fzPostHandshake),
	[]byte("tail"),
	bytes.Repeat([]byte("0123456789abcdef"), (wire.MaxRecordPayload+1)/16+1)[:wire.MaxRecordPayload+1],
}

func fzScriptData() []byte { return bytes.Join(fzScript, nil) }

// --- in-memory connections ---

type fzAddr struct{}

func (fzAddr) Network() string { return "memory" }
func (fzAddr) String() string  { return "memory" }

// fzConn is a net.Conn that reads a fixed byte string and then io.EOF, and
// swallows writes. Reads never block, so deadlines are not needed. It
// records how much the connection asked to read at once after mark, to
// check that no read is larger than a record.
type fzConn struct {
	in     []byte
	read   int // bytes consumed
	mu     sync.Mutex
	out    int // bytes written
	marked bool
	maxReq int // largest Read buffer after mark
	closed bool
}

func newFzConn(in []byte) *fzConn { return &fzConn{in: in} }

func (c *fzConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	if c.marked {
		c.maxReq = max(c.maxReq, len(p))
	}
	if len(p) == 0 {
		return 0, nil
	}
	if c.read == len(c.in) {
		return 0, io.EOF
	}
	n := copy(p, c.in[c.read:])
	c.read += n
	return n, nil
}

func (c *fzConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	c.out += len(p)
	return len(p), nil
}

func (c *fzConn) mark() (consumed int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.marked = true
	return c.read
}

func (c *fzConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}
func (c *fzConn) LocalAddr() net.Addr              { return fzAddr{} }
func (c *fzConn) RemoteAddr() net.Addr             { return fzAddr{} }
func (c *fzConn) SetDeadline(time.Time) error      { return nil }
func (c *fzConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fzConn) SetWriteDeadline(time.Time) error { return nil }

// fzTap wraps one end of a net.Pipe and records what passes through it.
// Once detached, writes go only to the record, not to the pipe.
type fzTap struct {
	net.Conn
	mu       sync.Mutex
	in, out  []byte
	detached bool
}

func (t *fzTap) Read(p []byte) (int, error) {
	n, err := t.Conn.Read(p)
	t.mu.Lock()
	t.in = append(t.in, p[:n]...)
	t.mu.Unlock()
	return n, err
}

func (t *fzTap) Write(p []byte) (int, error) {
	t.mu.Lock()
	t.out = append(t.out, p...)
	detached := t.detached
	t.mu.Unlock()
	if detached {
		return len(p), nil
	}
	return t.Conn.Write(p)
}

// --- captures ---

// A fzCapture is a real handshake between a tapped party and a peer.
type fzCapture struct {
	sent     []byte // what the tapped party sent during the handshake
	received []byte // what it received: exactly the peer's handshake bytes
	records  []byte // records the tapped party sent after the handshake (record capture only)
}

// fzCaptureHandshake runs tapped against peer over a net.Pipe and records
// the tapped side. If script is set, the tapped side then sends fzScript and
// ends its stream.
func fzCaptureHandshake(tapped, peer func(net.Conn) *Conn, script bool) (*fzCapture, error) {
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	tap := &fzTap{Conn: p1}
	a, b := tapped(tap), peer(p2)
	errc := make(chan error, 1)
	go func() { errc <- b.Handshake() }()
	errA := a.Handshake()
	if errA != nil {
		p1.Close() // unblock b
	}
	errB := <-errc
	if errA != nil || errB != nil {
		return nil, fmt.Errorf("capture handshake: %v / %v", errA, errB)
	}
	tap.mu.Lock()
	c := &fzCapture{sent: tap.out, received: tap.in}
	tap.out, tap.detached = nil, true
	tap.mu.Unlock()
	if !script {
		return c, nil
	}
	for _, p := range fzScript {
		if _, err := a.Write(p); err != nil {
			return nil, err
		}
	}
	if err := a.CloseWrite(); err != nil {
		return nil, err
	}
	tap.mu.Lock()
	c.records = tap.out
	tap.mu.Unlock()
	return c, nil
}

// fzCaptures holds every capture the fuzzers use.
type fzCaptures struct {
	clientServer  *fzCapture // Client(fzRandClient) tapped, against Server(fzRandServer); with records
	serverClient  *fzCapture // Server(fzRandServer) tapped, against Client(fzRandClient)
	clientNewConn *fzCapture // Client(fzRandClient) tapped, against NewConn(fzRandNewConn)
	newConnClient *fzCapture // NewConn(fzRandNewConn) tapped, against Client(fzRandClient)
	newConnPeer   *fzCapture // NewConn(fzRandNewConnB) tapped, against NewConn(fzRandNewConn)
}

var fzCapturesOnce = sync.OnceValues(func() (*fzCaptures, error) {
	client := func(c net.Conn) *Conn { return Client(c, fzConfig(fzInitiatorID, fzRandClient)) }
	server := func(c net.Conn) *Conn { return Server(c, fzConfig(fzResponderID, fzRandServer)) }
	newConn := func(c net.Conn) *Conn { return NewConn(c, fzConfig(fzResponderID, fzRandNewConn)) }
	newConnB := func(c net.Conn) *Conn { return NewConn(c, fzConfig(fzInitiatorID, fzRandNewConnB)) }
	var cs fzCaptures
	var err error
	if cs.clientServer, err = fzCaptureHandshake(client, server, true); err != nil {
		return nil, err
	}
	if cs.serverClient, err = fzCaptureHandshake(server, client, false); err != nil {
		return nil, err
	}
	if cs.clientNewConn, err = fzCaptureHandshake(client, newConn, false); err != nil {
		return nil, err
	}
	if cs.newConnClient, err = fzCaptureHandshake(newConn, client, false); err != nil {
		return nil, err
	}
	if cs.newConnPeer, err = fzCaptureHandshake(newConnB, newConn, false); err != nil {
		return nil, err
	}
	// The capture must be reproducible, or replaying it proves nothing.
	again, err := fzCaptureHandshake(client, server, true)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again.sent, cs.clientServer.sent) || !bytes.Equal(again.received, cs.clientServer.received) || !bytes.Equal(again.records, cs.clientServer.records) {
		return nil, errors.New("two handshakes with the same fixed randomness differ: is Config.Rand the only randomness?")
	}
	return &cs, nil
})

func fzGetCaptures(tb testing.TB) *fzCaptures {
	tb.Helper()
	cs, err := fzCapturesOnce()
	if err != nil {
		tb.Fatal(err)
	}
	return cs
}

// fzMessages splits a handshake stream after its hello into its framed
// messages (each with its length prefix).
func fzMessages(stream []byte) [][]byte {
	var msgs [][]byte
	b := stream[wire.HelloSize:]
	for len(b) >= 2 {
		n := 2 + int(binary.BigEndian.Uint16(b))
		if n > len(b) {
			break
		}
		msgs = append(msgs, b[:n])
		b = b[n:]
	}
	return msgs
}

// --- checks shared by the fuzzers ---

// fzRequireSeeds fails a fuzz target whose seed corpus directory is missing
// or empty, so that it cannot silently test nothing.
func fzRequireSeeds(f *testing.F) {
	f.Helper()
	dir := filepath.Join("testdata", "fuzz", f.Name())
	entries, err := os.ReadDir(dir)
	if err != nil {
		f.Fatalf("seed corpus: %v (go test -run TestFuzzSeeds -update-fuzz writes it)", err)
	}
	for _, e := range entries {
		if e.Type().IsRegular() {
			return
		}
	}
	f.Fatalf("seed corpus %s has no files (go test -run TestFuzzSeeds -update-fuzz writes it)", dir)
}

// fzHandshake runs c's handshake, failing t if it takes longer than the
// handshake timeout allows, and then checks that it left no goroutine
// behind (base is the count before c was made).
func fzHandshake(t *testing.T, c *Conn, base int) error {
	t.Helper()
	errc := make(chan error, 1)
	start := time.Now()
	go func() { errc <- c.Handshake() }()
	var err error
	select {
	case err = <-errc:
	case <-time.After(fzTimeout + fzSlack):
		t.Fatalf("Handshake did not return %v after its timeout:\n%s", fzSlack, fzStacks())
	}
	if d := time.Since(start); d > fzTimeout+fzSlack {
		t.Fatalf("Handshake took %v, its timeout is %v", d, fzTimeout)
	}
	if err2 := c.Handshake(); !fzSameError(err, err2) {
		t.Fatalf("Handshake returned %v, then %v: a failed handshake's error must be sticky", err, err2)
	}
	fzNoLeak(t, base)
	return err
}

func fzSameError(a, b error) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Error() == b.Error()
}

// fzNoLeak waits, boundedly, for the goroutine count to fall back to base.
func fzNoLeak(t *testing.T, base int) {
	t.Helper()
	if err := testenv.WaitGoroutines(base, fzSlack); err != nil {
		t.Fatal(err)
	}
}

func fzStacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// --- FuzzHandshakeResponder ---

// --- FuzzHandshakeInitiator ---

// --- FuzzRecordReader ---

// --- seeds ---

// fzSeeds returns the seed corpora of the three fuzzers, built from the
// captures: the real streams, their truncations, and hostile variants.
func fzSeeds(tb testing.TB) map[string]map[string][]byte {
	cs := fzGetCaptures(tb)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	hello := func(mode wire.Mode) []byte { h := wire.Hello{Version: wire.Version, Mode: mode}.Marshal(); return h[:] }
	flip := func(b []byte, i int) []byte { b = bytes.Clone(b); b[i] ^= 1; return b }
	hdr := func(typ uint8, n int) []byte { b := make([]byte, 4); wire.PutRecordHeader(b, typ, n); return b }

	fromClient := cs.serverClient.received // Client's hello, message 1, message 3
	msgs := fzMessages(fromClient)
	fromServer := cs.clientServer.received // Server's hello, message 2
	fromNewConn := cs.clientNewConn.received
	recs := cs.clientServer.records
	// Split the records at their headers.
	var rec [][]byte
	for b := recs; len(b) >= 4; {
		n := 4 + (int(b[1])<<16 | int(b[2])<<8 | int(b[3]))
		rec = append(rec, b[:n])
		b = b[n:]
	}

	responder := map[string][]byte{
		"real-client":          fromClient,
		"real-newconn-peer":    cs.newConnClient.received,
		"real-simultaneous":    cs.newConnPeer.sent,
		"first-flight-only":    cat(hello(wire.ModeInitiator), msgs[0]),
		"message3-flipped":     cat(hello(wire.ModeInitiator), msgs[0], flip(msgs[1], 40)),
		"message1-flipped":     cat(hello(wire.ModeInitiator), flip(msgs[0], 100), msgs[1]),
		"hello-only":           hello(wire.ModeInitiator),
		"either-hello-only":    hello(wire.ModeEither),
		"abort-rejected":       cat(hello(wire.ModeInitiator), []byte{0, 0, wire.AbortRejected}),
		"abort-no-cipher":      cat(hello(wire.ModeInitiator), []byte{0, 0, wire.AbortNoCipher}),
		"abort-unknown":        cat(hello(wire.ModeInitiator), []byte{0, 0, 0xff}),
		"max-length-prefix":    cat(hello(wire.ModeInitiator), []byte{0xff, 0xff}),
		"short-message1":       cat(hello(wire.ModeInitiator), []byte{0, 31}, make([]byte, 31)),
		"version2":             []byte("speer\x02\x01\x00"),
		"legacy-json":          []byte(`{"type":"hello"}` + "\n"),
		"http":                 []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
		"reflected-own-flight": cs.serverClient.sent,
	}
	initiator := map[string][]byte{
		"real-server":       fromServer,
		"real-newconn":      fromNewConn,
		"hello-only":        hello(wire.ModeResponder),
		"message2-flipped":  cat(hello(wire.ModeResponder), flip(fzMessages(fromServer)[0], 200)),
		"abort-rejected":    cat(hello(wire.ModeResponder), []byte{0, 0, wire.AbortRejected}),
		"abort-no-cipher":   cat(hello(wire.ModeResponder), []byte{0, 0, wire.AbortNoCipher}),
		"abort-unknown":     cat(hello(wire.ModeResponder), []byte{0, 0, 0x7f}),
		"max-length-prefix": cat(hello(wire.ModeResponder), []byte{0xff, 0xff}),
		"initiator-hello":   hello(wire.ModeInitiator),
		"reflected-flight":  cs.clientServer.sent[:wire.HelloSize+len(fzMessages(cs.clientServer.sent)[0])],
	}
	records := map[string][]byte{
		"all":                recs,
		"without-end":        cat(rec[0], rec[1]),
		"first":              rec[0],
		"first-then-cut":     cat(rec[0], rec[1][:10]),
		"end-first":          rec[len(rec)-1],
		"swapped":            cat(rec[1], rec[0]),
		"duplicated":         cat(rec[0], rec[0]),
		"flipped-body":       cat(rec[0], flip(rec[1], 10)),
		"flipped-header":     cat(rec[0], flip(rec[1], 3)),
		"flipped-type":       cat(flip(rec[0], 0)),
		"header-16MiB":       cat(rec[0], hdr(wire.RecordData, 1<<24-1)),
		"header-over-limit":  cat(hdr(wire.RecordData, wire.MaxRecordLength+1), rec[0][4:]),
		"header-under-tag":   hdr(wire.RecordData, wire.TagSize-1),
		"header-cut":         rec[0][:3],
		"empty":              nil,
		"plaintext-after-ok": cat(rec[0], []byte("GET / HTTP/1.1\r\n\r\n")),
	}
	return map[string]map[string][]byte{
		"FuzzHandshakeResponder": responder,
		"FuzzHandshakeInitiator": initiator,
		"FuzzRecordReader":       records,
	}
}

// TestFuzzSeeds writes the seed corpora with -update-fuzz. Without it, it
// checks that the committed ones are what the captures give today, so that
// a protocol change that makes them stale (no longer reaching past the
// handshake) is noticed.
func TestFuzzSeeds(t *testing.T) {
	for target, seeds := range fzSeeds(t) {
		dir := filepath.Join("testdata", "fuzz", target)
		for name, data := range seeds {
			path := filepath.Join(dir, name)
			if *updateFuzzSeeds {
				fuzzseed.Write(t, path, data)
				continue
			}
			file := fuzzseed.File(data)
			got, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("%v (go test -run TestFuzzSeeds -update-fuzz writes it)", err)
				continue
			}
			if !bytes.Equal(got, file) {
				t.Errorf("%s is stale (go test -run TestFuzzSeeds -update-fuzz rewrites it)", path)
			}
		}
	}
}

// TestFuzzCaptureReplays checks the premise of the fuzzers: each capture
// replays to a victim with the same fixed randomness, and the record
// capture reads back as the script, then io.EOF.
func TestFuzzCaptureReplays(t *testing.T) {
	cs := fzGetCaptures(t)
	for _, tc := range []struct {
		name string
		in   []byte
		mk   func(net.Conn) *Conn
		peer PublicKey
	}{
		{"server", cs.serverClient.received, func(c net.Conn) *Conn { return Server(c, fzConfig(fzResponderID, fzRandServer)) }, fzInitiatorID.PublicKey()},
		{"newconn", cs.newConnClient.received, func(c net.Conn) *Conn { return NewConn(c, fzConfig(fzResponderID, fzRandNewConn)) }, fzInitiatorID.PublicKey()},
		{"newconn-simultaneous", cs.newConnPeer.sent, func(c net.Conn) *Conn { return NewConn(c, fzConfig(fzResponderID, fzRandNewConn)) }, fzInitiatorID.PublicKey()},
		{"client", cs.clientServer.received, func(c net.Conn) *Conn { return Client(c, fzConfig(fzInitiatorID, fzRandClient)) }, fzResponderID.PublicKey()},
		{"client-of-newconn", cs.clientNewConn.received, func(c net.Conn) *Conn { return Client(c, fzConfig(fzInitiatorID, fzRandClient)) }, fzResponderID.PublicKey()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.mk(newFzConn(tc.in))
			if err := c.Handshake(); err != nil {
				t.Fatal(err)
			}
			if c.RemoteKey() != tc.peer {
				t.Fatal("wrong peer")
			}
			// The same bytes to a victim with other randomness: a replay.
			fresh := tc.mk(newFzConn(tc.in))
			fresh.config.Rand = nil
			if err := fresh.Handshake(); err == nil {
				t.Fatal("a replayed handshake succeeded against fresh randomness")
			}
		})
	}
	t.Run("records", func(t *testing.T) {
		c := Server(newFzConn(append(bytes.Clone(cs.clientServer.sent), cs.clientServer.records...)), fzConfig(fzResponderID, fzRandServer))
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, fzScriptData()) {
			t.Fatalf("read %d bytes, want the %d-byte script", len(got), len(fzScriptData()))
		}
	})
}

// ticketSession runs a session over a net.Pipe in which the client takes
// the server's ticket (with the server's first byte), and returns the
// client's end and what each side sent.
func ticketSession(t testing.TB, client, server *Config) (x *Conn, clientSent, serverSent []byte) {
	a, b := net.Pipe()
	ra, rb := &recorder{Conn: a}, &recorder{Conn: b}
	x, y := Client(ra, client), Server(rb, server)
	other := run(y.Handshake)
	if err := x.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-other; err != nil {
		t.Fatal(err)
	}
	done := run(func() error { _, err := y.Write([]byte("x")); return err })
	if _, err := io.ReadFull(x, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	<-done
	a.Close() // no end of stream: on a net.Pipe it would wait for a reader
	b.Close()
	return x, rb.bytes(), ra.bytes()
}
