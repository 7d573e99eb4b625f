package legacy

// This file holds the wire encoding of WIRE.md §1, §2 and §6: JSON lines,
// the signed header and the signed frames. Nothing here does I/O or
// cryptography beyond encoding; every parser bounds its input first.

import (
	"bufio"
	"bytes"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
)

// Size limits. The Node module has none; these are far above what it sends
// (a 2048-bit header line is 1.3 KB, a frame of 64 KiB about 88 KB) and keep
// a hostile peer from making this side allocate without bound.
const (
	// MaxHeaderLine is the largest header line accepted, in bytes.
	MaxHeaderLine = 16 << 10

	// DefaultMaxFrameSize is the default for [Config.MaxFrameSize]: the
	// largest plaintext one received frame may carry.
	DefaultMaxFrameSize = 1 << 20

	// MaxFrameSizeLimit is the largest [Config.MaxFrameSize] allowed.
	MaxFrameSizeLimit = 64 << 20

	// SendChunkSize is the most plaintext this side puts in one frame; a
	// larger Write is sent as several frames.
	SendChunkSize = 64 << 10

	// tokenBytes is the size of a header token before base64.
	tokenBytes = 64
	// tokenLen is the length of a token in base64.
	tokenLen = 88

	// maxSigLen is the base64 length of a signature by a MaxKeyBits key.
	maxSigLen = (MaxKeyBits/8 + 2) / 3 * 4
)

// maxFrameLine returns the longest frame line, without its line ending, that
// can carry maxPlain bytes of plaintext: ["<ciphertext>","<signature>"].
func maxFrameLine(maxPlain int) int {
	ct := maxPlain + 16 // CBC padding adds at most one block
	return len(`["",""]`) + base64.StdEncoding.EncodedLen(ct) + maxSigLen
}

