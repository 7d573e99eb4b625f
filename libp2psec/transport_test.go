package libp2psec

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/sec"
	tptu "github.com/libp2p/go-libp2p/p2p/net/upgrader"

	"go.uber.org/goleak"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/testenv"
)

func newKey(t testing.TB) crypto.PrivKey {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func muxerList(ids ...protocol.ID) []tptu.StreamMuxer {
	var ms []tptu.StreamMuxer
	for _, id := range ids {
		ms = append(ms, tptu.StreamMuxer{ID: id})
	}
	return ms
}

func newTransport(t testing.TB, muxers ...protocol.ID) *Transport {
	t.Helper()
	tr, err := New(ID, newKey(t), muxerList(muxers...))
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// tcpPair returns both ends of a loopback TCP connection, closed at the end
// of the test.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	return testenv.TCPPair(t)
}

// newIdentity returns a fresh securepeer identity.
func newIdentity(t testing.TB) *securepeer.Identity {
	t.Helper()
	id, err := securepeer.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// runWithoutHybrid runs a plain securepeer peer on c, with a fresh
// identity and the hybrid turned off, as the initiator if initiator is
// set, else as the responder; it reads what comes until the connection
// ends. It returns the peer's identity.
func runWithoutHybrid(t testing.TB, c net.Conn, initiator bool) *securepeer.Identity {
	t.Helper()
	id := newIdentity(t)
	config := &securepeer.Config{Identity: id, DisablePostQuantum: true}
	go func() {
		var p *securepeer.Conn
		if initiator {
			p = securepeer.Client(c, config)
		} else {
			p = securepeer.Server(c, config)
		}
		p.Handshake()
		io.Copy(io.Discard, p)
	}()
	return id
}

type handshakeResult struct {
	conn sec.SecureConn
	err  error
}

// handshake runs SecureOutbound from a to b's peer ID expectOut and
// SecureInbound on b with expectIn, and returns both results.
func handshake(t testing.TB, a, b *Transport, expectOut, expectIn peer.ID) (out, in handshakeResult) {
	t.Helper()
	cc, sc := tcpPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch := make(chan handshakeResult, 1)
	go func() {
		c, err := b.SecureInbound(ctx, sc, expectIn)
		ch <- handshakeResult{c, err}
	}()
	c, err := a.SecureOutbound(ctx, cc, expectOut)
	out = handshakeResult{c, err}
	in = <-ch
	for _, r := range []handshakeResult{out, in} {
		if r.conn != nil {
			t.Cleanup(func() { r.conn.Close() })
		}
	}
	return out, in
}

func TestNewKeyTypes(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  int
		bits int
	}{
		{"RSA", crypto.RSA, 2048},
		{"Secp256k1", crypto.Secp256k1, 0},
		{"ECDSA", crypto.ECDSA, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, _, err := crypto.GenerateKeyPair(tc.typ, tc.bits)
			if err != nil {
				t.Fatal(err)
			}
			_, err = New(ID, k, nil)
			if err == nil {
				t.Fatalf("New accepted a %s key", tc.name)
			}
			if want := "needs an Ed25519 host key, not " + tc.name; !bytes.Contains([]byte(err.Error()), []byte(want)) {
				t.Errorf("error %q does not say %q", err, want)
			}
		})
	}
	t.Run("Ed25519", func(t *testing.T) {
		k := newKey(t)
		tr, err := New(ID, k, nil)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := peer.IDFromPrivateKey(k)
		if tr.localID != want {
			t.Errorf("local peer ID %s, want %s", tr.localID, want)
		}
		raw, _ := k.GetPublic().Raw()
		if !bytes.Equal(tr.identity.PublicKey().Ed25519(), raw) {
			t.Error("the securepeer identity is not the libp2p key")
		}
	})
}

