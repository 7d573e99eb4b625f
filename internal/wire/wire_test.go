package wire

import (
	"bytes"
	"crypto/ed25519"
	"crypto/mlkem"
	"crypto/mlkem/mlkemtest"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/securepeer/securepeer/internal/testenv/fuzzseed"
)

var updateFuzzSeeds = flag.Bool("update", false, "rewrite the seed corpora in testdata/fuzz from real messages")

// The protocol depends on these sizes being the real ones.
func TestSizes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want int
	}{
		{"IdentitySize", IdentitySize, ed25519.PublicKeySize},
		{"SignatureSize", SignatureSize, ed25519.SignatureSize},
		{"KEMKeySize", KEMKeySize, mlkem.EncapsulationKeySize768},
		{"KEMCiphertext", KEMCiphertext, mlkem.CiphertextSize768},
		{"HelloSize", HelloSize, len(Magic) + 3},
		{"MaxRecordLength", MaxRecordLength, MaxRecordPayload + TagSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("%s = %d, want %d", tc.name, tc.got, tc.want)
			}
		})
	}
	if MaxRecordLength >= 1<<24 {
		t.Errorf("MaxRecordLength %d does not fit the uint24 length field", MaxRecordLength)
	}
	if MaxHandshakeMessage > 0xffff {
		t.Errorf("MaxHandshakeMessage %d does not fit the uint16 length field", MaxHandshakeMessage)
	}
	// A whole RespPayload with the hybrid and the longest cipher list must
	// fit in one handshake message, with Noise's keys and tags around it.
	worst := (&RespPayload{Ciphers: make([]uint16, MaxCiphers), KEMCiphertext: make([]byte, KEMCiphertext)}).Marshal(nil)
	if n := 32 + 32 + 16 + len(worst) + 16; n > MaxHandshakeMessage {
		t.Errorf("the largest message 2 is %d bytes, more than MaxHandshakeMessage", n)
	}
}

// --- fixtures: real messages, from real keys ---

func testKEMKey(t testing.TB) *mlkem.DecapsulationKey768 {
	seed := sha256.Sum256([]byte("wire test ML-KEM seed"))
	dk, err := mlkem.NewDecapsulationKey768(append(seed[:], seed[:]...))
	if err != nil {
		t.Fatal(err)
	}
	return dk
}

func testKEMCiphertext(t testing.TB) []byte {
	m := sha256.Sum256([]byte("wire test ML-KEM message"))
	_, ct, err := mlkemtest.Encapsulate768(testKEMKey(t).EncapsulationKey(), m[:])
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

func testSigner() (ed25519.PrivateKey, [IdentitySize]byte, [SignatureSize]byte) {
	seed := sha256.Sum256([]byte("wire test identity"))
	priv := ed25519.NewKeyFromSeed(seed[:])
	var id [IdentitySize]byte
	var sig [SignatureSize]byte
	copy(id[:], priv.Public().(ed25519.PublicKey))
	copy(sig[:], ed25519.Sign(priv, []byte("a static key")))
	return priv, id, sig
}

func seq(n int) []uint16 {
	s := make([]uint16, n)
	for i := range s {
		s[i] = uint16(i + 1)
	}
	return s
}

// mustRejectPrefixes checks that every strict prefix of a valid encoding is rejected.
func mustRejectPrefixes(t *testing.T, enc []byte, parse func([]byte) error) {
	t.Helper()
	for j := 0; j < len(enc); j++ {
		if parse(enc[:j]) == nil {
			t.Errorf("a %d-byte prefix of a %d-byte encoding parsed", j, len(enc))
			return
		}
	}
}

// --- hello ---

func TestHello(t *testing.T) {
	for _, mode := range []Mode{ModeInitiator, ModeResponder, ModeEither} {
		t.Run(fmt.Sprintf("mode%d", mode), func(t *testing.T) {
			b := Hello{Version: Version, Mode: mode}.Marshal()
			want := []byte{'s', 'p', 'e', 'e', 'r', Version, byte(mode), 0}
			if !bytes.Equal(b[:], want) {
				t.Fatalf("Marshal = %x, want %x", b, want)
			}
			h, err := ParseHello(b[:])
			if err != nil {
				t.Fatal(err)
			}
			if h != (Hello{Version: Version, Mode: mode}) {
				t.Fatalf("ParseHello = %+v", h)
			}
			mustRejectPrefixes(t, b[:], func(b []byte) error { _, err := ParseHello(b); return err })
		})
	}
}

func TestParseHelloErrors(t *testing.T) {
	valid := Hello{Version: Version, Mode: ModeEither}.Marshal()
	with := func(i int, v byte) []byte {
		b := valid
		b[i] = v
		return b[:]
	}
	for _, tc := range []struct {
		name    string
		in      []byte
		want    error
		version uint8 // reported with ErrVersion
	}{
		{"empty", nil, ErrNotSecurepeer, 0},
		{"short", valid[:HelloSize-1], ErrNotSecurepeer, 0},
		{"long", append(valid[:], 0), ErrNotSecurepeer, 0},
		{"magic", with(0, 'S'), ErrNotSecurepeer, 0},
		{"magic last byte", with(4, 'R'), ErrNotSecurepeer, 0},
		{"json", []byte(`{"a":1}` + "\n"), ErrNotSecurepeer, 0},
		{"http", []byte("GET / HT"), ErrNotSecurepeer, 0},
		{"version 0", with(5, 0), ErrVersion, 0},
		{"version 2", with(5, 2), ErrVersion, 2},
		{"version 255", with(5, 255), ErrVersion, 255},
		{"mode 0", with(6, 0), ErrMalformed, 0},
		{"mode 4", with(6, 4), ErrMalformed, 0},
		{"mode 255", with(6, 255), ErrMalformed, 0},
		{"flags 2", with(7, 2), ErrMalformed, 0},
		{"flags 3", with(7, 3), ErrMalformed, 0},
		{"flags 0x80", with(7, 0x80), ErrMalformed, 0},
		{"resume from a responder", func() []byte { b := with(6, byte(ModeResponder)); b[7] = FlagResume; return b }(), ErrMalformed, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseHello(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ParseHello(%x) error = %v, want %v", tc.in, err, tc.want)
			}
			if tc.want == ErrVersion && h.Version != tc.version {
				t.Errorf("ParseHello reported version %d, want %d", h.Version, tc.version)
			}
		})
	}
}

