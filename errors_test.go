package securepeer

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/securepeer/securepeer/internal/pkgerr"
)

// checkNamedOnce checks that err, returned by this package, names it once,
// at the start, and that a program that prints the name itself gets the
// rest without parsing text, from pkgerr.Unnamed.
func checkNamedOnce(t *testing.T, err error) {
	t.Helper()
	msg := err.Error()
	if !strings.HasPrefix(msg, "securepeer: ") || strings.Count(msg, "securepeer: ") != 1 {
		t.Errorf("%q does not name the package exactly once, at the start", msg)
	}
	if rest := pkgerr.Unnamed(err).Error(); "securepeer: "+rest != msg {
		t.Errorf("pkgerr.Unnamed(%q) = %q (%T), not the text after the name", msg, rest, err)
	}
}

// TestErrorsNameThePackageOnce drives real failures, in the handshake, the
// record layer and the identity functions, and checks each error names the
// package once, however deep the sentinel or error it wraps, and still
// matches what callers branch on.
func TestErrorsNameThePackageOnce(t *testing.T) {
	dir := t.TempDir()
	enc, err := testIdentity(t, 1).MarshalOpenSSHWithPassphrase("", []byte("right"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		run  func(t *testing.T) error
		is   error // nil: none to match
	}{
		{"handshake timeout", func(t *testing.T) error {
			a, b := net.Pipe()
			defer b.Close()
			defer a.Close()
			go io.Copy(io.Discard, b)
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			return Client(a, &Config{Identity: testIdentity(t, 1)}).HandshakeContext(ctx)
		}, ErrHandshakeTimeout},
		{"own key refused", func(t *testing.T) error {
			a, b := tcpPair(t)
			defer a.Close()
			defer b.Close()
			id := testIdentity(t, 5)
			go Server(b, &Config{Identity: id}).Handshake()
			return Client(a, &Config{Identity: id}).Handshake()
		}, ErrOwnKey},
		{"rejection", func(t *testing.T) error {
			a, b := tcpPair(t)
			defer a.Close()
			defer b.Close()
			go Server(b, &Config{Identity: testIdentity(t, 2)}).Handshake()
			return Client(a, &Config{Identity: testIdentity(t, 1), Verify: rejectAll}).Handshake()
		}, errNotAllowed},
		{"no cipher in common", func(t *testing.T) error {
			a, b := tcpPair(t)
			defer a.Close()
			defer b.Close()
			go Server(b, &Config{Identity: testIdentity(t, 2), Ciphers: []Cipher{AES128GCM}}).Handshake()
			return Client(a, &Config{Identity: testIdentity(t, 1), Ciphers: []Cipher{ChaCha20Poly1305}}).Handshake()
		}, ErrNoCommonCipher},
		{"a Node secure-peer hello", func(t *testing.T) error {
			a, b := net.Pipe()
			defer a.Close()
			go func() {
				b.Write([]byte(`{"hi":1}`))
				b.Close()
			}()
			return Server(a, &Config{Identity: testIdentity(t, 2)}).Handshake()
		}, ErrLegacyPeer},
		{"the peer aborts the stream", func(t *testing.T) error {
			a, b := tcpPair(t)
			x, y := Client(a, &Config{Identity: testIdentity(t, 1)}), Server(b, &Config{Identity: testIdentity(t, 2)})
			defer x.Close()
			go func() {
				if y.Handshake() == nil {
					y.Abort()
				}
			}()
			_, err := x.Read(make([]byte, 1))
			return err
		}, ErrAborted},
		{"truncated stream", func(t *testing.T) error {
			a, b := tcpPair(t)
			x, y := Client(a, &Config{Identity: testIdentity(t, 1)}), Server(b, &Config{Identity: testIdentity(t, 2)})
			defer x.Close()
			go func() {
				if y.Handshake() == nil {
					b.Close()
				}
			}()
			_, err := x.Read(make([]byte, 1))
			return err
		}, io.ErrUnexpectedEOF},
		{"wrong passphrase, from a file", func(t *testing.T) error {
			p := filepath.Join(dir, "enc")
			if err := os.WriteFile(p, enc, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadIdentityWithPassphrase(p, []byte("wrong"))
			return err
		}, ErrWrongPassphrase},
		{"passphrase needed", func(t *testing.T) error {
			_, err := ParseIdentity(enc)
			return err
		}, ErrPassphraseNeeded},
		{"identity file mode", func(t *testing.T) error {
			p := filepath.Join(dir, "open")
			data, err := testIdentity(t, 1).MarshalOpenSSH("")
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err = LoadIdentity(p)
			return err
		}, ErrIdentityFileMode},
		{"write after the stream broke", func(t *testing.T) error {
			a, b := tcpPair(t)
			x, y := Client(a, &Config{Identity: testIdentity(t, 1)}), Server(b, &Config{Identity: testIdentity(t, 2)})
			defer x.Close()
			go y.Handshake()
			if err := x.Handshake(); err != nil {
				t.Fatal(err)
			}
			a.SetWriteDeadline(time.Unix(1, 0))
			_, err := x.Write([]byte("x"))
			return err
		}, os.ErrDeadlineExceeded},
		{"malformed public key", func(t *testing.T) error {
			_, err := ParsePublicKey("ssh-ed25519 AAAA")
			return err
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run(t)
			if err == nil {
				t.Fatal("no error")
			}
			checkNamedOnce(t, err)
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("%q does not match %q", err, tt.is)
			}
		})
	}
}

// TestSentinelsNameNoPackage checks that the sentinels callers match state
// their fact alone, so that they read well inside any sentence, the
// command's included.
func TestSentinelsNameNoPackage(t *testing.T) {
	for _, err := range []error{
		ErrRejected, ErrNoCommonCipher, ErrNoCommonProtocol, ErrPeerNoCommonProtocol,
		ErrOwnKey, ErrHandshakeTimeout, ErrAborted, ErrLegacyPeer, ErrIdentityFileMode,
		ErrNotEd25519, ErrPassphraseNeeded, ErrWrongPassphrase, ErrSignerUnavailable,
	} {
		if strings.Contains(err.Error(), "securepeer:") {
			t.Errorf("sentinel %q names the package", err)
		}
	}
}
