package securepeer

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"filippo.io/edwards25519"

	"golang.org/x/crypto/ssh"
)

// An Identity is a long-term Ed25519 key pair: the private half of what a
// peer proves during the handshake. On disk it is an OpenSSH private key, so
// a key made by ssh-keygen with "-t ed25519" and no passphrase is an
// Identity too.
//
// An Identity is immutable and safe for concurrent use by many connections.
type Identity struct {
	priv ed25519.PrivateKey // nil if the key lives behind a signer
	pub  PublicKey

	// static is the X25519 key this identity uses as its Noise static key,
	// derived from the Ed25519 seed (PROTOCOL.md, "Identities and static keys"), and
	// staticSig is the identity's permanent signature over its public half.
	// An identity behind a signer has a random static key and, instead of
	// staticSig, timed signatures that signer renews.
	static    *ecdh.PrivateKey
	staticSig []byte
	signer    *signerProof
}

// GenerateIdentity returns a new random Identity.
func GenerateIdentity() (*Identity, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, errorf("generating identity: %w", err)
	}
	return newIdentity(priv)
}

// NewIdentity returns the Identity for an Ed25519 private key. It is the way
// in for keys that live elsewhere, such as in a Go program's own storage.
func NewIdentity(key ed25519.PrivateKey) (*Identity, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, newError("an Ed25519 private key must be 64 bytes")
	}
	return newIdentity(key)
}

func newIdentity(priv ed25519.PrivateKey) (*Identity, error) {
	id := &Identity{priv: append(ed25519.PrivateKey(nil), priv...)}
	copy(id.pub.key[:], priv.Public().(ed25519.PublicKey))
	seed, err := hkdf.Key(sha256.New, priv.Seed(), nil, labelStaticKey, 32)
	if err != nil {
		return nil, errorf("deriving static key: %w", err)
	}
	defer clear(seed)
	id.static, err = ecdh.X25519().NewPrivateKey(seed)
	if err != nil {
		return nil, errorf("deriving static key: %w", err)
	}
	id.staticSig = ed25519.Sign(id.priv, staticSignedMessage(id.static.PublicKey().Bytes()))
	return id, nil
}

// ParseIdentity parses an unencrypted Ed25519 private key in the OpenSSH
// format ("-----BEGIN OPENSSH PRIVATE KEY-----") or in PKCS #8 PEM
// ("-----BEGIN PRIVATE KEY-----"). A key protected by a passphrase returns
// an error wrapping [ErrPassphraseNeeded]; [ParseIdentityWithPassphrase]
// reads it.
func ParseIdentity(data []byte) (*Identity, error) {
	raw, err := ssh.ParseRawPrivateKey(data)
	if err != nil {
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, errorf("%w", ErrPassphraseNeeded)
		}
		return nil, errorf("not an OpenSSH or PKCS #8 private key: %w", err)
	}
	return identityFromRaw(raw)
}

// ParseIdentityWithPassphrase parses an Ed25519 private key in the OpenSSH
// format encrypted with passphrase, as ssh-keygen writes it (bcrypt-pbkdf
// and AES-256-CTR, decrypted by golang.org/x/crypto/ssh). A wrong
// passphrase returns an error wrapping [ErrWrongPassphrase]; an
// unencrypted key is refused, so that a passphrase is never silently
// ignored.
func ParseIdentityWithPassphrase(data, passphrase []byte) (*Identity, error) {
	if _, err := ssh.ParseRawPrivateKey(data); err == nil {
		return nil, newError("a passphrase was given for a private key that has none")
	}
	raw, err := ssh.ParseRawPrivateKeyWithPassphrase(data, passphrase)
	switch {
	case errors.Is(err, x509.IncorrectPasswordError):
		return nil, errorf("%w", ErrWrongPassphrase)
	case err != nil:
		return nil, errorf("not an encrypted OpenSSH private key: %w", err)
	}
	return identityFromRaw(raw)
}

