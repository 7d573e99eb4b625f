package securepeer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/securepeer/securepeer/internal/wire"
)

// The original module's scenarios (test/*.js of secure-peer), each over
// loopback TCP and over net.Pipe.

func TestAcceptEcho(t *testing.T) {
	eachTransport(t, func(t *testing.T, pair pairFunc) {
		checkNoLeaks(t)
		a, b := pair(t)
		alice, bob := testIdentity(t, 1), testIdentity(t, 2)
		var verified atomic.Value
		server := Server(b, &Config{Identity: bob, Verify: func(_ context.Context, k PublicKey) error {
			verified.Store(k)
			return nil
		}})
		client := Client(a, &Config{Identity: alice, Verify: pin(bob.PublicKey())})
		done := run(func() error { return echoUpper(server) })

		if _, err := client.Write([]byte("beep boop\n")); err != nil {
			t.Fatal(err)
		}
		if err := client.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(client)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "BEEP BOOP\n" {
			t.Errorf("got %q, want %q", got, "BEEP BOOP\n")
		}
		if err := wait(t, done); err != nil {
			t.Fatal(err)
		}
		if k := verified.Load(); k != alice.PublicKey() {
			t.Errorf("server verified %v, want alice", k)
		}
		if client.RemoteKey() != bob.PublicKey() || server.RemoteKey() != alice.PublicKey() {
			t.Error("RemoteKey does not match the peers' identities")
		}
		cs, ss := client.ConnectionState(), server.ConnectionState()
		if !cs.HandshakeComplete || !cs.Initiator || ss.Initiator || !cs.PostQuantum || !ss.PostQuantum {
			t.Errorf("unexpected states %+v / %+v", cs, ss)
		}
		if !bytes.Equal(cs.ChannelBinding, ss.ChannelBinding) || len(cs.ChannelBinding) != 32 {
			t.Error("channel bindings differ")
		}
		// After the end of stream, Read keeps returning io.EOF.
		if n, err := client.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Errorf("Read after EOF = %d, %v", n, err)
		}
		closeBoth(client, server)
	})
}

func TestAcceptAfterDelayedVerify(t *testing.T) {
	eachTransport(t, func(t *testing.T, pair pairFunc) {
		a, b := pair(t)
		release := make(chan struct{})
		server := Server(b, &Config{Identity: testIdentity(t, 2), Verify: func(ctx context.Context, _ PublicKey) error {
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}})
		client := Client(a, &Config{Identity: testIdentity(t, 1)})
		done := run(func() error { return echoUpper(server) })
		time.AfterFunc(200*time.Millisecond, func() { close(release) })
		if _, err := client.Write([]byte("beep boop")); err != nil {
			t.Fatal(err)
		}
		client.CloseWrite()
		got, err := io.ReadAll(client)
		if err != nil || string(got) != "BEEP BOOP" {
			t.Fatalf("got %q, %v", got, err)
		}
		if err := wait(t, done); err != nil {
			t.Fatal(err)
		}
	})
}