// --- InitPayload ---

func TestInitPayload(t *testing.T) {
	ek := testKEMKey(t).EncapsulationKey().Bytes()
	for _, tc := range []struct {
		name string
		p    InitPayload
		want []byte // exact encoding, if given
	}{
		{"one cipher", InitPayload{Ciphers: []uint16{3}}, []byte{1, 0, 3, 0, 0}},
		{"three ciphers", InitPayload{Ciphers: []uint16{2, 3, 1}}, []byte{3, 0, 2, 0, 3, 0, 1, 0, 0}},
		{"unknown cipher ids travel", InitPayload{Ciphers: []uint16{0xffff, 0}}, []byte{2, 0xff, 0xff, 0, 0, 0, 0}},
		{"max ciphers", InitPayload{Ciphers: seq(MaxCiphers)}, nil},
		{"hybrid", InitPayload{Ciphers: []uint16{2, 3, 1}, KEMKey: ek}, nil},
		{"hybrid max ciphers", InitPayload{Ciphers: seq(MaxCiphers), KEMKey: ek}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc := tc.p.Marshal(nil)
			if tc.want != nil && !bytes.Equal(enc, tc.want) {
				t.Fatalf("Marshal = %x, want %x", enc, tc.want)
			}
			if wantLen := 1 + 2*len(tc.p.Ciphers) + 2 + len(tc.p.KEMKey); len(enc) != wantLen {
				t.Fatalf("Marshal gave %d bytes, want %d", len(enc), wantLen)
			}
			if got := tc.p.Marshal([]byte("prefix")); !bytes.Equal(got, append([]byte("prefix"), enc...)) {
				t.Fatal("Marshal does not append to its argument")
			}
			p, err := ParseInitPayload(enc)
			if err != nil {
				t.Fatal(err)
			}
			if !equalU16(p.Ciphers, tc.p.Ciphers) || !bytes.Equal(p.KEMKey, tc.p.KEMKey) || (p.KEMKey == nil) != (tc.p.KEMKey == nil) {
				t.Fatalf("ParseInitPayload = %+v, want %+v", p, tc.p)
			}
			if p.KEMKey != nil && cap(p.KEMKey) != len(p.KEMKey) {
				t.Error("KEMKey has spare capacity into the caller's buffer: an append would overwrite it")
			}
			mustRejectPrefixes(t, enc, func(b []byte) error { _, err := ParseInitPayload(b); return err })
		})
	}
}

func TestParseInitPayloadErrors(t *testing.T) {
	ek := testKEMKey(t).EncapsulationKey().Bytes()
	kem := func(n int, body int) []byte { // a KEM field claiming n bytes, with body bytes
		return append([]byte{byte(n >> 8), byte(n)}, make([]byte, body)...)
	}
	ciphers := []byte{1, 0, 2}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"zero ciphers", cat([]byte{0}, kem(0, 0))},
		{"too many ciphers", cat([]byte{MaxCiphers + 1}, make([]byte, 2*(MaxCiphers+1)), kem(0, 0))},
		{"255 ciphers", cat([]byte{255}, make([]byte, 2*255), kem(0, 0))},
		{"cipher list cut", []byte{2, 0, 1, 0}},
		{"cipher list cut mid entry", []byte{1, 0}},
		{"no KEM length", ciphers},
		{"half KEM length", cat(ciphers, []byte{0})},
		{"KEM length 1", cat(ciphers, kem(1, 1))},
		{"KEM length one short", cat(ciphers, kem(KEMKeySize-1, KEMKeySize-1))},
		{"KEM length one long", cat(ciphers, kem(KEMKeySize+1, KEMKeySize+1))},
		{"KEM length ML-KEM ciphertext size", cat(ciphers, kem(KEMCiphertext, KEMCiphertext))},
		{"KEM length 0xffff", cat(ciphers, kem(0xffff, 0xffff))},
		{"KEM body cut", cat(ciphers, kem(KEMKeySize, KEMKeySize-1))},
		{"trailing byte", cat(ciphers, kem(0, 0), []byte{0})},
		{"trailing byte after KEM", cat(ciphers, []byte{byte(KEMKeySize >> 8), byte(KEMKeySize & 0xff)}, ek, []byte{0})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseInitPayload(tc.in)
			if !errors.Is(err, ErrMalformed) || p != nil {
				t.Fatalf("ParseInitPayload = %+v, %v; want nil, ErrMalformed", p, err)
			}
		})
	}
}

// --- RespPayload ---

