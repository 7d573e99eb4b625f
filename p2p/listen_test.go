package p2p

import (
	"testing"
)

// TestListenBacklog: a listener queues at most listenBacklog streams for
// Accept and refuses the next one, rather than holding it.
func TestListenBacklog(t *testing.T) {
	l := startNode(t, Config{})
	ln := listen(t, l, echoProto) // not accepted until the end
	handled := make(chan bool, listenBacklog+1)
	ln.mu.Lock()
	ln.testOnlyHandled = func(queued bool) { handled <- queued }
	ln.mu.Unlock()
	// Two dialers: go-libp2p's resource manager takes at most 64 streams
	// of one protocol from one peer at once.
	dialers := []*Node{startNode(t, Config{}), startNode(t, Config{})}
	for _, d := range dialers {
		if err := d.AddAddrs(l.Key(), l.Addrs()); err != nil {
			t.Fatal(err)
		}
	}
	b := make([]byte, 1)
	for i := range listenBacklog + 1 {
		s := dial(t, dialers[i%2], l.Key(), echoProto)
		if _, err := s.Write(b); err != nil {
			t.Fatal(err)
		}
		if queued := <-handled; queued != (i < listenBacklog) {
			t.Fatalf("stream %d: queued %v", i, queued)
		}
		if i == listenBacklog {
			if _, err := s.Read(b); err == nil {
				t.Fatal("the stream beyond the backlog was not refused")
			}
		}
	}
	if _, err := ln.AcceptStream(); err != nil {
		t.Fatalf("Accept after the refusal: %v", err)
	}
}
