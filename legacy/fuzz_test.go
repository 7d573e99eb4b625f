package legacy

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "regenerate the seed corpora in testdata/fuzz from the transcripts")

// requireCorpus fails a fuzz target whose seed corpus is missing or empty,
// so that plain `go test` never silently runs it on nothing.
func requireCorpus(f *testing.F) {
	f.Helper()
	dir := filepath.Join("testdata", "fuzz", f.Name())
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) == 0 {
		f.Fatalf("the seed corpus %s is missing or empty (go test -run TestUpdateFuzzSeeds -update rebuilds it): %v", dir, err)
	}
}

// FuzzParseHeader checks that the header parser never panics, that what it
// accepts has the promised properties, that the canonical form of a parsed
// header parses to the same header, and that no strict prefix of a
// canonical header parses.
func FuzzParseHeader(f *testing.F) {
	requireCorpus(f)
	f.Fuzz(func(t *testing.T, line []byte) {
		h, err := parseHeader(line)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "legacy: ") {
				t.Fatalf("error without the package prefix: %v", err)
			}
			return
		}
		if len(h.token) != tokenLen || h.publicKey == nil || h.dhPublic == nil || h.ciphers == nil {
			t.Fatalf("accepted an incomplete header: %+v", h)
		}
		if h.dhPublic.Cmp(big.NewInt(1)) <= 0 || h.dhPublic.Cmp(modp5PMinusOne) >= 0 {
			t.Fatal("accepted an out-of-range DH value")
		}
		if bits := h.publicKey.N.BitLen(); bits < MinKeyBits || bits > MaxKeyBits {
			t.Fatalf("accepted a %d-bit key", bits)
		}
		_ = h.verify() // must not panic

		canonical := bytes.TrimSuffix(marshalHeaderLine(h.payload, h.sig), []byte("\n"))
		h2, err := parseHeader(canonical)
		if err != nil {
			t.Fatalf("the canonical form does not parse: %v", err)
		}
		if h2.payload != h.payload || !bytes.Equal(h2.sig, h.sig) || h2.token != h.token ||
			h2.publicPEM != h.publicPEM || h2.dhPublic.Cmp(h.dhPublic) != 0 || !slices.Equal(h2.ciphers, h.ciphers) {
			t.Fatal("the canonical form parses to a different header")
		}
		if bytes.Equal(line, canonical) {
			for i := range len(line) {
				if _, err := parseHeader(line[:i]); err == nil {
					t.Fatalf("a %d-byte prefix parses", i)
				}
			}
		}
	})
}

// FuzzParseFrame checks that the frame parser never panics, accepts only
// lines that marshal back to the same bytes, and no strict prefix of them.
func FuzzParseFrame(f *testing.F) {
	requireCorpus(f)
	f.Fuzz(func(t *testing.T, line []byte) {
		fr, err := parseFrame(line)
		if err != nil {
			return
		}
		canonical := bytes.TrimSuffix(line, []byte("\r"))
		if got := appendFrame(nil, fr); !bytes.Equal(got, append(slices.Clone(canonical), '\n')) {
			t.Fatalf("parse then marshal gives %q, not %q", got, canonical)
		}
		for i := range len(canonical) {
			if _, err := parseFrame(canonical[:i]); err == nil {
				t.Fatalf("a %d-byte prefix parses", i)
			}
		}
	})
}

// FuzzReadFrames feeds arbitrary bytes to the record layer of a session
// set up as S in the RC4 capture, receiving C's frames. Whatever the input,
// Read must never panic and must return only a prefix of what C really
// sent; a clean end is only possible after all of it.
func FuzzReadFrames(f *testing.F) {
	requireCorpus(f)
	tr := loadTranscript(f, "transcript-rc4.txt")
	want := []byte(strings.Join(tr.plain["C"], ""))
	f.Fuzz(func(t *testing.T, input []byte) {
		c := transcriptConn(t, tr, "S", input)
		got, err := io.ReadAll(c)
		if !bytes.HasPrefix(want, got) {
			t.Fatalf("delivered %q, which C never sent", got)
		}
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("a clean end after only %q", got)
		}
	})
}

