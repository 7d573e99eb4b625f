package securepeer

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/flynn/noise"

	"github.com/securepeer/securepeer/internal/wire"
)

// clientFirstFlight returns what a real Client sends before it reads
// anything, over a pipe nobody answers: its hello, then message 1 framed.
func clientFirstFlight(t *testing.T) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	hs := run(func() error { return Client(a, &Config{Identity: testIdentity(t, 0x41)}).Handshake() })
	hello, err := readN(b, wire.HelloSize)
	if err != nil {
		t.Fatal(err)
	}
	msg1, err := readPrefixed(b, 2) // with its length
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	wait(t, hs)
	return slices.Concat(hello, msg1)
}

// fullMessage1 returns a framed full message 1, classical, with a fresh
// ephemeral key, written after hello (its prologue), as an initiator
// writes it after 00 00 05.
func fullMessage1(t *testing.T, hello [wire.HelloSize]byte) []byte {
	t.Helper()
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:           noise.NewCipherSuite(new(x25519), noise.CipherChaChaPoly, noise.HashSHA256),
		Random:                rand.Reader,
		Pattern:               noise.HandshakeXX,
		Initiator:             true,
		Prologue:              append([]byte(labelPrologue), hello[:]...),
		PresharedKeyPlacement: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	msg1, _, _, err := hs.WriteMessage(nil, (&wire.InitPayload{Ciphers: cipherIDs([]Cipher{ChaCha20Poly1305})}).Marshal(nil))
	if err != nil {
		t.Fatal(err)
	}
	return wire.AppendHandshakeMessage(nil, msg1)
}

// ticketFlight returns a first flight offering a ticket no server issued,
// which a server answers with 00 00 05, with a fresh ephemeral key.
func ticketFlight() []byte {
	h := wire.Hello{Version: wire.Version, Mode: wire.ModeInitiator, Resume: true}.Marshal()
	noise := bytes.Repeat([]byte{0x90}, 32+wire.TagSize+8)
	rand.Read(noise[:32])
	m := wire.ResumeMessage1{Ticket: bytes.Repeat([]byte{0xb0}, 100), Noise: noise}
	return wire.AppendHandshakeMessage(h[:], m.Marshal(nil))
}

var (
	initiatorHello = wire.Hello{Version: wire.Version, Mode: wire.ModeInitiator}.Marshal()
	resumingHello  = wire.Hello{Version: wire.Version, Mode: wire.ModeInitiator, Resume: true}.Marshal()
)

// withKey returns a framed full message 1 that starts with key: well
// formed as far as a listener looks, whatever a handshake would make of it.
func withKey(key []byte) []byte {
	return wire.AppendHandshakeMessage(nil, slices.Concat(key, bytes.Repeat([]byte{0x5a}, 1+2+2+wire.TagSize)))
}

// What a listener answers to what a raw peer sends.
type answer int

const (
	message2  answer = iota // its hello and message 2: it computed
	retryFull               // its hello and 00 00 05, at no cost
	refused                 // nothing more: the connection closed
)

// readAnswer reads what the server sends next on c, its hello first if
// hello, and says what it was.
func readAnswer(t *testing.T, c net.Conn, hello bool) answer {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	var b [wire.HelloSize]byte
	n := wire.HelloSize
	if !hello {
		n = 2
	}
	if _, err := io.ReadFull(c, b[:n]); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("the server neither answered nor closed the connection")
		}
		return refused
	}
	if hello {
		if _, err := io.ReadFull(c, b[:2]); err != nil {
			t.Fatalf("the server sent its hello, then: %v", err)
		}
	}
	if l := binary.BigEndian.Uint16(b[:2]); l > 0 {
		if _, err := io.ReadFull(c, make([]byte, l)); err != nil {
			t.Fatalf("reading message 2: %v", err)
		}
		return message2
	}
	if _, err := io.ReadFull(c, b[:1]); err != nil || b[0] != wire.RetryFull {
		t.Fatalf("an abort %x, %v; want 00 00 05", b[0], err)
	}
	return retryFull
}

// TestListenerRefusesReplays: the library's listener answers a first
// flight whose ephemeral key it has seen before with nothing, before
// computing anything (PROTOCOL.md, "Servers on the open internet"): full
// and resumption message 1s, and the full message 1 after 00 00 05, whose
// key counts against every first flight's. Over real TCP, each step a raw
// connection that sends flights and reads the server's answers.
func TestListenerRefusesReplays(t *testing.T) {
	type send struct {
		flight []byte
		want   answer
	}
	a, b := clientFirstFlight(t), fullMessage1(t, resumingHello)
	tA, tB := ticketFlight(), ticketFlight()
	tAKey := tA[wire.HelloSize+2+2+100:][:32] // after the frame's length, the ticket's and the ticket
	tests := []struct {
		name  string
		conns [][]send // per connection, in order
	}{
		{"full message 1 replayed", [][]send{
			{{a, message2}},
			{{a, refused}},
			{{a, refused}},
		}},
		{"resumption message 1 replayed", [][]send{
			{{tA, retryFull}},
			{{tA, refused}},
		}},
		{"a first flight's key in the message 1 after 00 00 05", [][]send{
			{{a, message2}},
			{{tA, retryFull}, {a[wire.HelloSize:], refused}},
		}},
		{"the key of a message 1 after 00 00 05 in a first flight", [][]send{
			{{tA, retryFull}, {b, message2}},
			{{slices.Concat(initiatorHello[:], b), refused}},
			{{tB, retryFull}, {b, refused}},
		}},
		{"the resumption message 1's key again after its 00 00 05", [][]send{
			{{tA, retryFull}, {withKey(tAKey), refused}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server, client := testIdentity(t, 2), testIdentity(t, 1)
			ln, err := Listen("tcp", "127.0.0.1:0", &Config{Identity: server, SessionTicketsDisabled: true})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			for i, sends := range tt.conns {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				for j, s := range sends {
					if _, err := c.Write(s.flight); err != nil && s.want != refused {
						t.Fatalf("connection %d, flight %d: %v", i, j, err)
					}
					if got := readAnswer(t, c, j == 0); got != s.want {
						t.Fatalf("connection %d, flight %d: answered %d, want %d", i, j, got, s.want)
					}
				}
				c.Close()
			}
			// An honest client, twice with one Config: fresh keys, in.
			cfg := &Config{Identity: client, Verify: pin(server.PublicKey())}
			for range 2 {
				acceptOneOf(t, ln, cfg)
			}
		})
	}
}

// acceptOneOf dials ln with cfg and checks that the handshake completes
// and Accept returns the connection.
func acceptOneOf(t *testing.T, ln net.Listener, cfg *Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	accepted := run(func() error {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		return err
	})
	c, err := Dial(ctx, "tcp", ln.Addr().String(), cfg)
	if err != nil {
		t.Fatalf("an honest client: %v", err)
	}
	c.Close()
	if err := wait(t, accepted); err != nil {
		t.Fatal(err)
	}
}
