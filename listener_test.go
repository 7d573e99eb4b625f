package securepeer

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func TestListenerSlowPeerDoesNotBlockAccept(t *testing.T) {
	checkNoLeaks(t)
	ln, err := Listen("tcp", "127.0.0.1:0", &Config{Identity: testIdentity(t, 2), HandshakeTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// A peer that connects and says nothing.
	silent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// A peer that sends garbage.
	garbage, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	garbage.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	defer garbage.Close()

	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c, err := Dial(context.Background(), "tcp", ln.Addr().String(), &Config{Identity: testIdentity(t, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case s := <-accepted:
		if s.(*Conn).RemoteKey() != testIdentity(t, 1).PublicKey() {
			t.Error("accepted the wrong peer")
		}
		s.Close()
	case <-time.After(20 * time.Second):
		t.Fatal("Accept blocked behind a silent peer")
	}
}

func TestListenerCloseEndsPendingHandshakes(t *testing.T) {
	checkNoLeaks(t)
	ln, err := Listen("tcp", "127.0.0.1:0", &Config{Identity: testIdentity(t, 2)})
	if err != nil {
		t.Fatal(err)
	}
	silent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	acc := run(func() error { _, err := ln.Accept(); return err })
	ln.Close()
	if err := wait(t, acc); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close = %v", err)
	}
}

// TestListenerHonoursHandshakeTimeout: a listener whose Config has a
// HandshakeTimeout shorter than the 10 s first-flight deadline drops a
// silent peer by the shorter one (issue 16, item 6).
func TestListenerHonoursHandshakeTimeout(t *testing.T) {
	checkNoLeaks(t)
	const timeout = 300 * time.Millisecond
	ln, err := Listen("tcp", "127.0.0.1:0", &Config{Identity: testIdentity(t, 2), HandshakeTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Half the first flight's own deadline: the listener must not wait
	// for it.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || badIsTimeout(err) {
		t.Fatalf("a silent peer was not dropped within 5 s by a listener whose HandshakeTimeout is %v: %v", timeout, err)
	}
}

// TestListenerBoundsPendingConnections checks that peers the application
// has not accepted yet are held to the bound: the next one takes the place
// of the oldest, which is closed and never returned by Accept.
func TestListenerBoundsPendingConnections(t *testing.T) {
	checkNoLeaks(t)
	old := maxPending
	maxPending = 2
	defer func() { maxPending = old }()
	ln, err := Listen("tcp", "127.0.0.1:0", &Config{Identity: testIdentity(t, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	al := ln.(*listener).l
	dial := func() *Conn {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := Dial(ctx, "tcp", ln.Addr().String(), &Config{Identity: testIdentity(t, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// waitCompleted waits until the listener's side of n handshakes is
	// complete too: the initiator's ends first.
	waitCompleted := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); al.Completed() < n; {
			if time.Now().After(deadline) {
				t.Fatalf("the listener did not complete %d handshakes", n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	first := dial()
	waitCompleted(1)
	second := dial()
	waitCompleted(2)
	third := dial()
	// The first is dropped for the third, unread by any Accept.
	first.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := first.Read(make([]byte, 1)); err == nil || badIsTimeout(err) {
		t.Fatalf("the oldest waiting connection was not dropped: Read = %v", err)
	}
	waitCompleted(2)
	if n := al.Pending(); n != 2 {
		t.Fatalf("%d pending, more than the bound of 2", n)
	}
	for _, want := range []*Conn{second, third} {
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if s.RemoteAddr().String() != want.LocalAddr().String() {
			t.Errorf("Accept returned the connection from %v, want %v", s.RemoteAddr(), want.LocalAddr())
		}
		s.Close()
	}
}

// Resumption through Listen and Dial, with fallback through the listener's
// admission (which gives the fallback's full handshake a CPU turn of its
// own).
func TestResumptionListener(t *testing.T) {
	alice, bob := testIdentity(t, 1), testIdentity(t, 2)
	client := &Config{Identity: alice, Verify: pin(bob.PublicKey()), ClientSessionCache: NewLRUClientSessionCache(0)}
	server := &Config{Identity: bob, Verify: pin(alice.PublicKey())}
	ln, err := Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	for i, want := range []bool{false, true, true, false, true} {
		if i == 3 {
			server.SetSessionTicketKeys([][32]byte{{7}}) // the fallback
		}
		c, err := Dial(context.Background(), "tcp", ln.Addr().String(), client)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		if got := c.ConnectionState().DidResume; got != want {
			t.Fatalf("dial %d: DidResume = %v, want %v", i, got, want)
		}
		c.Close()
	}
}