// NewIdentityFromSigner returns an Identity whose private key stays behind
// signer: an ssh-agent, a hardware token, a KMS. Its public key must be
// Ed25519. Such an identity has a Noise static key of its own, random
// rather than derived from the private key it cannot see, and proves it
// with a signature that expires (PROTOCOL.md, "Identities and static
// keys"): one made here, and a new one each hour, through signer, by the
// first handshake that needs it. So the identity works only while signer
// signs: once it no longer does (the key was removed from ssh-agent, or
// forwarding the agent ended), the last signature serves for at most an
// hour and a half, by the clocks of the handshakes ([Config.Time]), and
// then every handshake fails with an error wrapping
// [ErrSignerUnavailable]. A failed signer is asked again at most once a
// minute. signer must stay usable for as long as the identity is: an
// ssh-agent client must keep its connection, or connect anew for each
// signature. The identity cannot be written out with MarshalOpenSSH.
func NewIdentityFromSigner(signer crypto.Signer) (*Identity, error) {
	pub, ok := signer.Public().(ed25519.PublicKey)
	if !ok {
		return nil, errorf("%w (the signer's key is %s)", ErrNotEd25519, keyKind(signer.Public()))
	}
	id := &Identity{}
	var err error
	if id.pub, err = NewPublicKey(pub); err != nil {
		return nil, err
	}
	if id.static, err = ecdh.X25519().GenerateKey(rand.Reader); err != nil {
		return nil, errorf("generating static key: %w", err)
	}
	if id.signer, err = newSignerProof(signer, pub, id.static.PublicKey().Bytes(), time.Now()); err != nil {
		return nil, err
	}
	return id, nil
}

// staticProof returns the signature that proves, at now, that the identity
// vouches for its Noise static key: the permanent one, or the timed one of
// an identity behind a signer, renewed if needed.
func (id *Identity) staticProof(ctx context.Context, now time.Time) ([]byte, error) {
	if id.signer == nil {
		return id.staticSig, nil
	}
	return id.signer.proof(ctx, now)
}

// NewIdentityFromSSHSigner is [NewIdentityFromSigner] for an [ssh.Signer],
// such as a key held by ssh-agent (golang.org/x/crypto/ssh/agent).
func NewIdentityFromSSHSigner(signer ssh.Signer) (*Identity, error) {
	// An agent's key is an *agent.Key, which holds only the wire form.
	pk, err := ssh.ParsePublicKey(signer.PublicKey().Marshal())
	if err != nil {
		return nil, errorf("the ssh signer's public key: %w", err)
	}
	cpk, ok := pk.(ssh.CryptoPublicKey)
	if !ok {
		return nil, errorf("%w (the ssh signer's key is %s)", ErrNotEd25519, pk.Type())
	}
	return NewIdentityFromSigner(sshCryptoSigner{signer, cpk.CryptoPublicKey()})
}

// sshCryptoSigner is an ssh.Signer seen as a crypto.Signer.
type sshCryptoSigner struct {
	s   ssh.Signer
	pub crypto.PublicKey
}

func (s sshCryptoSigner) Public() crypto.PublicKey { return s.pub }

func (s sshCryptoSigner) Sign(r io.Reader, msg []byte, _ crypto.SignerOpts) ([]byte, error) {
	sig, err := s.s.Sign(r, msg)
	if err != nil {
		return nil, err
	}
	if sig.Format != ssh.KeyAlgoED25519 {
		return nil, fmt.Errorf("the ssh signer made a %s signature, not ssh-ed25519", sig.Format)
	}
	return sig.Blob, nil
}

func identityFromRaw(raw any) (*Identity, error) {
	switch k := raw.(type) {
	case *ed25519.PrivateKey:
		return NewIdentity(*k)
	case ed25519.PrivateKey:
		return NewIdentity(k)
	default:
		return nil, errorf("%w (this one is %s)", ErrNotEd25519, keyKind(raw))
	}
}

// LoadIdentity reads and parses the private key file at path, as
// [ParseIdentity] does. Like ssh, it refuses a file that users other than its
// owner may read or write.
func LoadIdentity(path string) (*Identity, error) {
	data, err := readIdentityFile(path)
	if err != nil {
		return nil, err
	}
	id, err := ParseIdentity(data)
	if err != nil {
		return nil, errorf("%w (in %s)", err, path)
	}
	return id, nil
}

// LoadIdentityWithPassphrase is [LoadIdentity] for a key encrypted with
// passphrase, as [ParseIdentityWithPassphrase] reads it.
func LoadIdentityWithPassphrase(path string, passphrase []byte) (*Identity, error) {
	data, err := readIdentityFile(path)
	if err != nil {
		return nil, err
	}
	id, err := ParseIdentityWithPassphrase(data, passphrase)
	if err != nil {
		return nil, errorf("%w (in %s)", err, path)
	}
	return id, nil
}

