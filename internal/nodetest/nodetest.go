// Package nodetest runs legacy/testdata/peer.js, a peer built on the real
// npm module secure-peer 0.2.1, for the interop tests of package legacy and
// of the securepeer command's -legacy mode. It is for tests only.
//
// The tests need node on $PATH and SECUREPEER_NODE_MODULES naming a
// node_modules directory with secure-peer@0.2.1 installed. Without them they
// are skipped, or fail when SECUREPEER_REQUIRE_INTEROP=1, as .ci/run sets.
// Locally:
//
//	mkdir -p /tmp/sp-node && cd /tmp/sp-node && npm install secure-peer@0.2.1
//	SECUREPEER_NODE_MODULES=/tmp/sp-node/node_modules go test ./legacy/ ./cmd/securepeer/
package nodetest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/securepeer/securepeer/internal/testenv"
)

// Env is what running Node scripts against secure-peer needs.
type Env struct {
	Node    string   // the node binary
	Modules string   // absolute node_modules directory holding secure-peer, for NODE_PATH
	Script  string   // absolute path of legacy/testdata/peer.js
	Args    []string // node flags to put before the script name
}

var setup struct {
	once sync.Once
	env  Env
	err  error
}

// Find returns the Env, looked up once per test binary. It skips the test
// if node, the module or peer.js is missing, or fails it when
// SECUREPEER_REQUIRE_INTEROP=1.
func Find(t *testing.T) Env {
	t.Helper()
	s := &setup
	s.once.Do(func() { s.env, s.err = find() })
	if s.err != nil {
		msg := fmt.Sprintf("interop with Node secure-peer 0.2.1 needs node on $PATH and SECUREPEER_NODE_MODULES=<dir>/node_modules with secure-peer@0.2.1 installed: %v", s.err)
		testenv.Unavailable(t, msg)
	}
	return s.env
}

func find() (Env, error) {
	var e Env
	var err error
	if e.Node, err = exec.LookPath("node"); err != nil {
		return e, err
	}
	if e.Modules = os.Getenv("SECUREPEER_NODE_MODULES"); e.Modules == "" {
		return e, fmt.Errorf("SECUREPEER_NODE_MODULES is not set")
	}
	if e.Modules, err = filepath.Abs(e.Modules); err != nil {
		return e, err
	}
	if _, err = os.Stat(filepath.Join(e.Modules, "secure-peer", "index.js")); err != nil {
		return e, err
	}
	// peer.js is found from this file, which is two levels below the
	// module root; that needs a build without -trimpath.
	_, file, _, _ := runtime.Caller(0)
	e.Script = filepath.Join(filepath.Dir(file), "..", "..", "legacy", "testdata", "peer.js")
	if _, err = os.Stat(e.Script); err != nil {
		return e, fmt.Errorf("locating peer.js from the source file %s: %v", file, err)
	}
	// OpenSSL 3 keeps RC4, the module's default cipher, in its legacy
	// provider; Node 17 and later load it with this flag.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if exec.CommandContext(ctx, e.Node, "--openssl-legacy-provider", "-e", "0").Run() == nil {
		e.Args = []string{"--openssl-legacy-provider"}
	}
	return e, nil
}

// Settings configures one peer.js process. Each field sets the environment
// variable that the header of peer.js documents; zero values are left
// unset, which peer.js treats as its defaults.
type Settings struct {
	Listen  bool   // SP_MODE: listen on a random port if true, otherwise connect
	Port    int    // SP_PORT: the port on 127.0.0.1 to connect to
	Keys    string // SP_KEYS: the rsa-json key file
	Ciphers string // SP_CIPHERS: comma-separated preference list
	Expect  string // SP_EXPECT: a PEM file with the only peer key to accept
	Reject  bool   // SP_REJECT: reject every peer key
	Action  string // SP_ACTION: "echo" or "source"
	Source  string // SP_SOURCE: the file to send in source mode
	Chunk   int    // SP_CHUNK: the write size in source mode
}

