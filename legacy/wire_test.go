package legacy

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"strings"
	"testing"
)

func TestJSString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `""`},
		{"plain/with/slashes+=", `"plain/with/slashes+="`},
		{"-----BEGIN RSA PUBLIC KEY-----\nMIIB\n", `"-----BEGIN RSA PUBLIC KEY-----\nMIIB\n"`},
		{`quote " and \ backslash`, `"quote \" and \\ backslash"`},
		{"\b\f\n\r\t", `"\b\f\n\r\t"`},
		{"\x00\x01\x1f\x7f", `"\u0000\u0001\u001f` + "\x7f" + `"`},
		{"<&> é ☃ 😀 \u2028", "\"<&> é ☃ 😀 \u2028\""},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			got := jsString(tt.in)
			if got != tt.want {
				t.Errorf("jsString(%q) = %s, want %s", tt.in, got, tt.want)
			}
			var back string
			if err := json.Unmarshal([]byte(got), &back); err != nil || back != tt.in {
				t.Errorf("%s decodes to %q, %v", got, back, err)
			}
		})
	}
}

// headerParts builds header lines for tests; each field is written as is.
type headerParts struct {
	token   string
	keyJSON string // the "key" value, raw JSON
	dh      string
	ciphers string // raw JSON
	keys    *Keys  // signs the payload
	payload string // if set, replaces the whole payload
}

func validParts(t testing.TB) headerParts {
	k := testKeys(t, "a")
	return headerParts{
		token:   base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 64)),
		keyJSON: `{"type":"rsa","public":` + jsString(k.PublicPEM()) + `}`,
		dh:      base64.StdEncoding.EncodeToString(big.NewInt(12345).Bytes()),
		ciphers: `["RC4"]`,
		keys:    k,
	}
}

func (p headerParts) line(t testing.TB) []byte {
	t.Helper()
	payload := p.payload
	if payload == "" {
		payload = `{"token":` + jsString(p.token) + `,"key":` + p.keyJSON + `,"dh":{"group":"modp5","public":` + jsString(p.dh) + `},"ciphers":` + p.ciphers + `}`
	}
	sig, err := signSig(p.keys.priv, []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(marshalHeaderLine(payload, sig), []byte("\n"))
}

// pemOf returns PKCS #1 or SPKI PEM for any public key, without checks.
func pemOf(t testing.TB, pub any, spki bool) string {
	t.Helper()
	if !spki {
		return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(pub.(*rsa.PublicKey))}))
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// rsaOfBits returns an RSA public key (not a valid one) with an n-bit modulus.
func rsaOfBits(bits int) *rsa.PublicKey {
	n := new(big.Int).Lsh(big.NewInt(1), uint(bits-1))
	n.Add(n, big.NewInt(1))
	return &rsa.PublicKey{N: n, E: 65537}
}