func TestRespPayload(t *testing.T) {
	_, id, sig := testSigner()
	ct := testKEMCiphertext(t)
	hello := Hello{Version: Version, Mode: ModeResponder}.Marshal()
	for _, tc := range []struct {
		name string
		p    RespPayload
	}{
		{"zero keys one cipher", RespPayload{Ciphers: []uint16{1}}},
		{"classic", RespPayload{Hello: hello, Identity: id, Signature: sig, Ciphers: []uint16{2, 3, 1}}},
		{"hybrid", RespPayload{Hello: hello, Identity: id, Signature: sig, Ciphers: []uint16{3}, KEMCiphertext: ct}},
		{"hybrid max ciphers", RespPayload{Hello: hello, Identity: id, Signature: sig, Ciphers: seq(MaxCiphers), KEMCiphertext: ct}},
		{"protocols", RespPayload{Hello: hello, Identity: id, Signature: sig, Ciphers: []uint16{3}, KEMCiphertext: ct, Protocols: []string{"h2", "http/1.1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc := tc.p.Marshal(nil)
			want := bytes.Join([][]byte{tc.p.Hello[:], tc.p.Identity[:], tc.p.Signature[:],
				(&InitPayload{Ciphers: tc.p.Ciphers, KEMKey: tc.p.KEMCiphertext}).Marshal(nil),
				AppendProtocols(nil, tc.p.Protocols)}, nil)
			if !bytes.Equal(enc, want) {
				t.Fatalf("Marshal =\n%x\nwant\n%x", enc, want)
			}
			if got := tc.p.Marshal([]byte{9}); !bytes.Equal(got, append([]byte{9}, enc...)) {
				t.Fatal("Marshal does not append to its argument")
			}
			p, err := ParseRespPayload(enc)
			if err != nil {
				t.Fatal(err)
			}
			if p.Hello != tc.p.Hello || p.Identity != tc.p.Identity || p.Signature != tc.p.Signature ||
				!equalU16(p.Ciphers, tc.p.Ciphers) || !bytes.Equal(p.KEMCiphertext, tc.p.KEMCiphertext) ||
				(p.KEMCiphertext == nil) != (tc.p.KEMCiphertext == nil) || !slices.Equal(p.Protocols, tc.p.Protocols) {
				t.Fatalf("ParseRespPayload = %+v, want %+v", p, tc.p)
			}
			if p.KEMCiphertext != nil && cap(p.KEMCiphertext) != len(p.KEMCiphertext) {
				t.Error("KEMCiphertext has spare capacity into the caller's buffer")
			}
			mustRejectPrefixes(t, enc, func(b []byte) error { _, err := ParseRespPayload(b); return err })
		})
	}
}

func TestParseRespPayloadErrors(t *testing.T) {
	const fixed = HelloSize + IdentitySize + SignatureSize
	head := make([]byte, fixed)
	ct := testKEMCiphertext(t)
	kem := func(n int, body int) []byte {
		return append([]byte{byte(n >> 8), byte(n)}, make([]byte, body)...)
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	ciphers := []byte{1, 0, 3}
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"fixed part cut", make([]byte, fixed-1)},
		{"fixed part only", head},
		{"zero ciphers", cat(head, []byte{0}, kem(0, 0))},
		{"too many ciphers", cat(head, []byte{MaxCiphers + 1}, make([]byte, 2*(MaxCiphers+1)), kem(0, 0))},
		{"cipher list cut", cat(head, []byte{3, 0, 1, 0, 2})},
		{"cipher listed twice", cat(head, []byte{2, 0, 3, 0, 3}, kem(0, 0), []byte{0})},
		{"no KEM length", cat(head, ciphers)},
		{"half KEM length", cat(head, ciphers, []byte{4})},
		{"KEM length of an encapsulation key", cat(head, ciphers, kem(KEMKeySize, KEMKeySize))},
		{"KEM length one short", cat(head, ciphers, kem(KEMCiphertext-1, KEMCiphertext-1))},
		{"KEM length one long", cat(head, ciphers, kem(KEMCiphertext+1, KEMCiphertext+1))},
		{"KEM length 0xffff", cat(head, ciphers, kem(0xffff, 0xffff))},
		{"KEM body cut", cat(head, ciphers, []byte{byte(KEMCiphertext >> 8), byte(KEMCiphertext & 0xff)}, ct[:len(ct)-1])},
		{"no protocol list", cat(head, ciphers, kem(0, 0))},
		{"trailing byte", cat(head, ciphers, kem(0, 0), []byte{0, 0})},
		{"trailing byte after KEM", cat(head, ciphers, []byte{byte(KEMCiphertext >> 8), byte(KEMCiphertext & 0xff)}, ct, []byte{0, 0})},
		{"too many protocols", cat(head, ciphers, kem(0, 0), []byte{MaxProtocols + 1})},
		{"empty protocol name", cat(head, ciphers, kem(0, 0), []byte{1, 0})},
		{"protocol name cut", cat(head, ciphers, kem(0, 0), []byte{1, 3, 'h', '2'})},
		{"protocol listed twice", cat(head, ciphers, kem(0, 0), []byte{2, 2, 'h', '2', 2, 'h', '2'})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseRespPayload(tc.in)
			if !errors.Is(err, ErrMalformed) || p != nil {
				t.Fatalf("ParseRespPayload = %+v, %v; want nil, ErrMalformed", p, err)
			}
		})
	}
}

// --- FinalPayload ---

func TestFinalPayload(t *testing.T) {
	_, id, sig := testSigner()
	long := strings.Repeat("x", MaxProtocol)
	var many []string
	for i := range MaxProtocols {
		many = append(many, fmt.Sprint(i))
	}
	for _, tc := range []struct {
		name string
		p    FinalPayload
	}{
		{"zero", FinalPayload{}},
		{"real", FinalPayload{Identity: id, Signature: sig}},
		{"one protocol", FinalPayload{Identity: id, Signature: sig, Protocols: []string{"/yamux/1.0.0"}}},
		{"longest name", FinalPayload{Identity: id, Signature: sig, Protocols: []string{long}}},
		{"most names", FinalPayload{Identity: id, Signature: sig, Protocols: many}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc := tc.p.Marshal(nil)
			want := append(append(tc.p.Identity[:], tc.p.Signature[:]...), AppendProtocols(nil, tc.p.Protocols)...)
			if !bytes.Equal(enc, want) {
				t.Fatalf("Marshal = %x, want %x", enc, want)
			}
			p, err := ParseFinalPayload(enc)
			if err != nil {
				t.Fatal(err)
			}
			if p.Identity != tc.p.Identity || p.Signature != tc.p.Signature || !slices.Equal(p.Protocols, tc.p.Protocols) {
				t.Fatalf("ParseFinalPayload = %+v, want %+v", p, tc.p)
			}
			mustRejectPrefixes(t, enc, func(b []byte) error { _, err := ParseFinalPayload(b); return err })
		})
	}
	for _, n := range []int{0, 1, IdentitySize, IdentitySize + SignatureSize - 1, IdentitySize + SignatureSize, IdentitySize + SignatureSize + 2, 1000} {
		t.Run(fmt.Sprintf("length %d", n), func(t *testing.T) {
			if p, err := ParseFinalPayload(make([]byte, n)); !errors.Is(err, ErrMalformed) || p != nil {
				t.Fatalf("ParseFinalPayload of %d bytes = %+v, %v; want nil, ErrMalformed", n, p, err)
			}
		})
	}
}

