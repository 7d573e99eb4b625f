package legacy

// Helpers to run testdata/peer.js, a peer built on the real npm module
// secure-peer 0.2.1. In CI, .ci/run installs it and sets
// SECUREPEER_NODE_MODULES and SECUREPEER_REQUIRE_INTEROP=1; locally:
//
//	mkdir -p /tmp/sp-node && cd /tmp/sp-node && npm install secure-peer@0.2.1
//	SECUREPEER_NODE_MODULES=/tmp/sp-node/node_modules go test ./legacy/

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// interopTimeout bounds each interop test; generous for a loaded 2-core
// machine running the race detector.
const interopTimeout = 90 * time.Second

var nodeSetup struct {
	once    sync.Once
	node    string
	modules string
	args    []string
	err     error
}

// needNode returns the node binary, NODE_PATH and extra node flags, or
// skips the test (fails it when SECUREPEER_REQUIRE_INTEROP=1).
func needNode(t *testing.T) (node, modules string, args []string) {
	t.Helper()
	s := &nodeSetup
	s.once.Do(func() {
		s.node, s.err = exec.LookPath("node")
		if s.err != nil {
			return
		}
		s.modules = os.Getenv("SECUREPEER_NODE_MODULES")
		if s.modules == "" {
			s.err = fmt.Errorf("SECUREPEER_NODE_MODULES is not set")
			return
		}
		if s.modules, s.err = filepath.Abs(s.modules); s.err != nil {
			return
		}
		if _, s.err = os.Stat(filepath.Join(s.modules, "secure-peer", "index.js")); s.err != nil {
			return
		}
		// OpenSSL 3 keeps RC4, the module's default cipher, in its legacy
		// provider; Node 17 and later enable it with this flag.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if exec.CommandContext(ctx, s.node, "--openssl-legacy-provider", "-e", "0").Run() == nil {
			s.args = []string{"--openssl-legacy-provider"}
		}
	})
	if s.err != nil {
		msg := fmt.Sprintf("interop with Node secure-peer 0.2.1 needs node and SECUREPEER_NODE_MODULES=<dir>/node_modules with secure-peer@0.2.1 installed: %v", s.err)
		if os.Getenv("SECUREPEER_REQUIRE_INTEROP") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return s.node, s.modules, s.args
}

// nodeOpts configures one peer.js process; see its header for the meaning.
type nodeOpts struct {
	listen  bool
	port    int
	keys    string // key file name in testdata/keys
	ciphers string
	expect  string // PEM file
	reject  bool
	action  string // "echo" or "source"
	source  string
	chunk   int
}

// nodeEvent is one JSON line from peer.js.
type nodeEvent struct {
	Event  string `json:"event"`
	Port   int    `json:"port"`
	Cipher string `json:"cipher"`
	Key    string `json:"key"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
	Error  string `json:"error"`
}

type nodePeer struct {
	t      *testing.T
	cmd    *exec.Cmd
	events chan nodeEvent
	stderr bytes.Buffer
	done   chan struct{} // closed when the process has exited
	err    error         // its exit status, valid after done

	mu   sync.Mutex
	seen []nodeEvent
}

// startNode runs peer.js and kills it, at the latest, when the test ends.
func startNode(t *testing.T, ctx context.Context, o nodeOpts) *nodePeer {
	t.Helper()
	node, modules, args := needNode(t)
	mode := "connect"
	if o.listen {
		mode = "listen"
	}
	env := append(os.Environ(),
		"NODE_PATH="+modules,
		"NODE_NO_WARNINGS=1",
		"SP_MODE="+mode,
		"SP_PORT="+strconv.Itoa(o.port),
		"SP_KEYS="+filepath.Join("testdata", "keys", o.keys+".json"),
		"SP_CIPHERS="+o.ciphers,
		"SP_EXPECT="+o.expect,
		"SP_ACTION="+o.action,
		"SP_SOURCE="+o.source,
		"SP_CHUNK="+strconv.Itoa(o.chunk),
	)
	if o.reject {
		env = append(env, "SP_REJECT=1")
	}
	cmd := exec.CommandContext(ctx, node, append(args, filepath.Join("testdata", "peer.js"))...)
	cmd.Env = env
	p := &nodePeer{t: t, cmd: cmd, events: make(chan nodeEvent, 100), done: make(chan struct{})}
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
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var ev nodeEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = nodeEvent{Event: "garbage", Error: sc.Text()}
			}
			p.mu.Lock()
			p.seen = append(p.seen, ev)
			p.mu.Unlock()
			select {
			case p.events <- ev:
			default:
			}
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("node events: %+v\nnode stderr:\n%s", p.events0(), p.stderr.String())
		}
	})
	return p
}

func (p *nodePeer) events0() []nodeEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]nodeEvent(nil), p.seen...)
}

// waitEvent returns the next event with the given name, failing the test
// if the process exits or the context ends first.
func (p *nodePeer) waitEvent(ctx context.Context, name string) nodeEvent {
	p.t.Helper()
	for {
		select {
		case ev := <-p.events:
			if ev.Event == name {
				return ev
			}
		case <-p.done:
			// Everything printed before the exit is already queued.
			for {
				select {
				case ev := <-p.events:
					if ev.Event == name {
						return ev
					}
				default:
					p.t.Fatalf("node exited (%v) before event %q", p.err, name)
				}
			}
		case <-ctx.Done():
			p.t.Fatalf("timed out waiting for node event %q", name)
		}
	}
}

// wait waits for the process to exit and returns every event it printed.
func (p *nodePeer) wait(ctx context.Context) []nodeEvent {
	p.t.Helper()
	select {
	case <-p.done:
	case <-ctx.Done():
		p.t.Fatal("timed out waiting for node to exit")
	}
	if p.err != nil {
		p.t.Errorf("node exited with %v", p.err)
	}
	return p.events0()
}

// has reports whether the process printed an event with that name.
func has(events []nodeEvent, name string) bool {
	for _, ev := range events {
		if ev.Event == name {
			return true
		}
	}
	return false
}

// connectTo starts node and returns a TCP connection between it and this
// process: if goListens, node connects to a Go listener; otherwise node
// listens and Go dials.
func connectTo(t *testing.T, ctx context.Context, goListens bool, o nodeOpts) (net.Conn, *nodePeer) {
	t.Helper()
	if !goListens {
		o.listen = true
		p := startNode(t, ctx, o)
		ev := p.waitEvent(ctx, "listening")
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(ev.Port)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn, p
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	o.port = ln.Addr().(*net.TCPAddr).Port
	p := startNode(t, ctx, o)
	if dl, ok := ctx.Deadline(); ok {
		ln.(*net.TCPListener).SetDeadline(dl)
	}
	conn, err := ln.Accept()
	if err != nil {
		t.Fatalf("accepting node's connection: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, p
}

// direction names a test for goListens.
func direction(goListens bool) string {
	if goListens {
		return "node-connects"
	}
	return "go-connects"
}
