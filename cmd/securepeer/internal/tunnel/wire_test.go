package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/frame"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/testutil"
	"github.com/securepeer/securepeer/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the securepeer-tunnel/1 vectors and fuzz seeds in testdata")

// vectorsFile holds the known-answer streams of securepeer-tunnel/1.
var vectorsFile = filepath.Join("testdata", "vectors", "tunnel1.txt")

const vectorsHeader = `# securepeer-tunnel/1 known-answer streams (PROTOCOL.md, "Tunnels
# (securepeer-tunnel/1)"). One line for what one side writes on one yamux
# stream, from its first byte to its FIN: a name, then the bytes in hex.
# opener- streams begin with the header (the forward's name), accepting-
# streams with the status; refusal- streams are a side's refusal of the
# whole connection (the header "!", then the reason). The lines whose name does not start with "bad-"
# are what this implementation sent in a session over loopback TCP,
# recorded from yamux's data frames; a reader must take each of them whole
# (refusals end after the status) and must reject each bad- one.
# Regenerate with go test -run TestTunnelVectors -update.
`

// A vector is what one side writes on one stream.
type vector struct {
	name   string
	opener bool // the stream begins with a header, not a status
	data   []byte
}

// refusal reports whether v is the refusal of a connection.
func (v vector) refusal() bool { return strings.HasPrefix(v.name, "refusal-") }

// frameOf is one frame: a 4-byte length, then s.
func frameOf(s string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...)
}

var doneBytes = []byte{0xff, 0xff, 0xff, 0xff}

// badVectors are streams a reader must reject, in the file's order.
func badVectors() []vector {
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	return []vector{
		{"bad-opener-name-too-long", true, frameOf(strings.Repeat("a", MaxNameLen+1))},
		{"bad-opener-cut-in-the-header", true, []byte{0, 0, 0, 3, 'w'}},
		{"bad-opener-cut-before-the-end", true, join(frameOf("web"), frameOf("GET /\n"))},
		{"bad-opener-cut-in-a-frame", true, join(frameOf("web"), frameOf("GET /\n")[:6])},
		{"bad-opener-cut-before-the-done-mark", true, join(frameOf("web"), frameOf(""))},
		{"bad-opener-done-mark-before-the-end", true, join(frameOf("web"), doneBytes)},
		{"bad-opener-data-after-the-end", true, join(frameOf("web"), frameOf(""), frameOf("x"))},
		{"bad-accepting-status-empty", false, frameOf("")},
		{"bad-accepting-status-too-long", false, binary.BigEndian.AppendUint32(nil, maxStatusLen+1)},
		{"bad-accepting-cut-in-the-status", false, frameOf("ok")[:5]},
		{"bad-refusal-empty-reason", true, join(frameOf(refusalName), frameOf(""))},
	}
}

// readVector reads v's bytes as the side that receives them does: the
// header or the status, then (after "ok" or a header) the data to its end
// and the done mark. It returns the data, and how many bytes it read.
func readVector(opener bool, data []byte) (got []byte, used int, err error) {
	br := bytes.NewReader(data)
	r := reader{f: frame.NewReader(br)}
	defer func() { used = len(data) - br.Len() }()
	if opener {
		name, err := r.header()
		if err != nil {
			return nil, 0, err
		}
		if name == refusalName {
			reason, err := r.refusal()
			if err == nil {
				err = &SessionRefusedError{Reason: reason}
			}
			return nil, 0, err
		}
	} else if err := r.status(); err != nil {
		return nil, 0, err
	}
	if got, err = io.ReadAll(&r); err != nil {
		return nil, 0, err
	}
	return got, 0, r.done()
}

// A yamuxTap collects the data frames' bodies of one direction of a yamux
// session, by stream.
type yamuxTap struct {
	mu   sync.Mutex
	hdr  [yamuxHeaderLen]byte
	hdrN int
	id   uint32
	left uint32
	data map[uint32][]byte
}

func (y *yamuxTap) scan(b []byte) {
	y.mu.Lock()
	defer y.mu.Unlock()
	for len(b) > 0 {
		if y.left > 0 {
			n := min(uint32(len(b)), y.left)
			y.data[y.id] = append(y.data[y.id], b[:n]...)
			y.left -= n
			b = b[n:]
			continue
		}
		n := copy(y.hdr[y.hdrN:], b)
		y.hdrN += n
		b = b[n:]
		if y.hdrN < yamuxHeaderLen {
			return
		}
		y.hdrN = 0
		if y.hdr[1] == yamuxTypeData {
			y.id, y.left = binary.BigEndian.Uint32(y.hdr[4:]), binary.BigEndian.Uint32(y.hdr[8:])
		}
	}
}

