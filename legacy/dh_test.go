package legacy

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"math/big"
	"strings"
	"testing"
)

func TestModp5(t *testing.T) {
	if modp5P.BitLen() != 1536 || !modp5P.ProbablyPrime(20) {
		t.Fatal("modp5P is not a 1536-bit prime")
	}
	q := new(big.Int).Rsh(modp5P, 1)
	if !q.ProbablyPrime(20) {
		t.Fatal("modp5P is not a safe prime")
	}
}

func TestGenerateDH(t *testing.T) {
	// Out-of-range values (0, 1, p-1 and above) are skipped, in order.
	var r bytes.Buffer
	r.Write(make([]byte, modp5Len))
	r.Write(big.NewInt(1).FillBytes(make([]byte, modp5Len)))
	r.Write(modp5PMinusOne.FillBytes(make([]byte, modp5Len)))
	r.Write(bytes.Repeat([]byte{0xff}, modp5Len))
	r.Write(big.NewInt(2).FillBytes(make([]byte, modp5Len)))
	k, err := generateDH(&r)
	if err != nil {
		t.Fatal(err)
	}
	if k.priv.Cmp(big.NewInt(2)) != 0 || k.pub.Cmp(big.NewInt(4)) != 0 {
		t.Errorf("priv %v pub %v, want 2 and 4", k.priv, k.pub)
	}
	if k.publicBase64() != "BA==" {
		t.Errorf("publicBase64 = %s, want minimal big-endian", k.publicBase64())
	}
	if _, err := generateDH(bytes.NewReader(make([]byte, 100*modp5Len))); err == nil {
		t.Error("an all-zero source was accepted")
	}
	if _, err := generateDH(bytes.NewReader(nil)); err == nil {
		t.Error("an empty source was accepted")
	}
}

func TestSharedPassword(t *testing.T) {
	a, err := generateDH(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := generateDH(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pa, err := a.sharedPassword(b.pub)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := b.sharedPassword(a.pub)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pa, pb) || len(pa) != 256 || bytes.ContainsRune(pa, '=') {
		t.Errorf("passwords differ or are not 256 unpadded base64 characters: %s / %s", pa, pb)
	}

	// A secret with a leading zero byte is still 192 bytes (Node 20 pads).
	y := big.NewInt(3)
	found := false
	for x := int64(2); x < 20000 && !found; x++ {
		k := &dhKey{priv: big.NewInt(x)}
		pw, err := k.sharedPassword(y)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := base64.StdEncoding.DecodeString(string(pw))
		if len(raw) != modp5Len {
			t.Fatalf("secret is %d bytes", len(raw))
		}
		found = raw[0] == 0
	}
	if !found {
		t.Error("no secret with a leading zero byte found")
	}

	// x = q gives y^q = 1 for a quadratic residue y: rejected.
	q := new(big.Int).Rsh(modp5P, 1)
	if _, err := (&dhKey{priv: q}).sharedPassword(big.NewInt(4)); !errors.Is(err, errDHRange) {
		t.Errorf("a secret of 1 gave %v", err)
	}
}

func TestParseDHPublic(t *testing.T) {
	b64 := func(v *big.Int, n int) string { return base64.StdEncoding.EncodeToString(v.FillBytes(make([]byte, n))) }
	tests := []struct {
		in string
		ok bool
	}{
		{"Ag==", true},
		{b64(big.NewInt(2), 192), true},
		{b64(new(big.Int).Sub(modp5P, big.NewInt(2)), 192), true},
		{"", false},
		{"AQ==", false},
		{b64(modp5PMinusOne, 192), false},
		{b64(modp5P, 192), false},
		{b64(big.NewInt(2), 193), false},
		{"Ag", false},
		{"Ag==\n", false},
		{strings.Repeat("A", 10000), false},
	}
	for _, tt := range tests {
		name := tt.in
		if len(name) > 20 {
			name = name[len(name)-20:]
		}
		t.Run(name, func(t *testing.T) {
			if _, err := parseDHPublic(tt.in); (err == nil) != tt.ok {
				t.Errorf("parseDHPublic = %v, want ok %v", err, tt.ok)
			}
		})
	}
}