func TestCheckProtocols(t *testing.T) {
	tests := []struct {
		name    string
		protos  []string
		wantErr string
	}{
		{"none", nil, ""},
		{"two", []string{"h2", "http/1.1"}, ""},
		{"empty name", []string{""}, "not 1 to 255"},
		{"long name", []string{strings.Repeat("x", MaxProtocol+1)}, "not 1 to 255"},
		{"twice", []string{"a", "b", "a"}, "twice"},
		{"too many", make([]string, MaxProtocols+1), "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckProtocols(tt.protos)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("CheckProtocols = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// --- record header ---

func TestRecordHeader(t *testing.T) {
	for _, typ := range []uint8{RecordData, RecordEnd, RecordAlert} {
		for _, length := range []int{TagSize, TagSize + 1, 0xff, 0x100, 0xffff, 0x10000, MaxRecordLength - 1, MaxRecordLength} {
			t.Run(fmt.Sprintf("type%d/len%d", typ, length), func(t *testing.T) {
				var b [RecordHeaderSize]byte
				PutRecordHeader(b[:], typ, length)
				want := []byte{typ, byte(length >> 16), byte(length >> 8), byte(length)}
				if !bytes.Equal(b[:], want) {
					t.Fatalf("PutRecordHeader = %x, want %x", b, want)
				}
				gotTyp, gotLen, err := ParseRecordHeader(b[:])
				if err != nil || gotTyp != typ || gotLen != length {
					t.Fatalf("ParseRecordHeader(%x) = %d, %d, %v", b, gotTyp, gotLen, err)
				}
				mustRejectPrefixes(t, b[:], func(b []byte) error { _, _, err := ParseRecordHeader(b); return err })
			})
		}
	}
}

func TestParseRecordHeaderErrors(t *testing.T) {
	hdr := func(typ uint8, length int) []byte {
		b := make([]byte, RecordHeaderSize)
		PutRecordHeader(b, typ, length)
		return b
	}
	for _, tc := range []struct {
		name    string
		in      []byte
		typ     uint8 // reported back for the error message, when the header is whole
		length  int
		reports bool
	}{
		{"empty", nil, 0, 0, false},
		{"3 bytes", []byte{RecordData, 0, 0}, 0, 0, false},
		{"type 0", hdr(0, TagSize), 0, TagSize, true},
		{"type 5", hdr(5, TagSize), 5, TagSize, true},
		{"type 255", hdr(255, 100), 255, 100, true},
		{"length 0", hdr(RecordData, 0), RecordData, 0, true},
		{"length below tag", hdr(RecordEnd, TagSize-1), RecordEnd, TagSize - 1, true},
		{"length one past the limit", hdr(RecordData, MaxRecordLength+1), RecordData, MaxRecordLength + 1, true},
		{"length 1 MiB", hdr(RecordData, 1<<20), RecordData, 1 << 20, true},
		{"length 16 MiB - 1", hdr(RecordData, 1<<24-1), RecordData, 1<<24 - 1, true},
		// The package promises every decoder rejects trailing bytes; a
		// header parsed from a longer slice would marshal to fewer bytes.
		{"trailing byte", append(hdr(RecordData, TagSize), 0), RecordData, TagSize, false},
		{"two headers", append(hdr(RecordData, TagSize), hdr(RecordData, TagSize)...), RecordData, TagSize, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			typ, length, err := ParseRecordHeader(tc.in)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseRecordHeader(%x) = %d, %d, %v; want ErrMalformed", tc.in, typ, length, err)
			}
			if tc.reports && (typ != tc.typ || length != tc.length) {
				t.Errorf("ParseRecordHeader reported type %d length %d, want %d %d", typ, length, tc.typ, tc.length)
			}
		})
	}
}

func equalU16(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// --- fuzzing ---

// requireSeeds fails a fuzz target whose seed corpus directory is missing or
// empty, so that a moved directory cannot make it silently test nothing.
func requireSeeds(f *testing.F) {
	f.Helper()
	name := strings.TrimPrefix(f.Name(), "Fuzz")
	dir := filepath.Join("testdata", "fuzz", "Fuzz"+name)
	entries, err := os.ReadDir(dir)
	if err != nil {
		f.Fatalf("seed corpus: %v (run go test -run TestWriteFuzzSeeds -update)", err)
	}
	n := 0
	for _, e := range entries {
		if e.Type().IsRegular() {
			n++
		}
	}
	if n == 0 {
		f.Fatalf("seed corpus %s has no files (run go test -run TestWriteFuzzSeeds -update)", dir)
	}
}

// checkPrefixes fails if a strict prefix of enc parses.
func checkPrefixes(t *testing.T, enc []byte, parse func([]byte) bool) {
	t.Helper()
	for j := 0; j < len(enc); j++ {
		if parse(enc[:j]) {
			t.Fatalf("the %d-byte prefix %x of %x parses", j, enc[:j], enc)
		}
	}
}

func FuzzParseHello(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHello(b)
		if err != nil {
			return
		}
		enc := h.Marshal()
		if !bytes.Equal(enc[:], b) {
			t.Fatalf("ParseHello(%x) = %+v, which marshals to %x", b, h, enc)
		}
		checkPrefixes(t, b, func(b []byte) bool { _, err := ParseHello(b); return err == nil })
	})
}

