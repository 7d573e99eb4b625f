package legacy

// A tampering proxy between a Go peer and the real Node module: Node sends a
// known file in small frames, the proxy changes what reaches Go, and the Go
// side must stop with an error, having delivered only genuine data.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/securepeer/securepeer/internal/nodetest"
	"github.com/securepeer/securepeer/internal/testenv"
)

const (
	tamperChunks = 6
	tamperChunk  = 8
)

// tamperCase changes the lines Node sent (header, 6 data frames, the end
// frame; without "\n") into what reaches Go. If cut is set, the proxy then
// closes the connection; otherwise it keeps relaying.
type tamperCase struct {
	name    string
	cipher  string
	mutate  func(lines [][]byte) (out [][]byte, cut bool)
	partial []byte // written after out, without a line ending, if set
	// What Go must see: the first `chunks` chunks, then wantErr (io.EOF for
	// a clean end). handshake means Handshake itself fails with wantErr.
	chunks    int
	wantErr   error
	handshake bool
}

// flip changes the character at index i of line (from the end if i < 0) to
// another base64 character, so that the line still parses.
func flip(line []byte, i int) []byte {
	out := slices.Clone(line)
	if i < 0 {
		i += len(out)
	}
	if out[i] == 'A' {
		out[i] = 'B'
	} else {
		out[i] = 'A'
	}
	return out
}

func tamperCases() []tamperCase {
	keep := func(lines [][]byte) ([][]byte, bool) { return lines, false }
	return []tamperCase{
		{name: "untouched", mutate: keep, chunks: tamperChunks, wantErr: io.EOF},
		{name: "crlf-line-endings", mutate: func(l [][]byte) ([][]byte, bool) {
			for i := range l {
				l[i] = append(l[i], '\r')
			}
			return l, false
		}, chunks: tamperChunks, wantErr: io.EOF},
		{name: "flipped-ciphertext", mutate: func(l [][]byte) ([][]byte, bool) {
			l[3] = flip(l[3], 3)
			return l, false
		}, chunks: 2, wantErr: errAuth},
		{name: "flipped-ciphertext-rc4", cipher: "RC4", mutate: func(l [][]byte) ([][]byte, bool) {
			l[3] = flip(l[3], 3)
			return l, false
		}, chunks: 2, wantErr: errAuth},
		{name: "flipped-signature", mutate: func(l [][]byte) ([][]byte, bool) {
			l[3] = flip(l[3], -10)
			return l, false
		}, chunks: 2, wantErr: errAuth},
		{name: "flipped-json", mutate: func(l [][]byte) ([][]byte, bool) {
			l[3] = bytes.Replace(l[3], []byte(`","`), []byte(`",,"`), 1)
			return l, false
		}, chunks: 2, wantErr: errMalformedFrame},
		{name: "flipped-header-signature", mutate: func(l [][]byte) ([][]byte, bool) {
			l[0] = flip(l[0], 12)
			return l, false
		}, handshake: true, wantErr: errAuth},
		{name: "flipped-header-token", mutate: func(l [][]byte) ([][]byte, bool) {
			i := bytes.Index(l[0], []byte(`token\":\"`)) + len(`token\":\"`) + 5
			l[0] = flip(l[0], i)
			return l, false
		}, handshake: true, wantErr: errAuth},
		{name: "reordered-frames", mutate: func(l [][]byte) ([][]byte, bool) {
			l[2], l[3] = l[3], l[2]
			return l, false
		}, chunks: 1, wantErr: errAuth},
		{name: "replayed-frame", mutate: func(l [][]byte) ([][]byte, bool) {
			return slices.Insert(l, 4, l[3]), false
		}, chunks: 3, wantErr: errAuth},
		{name: "dropped-frame", mutate: func(l [][]byte) ([][]byte, bool) {
			return slices.Delete(l, 2, 3), false
		}, chunks: 1, wantErr: errAuth},
		{name: "data-frame-as-end-frame", mutate: func(l [][]byte) ([][]byte, bool) {
			// Keep the data frame's signature, drop its ciphertext.
			if f, err := parseFrame(l[3]); err == nil {
				l[3] = bytes.TrimSuffix(appendFrame(nil, frame{end: true, sig: f.sig}), []byte("\n"))
			}
			return l, false
		}, chunks: 2, wantErr: errAuth},
		{name: "empty-line", mutate: func(l [][]byte) ([][]byte, bool) {
			return slices.Insert(l, 3, []byte{}), false
		}, chunks: 2, wantErr: errMalformedFrame},
		{name: "cut-after-frames", mutate: func(l [][]byte) ([][]byte, bool) {
			return l[:5], true
		}, chunks: 4, wantErr: ErrTruncated},
		{name: "cut-before-end-frame", mutate: func(l [][]byte) ([][]byte, bool) {
			return l[:1+tamperChunks], true
		}, chunks: tamperChunks, wantErr: ErrTruncated},
		{name: "cut-mid-frame", mutate: func(l [][]byte) ([][]byte, bool) {
			return l[:4], true
		}, partial: []byte(`["AAAA`), chunks: 3, wantErr: ErrTruncated},
		{name: "cut-before-any-frame", mutate: func(l [][]byte) ([][]byte, bool) {
			return l[:1], true
		}, chunks: 0, wantErr: ErrRejected},
		{name: "oversized-line", mutate: func(l [][]byte) ([][]byte, bool) {
			return l[:3], false
		}, partial: bytes.Repeat([]byte("A"), 3<<20), chunks: 2, wantErr: ErrFrameTooLarge},
	}
}

