package securepeer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the known-answer vectors in testdata/vectors")

// A vector is one reproducible session: fixed identities, fixed randomness,
// and every byte each side sent. Another implementation can check itself
// against these files: feed it the same inputs and compare the bytes.
type vector struct {
	name               string
	description        string
	initiatorSeed      []byte // Ed25519 seed
	responderSeed      []byte
	initiatorMode      string // client or newconn
	responderMode      string // server or newconn
	initiatorRand      []byte // everything Config.Rand yields, in order
	responderRand      []byte
	initiatorCiphers   []Cipher
	responderCiphers   []Cipher
	initiatorNoPQ      bool
	responderNoPQ      bool
	initiatorProtos    []string
	responderProtos    []string
	initiatorCipherIDs []uint16 // the list as sent, unknown identifiers included; nil: from initiatorCiphers
	initiatorRejects   bool     // the initiator's Verify refuses the responder
	responderRejects   bool     // the responder's Verify refuses the initiator
	skipRecords        uint64   // sequence numbers start here after the handshake (a rekey boundary)
	initiatorData      []byte   // written by the initiator, then CloseWrite
	responderData      []byte   // written by the responder after reading, then CloseWrite
	initiatorSent      []byte
	responderSent      []byte
	cipher             Cipher
	postQuantum        bool
	protocol           string
	channelBinding     []byte
	initiatorOutcome   string
	responderOutcome   string
	initiatorRandUsed  int
	responderRandUsed  int
	initiatorPublicKey string
	responderPublicKey string

	// Resumption vectors: a full session in which the initiator asks for
	// a ticket, then a second session (the fields above) in which it
	// offers it. resume says what the responder does with it.
	resume          string // "resumed", or the reason it falls back
	ticketKey       [32]byte
	firstInitiator  []byte // what each side sent in the first session
	firstResponder  []byte
	didResume       bool
	secondResponder []byte // seed of the responder's identity in the second session, if another
}

// Vector clocks: the first session's time, and how far a responder's clock
// runs ahead in the "expired" fallback.
var vectorTime = time.Unix(1_800_000_000, 0)

// vectorSecondTicketKey replaces the responder's ticket key in the
// "unknown_key" fallback.
var vectorSecondTicketKey = [32]byte{1}

// anyKeyCache is a ClientSessionCache that ignores keys, since each vector
// session runs over a new TCP connection with its own address.
type anyKeyCache struct{ ClientSessionCache }

func (c anyKeyCache) Take(string) (*ClientSession, bool) { return c.ClientSessionCache.Take("") }
func (c anyKeyCache) Put(_ string, s *ClientSession)     { c.ClientSessionCache.Put("", s) }

// stream returns n deterministic bytes named by label, for vector inputs.
func stream(label string, n int) []byte {
	var out []byte
	for i := 0; len(out) < n; i++ {
		sum := sha256.Sum256([]byte(fmt.Sprintf("%s %d", label, i)))
		out = append(out, sum[:]...)
	}
	return out[:n]
}

