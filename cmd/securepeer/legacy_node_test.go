package main

// The -legacy mode against the real npm module secure-peer 0.2.1, both
// ways, through the built command. The Node side is the legacy package's
// test peer, ../../legacy/testdata/peer.js (its header documents its
// environment and the JSON events it prints), run by internal/nodetest,
// whose package doc says how to run these tests locally.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/securepeer/securepeer/internal/nodetest"
)

func eventNames(evs []nodetest.Event) []string {
	var names []string
	for _, ev := range evs {
		names = append(names, ev.Event)
	}
	return names
}

// legacyPair makes two key files with keygen -legacy, go.json for the
// securepeer side and node.json for the Node side (so the Node module
// loads and signs with a file keygen wrote), and PEM files go.pem and
// node.pem holding only their public keys, which peer.js pins. It returns
// go.json's public key PEM.
func legacyPair(te *testEnv) string {
	te.t.Helper()
	var goPEM string
	for _, name := range []string{"go", "node"} {
		out := te.run("keygen", "-legacy", "-f", name+".json")
		pemText, fp, ok := strings.Cut(strings.TrimSuffix(out, "\n"), "\n-----END RSA PUBLIC KEY-----\n")
		if !ok || !strings.HasPrefix(fp, "SHA256:") {
			te.t.Fatalf("keygen -legacy printed %q", out)
		}
		pemText += "\n-----END RSA PUBLIC KEY-----\n"
		if err := os.WriteFile(filepath.Join(te.dir, name+".pem"), []byte(pemText), 0o644); err != nil {
			te.t.Fatal(err)
		}
		if name == "go" {
			goPEM = pemText
		}
	}
	return goPEM
}

func legacyContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestLegacyNodeConnect runs securepeer connect -legacy against a Node echo
// server, with the cipher lists of the Node default, one common cipher,
// and a tie that the vote settles by sort order: the reply must be exactly
// what was sent, the Node side must have received exactly that, and both
// must report the same cipher and see each other's keys.
func TestLegacyNodeConnect(t *testing.T) {
	nodetest.Find(t)
	te := newTestEnv(t)
	goPEM := legacyPair(te)
	data := make([]byte, 300<<10) // several 64 KiB frames
	rand.Read(data)

	for _, tc := range []struct {
		name                   string
		goCiphers, nodeCiphers string
		want                   string
	}{
		{"node-default", "", "", "RC4"}, // securepeer's default list includes RC4
		{"aes-128-cbc", "aes-128-cbc", "aes-128-cbc", "aes-128-cbc"},
		{"tie", "AES-256-CBC,RC4", "RC4,AES-256-CBC", "AES-256-CBC"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := legacyContext(t)
			node := nodetest.Start(t, ctx, nodetest.Settings{
				Listen:  true,
				Keys:    filepath.Join(te.dir, "node.json"),
				Ciphers: tc.nodeCiphers,
				Expect:  filepath.Join(te.dir, "go.pem"),
				Action:  "echo",
			})
			port := node.Next(ctx, "listening").Port
			args := []string{"connect", "-legacy", "-v", "-i", "go.json", "-expect", "node.pem"}
			if tc.goCiphers != "" {
				args = append(args, "-ciphers", tc.goCiphers)
			}
			cmd := te.command(append(args, "127.0.0.1:"+strconv.Itoa(port))...)
			cmd.Stdin = bytes.NewReader(data)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("connect -legacy: %v\n%s", err, stderr.String())
			}
			if !bytes.Equal(out, data) {
				t.Errorf("the echo is %d bytes (sha256 %s), sent %d (sha256 %s)", len(out), sha256Hex(out), len(data), sha256Hex(data))
			}
			if !strings.Contains(stderr.String(), "protocol=secure-peer-0.2 cipher="+tc.want+" ") {
				t.Errorf("connect did not log cipher %s:\n%s", tc.want, stderr.String())
			}
			id := node.Next(ctx, "identify")
			if id.Cipher != tc.want {
				t.Errorf("node chose cipher %q, want %q", id.Cipher, tc.want)
			}
			if id.Key != goPEM {
				t.Errorf("node saw key %q, want the PEM keygen printed, %q", id.Key, goPEM)
			}
			end := node.Next(ctx, "end")
			if end.Bytes != int64(len(data)) || end.SHA256 != sha256Hex(data) {
				t.Errorf("node received %d bytes with sha256 %s; sent %d with %s", end.Bytes, end.SHA256, len(data), sha256Hex(data))
			}
			node.Wait(ctx)
		})
	}
}

