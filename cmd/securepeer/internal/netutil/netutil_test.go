package netutil

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestResetClose checks that the far end of a connection closed with
// ResetClose reads an error, not a clean end, and that one closed with
// CloseWrite reads a clean end and can still answer.
func TestResetClose(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, reset := range []bool{false, true} {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		far, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		far.SetDeadline(time.Now().Add(time.Minute))
		if reset {
			ResetClose(c)
			if _, err := io.ReadAll(far); err == nil {
				t.Error("a reset connection read as a clean end")
			}
		} else {
			CloseWrite(c)
			if _, err := io.ReadAll(far); err != nil {
				t.Errorf("a half-closed connection: %v", err)
			}
			if _, err := far.Write([]byte("answer")); err != nil {
				t.Errorf("answering a half-closed connection: %v", err)
			}
			c.Close()
		}
		far.Close()
	}
}

// TestDrain checks that Drain reads to the end and then closes its
// channel.
func TestDrain(t *testing.T) {
	a, b := net.Pipe()
	done := Drain(a)
	b.Write([]byte("what the peer still sends"))
	select {
	case <-done:
		t.Fatal("drained before the end")
	default:
	}
	b.Close()
	<-done
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("after the drain: %v, want io.EOF", err)
	}
}