// vectorInputs are the sessions the vectors describe.
func vectorInputs() []*vector {
	base := func(name, desc string) *vector {
		return &vector{
			name:          name,
			description:   desc,
			initiatorSeed: stream("initiator identity", 32),
			responderSeed: stream("responder identity", 32),
			initiatorMode: "client",
			responderMode: "server",
			initiatorRand: stream("initiator rand", 256),
			responderRand: stream("responder rand", 256),
			initiatorData: []byte("beep boop\n"),
			responderData: []byte("BEEP BOOP\n"),
		}
	}
	v1 := base("hybrid_aes256gcm", "Client and Server with default settings: X25519 + ML-KEM-768, AES-256-GCM")
	v1.initiatorCiphers = []Cipher{AES256GCM, ChaCha20Poly1305, AES128GCM}
	v1.responderCiphers = []Cipher{AES256GCM, ChaCha20Poly1305, AES128GCM}
	v2 := base("hybrid_chacha20poly1305", "the responder prefers ChaCha20-Poly1305 and lists nothing else")
	v2.initiatorCiphers = []Cipher{AES256GCM, ChaCha20Poly1305}
	v2.responderCiphers = []Cipher{ChaCha20Poly1305}
	v3 := base("classical_responder_opts_out", "the responder sets DisablePostQuantum: X25519 only, AES-128-GCM")
	v3.initiatorCiphers = []Cipher{AES128GCM}
	v3.responderCiphers = []Cipher{AES128GCM, AES256GCM}
	v3.responderNoPQ = true
	v4 := base("simultaneous_open", "both sides use NewConn; the larger ephemeral key initiates")
	v4.initiatorMode, v4.responderMode = "newconn", "newconn"
	v4.initiatorCiphers = []Cipher{AES256GCM}
	v4.responderCiphers = []Cipher{AES256GCM}
	v5 := base("application_protocol", "both sides list application protocols; the responder's order picks /mplex/6.7.0")
	v5.initiatorCiphers = []Cipher{AES256GCM}
	v5.responderCiphers = []Cipher{AES256GCM}
	v5.initiatorProtos = []string{"/yamux/1.0.0", "/mplex/6.7.0"}
	v5.responderProtos = []string{"/noise", "/mplex/6.7.0", "/yamux/1.0.0"}
	v6 := base("classical_initiator_opts_out", "the initiator sets DisablePostQuantum: it sends no ML-KEM key and draws no ML-KEM randomness")
	v6.initiatorCiphers = []Cipher{ChaCha20Poly1305}
	v6.responderCiphers = []Cipher{ChaCha20Poly1305}
	v6.initiatorNoPQ = true
	v7 := base("unknown_cipher_ids", "the initiator's list holds two identifiers no implementation knows; they keep their positions, so ChaCha20-Poly1305 (0+1) beats AES-256-GCM (3+0)")
	v7.initiatorCiphers = []Cipher{ChaCha20Poly1305, AES256GCM}
	v7.initiatorCipherIDs = []uint16{uint16(ChaCha20Poly1305), 0x7f01, 0x7f02, uint16(AES256GCM)}
	v7.responderCiphers = []Cipher{AES256GCM, ChaCha20Poly1305}
	v8 := base("initiator_rejects", "the initiator's Verify refuses the responder: it aborts with 0x01 in place of message 3, and never reveals its identity")
	v8.initiatorCiphers = []Cipher{AES256GCM}
	v8.responderCiphers = []Cipher{AES256GCM}
	v8.initiatorRejects = true
	v9 := base("responder_rejects", "the responder's Verify refuses the initiator: an authenticated alert 0x01 follows message 3")
	v9.initiatorCiphers = []Cipher{AES256GCM}
	v9.responderCiphers = []Cipher{AES256GCM}
	v9.responderRejects = true
	v10 := base("rekey_boundary", "hybrid_aes256gcm with both sides' sequence numbers set to 2^20 - 1 after the handshake, as if that many records had gone each way: each side's data record is the last under the traffic key, its end record the first under the rotated key")
	v10.initiatorCiphers = []Cipher{AES256GCM, ChaCha20Poly1305, AES128GCM}
	v10.responderCiphers = []Cipher{AES256GCM, ChaCha20Poly1305, AES128GCM}
	v10.skipRecords = 1<<20 - 1
	vs := []*vector{v1, v2, v3, v4, v5, v6, v7, v8, v9, v10}
	resumption := func(name, resume, desc string) *vector {
		v := base(name, desc)
		v.initiatorCiphers = []Cipher{AES256GCM, ChaCha20Poly1305}
		v.responderCiphers = []Cipher{AES256GCM, ChaCha20Poly1305}
		v.resume = resume
		v.initiatorRand = stream("initiator rand", 512)
		v.responderRand = stream("responder rand", 512)
		copy(v.ticketKey[:], stream("ticket key", 32))
		return v
	}
	r1 := resumption("resumption", "resumed",
		"a full session in which the initiator asks for a ticket (0xff01 last in its cipher list) and the responder gives one, then a resumed session with it, which gives a ticket again")
	r2 := resumption("resumption_fallback_unknown_key", "unknown_key",
		"the responder's ticket keys were replaced between the sessions: it answers the resumption with 0x0005 and a full handshake follows in the same connection")
	r3 := resumption("resumption_fallback_expired", "expired",
		"the responder's clock has passed the ticket's expiry (8 days later): full handshake after 0x0005")
	r4 := resumption("resumption_fallback_other_identity", "other_identity",
		"another responder identity with the same ticket keys answers at the address: it does not honour a ticket issued by another identity, full handshake after 0x0005")
	r4.secondResponder = stream("other responder identity", 32)
	r5 := resumption("resumption_fallback_classical_ticket", "classical_ticket",
		"the initiator sets DisablePostQuantum, so the first session and its ticket are classical; the responder, which had DisablePostQuantum too, now wants the hybrid and does not honour a classical ticket: full handshake after 0x0005 (classical, as the initiator opts out)")
	r5.initiatorNoPQ = true
	return append(vs, r1, r2, r3, r4, r5)
}

