package legacy

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseKeys(t *testing.T) {
	file, err := os.ReadFile(filepath.Join("testdata", "keys", "a.json"))
	if err != nil {
		t.Fatal(err)
	}
	a := testKeys(t, "a")
	pkcs8, err := x509.MarshalPKCS8PrivateKey(a.priv)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8PEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}))
	spkiPEM := pemOf(t, a.Public(), true)
	enc := strings.Replace(a.privatePEM, "-----BEGIN RSA PRIVATE KEY-----\n", "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00000000000000000000000000000000\n\n", 1)
	rsaJSON := func(priv, pub string) []byte {
		return []byte(`{"private":` + jsString(priv) + `,"public":` + jsString(pub) + `}`)
	}
	tests := []struct {
		name    string
		data    []byte
		errSub  string
		wantPub string // the PEM sent to peers
	}{
		{name: "rsa-json file", data: file, wantPub: a.PublicPEM()},
		{name: "PKCS #8 private, SPKI public", data: rsaJSON(pkcs8PEM, spkiPEM), wantPub: spkiPEM},
		{name: "no public", data: []byte(`{"private":` + jsString(a.privatePEM) + `}`), wantPub: MarshalPublicKey(a.Public())},
		{name: "not JSON", data: []byte("-----BEGIN RSA PRIVATE KEY-----"), errSub: "not rsa-json"},
		{name: "no private", data: []byte(`{"public":` + jsString(a.PublicPEM()) + `}`), errSub: `no "private" key`},
		{name: "private not PEM", data: rsaJSON("MIIE", ""), errSub: "not a PEM block"},
		{name: "private encrypted", data: rsaJSON(enc, ""), errSub: "encrypted"},
		{name: "private is public", data: rsaJSON(a.PublicPEM(), ""), errSub: "unsupported private key PEM type"},
		{name: "public of another key", data: rsaJSON(a.privatePEM, testKeys(t, "b").PublicPEM()), errSub: "does not belong"},
		{name: "public garbage", data: rsaJSON(a.privatePEM, "nope"), errSub: "not a PEM block"},
		{name: "too large", data: bytes.Repeat([]byte(" "), maxKeyFile+1), errSub: "larger than 64 KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseKeys(tt.data)
			if tt.errSub != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errSub) || !strings.HasPrefix(err.Error(), "legacy: ") {
					t.Fatalf("ParseKeys = %v, want an error containing %q", err, tt.errSub)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.PublicPEM() != tt.wantPub {
				t.Errorf("PublicPEM = %q, want %q", k.PublicPEM(), tt.wantPub)
			}
			if !k.Public().Equal(a.Public()) {
				t.Error("wrong key")
			}
		})
	}
}

func TestKeysMarshalJSON(t *testing.T) {
	file, err := os.ReadFile(filepath.Join("testdata", "keys", "a.json"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := testKeys(t, "a").MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	// The same bytes as rsa-json wrote, less the final newline.
	if string(out) != strings.TrimSuffix(string(file), "\n") {
		t.Errorf("MarshalJSON =\n%s\nwant\n%s", out, file)
	}
}

func TestGenerateKeys(t *testing.T) {
	for _, bits := range []int{0, 1024, 2047, 8193} {
		if _, err := GenerateKeys(bits); err == nil {
			t.Errorf("GenerateKeys(%d) succeeded", bits)
		}
	}
	k, err := GenerateKeys(2048)
	if err != nil {
		t.Fatal(err)
	}
	if k.Public().N.BitLen() != 2048 || !strings.HasPrefix(k.PublicPEM(), "-----BEGIN RSA PUBLIC KEY-----\n") {
		t.Errorf("unexpected key: %d bits, %q", k.Public().N.BitLen(), k.PublicPEM())
	}
	data, err := k.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"private": "-----BEGIN RSA PRIVATE KEY-----\n`) {
		t.Errorf("MarshalJSON = %s", data)
	}
	back, err := ParseKeys(data)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Public().Equal(k.Public()) || back.PublicPEM() != k.PublicPEM() {
		t.Error("the marshalled keys parse to a different key")
	}
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if loaded, err := LoadKeys(path); err != nil || !loaded.Public().Equal(k.Public()) {
		t.Errorf("LoadKeys = %v", err)
	}
	if _, err := LoadKeys(filepath.Join(t.TempDir(), "missing.json")); err == nil || !strings.HasPrefix(err.Error(), "legacy: ") {
		t.Errorf("LoadKeys(missing) = %v", err)
	}
}

func TestNewKeys(t *testing.T) {
	if _, err := NewKeys(nil); err == nil {
		t.Error("NewKeys(nil) succeeded")
	}
	k, err := NewKeys(testKeys(t, "b").priv)
	if err != nil {
		t.Fatal(err)
	}
	if k.PublicPEM() != testKeys(t, "b").PublicPEM() {
		t.Error("NewKeys does not give rsa-json's PKCS #1 public PEM")
	}
}

func TestFingerprint(t *testing.T) {
	a, b := testKeys(t, "a").Public(), testKeys(t, "b").Public()
	fa := Fingerprint(a)
	if !strings.HasPrefix(fa, "SHA256:") || len(fa) != len("SHA256:")+43 {
		t.Errorf("Fingerprint = %q", fa)
	}
	if fa == Fingerprint(b) || fa != Fingerprint(&rsa.PublicKey{N: a.N, E: a.E}) {
		t.Error("fingerprints do not follow the key")
	}
}

func TestParsePublicKey(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	for _, spki := range []bool{false, true} {
		pub, err := ParsePublicKey([]byte(pemOf(t, &k.PublicKey, spki) + "\n\n"))
		if err != nil || !pub.Equal(&k.PublicKey) {
			t.Errorf("spki=%v: %v", spki, err)
		}
	}
}
