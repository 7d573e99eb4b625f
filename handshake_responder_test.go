package securepeer

import (
	"bytes"
	"crypto/mlkem"
	"encoding/binary"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/securepeer/securepeer/internal/wire"
)

// fzResumeServer is the victim of FuzzResumingResponder: fixed identity,
// randomness, clock and ticket key, so that a captured resumption replays.
func fzResumeServer() *Config {
	cfg := fzConfig(fzResponderID, "resume-server")
	cfg.Time = func() time.Time { return time.Unix(1_800_000_000, 0) }
	cfg.SetSessionTicketKeys([][32]byte{{0xfe}})
	return cfg
}

// resumeCaptures returns what a client sent in a resumed session ("resumed")
// and in one whose ticket the victim does not honour ("fallback"), each to
// a fresh fzResumeServer.
func resumeCaptures(t testing.TB) map[string][]byte {
	out := map[string][]byte{}
	for _, name := range []string{"resumed", "fallback"} {
		client := fzConfig(fzInitiatorID, "resume-client-"+name)
		client.ClientSessionCache = anyKeyCache{NewLRUClientSessionCache(1)}
		first := fzResumeServer()
		first.Rand = newFzRand("resume-first-server")
		if name == "fallback" {
			first.SetSessionTicketKeys([][32]byte{{0xfd}})
		}
		for i, server := range []*Config{first, fzResumeServer()} {
			x, sent, _ := ticketSession(t, client, server)
			if i == 1 {
				if x.ConnectionState().DidResume != (name == "resumed") {
					t.Fatalf("%s capture: DidResume = %v", name, x.ConnectionState().DidResume)
				}
				out[name] = sent
			}
		}
	}
	return out
}

// FuzzResumingResponder feeds arbitrary bytes, as the initiator's side, to
// a Server that honours tickets. It must fail, or succeed only on a
// captured session, and never panic, hang or leak a goroutine. A session
// that falls back may carry any resumption message 1 the responder does
// not honour: nothing of it enters the full handshake (PROTOCOL.md,
// "Falling back to a full handshake"), so only the hello and what follows
// that message must be the capture's.
func FuzzResumingResponder(f *testing.F) {
	fzRequireSeeds(f)
	captures := resumeCaptures(f)
	fallback := captures["fallback"]
	afterFirst := func(b []byte) ([]byte, bool) {
		if len(b) < wire.HelloSize+2 {
			return nil, false
		}
		n := wire.HelloSize + 2 + int(binary.BigEndian.Uint16(b[wire.HelloSize:]))
		if n > len(b) {
			return nil, false
		}
		return b[n:], true
	}
	fallbackRest, _ := afterFirst(fallback)
	f.Fuzz(func(t *testing.T, in []byte) {
		base := runtime.NumGoroutine()
		c := Server(newFzConn(in), fzResumeServer())
		if err := fzHandshake(t, c, base); err == nil {
			rest, ok := afterFirst(in)
			fellBack := ok && bytes.Equal(in[:wire.HelloSize], fallback[:wire.HelloSize]) && bytes.HasPrefix(rest, fallbackRest)
			if c.ConnectionState().DidResume || !fellBack {
				if !bytes.HasPrefix(in, captures["resumed"]) {
					t.Fatalf("Server completed a handshake that is not a captured one:\n%x", in)
				}
			}
			if c.RemoteKey() != fzInitiatorID.PublicKey() {
				t.Fatal("Server completed a handshake with a key that no test identity holds")
			}
		}
	})
}

// FuzzHandshakeResponder feeds arbitrary bytes, as the initiator's side of
// the stream, to a Server and to a NewConn. Each must fail with an error, or
// succeed only on the real handshake it was captured with, and never panic,
// hang or leak a goroutine. The victims use fixed randomness, so a captured
// handshake replays and the fuzzer can mutate deep into it.
func FuzzHandshakeResponder(f *testing.F) {
	fzRequireSeeds(f)
	cs := fzGetCaptures(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		// Server: the only way in is the capture, byte for byte (message 1's
		// payload and the hello are bound into the transcript).
		base := runtime.NumGoroutine()
		conn := newFzConn(in)
		c := Server(conn, fzConfig(fzResponderID, fzRandServer))
		if err := fzHandshake(t, c, base); err == nil {
			if !bytes.HasPrefix(in, cs.serverClient.received) {
				t.Fatalf("Server completed a handshake that is not the captured one:\n%x", in)
			}
			if c.RemoteKey() != fzInitiatorID.PublicKey() {
				t.Fatal("Server completed a handshake with a key that no test identity holds")
			}
		} else if c.RemoteKey() != (PublicKey{}) || c.ConnectionState().HandshakeComplete {
			t.Fatal("a failed handshake left state behind")
		}

		// NewConn: it drops the peer's message 1 when it initiates, so only
		// the identity proves who it talked to.
		base = runtime.NumGoroutine()
		c = NewConn(newFzConn(in), fzConfig(fzResponderID, fzRandNewConn))
		if err := fzHandshake(t, c, base); err == nil {
			if c.RemoteKey() != fzInitiatorID.PublicKey() {
				t.Fatal("NewConn completed a handshake with a key that no test identity holds")
			}
			last := fzMessages(cs.newConnClient.received)
			last2 := fzMessages(cs.newConnPeer.sent)
			if !bytes.Contains(in, last[len(last)-1]) && !bytes.Contains(in, last2[len(last2)-1]) {
				t.Fatalf("NewConn completed a handshake without the peer's real last message:\n%x", in)
			}
		}
	})
}