func TestParseHeader(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keyJSON := func(pemText string) string { return `{"type":"rsa","public":` + jsString(pemText) + `}` }
	pad192 := func(v *big.Int) string { return base64.StdEncoding.EncodeToString(v.FillBytes(make([]byte, 192))) }
	tests := []struct {
		name   string
		edit   func(p *headerParts)
		raw    string // a raw line instead of a built one
		errSub string // "" means valid
		badSig bool
	}{
		{name: "valid"},
		{name: "valid SPKI key", edit: func(p *headerParts) { p.keyJSON = keyJSON(pemOf(t, testKeys(t, "a").Public(), true)) }},
		{name: "valid zero-padded dh", edit: func(p *headerParts) { p.dh = pad192(big.NewInt(2)) }},
		{name: "valid largest dh", edit: func(p *headerParts) { p.dh = pad192(new(big.Int).Sub(modp5P, big.NewInt(2))) }},
		{name: "valid extra fields and any cipher names", edit: func(p *headerParts) { p.ciphers = `["x","RC4","x",""]` }},
		{name: "type and group are not checked", edit: func(p *headerParts) {
			p.keyJSON = `{"type":"dsa","public":` + jsString(testKeys(t, "a").PublicPEM()) + `}`
		}},
		{name: "not JSON", raw: `hello`, errSub: "header is not a JSON object"},
		{name: "empty line", raw: ``, errSub: "header is not a JSON object"},
		{name: "array", raw: `[]`, errSub: "header is not a JSON object"},
		{name: "null", raw: `null`, errSub: "header is not a JSON object"},
		{name: "no hash", raw: `{"payload":"{}"}`, errSub: `no "hash"`},
		{name: "Hash is not hash", raw: `{"Hash":"AAAA","payload":"{}"}`, errSub: `no "hash"`},
		{name: "hash not a string", raw: `{"hash":1,"payload":"{}"}`, errSub: `"hash" is not a string`},
		{name: "hash null", raw: `{"hash":null,"payload":"{}"}`, errSub: `"hash" is not a string`},
		{name: "hash not base64", raw: `{"hash":"A!==","payload":"{}"}`, errSub: "signature is not base64"},
		{name: "hash too long", raw: `{"hash":"` + strings.Repeat("A", maxSigLen+4) + `","payload":"{}"}`, errSub: "signature is too long"},
		{name: "payload not JSON", raw: `{"hash":"AAAA","payload":"nope"}`, errSub: "payload is not a JSON object"},
		{name: "payload not a string", raw: `{"hash":"AAAA","payload":{}}`, errSub: `"payload" is not a string`},
		{name: "no token", edit: func(p *headerParts) { p.payload = `{"key":{},"dh":{},"ciphers":[]}` }, errSub: `no "token"`},
		{name: "short token", edit: func(p *headerParts) { p.token = p.token[4:] }, errSub: "token is not 88"},
		{name: "token not base64", edit: func(p *headerParts) { p.token = strings.Repeat("!", 88) }, errSub: "token is not 64 bytes"},
		{name: "no key", edit: func(p *headerParts) { p.payload = `{"token":"` + p.token + `"}` }, errSub: `no "key"`},
		{name: "key not object", edit: func(p *headerParts) { p.keyJSON = `"PEM"` }, errSub: `"key" is not a JSON object`},
		{name: "key without public", edit: func(p *headerParts) { p.keyJSON = `{"type":"rsa"}` }, errSub: `no "public"`},
		{name: "key not PEM", edit: func(p *headerParts) { p.keyJSON = keyJSON("MIIB") }, errSub: "not a PEM block"},
		{name: "key with trailing data", edit: func(p *headerParts) { p.keyJSON = keyJSON(testKeys(t, "a").PublicPEM() + "x") }, errSub: "data after its PEM block"},
		{name: "key is private", edit: func(p *headerParts) { p.keyJSON = keyJSON(testKeys(t, "a").privatePEM) }, errSub: "unsupported public key PEM type"},
		{name: "key is ECDSA", edit: func(p *headerParts) { p.keyJSON = keyJSON(pemOf(t, &ec.PublicKey, true)) }, errSub: "not RSA"},
		{name: "key of 1008 bits, like the module's own test keys", edit: func(p *headerParts) { p.keyJSON = keyJSON(pemOf(t, rsaOfBits(1008), false)) }, errSub: "1008 bits"},
		{name: "key of 8200 bits", edit: func(p *headerParts) { p.keyJSON = keyJSON(pemOf(t, rsaOfBits(8200), true)) }, errSub: "8200 bits"},
		{name: "no dh", edit: func(p *headerParts) { p.payload = `{"token":"` + p.token + `","key":` + p.keyJSON + `}` }, errSub: `no "dh"`},
		{name: "dh not base64", edit: func(p *headerParts) { p.dh = "AA=A" }, errSub: "dh.public is not base64"},
		{name: "dh empty", edit: func(p *headerParts) { p.dh = "" }, errSub: "out of range"},
		{name: "dh 0", edit: func(p *headerParts) { p.dh = "AA==" }, errSub: "out of range"},
		{name: "dh 1", edit: func(p *headerParts) { p.dh = pad192(big.NewInt(1)) }, errSub: "out of range"},
		{name: "dh p-1", edit: func(p *headerParts) { p.dh = pad192(modp5PMinusOne) }, errSub: "out of range"},
		{name: "dh p", edit: func(p *headerParts) { p.dh = pad192(modp5P) }, errSub: "out of range"},
		{name: "dh 193 bytes", edit: func(p *headerParts) {
			p.dh = base64.StdEncoding.EncodeToString(append([]byte{0}, big.NewInt(5).FillBytes(make([]byte, 192))...))
		}, errSub: "out of range"},
		{name: "no ciphers", edit: func(p *headerParts) {
			p.payload = `{"token":"` + p.token + `","key":` + p.keyJSON + `,"dh":{"public":"` + p.dh + `"}}`
		}, errSub: `no "ciphers"`},
		{name: "ciphers not a list", edit: func(p *headerParts) { p.ciphers = `"RC4"` }, errSub: "not a list of strings"},
		{name: "ciphers null", edit: func(p *headerParts) { p.ciphers = `null` }, errSub: "not a list of strings"},
		{name: "ciphers with a number", edit: func(p *headerParts) { p.ciphers = `["RC4",4]` }, errSub: "not a list of strings"},
		{name: "line too long", raw: `{"hash":"` + strings.Repeat("A", MaxHeaderLine) + `"}`, errSub: "longer than"},
		{name: "signed by another key", edit: func(p *headerParts) { p.keys = testKeys(t, "b") }, badSig: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line := []byte(tt.raw)
			if tt.edit != nil || tt.raw == "" && tt.errSub == "" {
				p := validParts(t)
				if tt.edit != nil {
					tt.edit(&p)
				}
				line = p.line(t)
			}
			h, err := parseHeader(line)
			if tt.errSub != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errSub) {
					t.Fatalf("parseHeader = %v, want an error containing %q", err, tt.errSub)
				}
				if !strings.HasPrefix(err.Error(), "legacy: ") {
					t.Errorf("error %q lacks the package prefix", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseHeader: %v", err)
			}
			if err := h.verify(); tt.badSig != (err != nil) {
				t.Fatalf("verify = %v, want failure %v", err, tt.badSig)
			} else if err != nil && !errors.Is(err, errAuth) {
				t.Fatalf("verify = %v, want errAuth", err)
			}
			if tt.badSig {
				return
			}
			// No strict prefix of a valid header parses.
			for i := range len(line) {
				if _, err := parseHeader(line[:i]); err == nil {
					t.Fatalf("a %d-byte prefix parses", i)
				}
			}
		})
	}
}