func TestCipherNegotiation(t *testing.T) {
	tests := []struct {
		name       string
		init, resp []Cipher
		want       Cipher
		wantErr    bool
	}{
		{"same", []Cipher{ChaCha20Poly1305}, []Cipher{ChaCha20Poly1305}, ChaCha20Poly1305, false},
		{"both first", []Cipher{AES128GCM, AES256GCM}, []Cipher{AES128GCM, ChaCha20Poly1305}, AES128GCM, false},
		{"sum of ranks", []Cipher{AES256GCM, AES128GCM}, []Cipher{AES128GCM, ChaCha20Poly1305, AES256GCM}, AES128GCM, false},
		{"tie among full lists", []Cipher{ChaCha20Poly1305, AES128GCM, AES256GCM}, []Cipher{AES256GCM, AES128GCM}, AES256GCM, false},
		{"tie goes to tie order", []Cipher{AES128GCM, ChaCha20Poly1305}, []Cipher{ChaCha20Poly1305, AES128GCM}, ChaCha20Poly1305, false},
		{"tie is role independent", []Cipher{ChaCha20Poly1305, AES128GCM}, []Cipher{AES128GCM, ChaCha20Poly1305}, ChaCha20Poly1305, false},
		{"only common one", []Cipher{AES256GCM, AES128GCM}, []Cipher{ChaCha20Poly1305, AES128GCM}, AES128GCM, false},
		{"none in common", []Cipher{AES256GCM}, []Cipher{ChaCha20Poly1305}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := tcpPair(t)
			client := Client(a, &Config{Identity: testIdentity(t, 1), Ciphers: tt.init})
			server := Server(b, &Config{Identity: testIdentity(t, 2), Ciphers: tt.resp})
			srv := run(server.Handshake)
			cerr := client.Handshake()
			if cerr == nil {
				// The initiator finishes first; the responder's error, if
				// any, reaches it on Read.
				cerr = wait(t, srv)
			} else {
				wait(t, srv)
			}
			if tt.wantErr {
				if !errors.Is(cerr, ErrNoCommonCipher) {
					t.Fatalf("client error %v, want ErrNoCommonCipher", cerr)
				}
				if err := server.Handshake(); !errors.Is(err, ErrNoCommonCipher) {
					t.Fatalf("server error %v, want ErrNoCommonCipher", err)
				}
				return
			}
			if cerr != nil {
				t.Fatal(cerr)
			}
			if got := client.ConnectionState().Cipher; got != tt.want {
				t.Errorf("client chose %v, want %v", got, tt.want)
			}
			if got := server.ConnectionState().Cipher; got != tt.want {
				t.Errorf("server chose %v, want %v", got, tt.want)
			}
			echoOnce(t, client, server)
		})
	}
}

// echoOnce checks that data flows both ways.
func echoOnce(t *testing.T, a, b *Conn) {
	t.Helper()
	done := run(func() error {
		buf := make([]byte, 4)
		if _, err := io.ReadFull(b, buf); err != nil {
			return err
		}
		_, err := b.Write(bytes.ToUpper(buf))
		return err
	})
	if _, err := a.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(a, buf); err != nil {
		t.Fatal(err)
	}
	if string(buf) != "PING" {
		t.Fatalf("echo = %q", buf)
	}
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}

func TestReject(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name+"/responder rejects", func(t *testing.T) {
			checkNoLeaks(t)
			a, b := tr.pair(t)
			server := Server(b, &Config{Identity: testIdentity(t, 2), Verify: rejectAll})
			client := Client(a, &Config{Identity: testIdentity(t, 1)})
			srv := run(server.Handshake)
			// The initiator's handshake completes before the responder
			// decides; the refusal arrives as an authenticated alert.
			var err error
			if err = client.Handshake(); err == nil {
				_, err = client.Read(make([]byte, 10))
			}
			if !errors.Is(err, ErrRejected) {
				t.Errorf("client got %v, want ErrRejected", err)
			}
			if err := wait(t, srv); !errors.Is(err, errNotAllowed) {
				t.Errorf("server got %v, want its Verify's error", err)
			}
			// Sticky: every later call fails the same way.
			if _, err := server.Write([]byte("x")); !errors.Is(err, errNotAllowed) {
				t.Errorf("server Write after reject = %v", err)
			}
			closeBoth(client, server)
		})
		t.Run(tr.name+"/initiator rejects", func(t *testing.T) {
			checkNoLeaks(t)
			a, b := tr.pair(t)
			server := Server(b, &Config{Identity: testIdentity(t, 2)})
			client := Client(a, &Config{Identity: testIdentity(t, 1), Verify: rejectAll})
			srv := run(server.Handshake)
			if err := client.Handshake(); !errors.Is(err, errNotAllowed) {
				t.Errorf("client got %v, want its Verify's error", err)
			}
			if err := wait(t, srv); !errors.Is(err, ErrRejected) {
				t.Errorf("server got %v, want ErrRejected", err)
			}
			closeBoth(client, server)
		})
	}
}

