package testenv

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/securepeer/securepeer/internal/wire"
)

// A MITM is a TCP proxy that stands where an attacker on the path stands,
// between a securepeer initiator, which connects to Addr, and a responder,
// and may replace handshake messages in either direction: the frames of
// PROTOCOL.md, "Handshake messages and aborts", after each side's hello.
type MITM struct {
	// Addr is the address the initiator connects to.
	Addr string

	conns atomic.Int32
}

// A Rewrite returns the bytes the MITM sends in place of the handshake
// frame it is given (its length field included): the frame itself to pass
// it on, or anything else, such as an abort. conn counts the MITM's
// connections from 0; i counts the frames of one direction from 0
// (fromInitiator: message 1 is 0, message 3 or a resumption's finished
// message 1; otherwise message 2 is 0).
type Rewrite func(conn int, fromInitiator bool, i int, frame []byte) []byte

// mitmFrames is how many frames the MITM parses in each direction before it
// copies bytes as they come: message 1 and 3 from the initiator, message 2
// from the responder.
var mitmFrames = map[bool]int{true: 2, false: 1}

// StartMITM starts a MITM in front of the responder at target, which
// rewrites each connection's handshake frames with rewrite. It stops at the
// end of the test.
func StartMITM(t testing.TB, target string, rewrite Rewrite) *MITM {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &MITM{Addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(m.conns.Add(1)) - 1
			wg.Go(func() {
				m.relay(c, target, func(fromInitiator bool, i int, frame []byte) []byte {
					return rewrite(n, fromInitiator, i, frame)
				})
			})
		}
	})
	return m
}

// Conns returns how many connections the MITM has accepted.
func (m *MITM) Conns() int { return int(m.conns.Load()) }

// relay joins the initiator's connection to a new one to target until
// either ends.
func (m *MITM) relay(initiator net.Conn, target string, rewrite func(fromInitiator bool, i int, frame []byte) []byte) {
	defer initiator.Close()
	responder, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer responder.Close()
	done := make(chan struct{}, 2)
	pass := func(from, to net.Conn, fromInitiator bool) {
		defer func() { done <- struct{}{} }()
		if copyFrames(from, to, fromInitiator, rewrite) == nil {
			io.Copy(to, from)
		}
	}
	go pass(initiator, responder, true)
	go pass(responder, initiator, false)
	<-done
	// One side has ended: end both, so the other copy ends too.
	initiator.Close()
	responder.Close()
	<-done
}

// copyFrames passes on the hello and the first handshake frames from one
// side, through rewrite. It returns an error when the connection is done.
func copyFrames(from, to net.Conn, fromInitiator bool, rewrite func(fromInitiator bool, i int, frame []byte) []byte) error {
	hello := make([]byte, wire.HelloSize)
	if _, err := io.ReadFull(from, hello); err != nil {
		return err
	}
	if _, err := to.Write(hello); err != nil {
		return err
	}
	for i := range mitmFrames[fromInitiator] {
		var l [2]byte
		if _, err := io.ReadFull(from, l[:]); err != nil {
			return err
		}
		n := int(binary.BigEndian.Uint16(l[:]))
		if n == 0 {
			n = 1 // an abort: its reason byte
		}
		frame := make([]byte, 2+n)
		copy(frame, l[:])
		if _, err := io.ReadFull(from, frame[2:]); err != nil {
			return err
		}
		if _, err := to.Write(rewrite(fromInitiator, i, frame)); err != nil {
			return err
		}
	}
	return nil
}