// countingReader yields b and counts what was read; reading past the end
// fails, so a vector states exactly the randomness a side consumes.
type countingReader struct {
	b []byte
	n int
}

func (r *countingReader) Read(p []byte) (int, error) {
	if r.n+len(p) > len(r.b) {
		return 0, errors.New("vector randomness exhausted")
	}
	copy(p, r.b[r.n:])
	r.n += len(p)
	return len(p), nil
}

// runVector runs the session and fills in the outputs.
func runVector(t *testing.T, v *vector) {
	t.Helper()
	ia, err := NewIdentity(ed25519.NewKeyFromSeed(v.initiatorSeed))
	if err != nil {
		t.Fatal(err)
	}
	ib, err := NewIdentity(ed25519.NewKeyFromSeed(v.responderSeed))
	if err != nil {
		t.Fatal(err)
	}
	randA, randB := &countingReader{b: v.initiatorRand}, &countingReader{b: v.responderRand}
	verify := func(rejects bool) func(context.Context, PublicKey) error {
		if rejects {
			return rejectAll
		}
		return nil
	}
	cfgA := &Config{Identity: ia, Rand: randA, Ciphers: v.initiatorCiphers, DisablePostQuantum: v.initiatorNoPQ, NextProtos: v.initiatorProtos, Verify: verify(v.initiatorRejects)}
	cfgB := &Config{Identity: ib, Rand: randB, Ciphers: v.responderCiphers, DisablePostQuantum: v.responderNoPQ, NextProtos: v.responderProtos, Verify: verify(v.responderRejects)}
	if v.resume != "" {
		cfgA.ClientSessionCache = anyKeyCache{NewLRUClientSessionCache(1)}
		cfgA.Time = func() time.Time { return vectorTime }
		cfgB.Time = cfgA.Time
		cfgB.SetSessionTicketKeys([][32]byte{v.ticketKey})
		cfgB.DisablePostQuantum = v.resume == "classical_ticket"
		v.firstInitiator, v.firstResponder = runVectorSession(t, v, cfgA, cfgB)
		switch v.resume {
		case "unknown_key":
			cfgB.SetSessionTicketKeys([][32]byte{vectorSecondTicketKey})
		case "expired":
			cfgB.Time = func() time.Time { return vectorTime.Add(8 * 24 * time.Hour) }
		case "other_identity":
			ib2, err := NewIdentity(ed25519.NewKeyFromSeed(v.secondResponder))
			if err != nil {
				t.Fatal(err)
			}
			cfgB.Identity = ib2
		case "classical_ticket":
			cfgB.DisablePostQuantum = false
		}
	}
	v.initiatorSent, v.responderSent = runVectorSession(t, v, cfgA, cfgB)
	v.initiatorRandUsed, v.responderRandUsed = randA.n, randB.n
	v.initiatorPublicKey, v.responderPublicKey = ia.PublicKey().String(), ib.PublicKey().String()
}

