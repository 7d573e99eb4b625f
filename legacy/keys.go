package legacy

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"os"
	"strings"
)

// Key size limits. Go refuses RSA keys under 1024 bits (the secure-peer
// module's own example keys are 1008 bits and cannot be used); the upper
// bound caps the cost of verifying a peer's signatures.
const (
	// MinKeyBits is the smallest RSA modulus accepted from a peer or a key file.
	MinKeyBits = 1024
	// MaxKeyBits is the largest RSA modulus accepted from a peer or a key file.
	MaxKeyBits = 8192
	// MinGenerateBits is the smallest size [GenerateKeys] makes.
	MinGenerateBits = 2048

	// maxKeyFile bounds what [LoadKeys] and [ParseKeys] read.
	maxKeyFile = 64 << 10
)

// Keys is an RSA key pair in the form the Node module uses: the rsa-json
// JSON object {"private": PEM, "public": PEM}. The public PEM is kept exactly
// as the file spells it, because secure-peer sends it verbatim in its header
// and Node applications often pin that string.
//
// Keys is immutable and safe for concurrent use by many connections.
type Keys struct {
	priv       *rsa.PrivateKey
	privatePEM string
	publicPEM  string
}

// GenerateKeys returns a new RSA key pair of the given size in bits, which
// must be between [MinGenerateBits] and [MaxKeyBits]. Both halves are PKCS #1
// PEM, as rsa-json writes them.
func GenerateKeys(bits int) (*Keys, error) {
	if bits < MinGenerateBits || bits > MaxKeyBits {
		return nil, errorf("key size %d bits is out of range; use %d to %d (2048 or 3072 is usual)", bits, MinGenerateBits, MaxKeyBits)
	}
	priv, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, errorf("generating RSA key: %w", err)
	}
	return NewKeys(priv)
}

// NewKeys returns the Keys for an RSA private key, with PKCS #1 PEM for both
// halves. It is the way in for keys that live elsewhere.
func NewKeys(priv *rsa.PrivateKey) (*Keys, error) {
	if priv == nil {
		return nil, newError("nil RSA private key")
	}
	if err := checkKeySize(&priv.PublicKey, "private key"); err != nil {
		return nil, err
	}
	if err := priv.Validate(); err != nil {
		return nil, errorf("invalid RSA private key: %w", err)
	}
	privPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)})
	return &Keys{
		priv:       priv,
		privatePEM: string(privPEM),
		publicPEM:  MarshalPublicKey(&priv.PublicKey),
	}, nil
}

// LoadKeys reads an rsa-json key file, as [ParseKeys] does. Files larger
// than 64 KiB are refused.
func LoadKeys(path string) (*Keys, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, errorf("%w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, errorf("reading %s: %w", path, err)
	}
	k, err := ParseKeys(data)
	if err != nil {
		return nil, errorf("%w (in %s)", err, path)
	}
	return k, nil
}

// ParseKeys parses the rsa-json form {"private": PEM, "public": PEM} that
// the Node module loads with require('./keys.json'). The private key is
// PKCS #1 ("RSA PRIVATE KEY") or unencrypted PKCS #8 ("PRIVATE KEY"); the
// public key is PKCS #1 ("RSA PUBLIC KEY") or SPKI ("PUBLIC KEY") and must
// match the private key. If "public" is missing, a PKCS #1 PEM is derived.
func ParseKeys(data []byte) (*Keys, error) {
	if len(data) > maxKeyFile {
		return nil, newError("key file is larger than 64 KiB")
	}
	var file struct {
		Private *string `json:"private"`
		Public  *string `json:"public"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		return nil, errorf("key file is not rsa-json ({\"private\": PEM, \"public\": PEM}): %w", err)
	}
	if file.Private == nil {
		return nil, newError(`key file has no "private" key; a public key alone cannot sign the handshake`)
	}
	priv, err := parsePrivateKey(*file.Private)
	if err != nil {
		return nil, err
	}
	if err := priv.Validate(); err != nil {
		return nil, errorf("invalid RSA private key: %w", err)
	}
	k := &Keys{priv: priv, privatePEM: *file.Private}
	if file.Public == nil || *file.Public == "" {
		k.publicPEM = MarshalPublicKey(&priv.PublicKey)
		return k, nil
	}
	pub, err := ParsePublicKey([]byte(*file.Public))
	if err != nil {
		return nil, err
	}
	if !pub.Equal(&priv.PublicKey) {
		return nil, newError(`key file's "public" key does not belong to its "private" key`)
	}
	k.publicPEM = *file.Public
	return k, nil
}

// onePEMBlock decodes the one PEM block of b, what, after which nothing
// but whitespace may follow.
func onePEMBlock(b []byte, what string) (*pem.Block, error) {
	block, rest := pem.Decode(b)
	if block == nil {
		return nil, errorf("%s is not a PEM block", what)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errorf("%s has data after its PEM block", what)
	}
	return block, nil
}

