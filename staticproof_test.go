package securepeer

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh/agent"
)

// at is a time of day on one fixed date, UTC.
func at(hour, min int) time.Time { return time.Date(2030, 1, 1, hour, min, 0, 0, time.UTC) }

// TestProofExpiry checks the expiry a signer signs at each time, and which
// expiries a verifier accepts, against PROTOCOL.md's rule: the signer signs
// the hour nearest to one hour from now; a verifier accepts the next two
// hours.
func TestProofExpiry(t *testing.T) {
	tests := []struct {
		now      time.Time
		signs    time.Time
		accepted [2]time.Time
	}{
		{at(10, 0), at(11, 0), [2]time.Time{at(11, 0), at(12, 0)}},
		{at(10, 5), at(11, 0), [2]time.Time{at(11, 0), at(12, 0)}},
		{at(10, 29), at(11, 0), [2]time.Time{at(11, 0), at(12, 0)}},
		{at(10, 30), at(12, 0), [2]time.Time{at(12, 0), at(11, 0)}},
		{at(10, 59), at(12, 0), [2]time.Time{at(12, 0), at(11, 0)}},
		{time.Unix(-1, 0), time.Unix(3600, 0), [2]time.Time{time.Unix(3600, 0), time.Unix(0, 0)}},
	}
	for _, tt := range tests {
		if got := proofNotAfter(tt.now); got != tt.signs.Unix() {
			t.Errorf("at %v: signs until %v, want %v", tt.now, time.Unix(got, 0).UTC(), tt.signs)
		}
		got := acceptedNotAfters(tt.now)
		if got[0] != tt.accepted[0].Unix() || got[1] != tt.accepted[1].Unix() {
			t.Errorf("at %v: accepts %v, %v, want %v", tt.now, time.Unix(got[0], 0).UTC(), time.Unix(got[1], 0).UTC(), tt.accepted)
		}
	}
}

// TestTimedProofVerification signs the timed statement at one time and
// verifies it at others: a proof serves from when it is signed until its
// expiry, and verifiers whose clocks differ from the signer's by less than
// half an hour accept it.
func TestTimedProofVerification(t *testing.T) {
	id := testIdentity(t, 3)
	static := id.static.PublicKey().Bytes()
	tests := []struct {
		name         string
		signed, seen time.Time
		want         bool
	}{
		{"at once", at(10, 5), at(10, 5), true},
		{"until its expiry", at(10, 5), at(10, 59), true},
		{"not at its expiry", at(10, 5), at(11, 0), false},
		{"a renewed proof", at(10, 30), at(11, 59), true},
		{"a verifier 29 minutes behind", at(10, 30), at(10, 1), true},
		{"a verifier 29 minutes ahead", at(10, 29), at(10, 58), true},
		{"a verifier 31 minutes behind", at(10, 30), at(9, 59), false},
		{"a proof for two hours on", at(12, 40), at(10, 0), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			forgetProofs()
			sig := ed25519.Sign(id.priv, timedSignedMessage(static, proofNotAfter(tt.signed)))
			if got := verifyStaticProof(id.pub.key[:], static, sig, tt.seen); got != tt.want {
				t.Errorf("signed at %v, verified at %v: %v, want %v", tt.signed, tt.seen, got, tt.want)
			}
			// The cache must not make an expired proof valid.
			if got := verifyStaticProof(id.pub.key[:], static, sig, tt.seen); got != tt.want {
				t.Errorf("again, with the cache: %v, want %v", got, tt.want)
			}
		})
	}
	// The permanent statement verifies at any time; the timed label is
	// not interchangeable with it.
	perm := ed25519.Sign(id.priv, staticSignedMessage(static))
	if !verifyStaticProof(id.pub.key[:], static, perm, at(0, 0)) || !verifyStaticProof(id.pub.key[:], static, perm, time.Unix(1<<40, 0)) {
		t.Error("the permanent statement was refused")
	}
	if verifyStaticProof(id.pub.key[:], id.static.PublicKey().Bytes()[1:], perm, at(0, 0)) {
		t.Error("a proof verified for another static key")
	}
}

// A testSigner is a crypto.Signer whose key can be removed, as ssh-add -d
// removes a key from an agent, and which counts the times it is asked.
type testSigner struct {
	key ed25519.PrivateKey

	mu       sync.Mutex
	removed  bool
	attempts int
	entered  chan struct{} // if not nil, closed when Sign is next called
	gate     chan struct{} // if not nil, Sign then waits for it to close
}

