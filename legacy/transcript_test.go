package legacy

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The transcripts in testdata/ are real sessions between two Node
// secure-peer 0.2.1 processes (Node v20.20.2, OpenSSL 3.0.19), captured with
// each side's ephemeral secrets and an independent decode; they cannot be
// regenerated from here. S, the listener, used keys/a.json; C, the
// connector, keys/b.json.

// transcript is one parsed capture.
type transcript struct {
	name    string
	lines   map[string][]string // "C" or "S" -> wire lines, without "\n"
	secrets map[string]string   // "S dh-private" -> value
	cipher  string              // the vote's winner
	key, iv []byte              // EVP_BytesToKey output
	plain   map[string][]string // side -> plaintext of each data frame
}

var (
	reVote  = regexp.MustCompile(`^# cipher vote: .* => (\S+)`)
	reEVP   = regexp.MustCompile(`^# EVP_BytesToKey-MD5: key ([0-9a-f]+) iv ([0-9a-f]+|\(none\))$`)
	reFrame = regexp.MustCompile(`^# ([CS]) frame seq (\d+): DATA .* plaintext (".*")$`)
)

func loadTranscript(t testing.TB, file string) *transcript {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	tr := &transcript{
		name:    file,
		lines:   map[string][]string{},
		secrets: map[string]string{},
		plain:   map[string][]string{},
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "C> "), strings.HasPrefix(l, "S> "):
			tr.lines[l[:1]] = append(tr.lines[l[:1]], l[3:])
		case reVote.MatchString(l):
			tr.cipher = reVote.FindStringSubmatch(l)[1]
		case reEVP.MatchString(l):
			m := reEVP.FindStringSubmatch(l)
			tr.key = mustHex(t, m[1])
			if m[2] != "(none)" {
				tr.iv = mustHex(t, m[2])
			}
		case reFrame.MatchString(l):
			m := reFrame.FindStringSubmatch(l)
			p, err := strconv.Unquote(m[3])
			if err != nil {
				t.Fatalf("%s: %q: %v", file, l, err)
			}
			if seq, _ := strconv.Atoi(m[2]); seq != len(tr.plain[m[1]]) {
				t.Fatalf("%s: frames out of order: %q", file, l)
			}
			tr.plain[m[1]] = append(tr.plain[m[1]], p)
		default:
			for _, k := range []string{"dh-private", "dh-public", "token-local", "token-remote", "secret"} {
				for _, side := range []string{"C", "S"} {
					if v, ok := strings.CutPrefix(l, "# "+side+" "+k+" "); ok {
						tr.secrets[side+" "+k] = v
					}
				}
			}
		}
	}
	if len(tr.lines["C"]) < 3 || len(tr.lines["S"]) < 3 || len(tr.secrets) != 10 || tr.cipher == "" || tr.key == nil {
		t.Fatalf("%s: incomplete transcript: %d C lines, %d S lines, %d secrets", file, len(tr.lines["C"]), len(tr.lines["S"]), len(tr.secrets))
	}
	return tr
}

var transcripts = []string{"transcript-rc4.txt", "transcript-aes256.txt"}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustB64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sideKeys returns the key file each side of the transcripts used.
func sideKeys(t testing.TB, side string) *Keys {
	t.Helper()
	return map[string]*Keys{"S": testKeys(t, "a"), "C": testKeys(t, "b")}[side]
}

var keyCache sync.Map