// runVectorSession runs one session of v between the two configs and
// returns what each side sent.
func runVectorSession(t *testing.T, v *vector, cfgA, cfgB *Config) (initiatorSent, responderSent []byte) {
	t.Helper()
	a, b := tcpPair(t)
	ra, rb := &recorder{Conn: a}, &recorder{Conn: b}
	if v.initiatorCipherIDs != nil {
		testOnlyCipherList = func(c *Config, ids []uint16) []uint16 {
			if c == cfgA {
				return v.initiatorCipherIDs
			}
			return ids
		}
		defer func() { testOnlyCipherList = nil }()
	}
	mk := map[string]func(net.Conn, *Config) *Conn{"client": Client, "server": Server, "newconn": NewConn}
	x, y := mk[v.initiatorMode](ra, cfgA), mk[v.responderMode](rb, cfgB)
	outcome := func(err error) string {
		switch {
		case err == nil:
			return "complete"
		case errors.Is(err, ErrRejected):
			return "rejected by the peer"
		case errors.Is(err, errNotAllowed):
			return "refused the peer"
		}
		return err.Error()
	}
	hsY := run(y.Handshake)
	errX := x.Handshake()
	if v.initiatorRejects || v.responderRejects {
		if errX == nil {
			// The responder's refusal arrives as the first record.
			_, errX = x.Read(make([]byte, 1))
		}
		a.Close()
		v.initiatorOutcome, v.responderOutcome = outcome(errX), outcome(wait(t, hsY))
	} else {
		if errX != nil {
			t.Fatal(errX)
		}
		if err := wait(t, hsY); err != nil {
			t.Fatal(err)
		}
		if v.skipRecords > 0 {
			for _, hc := range []*halfConn{&x.in.halfConn, &x.out.halfConn, &y.in.halfConn, &y.out.halfConn} {
				hc.seq = v.skipRecords
			}
		}
		srv := run(func() error {
			got, err := io.ReadAll(y)
			if err != nil {
				return err
			}
			if !bytes.Equal(got, v.initiatorData) {
				return fmt.Errorf("responder read %q", got)
			}
			if _, err := y.Write(v.responderData); err != nil {
				return err
			}
			return y.CloseWrite()
		})
		if _, err := x.Write(v.initiatorData); err != nil {
			t.Fatal(err)
		}
		if err := x.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(x)
		if err != nil || !bytes.Equal(got, v.responderData) {
			t.Fatalf("initiator read %q, %v", got, err)
		}
		if err := wait(t, srv); err != nil {
			t.Fatal(err)
		}
		st := x.ConnectionState()
		if !st.Initiator {
			t.Fatalf("the side meant to initiate did not; pick other randomness for %s", v.name)
		}
		if ys := y.ConnectionState(); !bytes.Equal(ys.ChannelBinding, st.ChannelBinding) || ys.Cipher != st.Cipher || ys.NegotiatedProtocol != st.NegotiatedProtocol {
			t.Fatal("the two sides disagree")
		}
		v.cipher, v.postQuantum, v.channelBinding = st.Cipher, st.PostQuantum, st.ChannelBinding
		v.protocol, v.didResume = st.NegotiatedProtocol, st.DidResume
		v.initiatorOutcome, v.responderOutcome = "complete", "complete"
	}
	return rb.bytes(), ra.bytes()
}