func TestNewMuxerLimits(t *testing.T) {
	many := make([]protocol.ID, maxMuxers+1)
	for i := range many {
		many[i] = protocol.ID("/m/" + string(rune('a'+i)))
	}
	for _, tc := range []struct {
		name   string
		muxers []protocol.ID
		ok     bool
	}{
		{"none", nil, true},
		{"max", many[:maxMuxers], true},
		{"too many", many, false},
		{"empty ID", []protocol.ID{""}, false},
		{"long ID", []protocol.ID{protocol.ID(bytes.Repeat([]byte("x"), maxMuxerLen+1))}, false},
		{"twice", []protocol.ID{"/yamux/1.0.0", "/yamux/1.0.0"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(ID, newKey(t), muxerList(tc.muxers...))
			if (err == nil) != tc.ok {
				t.Errorf("New: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestSecure(t *testing.T) {
	a := newTransport(t, "/yamux/1.0.0", "/mplex/6.7.0")
	b := newTransport(t, "/mplex/6.7.0", "/yamux/1.0.0")
	out, in := handshake(t, a, b, b.localID, "")
	if out.err != nil || in.err != nil {
		t.Fatalf("outbound: %v, inbound: %v", out.err, in.err)
	}
	for _, tc := range []struct {
		name        string
		c           sec.SecureConn
		local, peer *Transport
	}{{"outbound", out.conn, a, b}, {"inbound", in.conn, b, a}} {
		if tc.c.LocalPeer() != tc.local.localID || tc.c.RemotePeer() != tc.peer.localID {
			t.Errorf("%s: peers %s -> %s, want %s -> %s", tc.name, tc.c.LocalPeer(), tc.c.RemotePeer(), tc.local.localID, tc.peer.localID)
		}
		id, err := peer.IDFromPublicKey(tc.c.RemotePublicKey())
		if err != nil || id != tc.peer.localID {
			t.Errorf("%s: remote public key gives %s (%v), want %s", tc.name, id, err, tc.peer.localID)
		}
		st := tc.c.ConnState()
		// The responder's order decides (PROTOCOL.md, "Application protocol").
		if st.Security != ID || st.StreamMultiplexer != "/mplex/6.7.0" || !st.UsedEarlyMuxerNegotiation {
			t.Errorf("%s: ConnState %+v", tc.name, st)
		}
		if ss := tc.c.(*Conn).SecurepeerState(); !ss.PostQuantum || ss.Initiator != (tc.name == "outbound") {
			t.Errorf("%s: securepeer state %+v", tc.name, ss)
		}
	}

	msg := make([]byte, 1<<20)
	rand.Read(msg)
	go func() {
		out.conn.Write(msg)
		out.conn.Close()
	}()
	got, err := io.ReadAll(in.conn)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("read %d bytes (%v), want the %d sent", len(got), err, len(msg))
	}
}

func TestMuxerNegotiation(t *testing.T) {
	for _, tc := range []struct {
		name         string
		out, in      []protocol.ID
		want         protocol.ID
		noCommonFail bool
	}{
		{"same", []protocol.ID{"/yamux/1.0.0"}, []protocol.ID{"/yamux/1.0.0"}, "/yamux/1.0.0", false},
		{"responder order", []protocol.ID{"/a", "/b"}, []protocol.ID{"/b", "/a"}, "/b", false},
		{"initiator offers none", nil, []protocol.ID{"/yamux/1.0.0"}, "", false},
		{"responder offers none", []protocol.ID{"/yamux/1.0.0"}, nil, "", false},
		{"none in common", []protocol.ID{"/a"}, []protocol.ID{"/b"}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newTransport(t, tc.out...), newTransport(t, tc.in...)
			out, in := handshake(t, a, b, b.localID, "")
			if tc.noCommonFail {
				// The dialer finds it in the authenticated message 2; the
				// listener has only the dialer's word for it.
				if !errors.Is(out.err, securepeer.ErrNoCommonProtocol) || !errors.Is(in.err, securepeer.ErrPeerNoCommonProtocol) {
					t.Fatalf("outbound: %v, inbound: %v; want ErrNoCommonProtocol and ErrPeerNoCommonProtocol", out.err, in.err)
				}
				return
			}
			if out.err != nil || in.err != nil {
				t.Fatalf("outbound: %v, inbound: %v", out.err, in.err)
			}
			for _, c := range []sec.SecureConn{out.conn, in.conn} {
				st := c.ConnState()
				if st.StreamMultiplexer != tc.want || st.UsedEarlyMuxerNegotiation != (tc.want != "") {
					t.Errorf("ConnState %+v, want muxer %q", st, tc.want)
				}
			}
		})
	}
}

func TestPeerIDMismatch(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	a, b, other := newTransport(t), newTransport(t), newTransport(t)

	t.Run("outbound", func(t *testing.T) {
		out, in := handshake(t, a, b, other.localID, "")
		var mismatch sec.ErrPeerIDMismatch
		if !errors.As(out.err, &mismatch) || mismatch.Expected != other.localID || mismatch.Actual != b.localID {
			t.Fatalf("outbound error %v, want a mismatch expecting %s, found %s", out.err, other.localID, b.localID)
		}
		// The initiator refused before message 3: the responder never
		// learned who dialed.
		if !errors.Is(in.err, securepeer.ErrRejected) {
			t.Errorf("inbound error %v, want ErrRejected", in.err)
		}
	})
	t.Run("inbound", func(t *testing.T) {
		out, in := handshake(t, a, b, b.localID, other.localID)
		var mismatch sec.ErrPeerIDMismatch
		if !errors.As(in.err, &mismatch) || mismatch.Expected != other.localID || mismatch.Actual != a.localID {
			t.Fatalf("inbound error %v, want a mismatch expecting %s, found %s", in.err, other.localID, a.localID)
		}
		// The initiator completes its side and learns of the refusal on
		// its first read, as PROTOCOL.md says.
		if out.err == nil {
			_, err := out.conn.Read(make([]byte, 1))
			out.err = err
		}
		if !errors.Is(out.err, securepeer.ErrRejected) {
			t.Errorf("outbound error %v, want ErrRejected", out.err)
		}
	})
	t.Run("inbound expected", func(t *testing.T) {
		out, in := handshake(t, a, b, b.localID, a.localID)
		if out.err != nil || in.err != nil {
			t.Fatalf("outbound: %v, inbound: %v", out.err, in.err)
		}
	})
	t.Run("outbound without peer ID", func(t *testing.T) {
		cc, _ := tcpPair(t)
		if _, err := a.SecureOutbound(context.Background(), cc, ""); err == nil {
			t.Fatal("SecureOutbound accepted an empty peer ID")
		}
	})
}

func TestOwnKey(t *testing.T) {
	k := newKey(t)
	a, err := New(ID, k, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(ID, k, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, in := handshake(t, a, b, b.localID, "")
	if !errors.Is(out.err, securepeer.ErrOwnKey) {
		t.Errorf("outbound error %v, want ErrOwnKey", out.err)
	}
	if in.err == nil {
		t.Error("inbound handshake with this host's own key succeeded")
	}
}

// A securepeer peer that turns off the hybrid completes its handshake, but
// the transport refuses the connection, closes it and leaves no goroutine
// behind.
func TestNotPostQuantum(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	a := newTransport(t)
	cc, sc := tcpPair(t)
	id := runWithoutHybrid(t, sc, false)
	pub, _ := crypto.UnmarshalEd25519PublicKey(id.PublicKey().Ed25519())
	pid, _ := peer.IDFromPublicKey(pub)
	_, err := a.SecureOutbound(context.Background(), cc, pid)
	if !errors.Is(err, ErrNotPostQuantum) {
		t.Fatalf("SecureOutbound: %v, want ErrNotPostQuantum", err)
	}
	if _, err := cc.Write([]byte{0}); err == nil {
		t.Error("the insecure connection is still open")
	}
}

// The same, the other way round: an initiator without the hybrid.
func TestNotPostQuantumInbound(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	a := newTransport(t)
	cc, sc := tcpPair(t)
	runWithoutHybrid(t, cc, true)
	_, err := a.SecureInbound(context.Background(), sc, "")
	if !errors.Is(err, ErrNotPostQuantum) {
		t.Fatalf("SecureInbound: %v, want ErrNotPostQuantum", err)
	}
	if _, err := sc.Write([]byte{0}); err == nil {
		t.Error("the insecure connection is still open")
	}
}

// A handshake that the peer never answers ends when ctx does, closes the
// insecure connection, and leaves no goroutine behind.
func TestContextCancel(t *testing.T) {
	a, b := newTransport(t), newTransport(t)
	for _, dir := range []string{"outbound", "inbound"} {
		t.Run(dir, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			cc, sc := tcpPair(t)
			defer sc.Close()           // before the leak check: it ends the silent peer
			go io.Copy(io.Discard, sc) // a silent peer
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(100*time.Millisecond, cancel)
			start := time.Now()
			var err error
			if dir == "outbound" {
				_, err = a.SecureOutbound(ctx, cc, b.localID)
			} else {
				_, err = a.SecureInbound(ctx, cc, "")
			}
			if !errors.Is(err, context.Canceled) {
				t.Errorf("error %v, want context.Canceled", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("returned after %v", d)
			}
			if _, err := cc.Write([]byte{0}); err == nil {
				t.Error("the insecure connection is still open")
			}
		})
	}
}

// The dialer refuses a responder with the wrong peer ID before it sends its
// own identity: the responder, a plain securepeer server here, never gets
// to see the dialer's key.
func TestWrongPeerLearnsNothing(t *testing.T) {
	a, other := newTransport(t), newTransport(t)
	id := newIdentity(t)
	cc, sc := tcpPair(t)
	seen := make(chan securepeer.PublicKey, 1)
	done := make(chan error, 1)
	go func() {
		c := securepeer.Server(sc, &securepeer.Config{Identity: id, Verify: func(_ context.Context, k securepeer.PublicKey) error {
			seen <- k
			return nil
		}})
		done <- c.Handshake()
	}()
	_, err := a.SecureOutbound(context.Background(), cc, other.localID)
	var mismatch sec.ErrPeerIDMismatch
	if !errors.As(err, &mismatch) {
		t.Fatalf("SecureOutbound: %v, want a peer ID mismatch", err)
	}
	if err := <-done; !errors.Is(err, securepeer.ErrRejected) {
		t.Errorf("the responder's handshake: %v, want ErrRejected", err)
	}
	select {
	case k := <-seen:
		t.Errorf("the responder saw the dialer's key %s", k)
	default:
	}
}

// ctx's deadline bounds the handshake even when it is further away than
// securepeer's default limit of 30 seconds; without one, that default
// applies.
func TestHandshakeTimeoutFromContext(t *testing.T) {
	if d := handshakeTimeout(context.Background()); d != 0 {
		t.Errorf("no deadline: HandshakeTimeout %v, want 0 (securepeer's default)", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if d := handshakeTimeout(ctx); d < 2*time.Minute-time.Second {
		t.Errorf("a 2-minute deadline: HandshakeTimeout %v, which would end the handshake first", d)
	}
	ctx, cancel = context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if d := handshakeTimeout(ctx); d <= 0 {
		t.Errorf("a past deadline: HandshakeTimeout %v, want a positive limit, not the default", d)
	}
}

// A dialer that comes back to a peer resumes with the ticket that peer
// gave it, keyed by peer ID, so it resumes at any address; the peer ID is
// checked as in a full handshake, and a ticket is never offered to another
// peer.
func TestResumption(t *testing.T) {
	a, b, c := newTransport(t), newTransport(t), newTransport(t)
	session := func(from, to *Transport) (out, in securepeer.ConnectionState) {
		t.Helper()
		o, i := handshake(t, from, to, to.localID, from.localID)
		if o.err != nil || i.err != nil {
			t.Fatal(o.err, i.err)
		}
		// The ticket comes before the listener's first record.
		go i.conn.Write([]byte("x"))
		if _, err := io.ReadFull(o.conn, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		if o.conn.RemotePeer() != to.localID || i.conn.RemotePeer() != from.localID {
			t.Fatal("wrong peer IDs")
		}
		return o.conn.(*Conn).SecurepeerState(), i.conn.(*Conn).SecurepeerState()
	}
	for n, want := range []bool{false, true, true} {
		out, in := session(a, b)
		if out.DidResume != want || in.DidResume != want || !out.PostQuantum || !in.PostQuantum {
			t.Fatalf("connection %d: DidResume %v/%v, PostQuantum %v/%v; want resumed %v, post-quantum", n, out.DidResume, in.DidResume, out.PostQuantum, in.PostQuantum, want)
		}
	}
	if out, _ := session(a, c); out.DidResume {
		t.Fatal("a ticket of one peer was used with another")
	}
	// A peer that no longer honours a's ticket (b's keys were replaced)
	// costs a full handshake, not a failure.
	b.base.SetSessionTicketKeys([][32]byte{{9}})
	if out, _ := session(a, b); out.DidResume {
		t.Fatal("resumed with a ticket whose key was dropped")
	}
	// A ticket of b, offered to c at b's expected peer ID: refused as a
	// peer ID mismatch, as without a ticket.
	session(a, b)
	o, _ := handshake(t, a, c, b.localID, "")
	if !errors.As(o.err, new(sec.ErrPeerIDMismatch)) {
		t.Fatalf("dialing b's peer ID at c: %v, want ErrPeerIDMismatch", o.err)
	}
}

func TestVerifyInbound(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	allowed, refused := newTransport(t), newTransport(t)
	errRefused := errors.New("not on the test's list")
	var asked []peer.ID
	b, err := NewWithOptions(Options{VerifyInbound: func(_ context.Context, key securepeer.PublicKey) error {
		pub, err := crypto.UnmarshalEd25519PublicKey(key.Ed25519())
		if err != nil {
			return err
		}
		id, err := peer.IDFromPublicKey(pub)
		if err != nil {
			return err
		}
		asked = append(asked, id)
		if id != allowed.localID {
			return errRefused
		}
		return nil
	}})(ID, newKey(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		from *Transport
		want error
	}{
		{"allowed", allowed, nil},
		{"refused", refused, errRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, in := handshake(t, tc.from, b, b.localID, "")
			if !errors.Is(in.err, tc.want) {
				t.Fatalf("inbound error %v, want %v", in.err, tc.want)
			}
			if tc.want == nil {
				if out.err != nil {
					t.Fatalf("outbound error %v", out.err)
				}
				return
			}
			// The initiator has finished its handshake and learns of the
			// refusal at its first read.
			if out.err == nil {
				_, out.err = out.conn.Read(make([]byte, 1))
			}
			if !errors.Is(out.err, securepeer.ErrRejected) {
				t.Errorf("outbound error %v, want ErrRejected", out.err)
			}
		})
	}
	if len(asked) != 2 || asked[0] != allowed.localID || asked[1] != refused.localID {
		t.Errorf("VerifyInbound was asked about %v, want %s then %s", asked, allowed.localID, refused.localID)
	}
	// An initiator's Verify checks only the peer ID: VerifyInbound is not
	// asked about a host that b dials.
	asked = nil
	if out, in := handshake(t, b, allowed, allowed.localID, ""); out.err != nil || in.err != nil {
		t.Fatalf("b dialing: outbound %v, inbound %v", out.err, in.err)
	}
	if len(asked) != 0 {
		t.Errorf("VerifyInbound was asked about %v when b dialed", asked)
	}
}