// TestLegacyNodeListen has a Node client send a file to securepeer listen
// -legacy -exec 'tr a-z A-Z', allowed by its key: the Node side must get
// back exactly the upper-cased file and a clean end.
func TestLegacyNodeListen(t *testing.T) {
	nodetest.Find(t)
	ctx := legacyContext(t)
	te := newTestEnv(t)
	legacyPair(te)
	var text bytes.Buffer
	for i := 0; text.Len() < 200<<10; i++ {
		text.WriteString("line " + strconv.Itoa(i) + ": the quick brown fox jumps over the lazy dog\n")
	}
	source := filepath.Join(te.dir, "source.txt")
	if err := os.WriteFile(source, text.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	want := bytes.ToUpper(text.Bytes())

	server, addr := te.start("server", "listen", "-legacy", "-v", "-i", "go.json", "-allow", "node.pem", "-exec", "tr a-z A-Z", "127.0.0.1:0")
	_, portText, _ := strings.Cut(addr, ":")
	port, _ := strconv.Atoi(portText)
	node := nodetest.Start(t, ctx, nodetest.Settings{
		Port:   port,
		Keys:   filepath.Join(te.dir, "node.json"),
		Expect: filepath.Join(te.dir, "go.pem"),
		Action: "source",
		Source: source,
	})
	id := node.Next(ctx, "identify")
	end := node.Next(ctx, "end")
	if end.Bytes != int64(len(want)) || end.SHA256 != sha256Hex(want) {
		t.Errorf("node received %d bytes with sha256 %s; want %d with %s (the upper-cased file)", end.Bytes, end.SHA256, len(want), sha256Hex(want))
	}
	node.Wait(ctx)
	if code := server.interrupt(); code != exitInterrupted {
		t.Errorf("listen exited %d, want %d", code, exitInterrupted)
	}
	s := server.stderr.String()
	if !strings.Contains(s, "protocol=secure-peer-0.2 cipher="+id.Cipher+" ") || !strings.Contains(s, "peer allowed") {
		t.Errorf("listen did not log the allowed peer and node's cipher %q:\n%s", id.Cipher, s)
	}
	// With -v every line is structured: the warning is the first one's
	// message.
	if first, _, _ := strings.Cut(s, "\n"); !strings.Contains(first, legacyWarning) {
		t.Errorf("listen -legacy did not start with the warning:\n%s", s)
	}
	if strings.Contains(s, "panic") || strings.Contains(s, "DATA RACE") {
		t.Errorf("listen:\n%s", s)
	}
}

// TestLegacyNodeRefusals checks each side refusing the other: a Node peer
// that rejects this key, a pinned key that does not match (both exit 3
// for connect), and listen -allow refusing a Node client.
func TestLegacyNodeRefusals(t *testing.T) {
	nodetest.Find(t)
	te := newTestEnv(t)
	legacyPair(te)
	nodeListens := func(t *testing.T, ctx context.Context, reject bool) string {
		node := nodetest.Start(t, ctx, nodetest.Settings{
			Listen: true,
			Keys:   filepath.Join(te.dir, "node.json"),
			Reject: reject,
			Action: "echo",
		})
		return "127.0.0.1:" + strconv.Itoa(node.Next(ctx, "listening").Port)
	}

	t.Run("node-rejects", func(t *testing.T) {
		ctx := legacyContext(t)
		addr := nodeListens(t, ctx, true)
		cmd := te.command("connect", "-legacy", "-i", "go.json", "-expect", "node.pem", addr)
		// stdin stays open, as in an interactive session: only the peer's
		// close can end connect.
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		defer stdin.Close()
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if code := exitCode(t, err); code != exitRejected || len(out) != 0 {
			t.Errorf("connect to a Node peer that rejects its key: exit %d, %q; want exit %d, no output\n%s", code, out, exitRejected, stderr.String())
		}
		if !strings.Contains(stderr.String(), "closed the connection without sending anything, which is how secure-peer 0.2 refuses a key") {
			t.Errorf("stderr does not explain the refusal:\n%s", stderr.String())
		}
	})

	t.Run("pin-mismatch", func(t *testing.T) {
		ctx := legacyContext(t)
		addr := nodeListens(t, ctx, false)
		cmd := te.command("connect", "-legacy", "-i", "go.json", "-expect", "go.pem", addr)
		cmd.Stdin = strings.NewReader("secret\n")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if code := exitCode(t, err); code != exitRejected || len(out) != 0 {
			t.Errorf("connect with a wrong pin: exit %d, %q; want exit %d, no output\n%s", code, out, exitRejected, stderr.String())
		}
		if !strings.Contains(stderr.String(), "given with -expect") {
			t.Errorf("stderr does not explain the mismatch:\n%s", stderr.String())
		}
	})

	t.Run("listen-refuses-node", func(t *testing.T) {
		ctx := legacyContext(t)
		server, addr := te.start("refuser", "listen", "-legacy", "-i", "go.json", "-allow", "go.pem", "-exec", "cat", "127.0.0.1:0")
		_, portText, _ := strings.Cut(addr, ":")
		port, _ := strconv.Atoi(portText)
		node := nodetest.Start(t, ctx, nodetest.Settings{
			Port:   port,
			Keys:   filepath.Join(te.dir, "node.json"),
			Action: "source",
			Source: filepath.Join(te.dir, "go.pem"),
		})
		evs, _ := node.Wait(ctx)
		for _, ev := range evs {
			if ev.Event == "end" {
				t.Errorf("a refused Node peer got a clean end of stream: %+v", evs)
			}
		}
		server.interrupt()
		if s := server.stderr.String(); !strings.Contains(s, "is not listed in go.pem") {
			t.Errorf("listen did not report the refusal (node events %q):\n%s", eventNames(evs), s)
		}
	})
}

// exitCode returns the exit code in err from exec.
func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	ee, ok := err.(*exec.ExitError)
	if !ok {
		t.Fatal(err)
	}
	return ee.ExitCode()
}