func (y *yamuxTap) stream(id uint32) []byte {
	y.mu.Lock()
	defer y.mu.Unlock()
	return y.data[id]
}

// tappedConn is a Conn whose bytes both ways go through taps too.
type tappedConn struct {
	Conn
	out, in *yamuxTap
}

func (c tappedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.scan(p[:n])
	return n, err
}

func (c tappedConn) Write(p []byte) (int, error) {
	c.out.scan(p)
	return c.Conn.Write(p)
}

// recordVectors runs a session over loopback TCP, the client opening a
// stream for each forward in turn, and returns what each side wrote on
// each: a request and its answer ("web"), a connection that sends nothing
// either way (the unnamed forward), and two refusals.
func recordVectors(t *testing.T) []vector {
	a, b := testenv.TCPPair(t)
	out, in := &yamuxTap{data: map[uint32][]byte{}}, &yamuxTap{data: map[uint32][]byte{}}
	client := NewSession(tappedConn{tcpConn{a}, out, in}, Config{Client: true})
	server := NewSession(tcpConn{b}, Config{})
	route := func(ctx context.Context, name, from string) (net.Conn, string, error) {
		switch name {
		case "web", "":
			local, target := testenv.TCPPair(t)
			go func() {
				defer target.Close()
				io.Copy(io.Discard, target)
				if name == "web" {
					io.WriteString(target, "hello\n")
				}
			}()
			return local, name, nil
		case "admin":
			return nil, "", &Refusal{Status: `no -to for "admin" on its side; it has "web"`, Err: errors.New("no admin")}
		}
		return nil, "", &Refusal{Status: "connect failed: connection refused", Err: errors.New("down")}
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		(&Server{Route: route, Log: testLog, Notef: func(string, ...any) {}, Fullf: func(string, ...any) {}}).Serve(ctx, ctx, server)
		close(served)
	}()
	defer func() {
		cancel()
		client.Fail(io.EOF)
		<-served
	}()
	forward := func(name, request string) error {
		local, far := testenv.TCPPair(t)
		done := make(chan error, 1)
		go func() { done <- client.Forward(context.Background(), far, name) }()
		local.Write([]byte(request))
		local.CloseWrite()
		io.Copy(io.Discard, local)
		local.Close()
		return <-done
	}
	if err := forward("web", "GET /\n"); err != nil {
		t.Fatal(err)
	}
	if err := forward("", ""); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"admin", "down"} {
		if err := forward(name, ""); !errors.As(err, new(*RefusedError)) {
			t.Fatalf("a stream for %q: %v, want a refusal", name, err)
		}
	}
	return []vector{
		{"refusal-of-the-connection", true, recordRefusal(t)},
		{"opener-web", true, out.stream(1)},
		{"accepting-web", false, in.stream(1)},
		{"opener-unnamed-nothing-either-way", true, out.stream(3)},
		{"accepting-unnamed-nothing-either-way", false, in.stream(3)},
		{"accepting-refused-no-target", false, in.stream(5)},
		{"accepting-refused-connect-failed", false, in.stream(7)},
	}
}