// jsString returns s as JSON.stringify writes a string: quotes, backslashes
// and control characters escaped, everything else (including "/" and
// non-ASCII) verbatim. Invalid UTF-8 is written as U+FFFD, as Node does when
// it turns such bytes into a string.
func jsString(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if r < 0x20 {
				fmt.Fprintf(&b, `\u%04x`, r)
			} else {
				b.WriteRune(r) // utf8.RuneError for invalid bytes
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// header is a parsed header line (WIRE.md §2).
type header struct {
	// payload is the signed payload string exactly as received (after JSON
	// unescaping); sig is the decoded "hash".
	payload string
	sig     []byte

	token     string // 88 base64 characters
	publicPEM string // key.public, verbatim
	publicKey *rsa.PublicKey
	dhPublic  *big.Int // 1 < y < p-1
	ciphers   []string
}

// marshalPayload returns the header payload JSON exactly as the Node module's
// JSON.stringify(outgoing) writes it, keys in its order.
func marshalPayload(token, publicPEM, dhPublic string, ciphers []string) string {
	var b strings.Builder
	b.WriteString(`{"token":`)
	b.WriteString(jsString(token))
	b.WriteString(`,"key":{"type":"rsa","public":`)
	b.WriteString(jsString(publicPEM))
	b.WriteString(`},"dh":{"group":"modp5","public":`)
	b.WriteString(jsString(dhPublic))
	b.WriteString(`},"ciphers":[`)
	for i, c := range ciphers {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(jsString(c))
	}
	b.WriteString(`]}`)
	return b.String()
}

// marshalHeaderLine returns the header line, with its "\n", for a payload and
// its signature.
func marshalHeaderLine(payload string, sig []byte) []byte {
	return []byte(`{"hash":` + jsString(base64.StdEncoding.EncodeToString(sig)) +
		`,"payload":` + jsString(payload) + "}\n")
}

// errHeader builds a malformed-header error.
func errHeader(format string, args ...any) error {
	return errorf("malformed header from peer: "+format, args...)
}

// jsonObject decodes an object keeping JavaScript's key semantics: keys
// are case-sensitive and the last duplicate wins.
func jsonObject(data []byte, what string) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil || m == nil {
		return nil, errHeader("%s is not a JSON object", what)
	}
	return m, nil
}

// jsonMember decodes the object m[key] of the object what.
func jsonMember(m map[string]json.RawMessage, key, what string) (map[string]json.RawMessage, error) {
	raw, ok := m[key]
	if !ok {
		return nil, errHeader("%s has no %q", what, key)
	}
	return jsonObject(raw, fmt.Sprintf("%s %q", what, key))
}

func jsonString(m map[string]json.RawMessage, key, what string) (string, error) {
	raw, ok := m[key]
	if !ok {
		return "", errHeader("%s has no %q", what, key)
	}
	var s *string
	if err := json.Unmarshal(raw, &s); err != nil || s == nil {
		return "", errHeader("%s %q is not a string", what, key)
	}
	return *s, nil
}

// parseHeader parses a header line (without its line ending). It checks the
// structure, the token, the key and the Diffie-Hellman value, but not the
// signature: see [header.verify]. Node reads key.type and dh.group but never
// checks them, and neither does this.
func parseHeader(line []byte) (*header, error) {
	if len(line) > MaxHeaderLine {
		return nil, errHeader("longer than %d bytes", MaxHeaderLine)
	}
	outer, err := jsonObject(line, "header")
	if err != nil {
		return nil, err
	}
	h := new(header)
	hash, err := jsonString(outer, "hash", "header")
	if err != nil {
		return nil, err
	}
	if len(hash) > maxSigLen {
		return nil, errHeader("signature is too long")
	}
	if h.sig, err = decodeBase64(hash); err != nil {
		return nil, errHeader("signature is not base64")
	}
	if h.payload, err = jsonString(outer, "payload", "header"); err != nil {
		return nil, err
	}
	p, err := jsonObject([]byte(h.payload), "payload")
	if err != nil {
		return nil, err
	}
	if h.token, err = jsonString(p, "token", "payload"); err != nil {
		return nil, err
	}
	if len(h.token) != tokenLen {
		return nil, errHeader("token is not %d base64 characters", tokenLen)
	}
	if tok, err := decodeBase64(h.token); err != nil || len(tok) != tokenBytes {
		return nil, errHeader("token is not %d bytes of base64", tokenBytes)
	}

	key, err := jsonMember(p, "key", "payload")
	if err != nil {
		return nil, err
	}
	if h.publicPEM, err = jsonString(key, "public", `payload "key"`); err != nil {
		return nil, err
	}
	if h.publicKey, err = ParsePublicKey([]byte(h.publicPEM)); err != nil {
		return nil, errorf("the peer's key: %w", err)
	}

	dh, err := jsonMember(p, "dh", "payload")
	if err != nil {
		return nil, err
	}
	dhPub, err := jsonString(dh, "public", `payload "dh"`)
	if err != nil {
		return nil, err
	}
	if h.dhPublic, err = parseDHPublic(dhPub); err != nil {
		return nil, err
	}

	rawCiphers, ok := p["ciphers"]
	if !ok {
		return nil, errHeader(`payload has no "ciphers"`)
	}
	if err := json.Unmarshal(rawCiphers, &h.ciphers); err != nil || h.ciphers == nil {
		return nil, errHeader(`payload "ciphers" is not a list of strings`)
	}
	return h, nil
}

// verify checks the header's self-signature over the payload string as
// received, with the key the payload carries (WIRE.md §2).
func (h *header) verify() error {
	if !verifySig(h.publicKey, []byte(h.payload), h.sig) {
		return errAuth
	}
	return nil
}

// frame is a parsed frame line (WIRE.md §6). An end frame has end set and
// no ciphertext.
type frame struct {
	end bool
	// ct is the ciphertext in base64, as signed.
	ct  string
	sig []byte
}

// parseFrame parses a frame line without its line ending. Only the exact
// form JSON.stringify gives an array of base64 strings is accepted, which is
// all secure-peer 0.2.1 sends: ["<b64>","<b64>"] for data and ["<b64>"] for
// the end. A trailing "\r" is dropped, as the Node module splits on \r?\n.
func parseFrame(line []byte) (frame, error) {
	line = bytes.TrimSuffix(line, []byte("\r"))
	var f frame
	rest, ok := bytes.CutPrefix(line, []byte(`["`))
	if !ok {
		return f, errMalformedFrame
	}
	rest, ok = bytes.CutSuffix(rest, []byte(`"]`))
	if !ok {
		return f, errMalformedFrame
	}
	first, second, two := bytes.Cut(rest, []byte(`","`))
	sig := first
	if two {
		sig = second
		if !isBase64(first) {
			return f, errMalformedFrame
		}
		f.ct = string(first)
	} else {
		f.end = true
	}
	if len(sig) == 0 || len(sig) > maxSigLen {
		return f, errMalformedFrame
	}
	var err error
	if f.sig, err = decodeBase64(string(sig)); err != nil {
		return f, errMalformedFrame
	}
	return f, nil
}

// isBase64 reports whether b is canonical padded standard base64.
func isBase64(b []byte) bool {
	if len(b)%4 != 0 {
		return false
	}
	for i, c := range b {
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '+', c == '/':
		case c == '=' && i >= len(b)-2 && (i == len(b)-1 || b[len(b)-1] == '='):
		default:
			return false
		}
	}
	return true
}

