package libp2psec

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/securepeer/securepeer"
)

// TestSignerKey runs the handshake, both ways, with a host whose key is
// behind a signer (SignerKey and Options.Identity), against one with an
// ordinary key: the peer ID each side sees is the signer's key, what
// SignerKey signs verifies under it, and its bytes cannot be read.
func TestSignerKey(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := securepeer.NewIdentityFromSigner(opaqueSigner{priv})
	if err != nil {
		t.Fatal(err)
	}
	key, err := SignerKey(id.Signer())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := key.Raw(); !errors.Is(err, ErrKeyBehindSigner) {
		t.Errorf("Raw: %v, want ErrKeyBehindSigner", err)
	}
	if _, err := New(ID, key, muxerList("/yamux/1.0.0")); !errors.Is(err, ErrKeyBehindSigner) {
		t.Errorf("New without Options.Identity: %v, want ErrKeyBehindSigner", err)
	}
	sig, err := key.Sign([]byte("record"))
	if err != nil || !ed25519.Verify(priv.Public().(ed25519.PublicKey), []byte("record"), sig) {
		t.Fatalf("Sign: %v, or the signature does not verify", err)
	}
	behind, err := NewWithOptions(Options{Identity: id})(ID, key, muxerList("/yamux/1.0.0"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := peer.IDFromPublicKey(key.GetPublic())
	if err != nil || behind.localID != want {
		t.Fatalf("local peer ID %s (%v), want %s", behind.localID, err, want)
	}
	plain := newTransport(t, "/yamux/1.0.0")
	for _, tc := range []struct {
		name string
		a, b *Transport
	}{{"signer dials", behind, plain}, {"signer answers", plain, behind}} {
		t.Run(tc.name, func(t *testing.T) {
			out, in := handshake(t, tc.a, tc.b, tc.b.localID, "")
			if out.err != nil || in.err != nil {
				t.Fatalf("outbound: %v, inbound: %v", out.err, in.err)
			}
			if in.conn.RemotePeer() != tc.a.localID || out.conn.RemotePeer() != tc.b.localID {
				t.Errorf("peers seen: %s and %s", in.conn.RemotePeer(), out.conn.RemotePeer())
			}
		})
	}
}

// TestIdentityMustMatchKey checks that Options.Identity is refused when it
// is not the host key's.
func TestIdentityMustMatchKey(t *testing.T) {
	other := newIdentity(t)
	if _, err := NewWithOptions(Options{Identity: other})(ID, newKey(t), nil); err == nil {
		t.Fatal("an identity of another key was accepted")
	}
}

// opaqueSigner hides an Ed25519 key behind crypto.Signer, as an agent does.
type opaqueSigner struct{ key ed25519.PrivateKey }

func (s opaqueSigner) Public() crypto.PublicKey { return s.key.Public() }

func (s opaqueSigner) Sign(r io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.key.Sign(r, msg, opts)
}