func parsePrivateKey(s string) (*rsa.PrivateKey, error) {
	block, err := onePEMBlock([]byte(s), `key file's "private" value`)
	if err != nil {
		return nil, err
	}
	if _, ok := block.Headers["Proc-Type"]; ok {
		return nil, newError("the private key is encrypted; secure-peer keys are unencrypted (openssl rsa -in KEY -traditional removes the passphrase)")
	}
	var priv *rsa.PrivateKey
	switch block.Type {
	case "RSA PRIVATE KEY":
		var err error
		priv, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, errorf("parsing PKCS #1 private key: %w", err)
		}
	case "PRIVATE KEY":
		key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, errorf("parsing PKCS #8 private key: %w", err)
		}
		var ok bool
		if priv, ok = key.(*rsa.PrivateKey); !ok {
			return nil, errorf("the private key is %s, not RSA", keyKind(key))
		}
	default:
		return nil, errorf("unsupported private key PEM type %q; want \"RSA PRIVATE KEY\" or \"PRIVATE KEY\"", block.Type)
	}
	if err := checkKeySize(&priv.PublicKey, "private key"); err != nil {
		return nil, err
	}
	return priv, nil
}

// ParsePublicKey parses one RSA public key in PEM, PKCS #1 ("RSA PUBLIC
// KEY", what rsa-json writes) or SPKI ("PUBLIC KEY"), as secure-peer peers
// send it. Nothing but whitespace may follow the PEM block. Keys outside
// [MinKeyBits] to [MaxKeyBits] are refused.
func ParsePublicKey(pemText []byte) (*rsa.PublicKey, error) {
	block, err := onePEMBlock(pemText, "public key")
	if err != nil {
		return nil, err
	}
	var pub *rsa.PublicKey
	switch block.Type {
	case "RSA PUBLIC KEY":
		var err error
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return nil, errorf("parsing PKCS #1 public key: %w", err)
		}
	case "PUBLIC KEY":
		key, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, errorf("parsing SPKI public key: %w", err)
		}
		var ok bool
		if pub, ok = key.(*rsa.PublicKey); !ok {
			return nil, errorf("the public key is %s, not RSA", keyKind(key))
		}
	default:
		return nil, errorf("unsupported public key PEM type %q; want \"RSA PUBLIC KEY\" or \"PUBLIC KEY\"", block.Type)
	}
	if err := checkKeySize(pub, "public key"); err != nil {
		return nil, err
	}
	return pub, nil
}

func checkKeySize(pub *rsa.PublicKey, what string) error {
	if pub.N == nil {
		return errorf("%s has no modulus", what)
	}
	if bits := pub.N.BitLen(); bits < MinKeyBits || bits > MaxKeyBits {
		return errorf("%s is %d bits; only %d to %d bits are accepted", what, bits, MinKeyBits, MaxKeyBits)
	}
	return nil
}

// MarshalPublicKey returns pub as PKCS #1 PEM ("-----BEGIN RSA PUBLIC
// KEY-----"), the form rsa-json writes and secure-peer applications compare.
func MarshalPublicKey(pub *rsa.PublicKey) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(pub)}))
}

// Fingerprint returns "SHA256:" and the unpadded base64 SHA-256 of pub's
// DER SubjectPublicKeyInfo, the value that
//
//	openssl pkey -pubin -in KEY.pem -outform DER | openssl dgst -sha256 -binary | base64
//
// prints (less its "=" padding) for an SPKI PEM key. It names a key in logs
// and pins; two keys are equal exactly when their fingerprints are.
func Fingerprint(pub *rsa.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		// Only unsupported key types fail, and pub is an RSA key.
		return "SHA256:?"
	}
	sum := sha256.Sum256(der)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// Public returns the public half of k.
func (k *Keys) Public() *rsa.PublicKey { return &k.priv.PublicKey }

// PublicPEM returns the public key PEM exactly as it is sent to peers.
func (k *Keys) PublicPEM() string { return k.publicPEM }

// MarshalJSON returns k in the rsa-json form {"private": PEM, "public":
// PEM}, indented by two spaces like rsa-json's output, so that the result
// can be written to a file that both this package and the Node module load.
// The result contains the private key: write it with mode 0600.
func (k *Keys) MarshalJSON() ([]byte, error) {
	var b strings.Builder
	b.WriteString("{\n  \"private\": ")
	b.WriteString(jsString(k.privatePEM))
	b.WriteString(",\n  \"public\": ")
	b.WriteString(jsString(k.publicPEM))
	b.WriteString("\n}")
	return []byte(b.String()), nil
}

// keyKind names a key's algorithm for an error message.
func keyKind(k any) string {
	switch k.(type) {
	case *ecdsa.PrivateKey, *ecdsa.PublicKey:
		return "ECDSA"
	case ed25519.PrivateKey, ed25519.PublicKey:
		return "Ed25519"
	case *ecdh.PrivateKey, *ecdh.PublicKey:
		return "ECDH"
	}
	return "of another kind"
}