func FuzzParseInitPayload(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseInitPayload(b)
		if err != nil {
			if p != nil {
				t.Fatal("ParseInitPayload returned a payload with an error")
			}
			return
		}
		if len(p.Ciphers) == 0 || len(p.Ciphers) > MaxCiphers || (p.KEMKey != nil && len(p.KEMKey) != KEMKeySize) {
			t.Fatalf("ParseInitPayload accepted out-of-bounds fields: %d ciphers, %d-byte KEM key", len(p.Ciphers), len(p.KEMKey))
		}
		if enc := p.Marshal(nil); !bytes.Equal(enc, b) {
			t.Fatalf("ParseInitPayload(%x) marshals to %x", b, enc)
		}
		checkPrefixes(t, b, func(b []byte) bool { _, err := ParseInitPayload(b); return err == nil })
	})
}

func FuzzParseRespPayload(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseRespPayload(b)
		if err != nil {
			if p != nil {
				t.Fatal("ParseRespPayload returned a payload with an error")
			}
			return
		}
		if len(p.Ciphers) == 0 || len(p.Ciphers) > MaxCiphers || (p.KEMCiphertext != nil && len(p.KEMCiphertext) != KEMCiphertext) {
			t.Fatalf("ParseRespPayload accepted out-of-bounds fields: %d ciphers, %d-byte KEM ciphertext", len(p.Ciphers), len(p.KEMCiphertext))
		}
		if enc := p.Marshal(nil); !bytes.Equal(enc, b) {
			t.Fatalf("ParseRespPayload(%x) marshals to %x", b, enc)
		}
		checkPrefixes(t, b, func(b []byte) bool { _, err := ParseRespPayload(b); return err == nil })
	})
}

func FuzzParseFinalPayload(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseFinalPayload(b)
		if err != nil {
			if p != nil {
				t.Fatal("ParseFinalPayload returned a payload with an error")
			}
			return
		}
		if enc := p.Marshal(nil); !bytes.Equal(enc, b) {
			t.Fatalf("ParseFinalPayload(%x) marshals to %x", b, enc)
		}
		checkPrefixes(t, b, func(b []byte) bool { _, err := ParseFinalPayload(b); return err == nil })
	})
}

func FuzzParseRecordHeader(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, length, err := ParseRecordHeader(b)
		if err != nil {
			return
		}
		if typ < RecordData || typ > RecordTicket || length < TagSize || length > MaxRecordLength {
			t.Fatalf("ParseRecordHeader(%x) accepted type %d, length %d", b, typ, length)
		}
		enc := make([]byte, RecordHeaderSize)
		PutRecordHeader(enc, typ, length)
		if !bytes.Equal(enc, b) {
			t.Fatalf("ParseRecordHeader(%x) = %d, %d, which marshals to %x", b, typ, length, enc)
		}
		checkPrefixes(t, b, func(b []byte) bool { _, _, err := ParseRecordHeader(b); return err == nil })
	})
}

func FuzzParseResumeMessage1(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseResumeMessage1(b)
		if err != nil {
			return
		}
		if len(m.Ticket) == 0 || len(m.Ticket) > MaxTicket || len(m.Noise) < 32+TagSize {
			t.Fatalf("ParseResumeMessage1 accepted a %d-byte ticket and a %d-byte Noise message", len(m.Ticket), len(m.Noise))
		}
		if enc := m.Marshal(nil); !bytes.Equal(enc, b) {
			t.Fatalf("ParseResumeMessage1(%x) marshals to %x", b, enc)
		}
	})
}

func FuzzParseResumeInitPayload(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseResumeInitPayload(b)
		if err != nil {
			return
		}
		if enc := p.Marshal(nil); !bytes.Equal(enc, b) {
			t.Fatalf("ParseResumeInitPayload(%x) marshals to %x", b, enc)
		}
		checkPrefixes(t, b, func(b []byte) bool { _, err := ParseResumeInitPayload(b); return err == nil })
	})
}

func FuzzParseResumeRespPayload(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseResumeRespPayload(b)
		if err != nil {
			return
		}
		if enc := p.Marshal(nil); !bytes.Equal(enc, b) {
			t.Fatalf("ParseResumeRespPayload(%x) marshals to %x", b, enc)
		}
		checkPrefixes(t, b, func(b []byte) bool { _, err := ParseResumeRespPayload(b); return err == nil })
	})
}

func FuzzParseTicketRecord(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseTicketRecord(b)
		if err != nil {
			return
		}
		if r.Lifetime == 0 || r.Lifetime > MaxTicketLifetime || len(r.Ticket) == 0 || len(r.Ticket) > MaxTicket {
			t.Fatalf("ParseTicketRecord accepted lifetime %d, a %d-byte ticket", r.Lifetime, len(r.Ticket))
		}
		if enc := r.Marshal(nil); !bytes.Equal(enc, b) {
			t.Fatalf("ParseTicketRecord(%x) marshals to %x", b, enc)
		}
	})
}

// FuzzFirstFlightLen checks the length a listener reads before the
// handshake: never more than the longest valid first flight; the same answer
// once the bytes it asked for are there, so a reader stops where the flight
// ends; and never "complete" at a strict prefix of the flight.
func FuzzFirstFlightLen(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		n := FirstFlightLen(b)
		if n > HelloSize+2+MaxResumeMessage1 {
			t.Fatalf("FirstFlightLen(%x) = %d, more than the longest first flight", b, n)
		}
		if n > len(b) {
			return
		}
		if m := FirstFlightLen(b[:n]); m != n {
			t.Fatalf("FirstFlightLen of the %d-byte flight of %x = %d", n, b, m)
		}
		for k := range n {
			if FirstFlightLen(b[:k]) <= k {
				t.Fatalf("the %d-byte prefix of the %d-byte flight %x counts as complete", k, n, b[:n])
			}
		}
	})
}

