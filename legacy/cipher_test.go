package legacy

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/securepeer/securepeer/internal/nodetest"
)

func TestPickCipher(t *testing.T) {
	tests := []struct {
		xs, ys []string
		want   string
	}{
		// WIRE.md §4, both verified on the wire.
		{[]string{"AES-256-CBC", "RC4"}, []string{"RC4", "AES-256-CBC"}, "AES-256-CBC"},
		{[]string{"AES-256-CBC", "AES-128-CBC"}, []string{"AES-128-CBC", "AES-256-CBC"}, "AES-128-CBC"},
		{[]string{"RC4"}, []string{"RC4"}, "RC4"},
		{[]string{"RC4"}, []string{"rc4"}, ""},
		{[]string{"a"}, nil, ""},
		{nil, nil, ""},
		// Only common names vote; ranks are within the filtered lists.
		{[]string{"x", "y", "RC4"}, []string{"RC4", "z"}, "RC4"},
		{[]string{"a", "b", "c"}, []string{"b", "c", "a"}, "b"},
		// Uppercase sorts before lowercase in a tie.
		{[]string{"aes-128-cbc", "RC4"}, []string{"RC4", "aes-128-cbc"}, "RC4"},
		// Duplicates vote twice: a gets 1/3+3/3+2/2, b 2/3+1/2.
		{[]string{"a", "b", "a"}, []string{"b", "a"}, "b"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q-%q", tt.xs, tt.ys), func(t *testing.T) {
			if got := pickCipher(tt.xs, tt.ys); got != tt.want {
				t.Errorf("pickCipher = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestPickCipherMatchesNode runs the module's own lib/pick_cipher.js on
// thousands of random list pairs, duplicates included, and compares.
func TestPickCipherMatchesNode(t *testing.T) {
	env := nodetest.Find(t)
	names := []string{"RC4", "rc4", "AES-256-CBC", "aes-256-cbc", "aes-128-cbc", "aes-192-cbc", "aes256", "b", "B", "a"}
	r := rand.New(rand.NewPCG(1, 2))
	list := func() []string {
		l := make([]string, r.IntN(6))
		for i := range l {
			l[i] = names[r.IntN(len(names))]
		}
		return l
	}
	type pair struct{ Xs, Ys []string }
	pairs := make([]pair, 3000)
	for i := range pairs {
		pairs[i] = pair{list(), list()}
	}
	in, err := json.Marshal(pairs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), interopTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, env.Node, filepath.Join("testdata", "pick.js"))
	cmd.Env = append(cmd.Environ(), "NODE_PATH="+env.Modules)
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pick.js: %v", err)
	}
	var want []*string
	if err := json.Unmarshal(out, &want); err != nil || len(want) != len(pairs) {
		t.Fatalf("pick.js printed %d results: %v", len(want), err)
	}
	for i, p := range pairs {
		w := ""
		if want[i] != nil {
			w = *want[i]
		}
		if got := pickCipher(p.Xs, p.Ys); got != w {
			t.Errorf("pickCipher(%q, %q) = %q, Node says %q", p.Xs, p.Ys, got, w)
		}
	}
}

// TestCreateCipher checks encryption against Node 20's
// crypto.createCipher(alg, "password") outputs, recorded with
// node --openssl-legacy-provider.
func TestCreateCipher(t *testing.T) {
	tests := []struct{ alg, plain, ct string }{
		{"aes-128-cbc", "", "bbc33946e96dfeec1fc3660c2c2f1df1"},
		{"aes-128-cbc", "0123456789abcdef", "7e9c50662bf2e271f4e8bce23b13217e001bb0eb733c7c1971bfa2457df58a76"},
		{"AES-192-CBC", "hello", "f5c0d1cf545413f96cd56bbb730b7d8f"},
		{"aes256", "hello", "54f505e1106e9ffc22cd64705c3819d4"},
		{"aes-256-cbc", "The quick brown fox jumps over the lazy dog", "b647020d5fe0ae3aaa14728bc04bb374a9689136e0a58d50cbc8ae84d5414403112f064a42679c7c52cd8aa48b77d78d"},
		{"RC4", "hello", "809d47511a"},
		{"rc4", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.alg+"/"+tt.plain, func(t *testing.T) {
			s, err := newSuite(tt.alg, []byte("password"))
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(s.encrypt([]byte(tt.plain))); got != tt.ct {
				t.Errorf("encrypt = %s, want %s", got, tt.ct)
			}
			pt, err := s.decrypt(mustHex(t, tt.ct))
			if err != nil || string(pt) != tt.plain {
				t.Errorf("decrypt = %q, %v", pt, err)
			}
		})
	}
}

func TestEVPBytesToKey(t *testing.T) {
	// The AES-256-CBC capture's password, key and IV (transcript-aes256.txt).
	pw := "pT6JiBGZo0KYOJn8l2YBxdJdnK7wiaB3brLv1M2yclJBC37nm23FSLCjQDh4xRcM1VIkFC0lypggmFB6AVp16+hH1z+/pw1HHd9GapIX6JXiQQ7idk14aFfCpl/rDbPi7zwGv2MPmYYYqfKianzBX/HEEs6iVP+NdoNVKokOjFlF9ggM3Qe9ORr8Hh572OwY/IAMmIbdu1vHJSZwbWknY0dyh1CsDFLsjjbcStHY0H+mVWM96N2xC9l7kK6Yadum"
	key, iv := evpBytesToKey([]byte(pw), 32, 16)
	if hex.EncodeToString(key) != "91735668d24ab6f117fcff29df3086a82fdc27f8055806ae0fa1dee798e63bd2" || hex.EncodeToString(iv) != "cef133318445f22fdb054f878f80b3ee" {
		t.Errorf("key %x iv %x", key, iv)
	}
	// Shorter outputs are prefixes of longer ones: D1 || D2 || D3.
	k16, iv16 := evpBytesToKey([]byte(pw), 16, 16)
	k24, iv24 := evpBytesToKey([]byte(pw), 24, 16)
	all := slices.Concat(key, iv)
	if !bytes.Equal(slices.Concat(k16, iv16), all[:32]) || !bytes.Equal(slices.Concat(k24, iv24), all[:40]) {
		t.Error("key||iv is not a prefix of the MD5 chain")
	}
	if k, iv := evpBytesToKey([]byte(pw), 16, 0); !bytes.Equal(k, key[:16]) || len(iv) != 0 {
		t.Error("RC4 key is not D1")
	}
}

func TestDecryptErrors(t *testing.T) {
	s, err := newSuite("aes-128-cbc", []byte("password"))
	if err != nil {
		t.Fatal(err)
	}
	good := s.encrypt([]byte("0123456789"))
	withLast := func(last byte) []byte {
		// Find a block whose plaintext ends in last by re-encrypting.
		pt := append(bytes.Repeat([]byte{'x'}, 15), last)
		ct := s.encrypt(pt)
		return ct[:16] // drop the padding block
	}
	tests := []struct {
		name string
		ct   []byte
	}{
		{"empty", nil},
		{"not a whole block", good[:15]},
		{"two blocks and a byte", append(slices.Clone(good), 0)},
		{"padding 0", withLast(0)},
		{"padding 17", withLast(17)},
		{"inconsistent padding", withLast(2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.decrypt(slices.Clone(tt.ct)); !errors.Is(err, errBadPadding) {
				t.Errorf("decrypt = %v, want errBadPadding", err)
			}
		})
	}
	if pt, err := s.decrypt(good); err != nil || string(pt) != "0123456789" {
		t.Errorf("decrypt(good) = %q, %v", pt, err)
	}
}

func TestSupportedCiphers(t *testing.T) {
	got := strings.Join(SupportedCiphers(), " ")
	if got != "aes-128-cbc aes-192-cbc aes-256-cbc aes128 aes192 aes256 rc4" {
		t.Errorf("SupportedCiphers = %s", got)
	}
	for _, name := range DefaultCiphers {
		if _, ok := lookupCipher(name); !ok {
			t.Errorf("default cipher %q is not supported", name)
		}
	}
}