var errRemoved = errors.New("agent: failure")

func (s *testSigner) Public() crypto.PublicKey { return s.key.Public() }

func (s *testSigner) Sign(_ io.Reader, msg []byte, _ crypto.SignerOpts) ([]byte, error) {
	s.mu.Lock()
	s.attempts++
	gate := s.gate
	if s.entered != nil {
		close(s.entered)
		s.entered = nil
	}
	s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.removed {
		return nil, errRemoved
	}
	return ed25519.Sign(s.key, msg), nil
}

func (s *testSigner) set(removed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removed = removed
}

func (s *testSigner) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts
}

// handshakeAt runs a handshake between id, as client at the time mine, and
// a file-backed server pinning it, at the time theirs.
func handshakeAt(t *testing.T, id *Identity, mine, theirs time.Time) (cerr, serr error) {
	t.Helper()
	server := testIdentity(t, 2)
	a, b := tcpPair(t)
	x := Client(a, &Config{Identity: id, Verify: pin(server.PublicKey()), Time: func() time.Time { return mine }, HandshakeTimeout: 5 * time.Second})
	y := Server(b, &Config{Identity: server, Verify: pin(id.PublicKey()), Time: func() time.Time { return theirs }, HandshakeTimeout: 5 * time.Second})
	srv := run(func() error {
		err := y.Handshake()
		b.Close()
		return err
	})
	cerr = x.Handshake()
	a.Close()
	return cerr, wait(t, srv)
}

// TestSignerIdentityLifetime follows a signer-backed identity through
// time: it renews its proof while the signer signs, once an hour; once
// the key is removed, its last proof serves until it expires, then every
// handshake fails clearly; the signer is asked again at most once a
// minute; a peer refuses an expired proof; and a key put back restores
// the identity.
func TestSignerIdentityLifetime(t *testing.T) {
	signer := &testSigner{key: testIdentity(t, 4).priv}
	id, err := NewIdentityFromSigner(signer)
	if err != nil {
		t.Fatal(err)
	}
	base := signer.count()
	steps := []struct {
		name         string
		mine, theirs time.Time
		removed      bool
		wantOK       bool
		wantAsked    int // how often the signer was asked since the identity was made
		wantErr      error
	}{
		{"first handshake signs for 11:00", at(10, 5), at(10, 5), false, true, 1, nil},
		{"same hour: the signer is not asked", at(10, 25), at(10, 25), false, true, 1, nil},
		{"half past: renewed for 12:00", at(10, 35), at(10, 35), false, true, 2, nil},
		{"key removed: the proof for 12:00 serves", at(11, 50), at(11, 50), true, true, 3, nil},
		{"within the minute: the signer is not asked again", at(11, 50), at(11, 50), true, true, 3, nil},
		{"expired: the handshake fails, nothing is sent", at(12, 0), at(12, 0), true, false, 4, ErrSignerUnavailable},
		{"a peer refuses the expired proof of a clock behind", at(11, 59), at(12, 1), true, false, 5, errAuth},
		{"key back: renewed", at(12, 5), at(12, 5), false, true, 6, nil},
	}
	for _, st := range steps {
		signer.set(st.removed)
		cerr, serr := handshakeAt(t, id, st.mine, st.theirs)
		switch {
		case st.wantOK && (cerr != nil || serr != nil):
			t.Fatalf("%s: handshake failed: %v / %v", st.name, cerr, serr)
		case !st.wantOK && cerr == nil && serr == nil:
			t.Fatalf("%s: the handshake completed", st.name)
		case st.wantErr == ErrSignerUnavailable && !errors.Is(cerr, ErrSignerUnavailable):
			t.Fatalf("%s: %v, want ErrSignerUnavailable", st.name, cerr)
		case st.wantErr == errAuth && !errors.Is(serr, errAuth):
			t.Fatalf("%s: the peer got %v, want the authentication failure", st.name, serr)
		}
		if st.wantErr == ErrSignerUnavailable && !strings.Contains(cerr.Error(), "expired at 2030-01-01T12:00:00Z") {
			t.Errorf("%s: %q does not say when the proof expired", st.name, cerr)
		}
		if got := signer.count() - base; got != st.wantAsked {
			t.Fatalf("%s: the signer was asked %d times, want %d", st.name, got, st.wantAsked)
		}
	}
}