// FuzzFirstFlightEphemeral checks the key a listener refuses repeats of,
// for any bytes as a first flight and as the full message 1 after
// RetryFull: found only in a complete first flight (FirstFlightLen's, or
// Message1Len's after RetryFull), never in a strict prefix of it, whatever
// follows it; 32 bytes at the offset of the message 1 format; and the same
// key in a full message 1 whether it comes with its hello or alone.
func FuzzFirstFlightEphemeral(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, retry := range []bool{false, true} {
			key, ok := FirstFlightEphemeral(b, retry)
			if !ok {
				if key != nil {
					t.Fatalf("FirstFlightEphemeral(%x, %v) returned a key without ok", b, retry)
				}
				continue
			}
			n, at := Message1Len(b, false), 2
			if !retry {
				n, at = FirstFlightLen(b), HelloSize+2
			}
			if n > len(b) || n <= at || len(key) != EphemeralKeySize {
				t.Fatalf("FirstFlightEphemeral(%x, %v) = %x from an incomplete flight (length %d)", b, retry, key, n)
			}
			if !retry && b[7] == FlagResume {
				at += 2 + int(binary.BigEndian.Uint16(b[at:])) // the ticket's length and the ticket
			}
			if !bytes.Equal(key, b[at:at+EphemeralKeySize]) {
				t.Fatalf("FirstFlightEphemeral(%x, %v) = %x, not the bytes at offset %d", b, retry, key, at)
			}
			if again, _ := FirstFlightEphemeral(append(slices.Clone(b[:n]), 0x55), retry); !bytes.Equal(again, key) {
				t.Fatalf("a byte after the flight changed the key: %x, then %x", key, again)
			}
			checkPrefixes(t, b[:n], func(p []byte) bool { _, ok := FirstFlightEphemeral(p, retry); return ok })
			if !retry && b[7] != FlagResume {
				if alone, _ := FirstFlightEphemeral(b[HelloSize:], true); !bytes.Equal(alone, key) {
					t.Fatalf("a full message 1 gives key %x with its hello and %x alone", key, alone)
				}
			}
		}
	})
}

// TestFirstFlightEphemeral covers the key of each kind of first flight,
// and what a responder would not go on with.
func TestFirstFlightEphemeral(t *testing.T) {
	initiator := Hello{Version: Version, Mode: ModeInitiator}.Marshal()
	either := Hello{Version: Version, Mode: ModeEither}.Marshal()
	responder := Hello{Version: Version, Mode: ModeResponder}.Marshal()
	resuming := Hello{Version: Version, Mode: ModeInitiator, Resume: true}.Marshal()
	key := bytes.Repeat([]byte{0xe1}, EphemeralKeySize)
	full := append(slices.Clone(key), bytes.Repeat([]byte{0x5a}, 1+6+2+TagSize)...)
	resumption := (&ResumeMessage1{Ticket: bytes.Repeat([]byte{0x7c}, 100), Noise: append(slices.Clone(key), bytes.Repeat([]byte{0x5b}, 6+TagSize)...)}).Marshal(nil)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	frame := func(m []byte) []byte { return AppendHandshakeMessage(nil, m) }
	tests := []struct {
		name  string
		b     []byte
		retry bool
		ok    bool
	}{
		{"full", cat(initiator[:], frame(full)), false, true},
		{"full from an either-mode peer", cat(either[:], frame(full)), false, true},
		{"full, and the next message already", cat(initiator[:], frame(full), []byte{0, 3, 1, 2, 3}), false, true},
		{"resumption", cat(resuming[:], frame(resumption)), false, true},
		{"full after RetryFull", frame(full), true, true},
		{"just the key", cat(initiator[:], frame(key)), false, true},
		{"one byte short of a key", cat(initiator[:], frame(key[:31])), false, false},
		{"one byte of the message missing", cat(initiator[:], frame(full))[:HelloSize+2+len(full)-1], false, false},
		{"hello alone", initiator[:], false, false},
		{"responder hello", cat(responder[:], frame(full)), false, false},
		{"not securepeer", cat([]byte(`{"hash":"`), frame(full)), false, false},
		{"abort", cat(initiator[:], []byte{0, 0, AbortProtocol}), false, false},
		{"longer than any full message 1", cat(initiator[:], frame(bytes.Repeat(key, MaxMessage1/32+1))), false, false},
		{"a full message 1 where a resumption is due", cat(resuming[:], frame(full)), false, false},
		{"a hello where the full message 1 after RetryFull is due", cat(initiator[:], frame(full)), true, false},
		{"longer than any full message 1 after RetryFull", frame(bytes.Repeat(key, MaxMessage1/32+1)), true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := FirstFlightEphemeral(tt.b, tt.retry)
			if ok != tt.ok {
				t.Fatalf("FirstFlightEphemeral(%x, %v) ok = %v, want %v", tt.b, tt.retry, ok, tt.ok)
			}
			if ok && !bytes.Equal(got, key) {
				t.Errorf("key %x, want %x", got, key)
			}
		})
	}
}