// TestRejectionReachesABusyInitiator has the initiator send data at once
// after its handshake, as a client with something to say does, to a
// responder that refuses it. Closing with that data unread sends a reset,
// and a stack that drops received data on a reset (as Windows does) would
// lose the alert; Linux keeps it, so on Linux this guards the outcome
// rather than reproducing the loss. The initiator must read the rejection.
func TestRejectionReachesABusyInitiator(t *testing.T) {
	for i := range 3 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			a, b := tcpPair(t)
			// Verify takes a moment, so that the initiator's data is waiting,
			// unread, when the responder refuses.
			slowReject := func(ctx context.Context, k PublicKey) error {
				time.Sleep(100 * time.Millisecond)
				return rejectAll(ctx, k)
			}
			server := Server(b, &Config{Identity: testIdentity(t, 2), Verify: slowReject})
			client := Client(a, &Config{Identity: testIdentity(t, 1)})
			srv := run(func() error {
				err := server.Handshake()
				b.Close()
				return err
			})
			if err := client.Handshake(); err != nil {
				t.Fatal(err)
			}
			go client.Write(make([]byte, 256<<10)) // fails once refused
			_, err := client.Read(make([]byte, 10))
			if !errors.Is(err, ErrRejected) {
				t.Errorf("client read %v, want ErrRejected", err)
			}
			a.Close() // ends the responder's linger
			if err := wait(t, srv); !errors.Is(err, errNotAllowed) {
				t.Errorf("server got %v", err)
			}
		})
	}
}

// TestForgedRejectionAbort has a fake responder answer message 1 with the
// unauthenticated abort "rejected", which no securepeer responder sends (a
// refusing responder sends an authenticated alert after the handshake). The
// initiator must report tampering, not ErrRejected.
func TestForgedRejectionAbort(t *testing.T) {
	a, b := tcpPair(t)
	fake := run(func() error {
		var buf [2048]byte
		if _, err := b.Read(buf[:]); err != nil { // the initiator's first flight
			return err
		}
		hello := wire.Hello{Version: wire.Version, Mode: wire.ModeResponder}.Marshal()
		_, err := b.Write(append(hello[:], 0, 0, wire.AbortRejected))
		return err
	})
	err := Client(a, &Config{Identity: testIdentity(t, 1)}).Handshake()
	if err == nil || errors.Is(err, ErrRejected) {
		t.Errorf("initiator got %v, want a tampering error, not ErrRejected", err)
	}
	if err != nil && !strings.Contains(err.Error(), "tampered") {
		t.Errorf("initiator got %v, want it to say the connection was tampered with", err)
	}
	if err := wait(t, fake); err != nil {
		t.Fatal(err)
	}
}

// TestRejectAfterAccept ports the original's "reject after accept": of two
// checks, the first accepts and the second refuses, so the key is refused.
func TestRejectAfterAccept(t *testing.T) {
	a, b := tcpPair(t)
	var calls []string
	checks := []func(PublicKey) error{
		func(PublicKey) error { calls = append(calls, "accept"); return nil },
		func(PublicKey) error { calls = append(calls, "reject"); return errNotAllowed },
	}
	verify := func(_ context.Context, k PublicKey) error {
		for _, check := range checks {
			if err := check(k); err != nil {
				return err
			}
		}
		return nil
	}
	server := Server(b, &Config{Identity: testIdentity(t, 2)})
	client := Client(a, &Config{Identity: testIdentity(t, 1), Verify: verify})
	srv := run(server.Handshake)
	if err := client.Handshake(); !errors.Is(err, errNotAllowed) {
		t.Fatalf("client got %v", err)
	}
	if err := wait(t, srv); !errors.Is(err, ErrRejected) {
		t.Fatalf("server got %v", err)
	}
	if strings.Join(calls, ",") != "accept,reject" {
		t.Errorf("calls = %v", calls)
	}
}

func TestResponderWritesFirst(t *testing.T) {
	eachTransport(t, func(t *testing.T, pair pairFunc) {
		a, b := pair(t)
		client := Client(a, &Config{Identity: testIdentity(t, 1)})
		server := Server(b, &Config{Identity: testIdentity(t, 2)})
		srv := run(func() error {
			if _, err := server.Write([]byte("hello from the responder")); err != nil {
				return err
			}
			return server.CloseWrite()
		})
		got, err := io.ReadAll(client)
		if err != nil || string(got) != "hello from the responder" {
			t.Fatalf("got %q, %v", got, err)
		}
		if err := wait(t, srv); err != nil {
			t.Fatal(err)
		}
	})
}