// decodeBase64 decodes canonical padded standard base64, as Node's
// toString('base64') writes it. Unlike the encoding/base64 decoders, it
// rejects "\r" and "\n", so that one value has one spelling.
func decodeBase64(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("newline in base64")
	}
	return base64.StdEncoding.Strict().DecodeString(s)
}

// appendFrame appends a frame line with its "\n". ct is base64; an end frame
// has end set and ct empty.
func appendFrame(dst []byte, f frame) []byte {
	dst = append(dst, `["`...)
	if !f.end {
		dst = append(dst, f.ct...)
		dst = append(dst, `","`...)
	}
	dst = base64.StdEncoding.AppendEncode(dst, f.sig)
	return append(dst, "\"]\n"...)
}

var errMalformedFrame = newError("malformed frame from peer")

// errLineTooLong is returned by readLine for a line over its limit.
var errLineTooLong = errors.New("line too long")

// lineReader splits a byte stream into "\n"-terminated lines with a bound on
// each line's length. A partial line survives a read error, so a Read that
// hit a deadline can be retried.
type lineReader struct {
	br      *bufio.Reader
	partial []byte
}

// readLine returns the next line without its "\n", which must be at most max
// bytes, not counting an optional "\r" before the "\n". The result is valid
// until the next call. Bytes after the last "\n" when the stream ends are
// reported as [io.ErrUnexpectedEOF]: no complete frame can end that way.
func (lr *lineReader) readLine(max int) ([]byte, error) {
	for {
		chunk, err := lr.br.ReadSlice('\n')
		if err == nil && len(lr.partial) == 0 {
			line := chunk[:len(chunk)-1]
			if len(bytes.TrimSuffix(line, []byte("\r"))) > max {
				return nil, errLineTooLong
			}
			return line, nil
		}
		if len(lr.partial)+len(chunk) > max+2 {
			lr.partial = nil
			return nil, errLineTooLong
		}
		lr.partial = append(lr.partial, chunk...)
		switch err {
		case nil:
			line := lr.partial[:len(lr.partial)-1]
			if len(bytes.TrimSuffix(line, []byte("\r"))) > max {
				lr.partial = nil
				return nil, errLineTooLong
			}
			lr.partial = lr.partial[:0]
			if cap(lr.partial) > 1<<20 {
				lr.partial = nil // release a large buffer; line stays valid
			}
			return line, nil
		case bufio.ErrBufferFull:
			continue
		case io.EOF:
			if len(lr.partial) > 0 {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, io.EOF
		default:
			return nil, err
		}
	}
}