func (v *vector) marshal() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# securepeer known-answer vector: %s.\n", v.description)
	fmt.Fprintf(&b, "# Hex fields are the exact bytes; *_rand is what Config.Rand yields, of\n")
	fmt.Fprintf(&b, "# which *_rand_used bytes are read. Regenerate with go test -run TestVectors -update.\n")
	if v.resume != "" {
		fmt.Fprintf(&b, "# Two sessions: first_*_sent is the full one that gives the ticket, *_sent the one\n")
		fmt.Fprintf(&b, "# that offers it. Each *_rand stream is consumed across both, in order, and\n")
		fmt.Fprintf(&b, "# *_rand_used counts both. The settings describe the second session; time is both\n")
		fmt.Fprintf(&b, "# sides' clock (Unix seconds) in the first, *_time the clocks in the second.\n")
	}
	kv := func(k string, v any) { fmt.Fprintf(&b, "%s: %v\n", k, v) }
	ciphers := func(cs []Cipher) string {
		var s []string
		for _, c := range cs {
			s = append(s, c.String())
		}
		return strings.Join(s, ",")
	}
	kv("initiator_mode", v.initiatorMode)
	kv("responder_mode", v.responderMode)
	kv("initiator_identity_seed", hex.EncodeToString(v.initiatorSeed))
	kv("responder_identity_seed", hex.EncodeToString(v.responderSeed))
	kv("initiator_public_key", v.initiatorPublicKey)
	kv("responder_public_key", v.responderPublicKey)
	kv("initiator_ciphers", ciphers(v.initiatorCiphers))
	if v.initiatorCipherIDs != nil {
		var ids []string
		for _, id := range v.initiatorCipherIDs {
			ids = append(ids, fmt.Sprintf("0x%04x", id))
		}
		kv("initiator_cipher_ids_sent", strings.Join(ids, ","))
	}
	kv("responder_ciphers", ciphers(v.responderCiphers))
	kv("initiator_disable_post_quantum", v.initiatorNoPQ)
	kv("responder_disable_post_quantum", v.responderNoPQ)
	kv("initiator_verify", map[bool]string{false: "accept", true: "reject"}[v.initiatorRejects])
	kv("responder_verify", map[bool]string{false: "accept", true: "reject"}[v.responderRejects])
	if v.skipRecords > 0 {
		kv("first_record_number", v.skipRecords)
	}
	kv("initiator_next_protos", strings.Join(v.initiatorProtos, ","))
	kv("responder_next_protos", strings.Join(v.responderProtos, ","))
	if v.resume != "" {
		kv("resumption", v.resume)
		kv("time", vectorTime.Unix())
		kv("ticket_key", hex.EncodeToString(v.ticketKey[:]))
		second := vectorTime
		if v.resume == "expired" {
			second = second.Add(8 * 24 * time.Hour)
		}
		kv("second_responder_time", second.Unix())
		kv("initiator_time", vectorTime.Unix())
		if v.resume == "unknown_key" {
			kv("second_ticket_key", hex.EncodeToString(vectorSecondTicketKey[:]))
		}
		if v.resume == "classical_ticket" {
			kv("first_responder_disable_post_quantum", true)
		}
		if v.secondResponder != nil {
			kv("second_responder_identity_seed", hex.EncodeToString(v.secondResponder))
		}
		kv("first_initiator_sent", hex.EncodeToString(v.firstInitiator))
		kv("first_responder_sent", hex.EncodeToString(v.firstResponder))
		kv("did_resume", v.didResume)
	}
	kv("initiator_rand", hex.EncodeToString(v.initiatorRand))
	kv("responder_rand", hex.EncodeToString(v.responderRand))
	kv("initiator_rand_used", v.initiatorRandUsed)
	kv("responder_rand_used", v.responderRandUsed)
	kv("initiator_data", hex.EncodeToString(v.initiatorData))
	kv("responder_data", hex.EncodeToString(v.responderData))
	kv("initiator_outcome", v.initiatorOutcome)
	kv("responder_outcome", v.responderOutcome)
	if v.cipher == 0 {
		kv("cipher", "none")
	} else {
		kv("cipher", v.cipher)
	}
	kv("post_quantum", v.postQuantum)
	kv("negotiated_protocol", v.protocol)
	kv("channel_binding", hex.EncodeToString(v.channelBinding))
	kv("initiator_sent", hex.EncodeToString(v.initiatorSent))
	kv("responder_sent", hex.EncodeToString(v.responderSent))
	return b.Bytes()
}

func parseVectorFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, val, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("%s: malformed line %q", path, line)
		}
		m[k] = val
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestVectors runs each vector session and compares every byte with the
// file. The files are the specification's worked examples: a change here is
// a change of the wire protocol.
func TestVectors(t *testing.T) {
	inputs := vectorInputs()
	for _, v := range inputs {
		t.Run(v.name, func(t *testing.T) {
			path := filepath.Join("testdata", "vectors", v.name+".txt")
			runVector(t, v)
			got := v.marshal()
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want := parseVectorFile(t, path)
			have := parseVectorFile(t, writeTemp(t, got))
			keys := make([]string, 0, len(want))
			for k := range want {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if have[k] != want[k] {
					t.Errorf("%s differs:\n got %.120s\nwant %.120s", k, have[k], want[k])
				}
			}
			if len(have) != len(want) {
				t.Errorf("the file has %d fields, the run %d", len(want), len(have))
			}
		})
	}
	// Every file must be one of the vectors, so none is silently ignored.
	files, _ := filepath.Glob(filepath.Join("testdata", "vectors", "*.txt"))
	if len(files) != len(inputs) {
		t.Errorf("testdata/vectors has %d files for %d vectors", len(files), len(inputs))
	}
}

// TestVectorStructure checks the vectors against the layout PROTOCOL.md
// describes, independently of the code that produced them: the hellos, the
// framing of the handshake messages and records, and their sizes.
func TestVectorStructure(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "vectors", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatal("no vectors in testdata/vectors")
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			m := parseVectorFile(t, path)
			if m["resumption"] != "" {
				checkResumptionStructure(t, m)
				return
			}
			pq, _ := strconv.ParseBool(m["post_quantum"])
			for _, side := range []string{"initiator", "responder"} {
				sent, err := hex.DecodeString(m[side+"_sent"])
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.HasPrefix(sent, []byte("speer\x01")) {
					t.Fatalf("%s: does not start with the hello", side)
				}
				rest := sent[8:]
				var hs [][]byte
				msgs := map[string]int{"initiator": 2, "responder": 1}[side]
				if side == "responder" && m[side+"_mode"] == "newconn" {
					msgs++ // its speculative message 1, which the initiator dropped
				}
				if side == "initiator" && m["initiator_verify"] == "reject" {
					msgs-- // message 3 is replaced by an abort
				}
				for range msgs {
					n := int(rest[0])<<8 | int(rest[1])
					hs = append(hs, rest[2:2+n])
					rest = rest[2+n:]
				}
				if side == "initiator" && m["initiator_verify"] == "reject" {
					if !bytes.Equal(rest, []byte{0, 0, 1}) {
						t.Fatalf("initiator: %x after message 1, want the abort 000001", rest)
					}
					rest = nil
				}
				var records []byte
				for len(rest) > 0 {
					n := int(rest[1])<<16 | int(rest[2])<<8 | int(rest[3])
					records = append(records, rest[0])
					rest = rest[4+n:]
				}
				want := []byte{1, 2} // data, then end of stream
				switch {
				case m["initiator_verify"] == "reject":
					want = nil
				case m["responder_verify"] == "reject" && side == "responder":
					want = []byte{3} // the alert
				case m["responder_verify"] == "reject":
					want = nil
				}
				if !bytes.Equal(records, want) {
					t.Errorf("%s: record types %v, want %v", side, records, want)
				}
				// Message 1 = e (32) + payload + tag (16); its payload has
				// a 1184-byte ML-KEM key when the hybrid is offered.
				if side == "initiator" {
					m1 := hs[0]
					offered := m["initiator_disable_post_quantum"] == "false"
					if hasKey := len(m1) > 1184; hasKey != offered {
						t.Errorf("message 1 is %d bytes; ML-KEM offered: %v", len(m1), offered)
					}
				}
				if side == "responder" && pq {
					if m2 := hs[len(hs)-1]; len(m2) < 1088 {
						t.Errorf("message 2 is %d bytes, too short for an ML-KEM ciphertext", len(m2))
					}
				}
			}
		})
	}
}