// TestTunnelVectors records a session's streams and checks them byte for
// byte against the vectors file, then reads every stream in the file: the
// good ones whole, every strict prefix of them as an error, and each bad-
// one as an error.
func TestTunnelVectors(t *testing.T) {
	vs := append(recordVectors(t), badVectors()...)
	var want bytes.Buffer
	want.WriteString(vectorsHeader)
	for _, v := range vs {
		fmt.Fprintf(&want, "%s: %x\n", v.name, v.data)
	}
	if *update {
		if err := os.WriteFile(vectorsFile, want.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("%s differs from what a session sends (go test -run TestTunnelVectors -update rewrites it); a session sent:\n%s", vectorsFile, want.Bytes())
	}
	file := parseVectors(t, got)
	if len(file) != len(vs) {
		t.Fatalf("%d vectors in the file, want %d", len(file), len(vs))
	}
	for _, v := range file {
		data, _, err := readVector(v.opener, v.data)
		switch {
		case strings.HasPrefix(v.name, "bad-"):
			if err == nil {
				t.Errorf("%s: read as %q, want an error", v.name, data)
			}
			continue
		case strings.Contains(v.name, "-refused-"):
			if !errors.As(err, new(*RefusedError)) {
				t.Errorf("%s: %v, want a refusal", v.name, err)
			}
			continue
		case v.refusal():
			if !errors.As(err, new(*SessionRefusedError)) {
				t.Errorf("%s: %v, want the refusal of the connection", v.name, err)
			}
			continue
		case err != nil:
			t.Errorf("%s: %v", v.name, err)
		}
		for j := range len(v.data) {
			if _, _, err := readVector(v.opener, v.data[:j]); err == nil {
				t.Errorf("%s: its %d-byte prefix read whole", v.name, j)
			}
		}
	}
}

// parseVectors reads the vectors file.
func parseVectors(t testing.TB, file []byte) []vector {
	var vs []vector
	sc := bufio.NewScanner(bytes.NewReader(file))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, hexData, ok := strings.Cut(line, ": ")
		data, err := hex.DecodeString(hexData)
		if !ok || err != nil {
			t.Fatalf("line %q", line)
		}
		vs = append(vs, vector{name, strings.Contains(name, "opener-") || strings.Contains(name, "refusal-"), data})
	}
	return vs
}

// FuzzTunnelStream reads whatever a peer may send on a stream, from the
// opener (the first byte odd) or from the accepting side (even): nothing
// panics, every error is the stream's end or the protocol's, and a stream
// read whole ends with its done mark.
func FuzzTunnelStream(f *testing.F) {
	testutil.RequireFuzzSeeds(f, "TestTunnelFuzzSeeds")
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		opener := data[0]&1 == 1
		_, used, err := readVector(opener, data[1:])
		var refused *RefusedError
		var refusal *SessionRefusedError
		var mal *malformedError
		switch {
		case err == nil:
			if used < 4 || !bytes.Equal(data[1+used-4:1+used], doneBytes) {
				t.Fatalf("read whole, %d bytes, without a done mark at their end: %x", used, data)
			}
		case errors.As(err, &refused), errors.As(err, &refusal), errors.As(err, &mal), err == io.EOF, err == io.ErrUnexpectedEOF, err == frame.ErrCut:
		default:
			t.Fatalf("error %v", err)
		}
	})
}

// TestTunnelFuzzSeeds writes FuzzTunnelStream's seed corpus from the
// vectors file with -update; without it, checks that it is what it would
// write.
func TestTunnelFuzzSeeds(t *testing.T) {
	file, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	seeds := make(map[string][]byte)
	for i, v := range parseVectors(t, file) {
		role := byte(0) // the accepting side's bytes
		if v.opener {
			role = 1
		}
		seeds[fmt.Sprintf("%02d-%s", i, v.name)] = append([]byte{role}, v.data...)
	}
	testutil.UpdateFuzzSeeds(t, "FuzzTunnelStream", seeds, *update, "TestTunnelFuzzSeeds")
}

// recordRefusal has Refuse refuse a session, which a client serves and
// pings, and returns the stream it sent the refusal on, as the client
// received it; the client's session must end with the reason.
func recordRefusal(t *testing.T) []byte {
	a, b := testenv.TCPPair(t)
	in := &yamuxTap{data: map[uint32][]byte{}}
	client := NewSession(tappedConn{tcpConn{a}, &yamuxTap{data: map[uint32][]byte{}}, in}, Config{Client: true, Addr: "the server"})
	const reason = "listen serves 1 session for this key already, the most one key may have (its -max-sessions-per-key); end one of them, or try again later"
	refused := make(chan error, 1)
	go func() { refused <- Refuse(tcpConn{b}, reason, testTimeout) }()
	served := make(chan struct{})
	go func() {
		testServer(nil, t.Logf, t.Logf).Serve(context.Background(), context.Background(), client)
		close(served)
	}()
	if err := client.Ping(); err == nil {
		t.Error("a refused session answered a ping")
	}
	var re *SessionRefusedError
	if err := client.Err(); !errors.As(err, &re) || re.Reason != reason || re.Addr != "the server" {
		t.Errorf("the refused session ended with %v, want the refusal", err)
	}
	if err := <-refused; err != nil {
		t.Errorf("Refuse: %v", err)
	}
	<-served
	return in.stream(2)
}