func TestSimultaneousOpen(t *testing.T) {
	eachTransport(t, func(t *testing.T, pair pairFunc) {
		for i := range 10 {
			a, b := pair(t)
			alice, bob := testIdentity(t, 1), testIdentity(t, 2)
			x := NewConn(a, &Config{Identity: alice, Verify: pin(bob.PublicKey())})
			y := NewConn(b, &Config{Identity: bob, Verify: pin(alice.PublicKey())})
			other := run(y.Handshake)
			if err := x.Handshake(); err != nil {
				t.Fatal(i, err)
			}
			if err := wait(t, other); err != nil {
				t.Fatal(i, err)
			}
			xs, ys := x.ConnectionState(), y.ConnectionState()
			if xs.Initiator == ys.Initiator {
				t.Fatalf("both sides have Initiator = %v", xs.Initiator)
			}
			echoOnce(t, x, y)
			closeBoth(x, y)
		}
	})
}

func TestMixedModes(t *testing.T) {
	mk := map[string]func(net.Conn, *Config) *Conn{"Client": Client, "Server": Server, "NewConn": NewConn}
	tests := []struct {
		a, b    string
		wantErr bool
	}{
		{"Client", "Server", false},
		{"Client", "NewConn", false},
		{"NewConn", "Server", false},
		{"NewConn", "NewConn", false},
		{"Client", "Client", true},
		{"Server", "Server", true},
	}
	for _, tt := range tests {
		t.Run(tt.a+"-"+tt.b, func(t *testing.T) {
			checkNoLeaks(t)
			p, q := tcpPair(t)
			x := mk[tt.a](p, &Config{Identity: testIdentity(t, 1), HandshakeTimeout: 10 * time.Second})
			y := mk[tt.b](q, &Config{Identity: testIdentity(t, 2), HandshakeTimeout: 10 * time.Second})
			other := run(y.Handshake)
			err := x.Handshake()
			oerr := wait(t, other)
			if tt.wantErr {
				if err == nil || oerr == nil {
					t.Fatalf("errors %v / %v, want both to fail", err, oerr)
				}
				t.Log(err)
				return
			}
			if err != nil || oerr != nil {
				t.Fatal(err, oerr)
			}
			echoOnce(t, x, y)
			closeBoth(x, y)
		})
	}
}

func TestPostQuantumNegotiation(t *testing.T) {
	tests := []struct {
		initOff, respOff bool
		want             bool
	}{
		{false, false, true},
		{true, false, false},
		{false, true, false},
		{true, true, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("initiatorOff=%v,responderOff=%v", tt.initOff, tt.respOff), func(t *testing.T) {
			a, b := tcpPair(t)
			client := Client(a, &Config{Identity: testIdentity(t, 1), DisablePostQuantum: tt.initOff})
			server := Server(b, &Config{Identity: testIdentity(t, 2), DisablePostQuantum: tt.respOff})
			srv := run(server.Handshake)
			if err := client.Handshake(); err != nil {
				t.Fatal(err)
			}
			if err := wait(t, srv); err != nil {
				t.Fatal(err)
			}
			if c, s := client.ConnectionState().PostQuantum, server.ConnectionState().PostQuantum; c != tt.want || s != tt.want {
				t.Errorf("PostQuantum = %v/%v, want %v", c, s, tt.want)
			}
			echoOnce(t, client, server)
		})
	}
}

// TestPostQuantumDowngrade strips the ML-KEM offer from message 1 in
// transit: the handshake must fail rather than fall back to X25519 alone.
func TestPostQuantumDowngrade(t *testing.T) {
	p := &proxy{
		handshakeMessages: map[string]int{"c2s": 2, "s2c": 1},
		filter: func(dir string, i int, unit []byte) [][]byte {
			if dir == "c2s" && i == 1 {
				// Message 1: length, e (32), ciphers, then the uint16 KEM
				// key length and the key, which are its last bytes.
				const kem = 1184
				if len(unit) > kem+2 {
					m := append([]byte(nil), unit[:len(unit)-kem-2]...)
					m = append(m, 0, 0)
					n := len(m) - 2
					m[0], m[1] = byte(n>>8), byte(n)
					return [][]byte{m}
				}
			}
			return [][]byte{unit}
		},
	}
	a, b := p.start(t)
	client := Client(a, &Config{Identity: testIdentity(t, 1), HandshakeTimeout: 10 * time.Second})
	server := Server(b, &Config{Identity: testIdentity(t, 2), HandshakeTimeout: 10 * time.Second})
	srv := run(server.Handshake)
	cerr := client.Handshake()
	serr := wait(t, srv)
	if cerr == nil || serr == nil {
		t.Fatalf("handshake survived the downgrade: client %v, server %v", cerr, serr)
	}
}