// checkResumptionStructure checks a resumption vector against PROTOCOL.md,
// "Session resumption": the ticket record closing the first session, and
// the second session's messages, resumed or fallen back.
func checkResumptionStructure(t *testing.T, m map[string]string) {
	hexField := func(k string) []byte {
		b, err := hex.DecodeString(m[k])
		if err != nil {
			t.Fatal(k, err)
		}
		return b
	}
	// frames splits the handshake frames after the hello: a zero length
	// is a 3-byte control (abort or 0x0005), then records.
	split := func(b []byte, frames int) (hello []byte, hs [][]byte, records []byte, recordLens []int) {
		hello, b = b[:8], b[8:]
		for range frames {
			n := int(b[0])<<8 | int(b[1])
			if n == 0 {
				hs, b = append(hs, b[:3]), b[3:]
				continue
			}
			hs, b = append(hs, b[2:2+n]), b[2+n:]
		}
		for len(b) > 0 {
			n := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
			records, recordLens = append(records, b[0]), append(recordLens, n)
			b = b[4+n:]
		}
		return hello, hs, records, recordLens
	}
	const ticketLen = 8 + 24 + 114 + 16 // key name, nonce, sealed state, tag
	// The first session: a full one, whose responder sends a ticket first.
	if _, _, recs, lens := split(hexField("first_responder_sent"), 1); !bytes.Equal(recs, []byte{4, 1, 2}) || lens[0] != 4+ticketLen+16 {
		t.Errorf("first session: responder records %v (lengths %v), want a %d-byte ticket record, data, end", recs, lens, 4+ticketLen+16)
	}
	resumed := m["did_resume"] == "true"
	iFrames, rFrames := 3, 2 // resumption message 1, full message 1, message 3; 0x0005, message 2
	if resumed {
		iFrames, rFrames = 2, 1 // resumption message 1, finished; message 2
	}
	hello, hs, recs, _ := split(hexField("initiator_sent"), iFrames)
	if hello[7] != 0x01 {
		t.Errorf("initiator hello %x lacks the resume flag", hello)
	}
	if n := int(hs[0][0])<<8 | int(hs[0][1]); n != ticketLen || len(hs[0]) != 2+ticketLen+32+16+1+2*2+1 {
		t.Errorf("resumption message 1: ticket %d bytes, message %d bytes", n, len(hs[0]))
	}
	if resumed && len(hs[1]) != 32 {
		t.Errorf("finished is %d bytes", len(hs[1]))
	}
	if !bytes.Equal(recs, []byte{1, 2}) {
		t.Errorf("initiator records %v", recs)
	}
	hello, hs, recs, _ = split(hexField("responder_sent"), rFrames)
	if hello[7] != 0 {
		t.Errorf("responder hello %x has flags", hello)
	}
	if !resumed && !bytes.Equal(hs[0], []byte{0, 0, 5}) {
		t.Errorf("responder's answer %x, want 000005", hs[0])
	}
	if resumed && len(hs[0]) != 32+8+1+2*2+1+16 {
		t.Errorf("resumption message 2 is %d bytes", len(hs[0]))
	}
	if !bytes.Equal(recs, []byte{4, 1, 2}) {
		t.Errorf("responder records %v, want ticket, data, end", recs)
	}
}

func writeTemp(t *testing.T, b []byte) string {
	p := filepath.Join(t.TempDir(), "v.txt")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