// TestResponderChecksMessage1 checks the order in which a responder checks
// message 1, and what it checks of an ML-KEM key it will not use
// (PROTOCOL.md, "Message 2"): payload1's format first, then the cipher,
// then the key; a responder that disabled the hybrid checks only the key's
// length.
func TestResponderChecksMessage1(t *testing.T) {
	hello := wire.Hello{Version: wire.Version, Mode: wire.ModeInitiator}.Marshal()
	badKey := bytes.Repeat([]byte{0xff}, mlkem.EncapsulationKeySize768) // coefficients of 4095, over q
	aes := []uint16{uint16(AES256GCM)}
	tests := []struct {
		name      string
		ciphers   []uint16
		kemKey    []byte
		noHybrid  bool   // the responder sets DisablePostQuantum
		want      []byte // the abort, or nil for message 2
		wantError string
	}{
		{"no cipher in common, a bad key", []uint16{0x7f01}, badKey, false, []byte{0, 0, wire.AbortNoCipher}, "no cipher in common"},
		{"a cipher in common, a bad key", aes, badKey, false, []byte{0, 0, wire.AbortProtocol}, "encapsulation key is malformed"},
		{"hybrid disabled, a bad key", aes, badKey, true, nil, "closed the connection"},
		{"hybrid disabled, a key of the wrong length", aes, badKey[:100], true, []byte{0, 0, wire.AbortProtocol}, "message 1 is malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload := (&wire.InitPayload{Ciphers: tt.ciphers, KEMKey: tt.kemKey}).Marshal(nil)
			flight := wire.AppendHandshakeMessage(hello[:], craftMessage1(t, hello, payload))
			cfg := &Config{Identity: testIdentity(t, 2), DisablePostQuantum: tt.noHybrid, HandshakeTimeout: 10 * time.Second}
			answer, err := peerAnswer(t, func(c net.Conn) error { return Server(c, cfg).Handshake() }, flight, false)
			switch {
			case tt.want == nil && (len(answer) != 2 || answer[0]|answer[1] == 0):
				t.Errorf("answer %x, want message 2", answer)
			case tt.want != nil && !bytes.Equal(answer, tt.want):
				t.Errorf("answer %x, want %x", answer, tt.want)
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantError) {
				t.Errorf("responder: %v, want %q", err, tt.wantError)
			}
		})
	}
}

// TestResumptionMessage1Faults checks which faults of a resumption message
// 1 make it malformed, and which only leave its ticket not honoured
// (PROTOCOL.md, "Resumption message 1").
func TestResumptionMessage1Faults(t *testing.T) {
	hello := wire.Hello{Version: wire.Version, Mode: wire.ModeInitiator, Resume: true}.Marshal()
	noiseMsg := bytes.Repeat([]byte{7}, 32+wire.TagSize) // an ephemeral key and a tag
	msg1 := func(ticketLen int, ticket, rest []byte) []byte {
		b := binary.BigEndian.AppendUint16(nil, uint16(ticketLen))
		return append(append(b, ticket...), rest...)
	}
	tests := []struct {
		name string
		msg  []byte
		want byte // the abort's reason
	}{
		{"a ticket of length 0", msg1(0, nil, noiseMsg), wire.AbortProtocol},
		{"a ticket over 1024 bytes", msg1(1025, make([]byte, 1025), noiseMsg), wire.AbortProtocol},
		{"no room for a key and a tag", msg1(5, make([]byte, 5), noiseMsg[:47]), wire.AbortProtocol},
		{"a ticket of 5 bytes", msg1(5, make([]byte, 5), noiseMsg), wire.RetryFull},
		{"a ticket of 1024 bytes", msg1(1024, make([]byte, 1024), noiseMsg), wire.RetryFull},
		{"a ticket of securepeer's size, not this side's", msg1(162, make([]byte, 162), noiseMsg), wire.RetryFull},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			flight := wire.AppendHandshakeMessage(hello[:], tt.msg)
			cfg := &Config{Identity: testIdentity(t, 2), HandshakeTimeout: 10 * time.Second}
			answer, _ := peerAnswer(t, func(c net.Conn) error { return Server(c, cfg).Handshake() }, flight, false)
			if want := []byte{0, 0, tt.want}; !bytes.Equal(answer, want) {
				t.Errorf("answer %x, want %x", answer, want)
			}
		})
	}
}