func TestIdentityHiding(t *testing.T) {
	toServer, toClient := record(t)
	transcript := append(append([]byte(nil), toServer...), toClient...)
	for _, id := range []*Identity{testIdentity(t, 1), testIdentity(t, 2)} {
		k := id.PublicKey()
		for name, needle := range map[string][]byte{
			"raw key":         k.key[:],
			"ssh wire":        k.sshWire(),
			"authorized_keys": []byte(k.String()),
			"fingerprint":     []byte(k.Fingerprint()),
			"key prefix":      k.key[:8],
			"static key":      id.static.PublicKey().Bytes()[:8],
			"signature":       id.staticSig[:8],
		} {
			if bytes.Contains(transcript, needle) {
				t.Errorf("the transcript contains the %s of an identity", name)
			}
		}
	}
}

// TestManInTheMiddle puts a securepeer peer with its own key between the
// two sides: a client that pins the real server refuses it, and learns
// nothing it did not have.
func TestManInTheMiddle(t *testing.T) {
	alice, bob, mallory := testIdentity(t, 1), testIdentity(t, 2), testIdentity(t, 3)
	a, m1 := tcpPair(t)
	m2, b := tcpPair(t)
	var sawClientKey atomic.Bool
	fakeServer := Server(m1, &Config{Identity: mallory, Verify: func(_ context.Context, k PublicKey) error {
		sawClientKey.Store(true)
		return nil
	}})
	fakeClient := Client(m2, &Config{Identity: mallory})
	realServer := Server(b, &Config{Identity: bob})
	go func() {
		if fakeServer.Handshake() == nil && fakeClient.Handshake() == nil {
			go io.Copy(fakeClient, fakeServer)
			io.Copy(fakeServer, fakeClient)
		}
	}()
	go realServer.Handshake()
	client := Client(a, &Config{Identity: alice, Verify: pin(bob.PublicKey())})
	err := client.Handshake()
	if !errors.Is(err, errNotAllowed) {
		t.Fatalf("client handshake through the MITM: %v", err)
	}
	if sawClientKey.Load() {
		t.Error("the man in the middle learned the client's identity")
	}
}

func TestConfigErrors(t *testing.T) {
	a, b := tcpPair(t)
	defer b.Close()
	tests := []struct {
		name string
		cfg  *Config
	}{
		{"nil config", nil},
		{"no identity", &Config{}},
		{"unknown cipher", &Config{Identity: testIdentity(t, 1), Ciphers: []Cipher{0x99}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Client(a, tt.cfg).Handshake(); err == nil {
				t.Fatal("handshake with a bad config succeeded")
			} else {
				t.Log(err)
			}
		})
	}
}