func (s Settings) environ() []string {
	env := []string{"SP_MODE=connect"}
	if s.Listen {
		env[0] = "SP_MODE=listen"
	}
	add := func(name, value string) {
		if value != "" {
			env = append(env, name+"="+value)
		}
	}
	itoa := func(n int) string {
		if n == 0 {
			return ""
		}
		return strconv.Itoa(n)
	}
	add("SP_PORT", itoa(s.Port))
	add("SP_KEYS", s.Keys)
	add("SP_CIPHERS", s.Ciphers)
	add("SP_EXPECT", s.Expect)
	if s.Reject {
		add("SP_REJECT", "1")
	}
	add("SP_ACTION", s.Action)
	add("SP_SOURCE", s.Source)
	add("SP_CHUNK", itoa(s.Chunk))
	return env
}

// Event is one JSON line printed by peer.js. A line that is not JSON is
// reported as Event "garbage" with the line as Error.
type Event struct {
	Event  string `json:"event"`
	Port   int    `json:"port"`
	Cipher string `json:"cipher"`
	Key    string `json:"key"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
	Error  string `json:"error"`
}

// Peer is a running peer.js.
type Peer struct {
	t      *testing.T
	stderr bytes.Buffer  // read only after done is closed
	done   chan struct{} // closed when node has exited
	err    error         // node's exit status, set before done is closed

	mu     sync.Mutex
	events []Event       // every event so far
	more   chan struct{} // closed, and replaced, when an event is added
	read   int           // events[:read] have been passed by Next
}

// Start runs peer.js with the given settings, calling Find first. Node is
// killed, at the latest, when ctx ends or the test does; if the test has
// failed by then, node's events and stderr are logged.
func Start(t *testing.T, ctx context.Context, s Settings) *Peer {
	t.Helper()
	e := Find(t)
	cmd := exec.CommandContext(ctx, e.Node, append(e.Args, e.Script)...)
	cmd.Env = append(os.Environ(), "NODE_PATH="+e.Modules, "NODE_NO_WARNINGS=1")
	cmd.Env = append(cmd.Env, s.environ()...)
	p := &Peer{t: t, done: make(chan struct{}), more: make(chan struct{})}
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
			var ev Event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = Event{Event: "garbage", Error: sc.Text()}
			}
			p.mu.Lock()
			p.events = append(p.events, ev)
			close(p.more)
			p.more = make(chan struct{})
			p.mu.Unlock()
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("node events: %+v\nnode stderr:\n%s", p.all(), p.stderr.String())
		}
	})
	return p
}

func (p *Peer) all() []Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Event(nil), p.events...)
}

// Next returns the next event called name, passing over the others; it
// fails the test if node exits or ctx ends first.
func (p *Peer) Next(ctx context.Context, name string) Event {
	p.t.Helper()
	for {
		// Checked before looking: once node has exited, every event it
		// printed is already in p.events.
		exited := false
		select {
		case <-p.done:
			exited = true
		default:
		}
		p.mu.Lock()
		for p.read < len(p.events) {
			ev := p.events[p.read]
			p.read++
			if ev.Event == name {
				p.mu.Unlock()
				return ev
			}
		}
		more := p.more
		p.mu.Unlock()
		if exited {
			p.t.Fatalf("node exited (%v) before event %q", p.err, name)
		}
		select {
		case <-more:
		case <-p.done:
		case <-ctx.Done():
			p.t.Fatalf("no node event %q: %v", name, ctx.Err())
		}
	}
}

// Wait waits for node to exit and returns every event it printed and its
// exit status; it fails the test if ctx ends first.
func (p *Peer) Wait(ctx context.Context) ([]Event, error) {
	p.t.Helper()
	select {
	case <-p.done:
	case <-ctx.Done():
		p.t.Fatalf("node did not exit: %v", ctx.Err())
	}
	return p.all(), p.err
}