// readIdentityFile reads an identity file, with one open and every check
// on the file opened, so that the file read is the file checked (no race
// with a rename or a new symlink).
func readIdentityFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, errorf("reading identity: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, errorf("reading identity: %w", err)
	}
	switch {
	case fi.IsDir():
		return nil, errorf("identity %s is a directory, not a key file", path)
	case !fi.Mode().IsRegular():
		return nil, errorf("identity %s is not a regular file", path)
	case runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0:
		return nil, errorf("%w: %s (mode %04o)", ErrIdentityFileMode, path, fi.Mode().Perm())
	case fi.Size() > maxIdentityFile:
		return nil, errorf("identity file %s is %d bytes, too large for a key file", path, fi.Size())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxIdentityFile+1))
	if err != nil {
		return nil, errorf("reading identity: %w", err)
	}
	if len(data) > maxIdentityFile {
		return nil, errorf("identity file %s grew too large for a key file while being read", path)
	}
	return data, nil
}

// keyKind names a private key's algorithm for an error message.
func keyKind(k any) string {
	switch k.(type) {
	case *rsa.PrivateKey, *rsa.PublicKey:
		return "RSA"
	case *ecdsa.PrivateKey, *ecdsa.PublicKey:
		return "ECDSA"
	case *ecdh.PrivateKey, *ecdh.PublicKey:
		return "ECDH"
	}
	return "of another kind"
}

// maxIdentityFile bounds an identity file; an OpenSSH Ed25519 key is about
// 400 bytes.
const maxIdentityFile = 64 << 10

// PublicKey returns the public half of the identity.
func (id *Identity) PublicKey() PublicKey { return id.pub }

// Signer returns the identity's Ed25519 key as a crypto.Signer (sign with
// crypto.Hash(0), as for ed25519.PrivateKey), for a protocol that runs
// beside securepeer under the same key, such as go-libp2p's signed peer
// records in package p2p. For an identity behind a signer it is that
// signer, so each signature goes to it (ssh-agent, say). securepeer signs
// with the key only statements that begin with one of its labels
// (PROTOCOL.md, "Labels"), so what another protocol signs with it stands
// for none of them unless it begins with such a label; go-libp2p's
// signed envelopes begin with the length of their domain string.
func (id *Identity) Signer() crypto.Signer {
	if id.signer != nil {
		return id.signer.signer
	}
	return id.priv
}

// MarshalOpenSSH returns the identity as an unencrypted OpenSSH private key
// in PEM form, with comment stored in it, as ssh-keygen writes it.
func (id *Identity) MarshalOpenSSH(comment string) ([]byte, error) {
	if id.priv == nil {
		return nil, errNoPrivateKey
	}
	block, err := ssh.MarshalPrivateKey(id.priv, comment)
	if err != nil {
		return nil, errorf("encoding identity: %w", err)
	}
	return pem.EncodeToMemory(block), nil
}

// MarshalOpenSSHWithPassphrase returns the identity as an OpenSSH private
// key encrypted with passphrase, as ssh-keygen -N writes it.
func (id *Identity) MarshalOpenSSHWithPassphrase(comment string, passphrase []byte) ([]byte, error) {
	if id.priv == nil {
		return nil, errNoPrivateKey
	}
	if len(passphrase) == 0 {
		return nil, newError("an empty passphrase encrypts nothing; use MarshalOpenSSH")
	}
	block, err := ssh.MarshalPrivateKeyWithPassphrase(id.priv, comment, passphrase)
	if err != nil {
		return nil, errorf("encoding identity: %w", err)
	}
	return pem.EncodeToMemory(block), nil
}

var errNoPrivateKey = newError("the identity's private key is behind a signer, not in this process")

// A PublicKey is an Ed25519 public key: the identity of a peer. It is
// comparable, so it can be used as a map key; the zero value means no key.
type PublicKey struct {
	key [ed25519.PublicKeySize]byte
}

// NewPublicKey returns the PublicKey for an Ed25519 public key.
func NewPublicKey(key ed25519.PublicKey) (PublicKey, error) {
	var k PublicKey
	if len(key) != ed25519.PublicKeySize {
		return k, newError("an Ed25519 public key must be 32 bytes")
	}
	copy(k.key[:], key)
	if k.IsZero() {
		return k, newError("the all-zero Ed25519 public key is not a valid identity")
	}
	if err := checkPoint(key); err != nil {
		return PublicKey{}, err
	}
	return k, nil
}