func TestParseFrame(t *testing.T) {
	sig := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 256))
	tests := []struct {
		line  string
		valid bool
		end   bool
	}{
		{line: `["AAAA","` + sig + `"]`, valid: true},
		{line: `["AAAA","` + sig + `"]` + "\r", valid: true},
		{line: `["","` + sig + `"]`, valid: true}, // RC4 of an empty write
		{line: `["` + sig + `"]`, valid: true, end: true},
		{line: `["` + sig + `"]` + "\r", valid: true, end: true},
		{line: ``},
		{line: "\r"},
		{line: `[]`},
		{line: `[""]`},
		{line: `["",""]`},
		{line: `["AAAA",""]`},
		{line: `{"AAAA","` + sig + `"}`},
		{line: `[ "AAAA","` + sig + `"]`},
		{line: `["AAAA", "` + sig + `"]`},
		{line: `["AAAA","` + sig + `"] `},
		{line: `["AAAA","` + sig + `"]` + "\r\r"},
		{line: `["AAAA","AAAA","` + sig + `"]`},
		{line: `["AAA","` + sig + `"]`},
		{line: `["AA=A","` + sig + `"]`},
		{line: `["A===","` + sig + `"]`},
		{line: `["AA\u0041A","` + sig + `"]`},
		{line: `["AAAA","` + sig[:len(sig)-1] + `"]`},
		{line: `["AAAA","` + sig + `A"]`},
		{line: `["AAB=","` + sig + `"]`, valid: true}, // signed as text, so kept as text
		{line: `["AAAA","` + strings.Repeat("AAAA", maxSigLen/4+1) + `"]`},
		{line: `[1,"` + sig + `"]`},
		{line: `["AAAA","` + sig[:8] + "\r" + sig[8:] + `"]`},
		{line: `["` + sig[:8] + "\r" + sig[8:] + `"]`},
		{line: `["AAAA",` + "\n" + `"` + sig + `"]`},
	}
	for _, tt := range tests {
		name := tt.line
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			f, err := parseFrame([]byte(tt.line))
			if (err == nil) != tt.valid {
				t.Fatalf("parseFrame = %+v, %v; want valid %v", f, err, tt.valid)
			}
			if !tt.valid {
				if !errors.Is(err, errMalformedFrame) {
					t.Errorf("error %v is not errMalformedFrame", err)
				}
				return
			}
			if f.end != tt.end {
				t.Errorf("end = %v", f.end)
			}
			canonical := strings.TrimSuffix(tt.line, "\r")
			if got := string(appendFrame(nil, f)); got != canonical+"\n" {
				t.Errorf("appendFrame = %q, want %q", got, canonical)
			}
			for i := range len(canonical) {
				if _, err := parseFrame([]byte(canonical[:i])); err == nil {
					t.Fatalf("a %d-byte prefix parses", i)
				}
			}
		})
	}
}

func TestReadLine(t *testing.T) {
	tests := []struct {
		name  string
		input string
		max   int
		want  []string
		err   error
	}{
		{name: "lines", input: "a\nbb\r\n\n", max: 2, want: []string{"a", "bb\r", ""}, err: nil},
		{name: "at limit", input: "abcd\nabcd\r\n", max: 4, want: []string{"abcd", "abcd\r"}},
		{name: "over limit", input: "abcde\n", max: 4, err: errLineTooLong},
		{name: "over limit with CR", input: "abcde\r\n", max: 4, err: errLineTooLong},
		{name: "long over limit", input: strings.Repeat("x", 100) + "\n", max: 50, err: errLineTooLong},
		{name: "long line over the buffer", input: strings.Repeat("x", 100) + "\n", max: 100, want: []string{strings.Repeat("x", 100)}},
		{name: "unterminated", input: "a\nbc", max: 10, want: []string{"a"}, err: io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lr := lineReader{br: bufio.NewReaderSize(strings.NewReader(tt.input), 16)}
			var got []string
			var err error
			for {
				var l []byte
				l, err = lr.readLine(tt.max)
				if err != nil {
					break
				}
				got = append(got, string(l))
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("lines %q, want %q", got, tt.want)
			}
			wantErr := tt.err
			if wantErr == nil {
				wantErr = io.EOF
			}
			if !errors.Is(err, wantErr) {
				t.Errorf("error %v, want %v", err, wantErr)
			}
		})
	}
}