// TestTamperingProxy runs each tamperCase between Go and Node.
func TestTamperingProxy(t *testing.T) {
	nodetest.Find(t)
	var want []byte
	for i := range tamperChunks {
		want = fmt.Appendf(want, "chunk-%d\n", i)
	}
	src := filepath.Join(t.TempDir(), "chunks")
	if err := os.WriteFile(src, want, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range tamperCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := interopContext(t)
			if tc.cipher == "" {
				tc.cipher = "aes-256-cbc"
			}
			nodeSide, p := connectTo(t, ctx, false, nodetest.Settings{
				Keys: nodeKeys, Ciphers: tc.cipher, Action: "source", Source: src, Chunk: tamperChunk,
			})
			goSide, proxySide := tcpPair(t)
			if dl, ok := ctx.Deadline(); ok {
				nodeSide.SetDeadline(dl)
				proxySide.SetDeadline(dl)
			}
			stop := runTamperProxy(t, tc, proxySide, nodeSide)
			defer stop()

			c := newGoConn(t, ctx, goSide, []string{tc.cipher})
			err := c.HandshakeContext(ctx)
			if tc.handshake {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Handshake = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []byte
			buf := make([]byte, 3) // small reads: frames are delivered piecewise
			for {
				n, rerr := c.Read(buf)
				got = append(got, buf[:n]...)
				if rerr != nil {
					err = rerr
					break
				}
			}
			if !bytes.Equal(got, want[:tc.chunks*tamperChunk]) {
				t.Errorf("Go delivered %q, want %q", got, want[:tc.chunks*tamperChunk])
			}
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("Read error = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != io.EOF {
				// The error is sticky.
				if _, again := c.Read(buf); again == nil || again.Error() != err.Error() {
					t.Errorf("second Read = %v, want %v", again, err)
				}
			}
			c.Close()
			stop()
			waitNode(t, ctx, p)
		})
	}
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	a, b := testenv.TCPPair(t)
	return a, b
}

// runTamperProxy relays between the Go side (toGo) and Node (toNode),
// passing Node's first 8 lines through tc. The returned function closes
// both connections and waits for the relay to finish.
func runTamperProxy(t *testing.T, tc tamperCase, toGo, toNode net.Conn) (stop func()) {
	var wg sync.WaitGroup
	wg.Go(func() {
		io.Copy(toNode, toGo) // Go -> Node, untouched
	})
	wg.Go(func() {
		defer toGo.Close()
		br := bufio.NewReader(toNode)
		var lines [][]byte
		for len(lines) < 2+tamperChunks {
			l, err := br.ReadBytes('\n')
			if err != nil {
				t.Errorf("proxy: reading node's line %d: %v", len(lines), err)
				return
			}
			lines = append(lines, bytes.TrimSuffix(l, []byte("\n")))
		}
		out, cut := tc.mutate(lines)
		var wire []byte
		for _, l := range out {
			wire = append(append(wire, l...), '\n')
		}
		wire = append(wire, tc.partial...)
		if _, err := toGo.Write(wire); err != nil && !cut && tc.partial == nil {
			return // Go gave up early; its error is checked by the test
		}
		if cut {
			return
		}
		io.Copy(toGo, br)
	})
	var once sync.Once
	stop = func() {
		once.Do(func() {
			toGo.Close()
			toNode.Close()
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	return stop
}