// TestNextProtos negotiates application protocols end to end, over TCP,
// for each way the roles can be taken.
func TestNextProtos(t *testing.T) {
	tests := []struct {
		name             string
		client, server   []string
		want             string
		wantNoneInCommon bool
	}{
		{"both", []string{"/yamux/1.0.0", "/mplex/6.7.0"}, []string{"/mplex/6.7.0", "/yamux/1.0.0"}, "/mplex/6.7.0", false},
		{"client only", []string{"h2"}, nil, "", false},
		{"server only", nil, []string{"h2"}, "", false},
		{"none in common", []string{"h2"}, []string{"http/1.1"}, "", true},
	}
	modes := []struct {
		name     string
		mkA, mkB func(net.Conn, *Config) *Conn
	}{
		{"client-server", Client, Server},
		{"newconn-server", NewConn, Server},
		{"client-newconn", Client, NewConn},
	}
	for _, tt := range tests {
		for _, m := range modes {
			t.Run(tt.name+"/"+m.name, func(t *testing.T) {
				a, b := tcpPair(t)
				x := m.mkA(a, &Config{Identity: testIdentity(t, 1), NextProtos: tt.client})
				y := m.mkB(b, &Config{Identity: testIdentity(t, 2), NextProtos: tt.server})
				srv := run(y.Handshake)
				cerr := x.Handshake()
				if cerr == nil && tt.wantNoneInCommon {
					// The initiator refuses before message 3, so its
					// handshake fails; the responder hears why.
					t.Fatal("the handshake completed with no protocol in common")
				}
				serr := wait(t, srv)
				if tt.wantNoneInCommon {
					// The initiator found it in the authenticated message
					// 2; the responder has only the initiator's abort.
					if !errors.Is(cerr, ErrNoCommonProtocol) {
						t.Errorf("initiator got %v, want ErrNoCommonProtocol", cerr)
					}
					if !errors.Is(serr, ErrPeerNoCommonProtocol) || errors.Is(serr, ErrNoCommonProtocol) {
						t.Errorf("responder got %v, want ErrPeerNoCommonProtocol, and not ErrNoCommonProtocol", serr)
					}
					return
				}
				if cerr != nil || serr != nil {
					t.Fatalf("handshake: %v, %v", cerr, serr)
				}
				if got := x.ConnectionState().NegotiatedProtocol; got != tt.want {
					t.Errorf("initiator negotiated %q, want %q", got, tt.want)
				}
				if got := y.ConnectionState().NegotiatedProtocol; got != tt.want {
					t.Errorf("responder negotiated %q, want %q", got, tt.want)
				}
				closeBoth(x, y)
			})
		}
	}
}

func TestNextProtosConfigErrors(t *testing.T) {
	for _, protos := range [][]string{{""}, {strings.Repeat("x", 256)}, {"a", "a"}, make([]string, 33)} {
		a, b := tcpPair(t)
		defer b.Close()
		err := Client(a, &Config{Identity: testIdentity(t, 1), NextProtos: protos}).Handshake()
		if err == nil || !strings.Contains(err.Error(), "NextProtos") {
			t.Errorf("NextProtos %q: Handshake = %v, want a configuration error", protos, err)
		}
	}
}

// TestOwnKey connects two sessions of one identity, as an attacker who
// relays between them (cross-wiring) or a reflection would, and as a user
// running listen and connect with one home directory does on purpose.
func TestOwnKey(t *testing.T) {
	acceptAll := func(context.Context, PublicKey) error { return nil }
	tests := []struct {
		name             string
		verifyI, verifyR func(context.Context, PublicKey) error
		wantI, wantR     error // nil: the handshake completes
	}{
		{"nil Verify on both sides", nil, nil, ErrOwnKey, ErrRejected},
		{"nil Verify on the responder", acceptAll, nil, nil, ErrOwnKey},
		{"an explicit Verify accepts it", acceptAll, acceptAll, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := tcpPair(t)
			id := testIdentity(t, 5)
			x := Client(a, &Config{Identity: id, Verify: tt.verifyI})
			y := Server(b, &Config{Identity: id, Verify: tt.verifyR})
			srv := run(y.Handshake)
			errI := x.Handshake()
			errR := wait(t, srv)
			if errI == nil && errR != nil {
				// A responder's refusal reaches the initiator at its first
				// read, as a rejection.
				if _, err := x.Read(make([]byte, 1)); !errors.Is(err, ErrRejected) {
					t.Errorf("initiator read %v after the responder refused, want ErrRejected", err)
				}
			}
			if !errors.Is(errI, tt.wantI) || (tt.wantI == nil && errI != nil) {
				t.Errorf("initiator: %v, want %v", errI, tt.wantI)
			}
			if !errors.Is(errR, tt.wantR) || (tt.wantR == nil && errR != nil) {
				t.Errorf("responder: %v, want %v", errR, tt.wantR)
			}
			if tt.wantI == nil && tt.wantR == nil && x.RemoteKey() != id.PublicKey() {
				t.Error("RemoteKey is not the shared identity")
			}
			a.Close()
			b.Close()
		})
	}
}
