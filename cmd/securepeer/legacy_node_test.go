package main

// The -legacy mode against the real npm module secure-peer 0.2.1, both
// ways, through the built command. The Node side is the legacy package's
// test peer, ../../legacy/testdata/peer.js (its header documents its
// environment and the JSON events it prints). In CI, .ci/run installs the
// module and sets SECUREPEER_NODE_MODULES and SECUREPEER_REQUIRE_INTEROP=1;
// locally:
//
//	mkdir -p /tmp/sp-node && cd /tmp/sp-node && npm install secure-peer@0.2.1
//	SECUREPEER_NODE_MODULES=/tmp/sp-node/node_modules go test -run Legacy ./cmd/securepeer/

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// nodeSetup is what running peer.js needs, found once.
var nodeSetup struct {
	once    sync.Once
	node    string
	modules string
	script  string
	args    []string // extra node flags
	err     error
}

// requireNode returns the node binary, the node_modules directory holding
// secure-peer, peer.js and extra node flags; it skips the test if any is
// missing, or fails it when SECUREPEER_REQUIRE_INTEROP=1.
func requireNode(t *testing.T) (node, modules, script string, args []string) {
	t.Helper()
	s := &nodeSetup
	s.once.Do(func() {
		if s.node, s.err = exec.LookPath("node"); s.err != nil {
			return
		}
		if s.modules = os.Getenv("SECUREPEER_NODE_MODULES"); s.modules == "" {
			s.err = os.ErrNotExist
			return
		}
		if s.modules, s.err = filepath.Abs(s.modules); s.err != nil {
			return
		}
		if _, s.err = os.Stat(filepath.Join(s.modules, "secure-peer", "index.js")); s.err != nil {
			return
		}
		if s.script, s.err = filepath.Abs(filepath.Join("..", "..", "legacy", "testdata", "peer.js")); s.err != nil {
			return
		}
		// OpenSSL 3 keeps RC4, the module's default cipher, in its legacy
		// provider, which Node 17 and later load with this flag.
		if exec.Command(s.node, "--openssl-legacy-provider", "-e", "0").Run() == nil {
			s.args = []string{"--openssl-legacy-provider"}
		}
	})
	if s.err != nil {
		msg := "interop with Node secure-peer 0.2.1 needs node on $PATH and SECUREPEER_NODE_MODULES set to a node_modules with secure-peer@0.2.1: " + s.err.Error()
		if os.Getenv("SECUREPEER_REQUIRE_INTEROP") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return s.node, s.modules, s.script, s.args
}

// nodeEvent is one JSON line printed by peer.js.
type nodeEvent struct {
	Event  string `json:"event"`
	Port   int    `json:"port"`
	Cipher string `json:"cipher"`
	Key    string `json:"key"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
	Error  string `json:"error"`
}

// nodePeer is a running peer.js.
type nodePeer struct {
	t      *testing.T
	events chan nodeEvent // every event, in order; closed when node exits
	stderr syncBuffer
	done   chan struct{}
	err    error // node's exit status, set before done is closed
}

// startNode runs peer.js with the given SP_* settings. It is killed, at the
// latest, when ctx ends or the test does.
func startNode(t *testing.T, ctx context.Context, settings map[string]string) *nodePeer {
	t.Helper()
	node, modules, script, args := requireNode(t)
	cmd := exec.CommandContext(ctx, node, append(args, script)...)
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules, "NODE_NO_WARNINGS=1")
	for k, v := range settings {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &nodePeer{t: t, events: make(chan nodeEvent, 1000), done: make(chan struct{})}
	cmd.Stderr = &p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev nodeEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = nodeEvent{Event: "garbage", Error: sc.Text()}
			}
			p.events <- ev
		}
		p.err = cmd.Wait()
		close(p.events)
		close(p.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("node stderr:\n%s", p.stderr.String())
		}
	})
	return p
}

// next returns the next event called name, after logging the ones before
// it; it fails the test if node exits or ctx ends first.
func (p *nodePeer) next(ctx context.Context, name string) nodeEvent {
	p.t.Helper()
	for {
		select {
		case ev, ok := <-p.events:
			if !ok {
				p.t.Fatalf("node exited (%v) before event %q\n%s", p.err, name, p.stderr.String())
			}
			if ev.Event == name {
				return ev
			}
			p.t.Logf("node event: %+v", ev)
		case <-ctx.Done():
			p.t.Fatalf("no node event %q within %v", name, testTimeout)
		}
	}
}

// rest waits for node to exit and returns the events not yet read.
func (p *nodePeer) rest(ctx context.Context) []nodeEvent {
	p.t.Helper()
	var evs []nodeEvent
	for {
		select {
		case ev, ok := <-p.events:
			if !ok {
				return evs
			}
			evs = append(evs, ev)
		case <-ctx.Done():
			p.t.Fatalf("node did not exit within %v", testTimeout)
		}
	}
}

func eventNames(evs []nodeEvent) []string {
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
	requireNode(t)
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
			node := startNode(t, ctx, map[string]string{
				"SP_MODE":    "listen",
				"SP_KEYS":    filepath.Join(te.dir, "node.json"),
				"SP_CIPHERS": tc.nodeCiphers,
				"SP_EXPECT":  filepath.Join(te.dir, "go.pem"),
				"SP_ACTION":  "echo",
			})
			port := node.next(ctx, "listening").Port
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
			id := node.next(ctx, "identify")
			if id.Cipher != tc.want {
				t.Errorf("node chose cipher %q, want %q", id.Cipher, tc.want)
			}
			if id.Key != goPEM {
				t.Errorf("node saw key %q, want the PEM keygen printed, %q", id.Key, goPEM)
			}
			end := node.next(ctx, "end")
			if end.Bytes != int64(len(data)) || end.SHA256 != sha256Hex(data) {
				t.Errorf("node received %d bytes with sha256 %s; sent %d with %s", end.Bytes, end.SHA256, len(data), sha256Hex(data))
			}
			node.rest(ctx)
		})
	}
}

// TestLegacyNodeListen has a Node client send a file to securepeer listen
// -legacy -exec 'tr a-z A-Z', allowed by its key: the Node side must get
// back exactly the upper-cased file and a clean end.
func TestLegacyNodeListen(t *testing.T) {
	requireNode(t)
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
	_, port, _ := strings.Cut(addr, ":")
	node := startNode(t, ctx, map[string]string{
		"SP_MODE":   "connect",
		"SP_PORT":   port,
		"SP_KEYS":   filepath.Join(te.dir, "node.json"),
		"SP_EXPECT": filepath.Join(te.dir, "go.pem"),
		"SP_ACTION": "source",
		"SP_SOURCE": source,
	})
	id := node.next(ctx, "identify")
	end := node.next(ctx, "end")
	if end.Bytes != int64(len(want)) || end.SHA256 != sha256Hex(want) {
		t.Errorf("node received %d bytes with sha256 %s; want %d with %s (the upper-cased file)", end.Bytes, end.SHA256, len(want), sha256Hex(want))
	}
	node.rest(ctx)
	if code := server.interrupt(); code != exitInterrupted {
		t.Errorf("listen exited %d, want %d", code, exitInterrupted)
	}
	s := server.stderr.String()
	if !strings.Contains(s, "protocol=secure-peer-0.2 cipher="+id.Cipher+" ") || !strings.Contains(s, "peer allowed") {
		t.Errorf("listen did not log the allowed peer and node's cipher %q:\n%s", id.Cipher, s)
	}
	if !strings.HasPrefix(s, "securepeer: "+legacyWarning+"\n") {
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
	requireNode(t)
	te := newTestEnv(t)
	legacyPair(te)
	nodeListens := func(t *testing.T, ctx context.Context, extra map[string]string) string {
		settings := map[string]string{
			"SP_MODE":   "listen",
			"SP_KEYS":   filepath.Join(te.dir, "node.json"),
			"SP_ACTION": "echo",
		}
		for k, v := range extra {
			settings[k] = v
		}
		node := startNode(t, ctx, settings)
		return "127.0.0.1:" + strconv.Itoa(node.next(ctx, "listening").Port)
	}

	t.Run("node-rejects", func(t *testing.T) {
		ctx := legacyContext(t)
		addr := nodeListens(t, ctx, map[string]string{"SP_REJECT": "1"})
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
		addr := nodeListens(t, ctx, nil)
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
		_, port, _ := strings.Cut(addr, ":")
		node := startNode(t, ctx, map[string]string{
			"SP_MODE":   "connect",
			"SP_PORT":   port,
			"SP_KEYS":   filepath.Join(te.dir, "node.json"),
			"SP_ACTION": "source",
			"SP_SOURCE": filepath.Join(te.dir, "go.pem"),
		})
		evs := node.rest(ctx)
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
