package securepeer

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"testing"
	"time"

	"github.com/securepeer/securepeer/internal/wire"
)

// resumingClient returns a Client config that holds a copy of sess, with
// fixed randomness, as FuzzResumingInitiator's victim and its captures use.
func resumingClient(sess *ClientSession) *Config {
	cfg := fzConfig(fzInitiatorID, "resume-initiator-victim")
	cfg.Time = func() time.Time { return time.Unix(1_800_000_000, 0) }
	cache := anyKeyCache{NewLRUClientSessionCache(1)}
	s := *sess
	cache.Put("", &s)
	cfg.ClientSessionCache = cache
	return cfg
}

// initiatorCaptures returns a session the victim offers, and what
// responders sent it: resumed ("resumed"), and refusing the ticket, then a
// full handshake ("fallback"), each up to the end of the responder's
// handshake messages.
func initiatorCaptures(t testing.TB) (*ClientSession, map[string][]byte) {
	client := fzConfig(fzInitiatorID, "resume-initiator-first")
	client.Time = func() time.Time { return time.Unix(1_800_000_000, 0) }
	cache := anyKeyCache{NewLRUClientSessionCache(1)}
	client.ClientSessionCache = cache
	ticketSession(t, client, fzResumeServer())
	sess, ok := cache.Take("")
	if !ok {
		t.Fatal("no ticket")
	}
	out := map[string][]byte{}
	for _, name := range []string{"resumed", "fallback"} {
		server := fzResumeServer()
		frames := 1 // message 2
		if name == "fallback" {
			server.SetSessionTicketKeys([][32]byte{{0xfc}})
			frames = 2 // 00 00 05, then message 2
		}
		x, _, got := ticketSession(t, resumingClient(sess), server)
		if x.ConnectionState().DidResume != (name == "resumed") {
			t.Fatalf("%s capture: DidResume = %v", name, x.ConnectionState().DidResume)
		}
		n := wire.HelloSize
		for range frames {
			l := int(binary.BigEndian.Uint16(got[n:]))
			n += 2 + max(l, 1)
		}
		out[name] = got[:n]
	}
	return sess, out
}

// FuzzResumingInitiator feeds arbitrary bytes, as the responder's side, to
// a Client that offers a ticket. It must fail, or succeed only on a
// captured answer, and never panic, hang or leak a goroutine.
func FuzzResumingInitiator(f *testing.F) {
	fzRequireSeeds(f)
	sess, captures := initiatorCaptures(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		base := runtime.NumGoroutine()
		c := Client(newFzConn(in), resumingClient(sess))
		if err := fzHandshake(t, c, base); err == nil {
			if !bytes.HasPrefix(in, captures["resumed"]) && !bytes.HasPrefix(in, captures["fallback"]) {
				t.Fatalf("Client completed a handshake that is not a captured one:\n%x", in)
			}
			if c.RemoteKey() != fzResponderID.PublicKey() {
				t.Fatal("Client completed a handshake with a key that no test identity holds")
			}
		}
	})
}

// FuzzHandshakeInitiator feeds arbitrary bytes, as the responder's side of
// the stream, to a Client, with the same rules as FuzzHandshakeResponder.
func FuzzHandshakeInitiator(f *testing.F) {
	fzRequireSeeds(f)
	cs := fzGetCaptures(f)
	var msg2s [][]byte
	for _, c := range []*fzCapture{cs.clientServer, cs.clientNewConn} {
		m := fzMessages(c.received)
		msg2s = append(msg2s, m[len(m)-1])
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		base := runtime.NumGoroutine()
		c := Client(newFzConn(in), fzConfig(fzInitiatorID, fzRandClient))
		if err := fzHandshake(t, c, base); err == nil {
			if c.RemoteKey() != fzResponderID.PublicKey() {
				t.Fatal("Client completed a handshake with a key that no test identity holds")
			}
			if !bytes.Contains(in, msg2s[0]) && !bytes.Contains(in, msg2s[1]) {
				t.Fatalf("Client completed a handshake without a real message 2:\n%x", in)
			}
		}
	})
}