// testKeys loads testdata/keys/NAME.json once.
func testKeys(t testing.TB, name string) *Keys {
	t.Helper()
	if k, ok := keyCache.Load(name); ok {
		return k.(*Keys)
	}
	k, err := LoadKeys(filepath.Join("testdata", "keys", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	keyCache.Store(name, k)
	return k
}

func other(side string) string {
	if side == "C" {
		return "S"
	}
	return "C"
}

// TestTranscriptDecode decodes, verifies and decrypts every line of the
// captured sessions with the package's parsers and primitives.
func TestTranscriptDecode(t *testing.T) {
	for _, file := range transcripts {
		t.Run(file, func(t *testing.T) {
			tr := loadTranscript(t, file)
			hdr := map[string]*header{}
			for _, side := range []string{"C", "S"} {
				h, err := parseHeader([]byte(tr.lines[side][0]))
				if err != nil {
					t.Fatalf("%s header: %v", side, err)
				}
				if err := h.verify(); err != nil {
					t.Fatalf("%s header signature: %v", side, err)
				}
				if !h.publicKey.Equal(sideKeys(t, side).Public()) {
					t.Errorf("%s header carries the wrong key", side)
				}
				if h.token != tr.secrets[side+" token-local"] || h.token != tr.secrets[other(side)+" token-remote"] {
					t.Errorf("%s token %q does not match the recorded secrets", side, h.token)
				}
				x := new(big.Int).SetBytes(mustB64(t, tr.secrets[side+" dh-private"]))
				if y := new(big.Int).Exp(modp5G, x, modp5P); y.Cmp(h.dhPublic) != 0 {
					t.Errorf("%s dh.public is not 2^dh-private mod p", side)
				}
				if got := (&dhKey{pub: h.dhPublic}).publicBase64(); got != tr.secrets[side+" dh-public"] {
					t.Errorf("%s dh.public re-encodes as %q", side, got)
				}
				// A header re-made from its parts is the same line.
				if got := string(marshalHeaderLine(marshalPayload(h.token, h.publicPEM, tr.secrets[side+" dh-public"], h.ciphers), h.sig)); got != tr.lines[side][0]+"\n" {
					t.Errorf("%s header does not re-marshal to the same bytes:\n got %q\nwant %q", side, got, tr.lines[side][0])
				}
				hdr[side] = h
			}

			// WIRE.md §3 and §4.
			c, s := hdr["C"], hdr["S"]
			token := c.token + s.token
			xs, ys := c.ciphers, s.ciphers
			if s.token > c.token {
				token = s.token + c.token
				xs, ys = ys, xs
			}
			if got := pickCipher(xs, ys); got != tr.cipher {
				t.Errorf("pickCipher = %q, the Node peers chose %q", got, tr.cipher)
			}
			if got := pickCipher(ys, xs); got != tr.cipher {
				t.Errorf("pickCipher (swapped) = %q, the Node peers chose %q", got, tr.cipher)
			}

			// WIRE.md §5: each side's secret from its own private key.
			for _, side := range []string{"C", "S"} {
				priv := &dhKey{priv: new(big.Int).SetBytes(mustB64(t, tr.secrets[side+" dh-private"]))}
				pw, err := priv.sharedPassword(hdr[other(side)].dhPublic)
				if err != nil {
					t.Fatal(err)
				}
				if string(pw) != tr.secrets[side+" secret"] {
					t.Errorf("%s secret = %s, recorded %s", side, pw, tr.secrets[side+" secret"])
				}
			}
			su, err := newSuite(tr.cipher, []byte(tr.secrets["S secret"]))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(su.key, tr.key) || !bytes.Equal(su.iv, tr.iv) {
				t.Errorf("EVP_BytesToKey = %x / %x, recorded %x / %x", su.key, su.iv, tr.key, tr.iv)
			}

			// WIRE.md §6: every frame, in order, per direction.
			for _, side := range []string{"C", "S"} {
				var got []string
				ended := false
				for seq, l := range tr.lines[side][1:] {
					f, err := parseFrame([]byte(l))
					if err != nil {
						t.Fatalf("%s frame %d: %v", side, seq, err)
					}
					if ended {
						t.Fatalf("%s frame %d after the end frame", side, seq)
					}
					if string(appendFrame(nil, f)) != l+"\n" {
						t.Errorf("%s frame %d does not re-marshal to the same bytes", side, seq)
					}
					d := frameDigest(uint64(seq), token, f.ct)
					if !verifyDigest(hdr[side].publicKey, d, f.sig) {
						t.Fatalf("%s frame %d: signature does not verify", side, seq)
					}
					if verifyDigest(hdr[side].publicKey, frameDigest(uint64(seq)+1, token, f.ct), f.sig) {
						t.Fatalf("%s frame %d verifies with the wrong sequence number", side, seq)
					}
					if f.end {
						ended = true
						continue
					}
					pt, err := su.decrypt(mustB64(t, f.ct))
					if err != nil {
						t.Fatalf("%s frame %d: %v", side, seq, err)
					}
					got = append(got, string(pt))
					// Encrypting the plaintext again gives the same bytes:
					// the key and IV are the same for every frame.
					if ct := base64.StdEncoding.EncodeToString(su.encrypt(pt)); ct != f.ct {
						t.Errorf("%s frame %d re-encrypts to %s, want %s", side, seq, ct, f.ct)
					}
				}
				if !ended {
					t.Errorf("%s sent no end frame", side)
				}
				if !slices.Equal(got, tr.plain[side]) {
					t.Errorf("%s plaintexts = %q, recorded %q", side, got, tr.plain[side])
				}
			}
		})
	}
}

// TestTranscriptReplay runs a Conn as each side of each capture, with that
// side's key, token and Diffie-Hellman private key, against the other side's
// recorded lines, and checks that it writes exactly the recorded bytes and
// reads exactly the recorded plaintext.
func TestTranscriptReplay(t *testing.T) {
	for _, file := range transcripts {
		for _, side := range []string{"C", "S"} {
			t.Run(file+"/"+side, func(t *testing.T) {
				tr := loadTranscript(t, file)
				h, err := parseHeader([]byte(tr.lines[side][0]))
				if err != nil {
					t.Fatal(err)
				}
				dhPriv := mustB64(t, tr.secrets[side+" dh-private"])
				random := append(mustB64(t, tr.secrets[side+" token-local"]), make([]byte, modp5Len-len(dhPriv))...)
				random = append(random, dhPriv...)

				var peer bytes.Buffer
				for _, l := range tr.lines[other(side)] {
					peer.WriteString(l + "\n")
				}
				sc := &scriptConn{in: bytes.NewReader(peer.Bytes())}
				c := NewConn(sc, &Config{
					Keys:    sideKeys(t, side),
					Ciphers: h.ciphers,
					Rand:    bytes.NewReader(random),
				})
				if err := c.Handshake(); err != nil {
					t.Fatal(err)
				}
				if c.Cipher() != tr.cipher {
					t.Errorf("Cipher() = %q, want %q", c.Cipher(), tr.cipher)
				}
				if !c.RemoteKey().Equal(sideKeys(t, other(side)).Public()) {
					t.Error("RemoteKey() is not the peer's key")
				}
				for _, p := range tr.plain[side] {
					if _, err := c.Write([]byte(p)); err != nil {
						t.Fatal(err)
					}
				}
				got, err := io.ReadAll(c)
				if err != nil {
					t.Fatalf("reading: %v", err)
				}
				if want := strings.Join(tr.plain[other(side)], ""); string(got) != want {
					t.Errorf("read %q, want %q", got, want)
				}
				if err := c.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				if err := c.Close(); err != nil {
					t.Fatal(err)
				}
				want := strings.Join(tr.lines[side], "\n") + "\n"
				if sc.out.String() != want {
					t.Errorf("wrote:\n%s\nwant:\n%s", sc.out.String(), want)
				}
			})
		}
	}
}

// verifyDigest checks a frame signature over a precomputed digest.
func verifyDigest(pub *rsa.PublicKey, d [32]byte, sig []byte) bool {
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], sig) == nil
}

// scriptConn is a net.Conn that reads a fixed input and records what is
// written.
type scriptConn struct {
	in     *bytes.Reader
	mu     sync.Mutex
	out    bytes.Buffer
	closed bool
}

func (s *scriptConn) Read(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, net.ErrClosed
	}
	return s.in.Read(b)
}

func (s *scriptConn) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, net.ErrClosed
	}
	return s.out.Write(b)
}

func (s *scriptConn) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("already closed")
	}
	s.closed = true
	return nil
}

func (s *scriptConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (s *scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (s *scriptConn) SetDeadline(time.Time) error      { return nil }
func (s *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (s *scriptConn) SetWriteDeadline(time.Time) error { return nil }
