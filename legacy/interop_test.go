package legacy

// Live interop over loopback TCP with the real npm module secure-peer 0.2.1,
// driven through testdata/peer.js (see node_test.go). The Go side always uses
// keys/a.json and the Node side keys/b.json.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/securepeer/securepeer/internal/nodetest"
)

var errNotPinned = errors.New("not the pinned key")

// pin returns a Config.Verify that accepts only want.
func pin(want *rsa.PublicKey) func(context.Context, *rsa.PublicKey) error {
	return func(_ context.Context, pub *rsa.PublicKey) error {
		if !pub.Equal(want) {
			return errNotPinned
		}
		return nil
	}
}

// pemFile writes a public key PEM to a temporary file for peer.js.
func pemFile(t *testing.T, pemText string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, []byte(pemText), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func interopContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), interopTimeout)
	t.Cleanup(cancel)
	return ctx
}

// newGoConn wraps conn with the Go side's key and a pin on the Node side's
// key, and bounds its I/O by ctx.
func newGoConn(t *testing.T, ctx context.Context, conn net.Conn, ciphers []string) *Conn {
	t.Helper()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	return NewConn(conn, &Config{
		Keys:    testKeys(t, "a"),
		Ciphers: ciphers,
		Verify:  pin(testKeys(t, "b").Public()),
	})
}