// TestWriteFuzzSeeds writes the seed corpora of the fuzz targets above from
// real messages, when run with -update. Without it, it checks that every
// corpus exists and that its valid seeds still parse, so that a format
// change that leaves them stale is noticed.
func TestWriteFuzzSeeds(t *testing.T) {
	_, id, sig := testSigner()
	ek := testKEMKey(t).EncapsulationKey().Bytes()
	ct := testKEMCiphertext(t)
	hdr := func(typ uint8, length int) []byte {
		b := make([]byte, RecordHeaderSize)
		PutRecordHeader(b, typ, length)
		return b
	}
	hello := func(mode Mode) []byte { b := Hello{Version: Version, Mode: mode}.Marshal(); return b[:] }
	resuming := func() []byte { b := Hello{Version: Version, Mode: ModeInitiator, Resume: true}.Marshal(); return b[:] }()
	// flight is a hello and a framed message of n bytes.
	flight := func(h []byte, n int) []byte {
		return AppendHandshakeMessage(slices.Clone(h), bytes.Repeat([]byte{0x5a}, n))
	}
	type seed struct {
		name  string
		data  []byte
		valid bool
	}
	corpora := map[string][]seed{
		"FuzzParseHello": {
			{"initiator", hello(ModeInitiator), true},
			{"responder", hello(ModeResponder), true},
			{"either", hello(ModeEither), true},
			{"version2", []byte("speer\x02\x03\x00"), false},
			{"resuming-initiator", func() []byte { b := Hello{Version: Version, Mode: ModeInitiator, Resume: true}.Marshal(); return b[:] }(), true},
		},
		"FuzzFirstFlightLen": {
			{"longest-full", flight(hello(ModeInitiator), MaxMessage1), true},
			{"longest-resumption", flight(resuming, MaxResumeMessage1), true},
			{"abort", append(hello(ModeEither), 0, 0, AbortProtocol), true},
			{"full-one-too-long", flight(hello(ModeInitiator), MaxMessage1+1), false},
			{"resumption-one-too-long", flight(resuming, MaxResumeMessage1+1), false},
		},
		"FuzzFirstFlightEphemeral": {
			{"full", flight(hello(ModeInitiator), 32+1+6+2+KEMKeySize+TagSize), true},
			{"full-classic-either", flight(hello(ModeEither), 32+1+6+2+TagSize), true},
			{"resumption", AppendHandshakeMessage(slices.Clone(resuming), (&ResumeMessage1{Ticket: bytes.Repeat([]byte{0x5a}, 162), Noise: bytes.Repeat([]byte{0xa5}, 32+6+TagSize)}).Marshal(nil)), true},
			{"key-only", flight(hello(ModeInitiator), 32), true},
			{"short-of-a-key", flight(hello(ModeInitiator), 31), false},
			{"abort", append(hello(ModeInitiator), 0, 0, AbortProtocol), false},
		},
		"FuzzParseResumeMessage1": {
			{"real-size", (&ResumeMessage1{Ticket: bytes.Repeat([]byte{0x5a}, 162), Noise: bytes.Repeat([]byte{0xa5}, 32+6+TagSize)}).Marshal(nil), true},
			{"max-ticket", (&ResumeMessage1{Ticket: bytes.Repeat([]byte{1}, MaxTicket), Noise: bytes.Repeat([]byte{2}, 32+TagSize)}).Marshal(nil), true},
			{"no-noise", (&ResumeMessage1{Ticket: []byte{1}}).Marshal(nil), false},
		},
		"FuzzParseResumeInitPayload": {
			{"defaults", (&ResumeInitPayload{Ciphers: []uint16{2, 3, 1}}).Marshal(nil), true},
			{"protocols", (&ResumeInitPayload{Ciphers: []uint16{3}, Protocols: []string{"securepeer-tunnel/1"}}).Marshal(nil), true},
		},
		"FuzzParseResumeRespPayload": {
			{"defaults", (&ResumeRespPayload{Hello: [HelloSize]byte(hello(ModeResponder)), Ciphers: []uint16{2, 3, 1}}).Marshal(nil), true},
			{"protocols", (&ResumeRespPayload{Hello: [HelloSize]byte(hello(ModeEither)), Ciphers: []uint16{2}, Protocols: []string{"h2", "http/1.1"}}).Marshal(nil), true},
		},
		"FuzzParseTicketRecord": {
			{"real-size", (&TicketRecord{Lifetime: MaxTicketLifetime, Ticket: bytes.Repeat([]byte{7}, 162)}).Marshal(nil), true},
			{"one-second", (&TicketRecord{Lifetime: 1, Ticket: []byte{1}}).Marshal(nil), true},
			{"too-long", (&TicketRecord{Lifetime: MaxTicketLifetime + 1, Ticket: []byte{1}}).Marshal(nil), false},
		},
		"FuzzParseInitPayload": {
			{"classic-default-ciphers", (&InitPayload{Ciphers: []uint16{2, 3, 1}}).Marshal(nil), true},
			{"hybrid-default-ciphers", (&InitPayload{Ciphers: []uint16{2, 3, 1}, KEMKey: ek}).Marshal(nil), true},
			{"hybrid-max-ciphers", (&InitPayload{Ciphers: seq(MaxCiphers), KEMKey: ek}).Marshal(nil), true},
		},
		"FuzzParseRespPayload": {
			{"classic", (&RespPayload{Hello: [HelloSize]byte(hello(ModeResponder)), Identity: id, Signature: sig, Ciphers: []uint16{3, 2, 1}}).Marshal(nil), true},
			{"hybrid", (&RespPayload{Hello: [HelloSize]byte(hello(ModeEither)), Identity: id, Signature: sig, Ciphers: []uint16{2}, KEMCiphertext: ct}).Marshal(nil), true},
			{"hybrid-protocols", (&RespPayload{Hello: [HelloSize]byte(hello(ModeResponder)), Identity: id, Signature: sig, Ciphers: []uint16{2}, KEMCiphertext: ct, Protocols: []string{"h2", "http/1.1"}}).Marshal(nil), true},
		},
		"FuzzParseFinalPayload": {
			{"real", (&FinalPayload{Identity: id, Signature: sig}).Marshal(nil), true},
			{"protocols", (&FinalPayload{Identity: id, Signature: sig, Protocols: []string{"/yamux/1.0.0", "/mplex/6.7.0"}}).Marshal(nil), true},
		},
		"FuzzParseRecordHeader": {
			{"data-min", hdr(RecordData, TagSize), true},
			{"data-max", hdr(RecordData, MaxRecordLength), true},
			{"end", hdr(RecordEnd, TagSize), true},
			{"alert", hdr(RecordAlert, TagSize+1), true},
			{"ticket", hdr(RecordTicket, TagSize+4+162), true},
			{"data-16MiB", hdr(RecordData, 1<<24-1), false},
		},
	}
	parsers := map[string]func([]byte) error{
		"FuzzParseHello": func(b []byte) error { _, err := ParseHello(b); return err },
		"FuzzFirstFlightLen": func(b []byte) error {
			if FirstFlightLen(b) != len(b) {
				return errors.New("not exactly one first flight")
			}
			return nil
		},
		"FuzzFirstFlightEphemeral": func(b []byte) error {
			if _, ok := FirstFlightEphemeral(b, false); !ok {
				return errors.New("no key")
			}
			return nil
		},
		"FuzzParseInitPayload":       func(b []byte) error { _, err := ParseInitPayload(b); return err },
		"FuzzParseRespPayload":       func(b []byte) error { _, err := ParseRespPayload(b); return err },
		"FuzzParseFinalPayload":      func(b []byte) error { _, err := ParseFinalPayload(b); return err },
		"FuzzParseRecordHeader":      func(b []byte) error { _, _, err := ParseRecordHeader(b); return err },
		"FuzzParseResumeMessage1":    func(b []byte) error { _, err := ParseResumeMessage1(b); return err },
		"FuzzParseResumeInitPayload": func(b []byte) error { _, err := ParseResumeInitPayload(b); return err },
		"FuzzParseResumeRespPayload": func(b []byte) error { _, err := ParseResumeRespPayload(b); return err },
		"FuzzParseTicketRecord":      func(b []byte) error { _, err := ParseTicketRecord(b); return err },
	}
	for target, seeds := range corpora {
		t.Run(target, func(t *testing.T) {
			dir := filepath.Join("testdata", "fuzz", target)
			for _, s := range seeds {
				if err := parsers[target](s.data); (err == nil) != s.valid {
					t.Fatalf("seed %s: parse error %v, want valid=%v", s.name, err, s.valid)
				}
				path := filepath.Join(dir, s.name)
				if *updateFuzzSeeds {
					fuzzseed.Write(t, path, s.data)
					continue
				}
				got, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run go test -run TestWriteFuzzSeeds -update)", err)
				}
				if !bytes.Equal(got, fuzzseed.File(s.data)) {
					t.Errorf("%s is stale (run go test -run TestWriteFuzzSeeds -update)", path)
				}
			}
		})
	}
}