// Handshakes that find the proof due for renewal while another renews it
// do not wait for the signer, and the signer is asked once.
func TestSignerRenewalDoesNotBlock(t *testing.T) {
	signer := &testSigner{key: testIdentity(t, 4).priv}
	id, err := NewIdentityFromSigner(signer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := id.staticProof(context.Background(), at(10, 5)); err != nil {
		t.Fatal(err)
	}
	old, _ := id.staticProof(context.Background(), at(10, 5))
	base := signer.count()
	gate, entered := make(chan struct{}), make(chan struct{})
	signer.mu.Lock()
	signer.gate, signer.entered = gate, entered
	signer.mu.Unlock()
	renewing := run(func() error { _, err := id.staticProof(context.Background(), at(10, 35)); return err })
	<-entered // the renewal is with the signer
	for range 8 {
		sig, err := id.staticProof(context.Background(), at(10, 35))
		if err != nil || string(sig) != string(old) {
			t.Fatalf("a handshake during the renewal got %x, %v; want the current proof at once", sig, err)
		}
	}
	close(gate)
	if err := wait(t, renewing); err != nil {
		t.Fatal(err)
	}
	if got := signer.count() - base; got != 1 {
		t.Errorf("the signer was asked %d times, want 1", got)
	}

	// Past the proof's expiry, a handshake waits for the signer another
	// asks, but no longer than its context allows.
	gate, entered = make(chan struct{}), make(chan struct{})
	signer.mu.Lock()
	signer.gate, signer.entered = gate, entered
	signer.mu.Unlock()
	renewing = run(func() error { _, err := id.staticProof(context.Background(), at(13, 5)); return err })
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := id.staticProof(ctx, at(13, 5)); !errors.Is(err, ErrSignerUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("a handshake whose context ended while the signer was asked: %v", err)
	}
	close(gate)
	if err := wait(t, renewing); err != nil {
		t.Fatal(err)
	}
}

// TestTimedProofExample checks the worked example of a timed proof in
// PROTOCOL.md, "Identities and static keys".
func TestTimedProofExample(t *testing.T) {
	id := testIdentity(t, 1)
	static := id.static.PublicKey().Bytes()
	notAfter := proofNotAfter(time.Unix(1893492000, 0)) // 2030-01-01T10:00:00Z
	msg := timedSignedMessage(static, notAfter)
	sig := ed25519.Sign(id.priv, msg)
	spec, err := os.ReadFile("PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"seed":          strings.Repeat("01", 32),
		"static_public": hex.EncodeToString(static),
		"not_after":     "0000000070dc7330",
		"message":       hex.EncodeToString(msg),
		"signature":     hex.EncodeToString(sig),
	} {
		if !strings.Contains(string(spec), name+" = "+want) {
			t.Errorf("PROTOCOL.md does not give %s = %s", name, want)
		}
	}
}

// TestAgentKeyRemoved runs a real ssh-agent: an identity whose key it
// holds renews its proof through it; after ssh-add -d the last proof
// serves until it expires, and then the identity stops working, with an
// error that says why. The clock is Config.Time: nothing sleeps.
func TestAgentKeyRemoved(t *testing.T) {
	sock, keyPath, _ := startAgent(t)
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	signers, err := agent.NewClient(conn).Signers()
	if err != nil || len(signers) != 1 {
		t.Fatalf("agent signers: %d, %v", len(signers), err)
	}
	id, err := NewIdentityFromSSHSigner(signers[0])
	if err != nil {
		t.Fatal(err)
	}
	// The proof made now is not valid in 2030: this handshake works only
	// if the agent signs a new one.
	if cerr, serr := handshakeAt(t, id, at(10, 5), at(10, 5)); cerr != nil || serr != nil {
		t.Fatalf("with the key in the agent: %v / %v", cerr, serr)
	}
	sshAdd(t, sock, "-d", keyPath)
	if cerr, serr := handshakeAt(t, id, at(10, 40), at(10, 40)); cerr != nil || serr != nil {
		t.Fatalf("after ssh-add -d, before the proof expires: %v / %v", cerr, serr)
	}
	cerr, _ := handshakeAt(t, id, at(11, 0), at(11, 0))
	if !errors.Is(cerr, ErrSignerUnavailable) {
		t.Fatalf("after ssh-add -d, once the proof expired: %v, want ErrSignerUnavailable", cerr)
	}
	t.Log(cerr)
}