// echo sends data through a Node echo peer in writes of at most size bytes,
// then the end frame, and checks that exactly data comes back and that the
// Node side saw exactly data too.
func echo(t *testing.T, ctx context.Context, c *Conn, p *nodetest.Peer, data []byte, size int) {
	t.Helper()
	sent := make(chan error, 1)
	go func() {
		for rest := data; len(rest) > 0; {
			n := min(len(rest), size)
			if _, err := c.Write(rest[:n]); err != nil {
				sent <- err
				return
			}
			rest = rest[n:]
		}
		sent <- c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if werr := <-sent; werr != nil {
		t.Fatalf("writing: %v", werr)
	}
	if err != nil {
		t.Fatalf("reading: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echo returned %d bytes (sha256 %x), sent %d (sha256 %x)", len(got), sha256.Sum256(got), len(data), sha256.Sum256(data))
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	end := p.Next(ctx, "end")
	sum := sha256.Sum256(data)
	if end.Bytes != int64(len(data)) || end.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("node received %d bytes with sha256 %s, sent %d with %x", end.Bytes, end.SHA256, len(data), sum)
	}
	waitNode(t, ctx, p)
}

// TestInteropCiphers talks to Node with each supported cipher, in both
// directions, both sides pinning each other's key.
func TestInteropCiphers(t *testing.T) {
	nodetest.Find(t)
	// Node looks names up in OpenSSL case-insensitively; each spelling is
	// sent as written and must match the other side's exactly.
	for _, cipher := range []string{"RC4", "aes-128-cbc", "AES-192-CBC", "aes-256-cbc", "aes256"} {
		for _, goListens := range []bool{true, false} {
			t.Run(cipher+"/"+direction(goListens), func(t *testing.T) {
				t.Parallel()
				ctx := interopContext(t)
				conn, p := connectTo(t, ctx, goListens, nodetest.Settings{
					Keys: nodeKeys, Ciphers: cipher, Action: "echo",
					Expect: pemFile(t, testKeys(t, "a").PublicPEM()),
				})
				c := newGoConn(t, ctx, conn, []string{cipher})
				if err := c.HandshakeContext(ctx); err != nil {
					t.Fatal(err)
				}
				if c.Cipher() != cipher {
					t.Errorf("Cipher() = %q, want %q", c.Cipher(), cipher)
				}
				if id := p.Next(ctx, "identify"); id.Cipher != cipher || id.Key != testKeys(t, "a").PublicPEM() {
					t.Errorf("node chose %q and saw key %q", id.Cipher, id.Key)
				}
				if c.RemoteKeyPEM() != testKeys(t, "b").PublicPEM() {
					t.Errorf("RemoteKeyPEM() = %q", c.RemoteKeyPEM())
				}
				// Sizes around the AES block size, and one over a frame.
				data := make([]byte, 0, 100<<10)
				for _, n := range []int{1, 15, 16, 17, 1000} {
					data = append(data, bytes.Repeat([]byte{byte(n)}, n)...)
				}
				data = append(data, randomBytes(t, 80<<10)...)
				echo(t, ctx, c, p, data, 7000)
			})
		}
	}
}

// TestInteropCipherVote checks that both sides pick the same cipher from
// different preference lists, and what Node picks is what the Go side
// reports.
func TestInteropCipherVote(t *testing.T) {
	nodetest.Find(t)
	tests := []struct {
		name       string
		goList     []string // nil: DefaultCiphers
		nodeList   string   // "": the module's default, ["RC4"]
		want       string
		noneCommon bool
	}{
		{name: "defaults", want: "RC4"},
		{name: "tie-goes-to-first-name", goList: []string{"AES-256-CBC", "RC4"}, nodeList: "RC4,AES-256-CBC", want: "AES-256-CBC"},
		{name: "tie-aes", goList: []string{"aes-256-cbc", "aes-128-cbc"}, nodeList: "aes-128-cbc,aes-256-cbc", want: "aes-128-cbc"},
		{name: "tie-uppercase-sorts-first", goList: []string{"aes-256-cbc", "RC4", "aes-128-cbc"}, nodeList: "aes-128-cbc,RC4", want: "RC4"},
		{name: "lowest-total-rank", goList: []string{"aes-256-cbc", "aes-128-cbc", "RC4"}, nodeList: "aes-128-cbc,RC4,aes-256-cbc", want: "aes-128-cbc"},
		{name: "only-common-name", goList: []string{"aes-192-cbc", "aes-256-cbc"}, nodeList: "RC4,aes-192-cbc", want: "aes-192-cbc"},
		{name: "case-sensitive-no-match", goList: []string{"rc4"}, nodeList: "RC4", noneCommon: true},
		{name: "no-common", goList: []string{"aes-256-cbc"}, nodeList: "", noneCommon: true},
	}
	for _, tt := range tests {
		for _, goListens := range []bool{true, false} {
			t.Run(tt.name+"/"+direction(goListens), func(t *testing.T) {
				t.Parallel()
				ctx := interopContext(t)
				conn, p := connectTo(t, ctx, goListens, nodetest.Settings{Keys: nodeKeys, Ciphers: tt.nodeList, Action: "echo"})
				c := newGoConn(t, ctx, conn, tt.goList)
				err := c.HandshakeContext(ctx)
				if tt.noneCommon {
					if !errors.Is(err, ErrNoCommonCipher) {
						t.Fatalf("Handshake = %v, want ErrNoCommonCipher", err)
					}
					if ev := p.Next(ctx, "clientError"); !strings.Contains(ev.Error, "no common ciphers") {
						t.Errorf("node reported %q", ev.Error)
					}
					waitNode(t, ctx, p)
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				id := p.Next(ctx, "identify")
				if c.Cipher() != tt.want || id.Cipher != tt.want {
					t.Errorf("Go chose %q, Node chose %q, want %q", c.Cipher(), id.Cipher, tt.want)
				}
				echo(t, ctx, c, p, []byte("vote\n"), 100)
			})
		}
	}
}

// TestInteropLargeTransfer sends 4 MiB through Node and back, and has Node
// send a 3 MiB file in 64 KiB and 1 MiB writes, checking SHA-256 on both
// sides.
func TestInteropLargeTransfer(t *testing.T) {
	nodetest.Find(t)
	for _, goListens := range []bool{true, false} {
		t.Run("echo/"+direction(goListens), func(t *testing.T) {
			ctx := interopContext(t)
			conn, p := connectTo(t, ctx, goListens, nodetest.Settings{Keys: nodeKeys, Ciphers: "aes-256-cbc,RC4", Action: "echo"})
			c := newGoConn(t, ctx, conn, nil)
			echo(t, ctx, c, p, randomBytes(t, 4<<20), 1<<20)
		})
	}
	for _, chunk := range []int{64 << 10, 1 << 20} {
		t.Run(fmt.Sprintf("source-%dKiB", chunk>>10), func(t *testing.T) {
			ctx := interopContext(t)
			data := randomBytes(t, 3<<20)
			src := filepath.Join(t.TempDir(), "data")
			if err := os.WriteFile(src, data, 0o600); err != nil {
				t.Fatal(err)
			}
			conn, p := connectTo(t, ctx, false, nodetest.Settings{Keys: nodeKeys, Ciphers: "RC4", Action: "source", Source: src, Chunk: chunk})
			c := newGoConn(t, ctx, conn, []string{"RC4"})
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if sha256.Sum256(got) != sha256.Sum256(data) {
				t.Fatalf("received %d bytes that differ from the %d sent", len(got), len(data))
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if end := p.Next(ctx, "end"); end.Bytes != 0 {
				t.Errorf("node received %d bytes", end.Bytes)
			}
			waitNode(t, ctx, p)
		})
	}
}

// TestInteropManySmallWrites sends many small writes, each its own frame
// with its own signature, and gets each echoed as its own frame.
func TestInteropManySmallWrites(t *testing.T) {
	nodetest.Find(t)
	for _, goListens := range []bool{true, false} {
		t.Run(direction(goListens), func(t *testing.T) {
			ctx := interopContext(t)
			conn, p := connectTo(t, ctx, goListens, nodetest.Settings{Keys: nodeKeys, Ciphers: "aes-128-cbc", Action: "echo"})
			c := newGoConn(t, ctx, conn, []string{"aes-128-cbc"})
			var data []byte
			for i := range 300 {
				data = fmt.Appendf(data, "%d,", i)
			}
			// Writes of 1 to 4 bytes.
			echo(t, ctx, c, p, data, 3)
		})
	}
}

// TestInteropNodeRejectsGoKey checks that a rejection by the Node side
// surfaces as ErrRejected.
func TestInteropNodeRejectsGoKey(t *testing.T) {
	nodetest.Find(t)
	for _, how := range []string{"reject-all", "pinned-other-key"} {
		for _, goListens := range []bool{true, false} {
			t.Run(how+"/"+direction(goListens), func(t *testing.T) {
				t.Parallel()
				ctx := interopContext(t)
				o := nodetest.Settings{Keys: nodeKeys, Action: "echo"}
				if how == "reject-all" {
					o.Reject = true
				} else {
					o.Expect = pemFile(t, testKeys(t, "b").PublicPEM())
				}
				conn, p := connectTo(t, ctx, goListens, o)
				c := newGoConn(t, ctx, conn, nil)
				if err := c.HandshakeContext(ctx); err != nil {
					t.Fatal(err)
				}
				n, err := c.Read(make([]byte, 10))
				if n != 0 || !errors.Is(err, ErrRejected) {
					t.Fatalf("Read = %d, %v; want ErrRejected", n, err)
				}
				if _, err := c.Read(make([]byte, 10)); !errors.Is(err, ErrRejected) {
					t.Errorf("second Read = %v; want the same error", err)
				}
				c.Close()
				events := waitNode(t, ctx, p)
				if has(events, "connection") {
					t.Error("node accepted the connection")
				}
			})
		}
	}
}

// TestInteropGoRejectsNodeKey checks that a Verify error stops the handshake
// and that Node gets nothing but a closed connection.
func TestInteropGoRejectsNodeKey(t *testing.T) {
	nodetest.Find(t)
	for _, goListens := range []bool{true, false} {
		t.Run(direction(goListens), func(t *testing.T) {
			t.Parallel()
			ctx := interopContext(t)
			conn, p := connectTo(t, ctx, goListens, nodetest.Settings{Keys: nodeKeys, Action: "echo"})
			if dl, ok := ctx.Deadline(); ok {
				conn.SetDeadline(dl)
			}
			c := NewConn(conn, &Config{Keys: testKeys(t, "a"), Verify: pin(testKeys(t, "a").Public())})
			err := c.HandshakeContext(ctx)
			if !errors.Is(err, errNotPinned) {
				t.Fatalf("Handshake = %v, want the Verify error", err)
			}
			if _, err := c.Write([]byte("x")); !errors.Is(err, errNotPinned) {
				t.Errorf("Write after a failed handshake = %v", err)
			}
			events := waitNode(t, ctx, p)
			if !has(events, "close") || has(events, "end") {
				t.Errorf("node events %+v; want a close without an end", events)
			}
		})
	}
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