// transcriptConn returns a Conn in the state the given side of a capture
// was in after its handshake, reading input.
func transcriptConn(t testing.TB, tr *transcript, side string, input []byte) *Conn {
	t.Helper()
	c := NewConn(&scriptConn{in: bytes.NewReader(input)}, &Config{Keys: sideKeys(t, side)})
	c.remoteKey = sideKeys(t, other(side)).Public()
	c.remotePEM = sideKeys(t, other(side)).PublicPEM()
	local, remote := tr.secrets[side+" token-local"], tr.secrets[side+" token-remote"]
	c.token = remote + local
	if local > remote {
		c.token = local + remote
	}
	var err error
	if c.suite, err = newSuite(tr.cipher, []byte(tr.secrets[side+" secret"])); err != nil {
		t.Fatal(err)
	}
	c.maxPlain = DefaultMaxFrameSize
	c.maxLine = maxFrameLine(c.maxPlain)
	c.handshakeDone.Store(true)
	return c
}

// TestTranscriptConn checks the state transcriptConn builds: it must read
// C's recorded frames as C's plaintext, or FuzzReadFrames tests nothing.
func TestTranscriptConn(t *testing.T) {
	tr := loadTranscript(t, "transcript-rc4.txt")
	in := strings.Join(tr.lines["C"][1:], "\n") + "\n"
	got, err := io.ReadAll(transcriptConn(t, tr, "S", []byte(in)))
	if err != nil || string(got) != strings.Join(tr.plain["C"], "") {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
}

// TestUpdateFuzzSeeds rewrites testdata/fuzz/* with -update.
func TestUpdateFuzzSeeds(t *testing.T) {
	if !*update {
		t.Skip("run with -update to regenerate the seed corpora")
	}
	seeds := map[string]map[string][]byte{
		"FuzzParseHeader": {}, "FuzzParseFrame": {}, "FuzzReadFrames": {},
	}
	for _, file := range transcripts {
		tr := loadTranscript(t, file)
		base := strings.TrimSuffix(strings.TrimPrefix(file, "transcript-"), ".txt")
		for _, side := range []string{"C", "S"} {
			lines := tr.lines[side]
			seeds["FuzzParseHeader"][base+"-"+side+"-header"] = []byte(lines[0])
			for i, l := range lines[1:] {
				seeds["FuzzParseFrame"][fmt.Sprintf("%s-%s-frame%d", base, side, i)] = []byte(l)
			}
		}
	}
	p := validParts(t)
	seeds["FuzzParseHeader"]["built-valid"] = p.line(t)
	p.keyJSON = `{"type":"rsa","public":` + jsString(pemOf(t, testKeys(t, "b").Public(), true)) + `}`
	p.keys = testKeys(t, "b")
	p.dh = "AAAAAg=="
	p.ciphers = `["aes-256-cbc","RC4","aes-256-cbc"]`
	seeds["FuzzParseHeader"]["built-spki-padded-dh"] = p.line(t)
	seeds["FuzzParseHeader"]["empty-object"] = []byte(`{}`)
	seeds["FuzzParseHeader"]["empty-payload"] = []byte(`{"hash":"","payload":"{}"}`)
	seeds["FuzzParseFrame"]["crlf"] = []byte(`["AAAA","AAAA"]` + "\r")
	seeds["FuzzParseFrame"]["empty-data"] = []byte(`["","AAAA"]`)
	seeds["FuzzParseFrame"]["three"] = []byte(`["AAAA","AAAA","AAAA"]`)

	rc4 := loadTranscript(t, "transcript-rc4.txt")
	c := rc4.lines["C"][1:]
	s := rc4.lines["S"][1:]
	seeds["FuzzReadFrames"]["all"] = []byte(strings.Join(c, "\n") + "\n")
	seeds["FuzzReadFrames"]["crlf"] = []byte(strings.Join(c, "\r\n") + "\r\n")
	seeds["FuzzReadFrames"]["no-end"] = []byte(c[0] + "\n")
	seeds["FuzzReadFrames"]["end-only"] = []byte(c[1] + "\n")
	seeds["FuzzReadFrames"]["reordered"] = []byte(c[1] + "\n" + c[0] + "\n")
	seeds["FuzzReadFrames"]["replayed"] = []byte(c[0] + "\n" + c[0] + "\n" + c[1] + "\n")
	seeds["FuzzReadFrames"]["other-direction"] = []byte(strings.Join(s, "\n") + "\n")
	seeds["FuzzReadFrames"]["unterminated"] = []byte(c[0] + "\n" + c[1])
	seeds["FuzzReadFrames"]["empty-line"] = []byte("\n" + c[0] + "\n")

	for target, files := range seeds {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range files {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
