package p2p

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/securepeer/securepeer"
)

// testTimeout bounds every wait in the tests; reaching it is a failure.
const testTimeout = 30 * time.Second

func newIdentity(t testing.TB) *securepeer.Identity {
	t.Helper()
	id, err := securepeer.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

var loopback = []string{"/ip4/127.0.0.1/tcp/0"}

// startNode starts a node on loopback, closed at the end of the test.
// cfg.Identity is generated if nil.
func startNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	if cfg.Identity == nil {
		cfg.Identity = newIdentity(t)
	}
	if cfg.ListenAddrs == nil {
		cfg.ListenAddrs = loopback
	}
	n, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// startRelay starts a relay on loopback, closed at the end of the test.
func startRelay(t testing.TB, cfg RelayConfig) *Relay {
	t.Helper()
	if cfg.Identity == nil {
		cfg.Identity = newIdentity(t)
	}
	if cfg.ListenAddrs == nil {
		cfg.ListenAddrs = loopback
	}
	r, err := RunRelay(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// listen makes n listen for name and waits for its reservations.
func listen(t testing.TB, n *Node, name string) *Listener {
	t.Helper()
	l, err := n.Listen(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := n.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	return l
}

// echo serves l: each stream gets back what it sends.
func echo(t testing.TB, l *Listener) {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			s, err := l.AcceptStream()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer s.Close()
				io.Copy(s, s)
			})
		}
	})
}

func dial(t testing.TB, n *Node, key securepeer.PublicKey, name string) *Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s, err := n.Dial(ctx, key, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// roundTrip writes msg on s and reads it back.
func roundTrip(t testing.TB, s *Stream, msg string) {
	t.Helper()
	if _, err := s.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(s, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != msg {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}

// An eventLog records a node's events, and lets a test wait for one.
type eventLog struct {
	mu      sync.Mutex
	events  []Event
	changed chan struct{}
}

func newEventLog() *eventLog { return &eventLog{changed: make(chan struct{})} }

func (l *eventLog) notify(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
	close(l.changed)
	l.changed = make(chan struct{})
}

// wait returns the first event that match accepts, waiting for it.
func (l *eventLog) wait(t testing.TB, what string, match func(Event) bool) Event {
	t.Helper()
	timeout := time.After(testTimeout)
	for {
		l.mu.Lock()
		i := slices.IndexFunc(l.events, match)
		var e Event
		if i >= 0 {
			e = l.events[i]
		}
		changed := l.changed
		l.mu.Unlock()
		if i >= 0 {
			return e
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("no event: %s; events: %v", what, l.list())
		}
	}
}

func (l *eventLog) list() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

// kind matches events of kind k with peer p (any peer if zero).
func kind(k EventKind, p securepeer.PublicKey) func(Event) bool {
	return func(e Event) bool { return e.Kind == k && (p.IsZero() || e.Peer == p) }
}

// wantErr fails unless err wraps want.
func wantErr(t testing.TB, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error %v, want one wrapping %v", err, want)
	}
}