// checkPoint rejects an Ed25519 public key that is not the canonical
// encoding of a point, or whose point has small order. Ed25519 verification
// as crypto/ed25519 does it accepts, for the neutral element, the signature
// R = neutral, S = 0 over any message; for other small-order points other
// signatures that prove nothing. A key generated by Ed25519 never has small
// order, so refusing them costs honest peers nothing (PROTOCOL.md,
// "Identities and static keys").
func checkPoint(key []byte) error {
	p, err := new(edwards25519.Point).SetBytes(key)
	if err != nil {
		return newError("the Ed25519 public key is not a valid curve point")
	}
	if !bytes.Equal(p.Bytes(), key) {
		return newError("the Ed25519 public key is not canonically encoded")
	}
	if new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1 {
		return newError("the Ed25519 public key has small order, so it proves no identity")
	}
	return nil
}

// ParsePublicKey parses a public key in the form of an authorized_keys or
// .pub file line, "ssh-ed25519 AAAA... [comment]". The comment is ignored.
func ParsePublicKey(s string) (PublicKey, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return PublicKey{}, newError("empty public key; expected \"ssh-ed25519 AAAA...\"")
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return PublicKey{}, errorf("malformed public key; expected \"ssh-ed25519 AAAA...\": %w", err)
	}
	if pk.Type() != ssh.KeyAlgoED25519 {
		return PublicKey{}, errorf("%s keys are not supported; securepeer identities are ssh-ed25519 keys", pk.Type())
	}
	cpk, ok := pk.(ssh.CryptoPublicKey)
	if !ok {
		return PublicKey{}, newError("malformed ssh-ed25519 public key")
	}
	edk, ok := cpk.CryptoPublicKey().(ed25519.PublicKey)
	if !ok {
		return PublicKey{}, newError("malformed ssh-ed25519 public key")
	}
	return NewPublicKey(edk)
}

// String returns the key in authorized_keys form, "ssh-ed25519 AAAA...",
// without a comment. The zero PublicKey returns "<none>".
func (k PublicKey) String() string {
	if k.IsZero() {
		return "<none>"
	}
	return ssh.KeyAlgoED25519 + " " + base64.StdEncoding.EncodeToString(k.sshWire())
}

// Fingerprint returns the key's SHA-256 fingerprint exactly as
// `ssh-keygen -lf` prints it, "SHA256:" followed by unpadded base64.
func (k PublicKey) Fingerprint() string {
	sum := sha256.Sum256(k.sshWire())
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// Ed25519 returns the key as an [ed25519.PublicKey], or nil for the zero
// PublicKey.
func (k PublicKey) Ed25519() ed25519.PublicKey {
	if k.IsZero() {
		return nil
	}
	return append(ed25519.PublicKey(nil), k.key[:]...)
}

// IsZero reports whether k is the zero PublicKey, which stands for no key.
func (k PublicKey) IsZero() bool { return k == PublicKey{} }

// Equal reports whether k and other are the same key, in constant time.
func (k PublicKey) Equal(other PublicKey) bool {
	return subtle.ConstantTimeCompare(k.key[:], other.key[:]) == 1
}

// MarshalText implements [encoding.TextMarshaler] with the form of
// [PublicKey.String].
func (k PublicKey) MarshalText() ([]byte, error) {
	if k.IsZero() {
		return nil, newError("cannot marshal the zero PublicKey")
	}
	return []byte(k.String()), nil
}

// UnmarshalText implements [encoding.TextUnmarshaler] with [ParsePublicKey].
func (k *PublicKey) UnmarshalText(text []byte) error {
	pk, err := ParsePublicKey(string(text))
	if err != nil {
		return err
	}
	*k = pk
	return nil
}

// sshWire returns the key in the SSH wire encoding: string "ssh-ed25519",
// string key.
func (k PublicKey) sshWire() []byte {
	const name = ssh.KeyAlgoED25519
	b := make([]byte, 0, 4+len(name)+4+len(k.key))
	b = append(b, 0, 0, 0, byte(len(name)))
	b = append(b, name...)
	b = append(b, 0, 0, 0, byte(len(k.key)))
	return append(b, k.key[:]...)
}