func TestFirstFlightLen(t *testing.T) {
	initiator := Hello{Version: Version, Mode: ModeInitiator}.Marshal()
	either := Hello{Version: Version, Mode: ModeEither}.Marshal()
	responder := Hello{Version: Version, Mode: ModeResponder}.Marshal()
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		name string
		b    []byte
		want int
	}{
		{"nothing yet", nil, HelloSize},
		{"part of a hello", initiator[:5], HelloSize},
		{"initiator hello", initiator[:], HelloSize + 2},
		{"either hello and one length byte", cat(either[:], []byte{0x04}), HelloSize + 2},
		{"initiator hello and length", cat(initiator[:], []byte{0x04, 0xe3}), HelloSize + 2 + 0x04e3},
		{"longest message 1", cat(initiator[:], []byte{0x04, 0xf3}), HelloSize + 2 + MaxMessage1},
		{"one byte longer: refused at its length", cat(initiator[:], []byte{0x04, 0xf4}), HelloSize + 2},
		{"64 KiB promised: refused at its length", cat(initiator[:], []byte{0xff, 0xff}), HelloSize + 2},
		{"abort", cat(initiator[:], []byte{0, 0}), HelloSize + 3},
		{"responder hello: nothing follows", responder[:], HelloSize},
		{"not securepeer", []byte("GET / HTTP/1.1\r\n"), HelloSize},
		{"legacy JSON", []byte(`{"key":"...`), HelloSize},
		{"other version", cat([]byte(Magic), []byte{2, byte(ModeInitiator), 0}), HelloSize},
		{"unknown flags", cat([]byte(Magic), []byte{Version, byte(ModeInitiator), 2}), HelloSize},
		{"resuming initiator", cat([]byte(Magic), []byte{Version, byte(ModeInitiator), FlagResume, 0x01, 0x00}), HelloSize + 2 + 256},
		{"longest resumption message 1", cat([]byte(Magic), []byte{Version, byte(ModeInitiator), FlagResume, 0x24, 0x54}), HelloSize + 2 + MaxResumeMessage1},
		{"resumption one byte longer", cat([]byte(Magic), []byte{Version, byte(ModeInitiator), FlagResume, 0x24, 0x55}), HelloSize + 2},
		{"full message 1 of a resumption's length", cat(initiator[:], []byte{0x24, 0x54}), HelloSize + 2},
	}
	if MaxMessage1 != 0x04f3 || MaxResumeMessage1 != 0x2454 {
		t.Fatalf("the cases above assume MaxMessage1 %#x and MaxResumeMessage1 %#x", MaxMessage1, MaxResumeMessage1)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FirstFlightLen(tt.b); got != tt.want {
				t.Errorf("FirstFlightLen(%x) = %d, want %d", tt.b, got, tt.want)
			}
		})
	}
}

// TestMessage1Len covers the full message 1 a responder reads after
// RetryFull, framed alone, and the bound on each kind.
func TestMessage1Len(t *testing.T) {
	tests := []struct {
		name   string
		b      []byte
		resume bool
		want   int
	}{
		{"nothing yet", nil, false, 2},
		{"one length byte", []byte{0x04}, false, 2},
		{"a real full message 1", []byte{0x04, 0xe3}, false, 2 + 0x04e3},
		{"longest full", []byte{0x04, 0xf3, 0xaa}, false, 2 + MaxMessage1},
		{"longer than any full one", []byte{0x04, 0xf4}, false, 2},
		{"a resumption's length is fine for one", []byte{0x04, 0xf4}, true, 2 + 0x04f4},
		{"longer than any resumption one", []byte{0x24, 0x55}, true, 2},
		{"abort", []byte{0, 0}, false, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Message1Len(tt.b, tt.resume); got != tt.want {
				t.Errorf("Message1Len(%x, %v) = %d, want %d", tt.b, tt.resume, got, tt.want)
			}
		})
	}
}
