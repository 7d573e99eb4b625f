package speccheck

// An independent implementation, from PROTOCOL.md only, of the full
// handshake, session tickets, the resumed handshake and the fallback after
// 00 00 05, checked against testdata/vectors/resumption*.txt.
//
// Each test runs both sides of both sessions in memory, in the order the
// protocol imposes, and compares every byte each side sends.

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/mlkem"
	"crypto/mlkem/mlkemtest"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/flynn/noise"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"
)

// Labels (PROTOCOL.md, "Labels").
const (
	labelStatic        = "securepeer v1 noise static key"
	labelSignature     = "securepeer v1 static key signature\x00"
	labelPrologue      = "securepeer v1 prologue\x00"
	labelI2R           = "securepeer v1 traffic initiator to responder "
	labelR2I           = "securepeer v1 traffic responder to initiator "
	labelBinding       = "securepeer v1 channel binding"
	labelResumption    = "securepeer v1 resumption"
	labelResPrologue   = "securepeer v1 resumption prologue\x00"
	labelFinished      = "securepeer v1 resumption finished"
	labelTicketKeyName = "securepeer v1 ticket key name"
	labelTicketKey     = "securepeer v1 ticket key"
)

const (
	cipherAES128   = 0x0001
	cipherAES256   = 0x0002
	cipherChaCha   = 0x0003
	ticketRequest  = 0xff01 // "Asking for a ticket"
	workSignal     = 0xff02 // "Work under load": every initiator here answers demands
	ticketMaxLife  = 7 * 24 * 60 * 60
	recordData     = 0x01
	recordEnd      = 0x02
	recordTicket   = 0x04
	flagResume     = 0x01
	modeInitiator  = 0x01
	modeResponder  = 0x02
	ticketFormat   = 0x01
	ticketFlagPQ   = 0x01
	ticketStateLen = 1 + 8 + 8 + 1 + 32 + 32 + 32
)

var cipherNames = map[string]uint16{
	"AES-128-GCM":       cipherAES128,
	"AES-256-GCM":       cipherAES256,
	"ChaCha20-Poly1305": cipherChaCha,
}

func hkdfSHA256(t *testing.T, ikm, salt []byte, info string, n int) []byte {
	t.Helper()
	out, err := hkdf.Key(sha256.New, ikm, salt, info, n)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func u16(v int) []byte { return binary.BigEndian.AppendUint16(nil, uint16(v)) }

// --- vector files ---

type vector map[string]string

func readVector(t *testing.T, path string) vector {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v := vector{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, val, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("%s: bad line %q", path, line)
		}
		v[k] = strings.TrimSpace(val)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return v
}

func (v vector) hex(t *testing.T, k string) []byte {
	t.Helper()
	s, ok := v[k]
	if !ok {
		t.Fatalf("vector has no %s", k)
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("%s: %v", k, err)
	}
	return b
}

func (v vector) int(t *testing.T, k string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(v[k], 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", k, err)
	}
	return n
}

func (v vector) ciphers(t *testing.T, k string) []uint16 {
	t.Helper()
	var ids []uint16
	for name := range strings.SplitSeq(v[k], ",") {
		id, ok := cipherNames[name]
		if !ok {
			t.Fatalf("%s: unknown cipher %q", k, name)
		}
		ids = append(ids, id)
	}
	return ids
}

func (v vector) protos(k string) [][]byte {
	var ps [][]byte
	if v[k] == "" {
		return nil
	}
	for p := range strings.SplitSeq(v[k], ",") {
		ps = append(ps, []byte(p))
	}
	return ps
}

// --- randomness: what Config.Rand yields, consumed in order ---

type randStream struct {
	b    []byte
	used int
}

func (r *randStream) Read(p []byte) (int, error) {
	if len(r.b)-r.used < len(p) {
		return 0, errors.New("random stream exhausted")
	}
	copy(p, r.b[r.used:])
	r.used += len(p)
	return len(p), nil
}

func (r *randStream) take(t *testing.T, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	if _, err := r.Read(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// --- identities (PROTOCOL.md, "Identities and static keys") ---

type peer struct {
	id        ed25519.PrivateKey
	pub       []byte
	static    noise.DHKey
	sig       []byte
	rand      *randStream
	ciphers   []uint16
	disablePQ bool
	protos    [][]byte
}

func newPeer(t *testing.T, seed []byte) *peer {
	t.Helper()
	id := ed25519.NewKeyFromSeed(seed)
	priv := hkdfSHA256(t, seed, nil, labelStatic, 32)
	pub, err := curve25519.X25519(priv, curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	return &peer{
		id:     id,
		pub:    id.Public().(ed25519.PublicKey),
		static: noise.DHKey{Private: priv, Public: pub},
		sig:    ed25519.Sign(id, cat([]byte(labelSignature), pub)),
	}
}

func hello(mode, flags byte) []byte { return []byte{'s', 'p', 'e', 'e', 'r', 0x01, mode, flags} }

// --- payload pieces ---

func cipherList(ids []uint16) []byte {
	b := []byte{byte(len(ids))}
	for _, id := range ids {
		b = binary.BigEndian.AppendUint16(b, id)
	}
	return b
}

func protoList(ps [][]byte) []byte {
	b := []byte{byte(len(ps))}
	for _, p := range ps {
		b = append(b, byte(len(p)))
		b = append(b, p...)
	}
	return b
}

// reader parses a payload; every payload must hold exactly its fields.
type reader struct {
	t *testing.T
	b []byte
}

func (r *reader) bytes(n int) []byte {
	r.t.Helper()
	if len(r.b) < n {
		r.t.Fatalf("payload too short: want %d, have %d", n, len(r.b))
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) u8() int  { return int(r.bytes(1)[0]) }
func (r *reader) u16() int { return int(binary.BigEndian.Uint16(r.bytes(2))) }

func (r *reader) ciphers() []uint16 {
	n := r.u8()
	ids := make([]uint16, n)
	for i := range ids {
		ids[i] = uint16(r.u16())
	}
	return ids
}

func (r *reader) protos() [][]byte {
	n := r.u8()
	ps := make([][]byte, n)
	for i := range ps {
		ps[i] = r.bytes(r.u8())
	}
	return ps
}

func (r *reader) end() {
	r.t.Helper()
	if len(r.b) != 0 {
		r.t.Fatalf("%d bytes left over in payload", len(r.b))
	}
}

// chooseCipher is "Cipher choice": smallest sum of positions as sent, ties
// broken by AES-256-GCM, ChaCha20-Poly1305, AES-128-GCM.
func chooseCipher(init, resp []uint16) uint16 {
	tie := map[uint16]int{cipherAES256: 0, cipherChaCha: 1, cipherAES128: 2}
	best, bestSum := uint16(0), -1
	for i, a := range init {
		if _, known := tie[a]; !known {
			continue
		}
		for j, b := range resp {
			if a != b {
				continue
			}
			s := i + j
			if bestSum < 0 || s < bestSum || (s == bestSum && tie[a] < tie[best]) {
				best, bestSum = a, s
			}
		}
	}
	return best
}

// chooseProto is "Application protocol": the responder's first name the
// initiator also lists; nothing if either list is empty.
func chooseProto(t *testing.T, init, resp [][]byte) []byte {
	if len(init) == 0 || len(resp) == 0 {
		return nil
	}
	for _, r := range resp {
		for _, i := range init {
			if bytes.Equal(r, i) {
				return r
			}
		}
	}
	t.Fatal("no application protocol in common")
	return nil
}

// --- key schedule and records ---

type keys struct {
	k1, k2, h []byte
	cipher    uint16
	pq        bool
	proto     []byte
	asked     bool // the initiator asked for a ticket (0xff01, or a resumption)
}

func (k *keys) binding(t *testing.T) []byte {
	return hkdfSHA256(t, cat(k.k1, k.k2), k.h, labelBinding, 32)
}

func (k *keys) resumptionSecret(t *testing.T) []byte {
	return hkdfSHA256(t, cat(k.k1, k.k2), k.h, labelResumption, 32)
}

type direction struct {
	aead cipher.AEAD
	iv   []byte
	seq  uint64
}

func newDirection(t *testing.T, k *keys, initToResp bool) *direction {
	t.Helper()
	l := 32
	if k.cipher == cipherAES128 {
		l = 16
	}
	id := fmt.Sprintf("%04x", k.cipher)
	var kiv []byte
	if initToResp {
		kiv = hkdfSHA256(t, k.k1, k.h, labelI2R+id, l+12)
	} else {
		kiv = hkdfSHA256(t, k.k2, k.h, labelR2I+id, l+12)
	}
	var aead cipher.AEAD
	var err error
	switch k.cipher {
	case cipherChaCha:
		aead, err = chacha20poly1305.New(kiv[:l])
	default:
		var b cipher.Block
		b, err = aes.NewCipher(kiv[:l])
		if err == nil {
			aead, err = cipher.NewGCM(b)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return &direction{aead: aead, iv: kiv[l:]}
}

func (d *direction) nonce() []byte {
	n := bytes.Clone(d.iv)
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], d.seq)
	subtle.XORBytes(n[4:], n[4:], s[:])
	return n
}

func (d *direction) seal(typ byte, plaintext []byte) []byte {
	n := len(plaintext) + d.aead.Overhead()
	hdr := []byte{typ, byte(n >> 16), byte(n >> 8), byte(n)}
	rec := d.aead.Seal(hdr, d.nonce(), plaintext, hdr)
	d.seq++
	return rec
}

// open reads one record from the front of *b.
func (d *direction) open(t *testing.T, b *[]byte) (byte, []byte) {
	t.Helper()
	if len(*b) < 4 {
		t.Fatal("short record header")
	}
	hdr := (*b)[:4]
	n := int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
	if n < 16 || n > 65552 || len(*b) < 4+n {
		t.Fatalf("bad record length %d", n)
	}
	pt, err := d.aead.Open(nil, d.nonce(), (*b)[4:4+n], hdr)
	if err != nil {
		t.Fatalf("record %d: %v", d.seq, err)
	}
	d.seq++
	*b = (*b)[4+n:]
	return hdr[0], pt
}

// --- tickets (PROTOCOL.md, "Tickets": securepeer's own format) ---

type ticketState struct {
	authTime, expires uint64
	flags             byte
	responder         []byte
	initiator         []byte
	secret            []byte
}

func ticketAEAD(t *testing.T, k []byte) ([]byte, cipher.AEAD) {
	t.Helper()
	name := hkdfSHA256(t, k, nil, labelTicketKeyName, 8)
	aead, err := chacha20poly1305.NewX(hkdfSHA256(t, k, nil, labelTicketKey, 32))
	if err != nil {
		t.Fatal(err)
	}
	return name, aead
}

func sealTicket(t *testing.T, k, nonce []byte, s ticketState) []byte {
	t.Helper()
	name, aead := ticketAEAD(t, k)
	state := []byte{ticketFormat}
	state = binary.BigEndian.AppendUint64(state, s.authTime)
	state = binary.BigEndian.AppendUint64(state, s.expires)
	state = append(state, s.flags)
	state = cat(state, s.responder, s.initiator, s.secret)
	if len(state) != ticketStateLen {
		t.Fatalf("ticket state is %d bytes", len(state))
	}
	return aead.Seal(cat(name, nonce), nonce, state, name)
}

// openTicket returns ok false where the responder does not honour a ticket
// because its key name is not one of its keys or it does not open.
func openTicket(t *testing.T, k, ticket []byte) (ticketState, bool) {
	t.Helper()
	name, aead := ticketAEAD(t, k)
	if len(ticket) < 8+24+16 || !bytes.Equal(ticket[:8], name) {
		return ticketState{}, false
	}
	state, err := aead.Open(nil, ticket[8:32], ticket[32:], name)
	if err != nil || len(state) != ticketStateLen || state[0] != ticketFormat {
		return ticketState{}, false
	}
	return ticketState{
		authTime:  binary.BigEndian.Uint64(state[1:]),
		expires:   binary.BigEndian.Uint64(state[9:]),
		flags:     state[17],
		responder: state[18:50],
		initiator: state[50:82],
		secret:    state[82:114],
	}, true
}

// --- the two byte streams of one connection ---

type conn struct {
	iSent, rSent []byte // everything each side wrote
	iRead, rRead int    // how much of the other's stream each side consumed
	recOff       int    // where the responder's records begin in rSent
}

// readFrame reads one handshake frame (uint16 length || body) that the
// other side sent; a zero length returns the byte after it.
func readFrame(t *testing.T, src []byte, off *int) ([]byte, bool) {
	t.Helper()
	if len(src) < *off+2 {
		t.Fatal("short frame")
	}
	n := int(binary.BigEndian.Uint16(src[*off:]))
	*off += 2
	if n == 0 {
		b := src[*off : *off+1]
		*off++
		return b, false
	}
	b := src[*off : *off+n]
	*off += n
	return b, true
}

func suite() noise.CipherSuite {
	return noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashSHA256)
}

// --- the full handshake (PROTOCOL.md, "The Noise handshake") ---

// fullHandshake runs message 1, 2 and 3 once both hellos are on the wire
// (written by the caller, as is anything before message 1 in a fallback).
// iHello is the initiator's hello as sent (the prologue).
func fullHandshake(t *testing.T, c *conn, ini, res *peer, iHello, rHello []byte, askTicket bool) (ik, rk *keys) {
	t.Helper()
	// Initiator: message 1.
	var dk *mlkem.DecapsulationKey768
	var ek []byte
	if !ini.disablePQ {
		var err error
		dk, err = mlkem.NewDecapsulationKey768(ini.rand.take(t, 64))
		if err != nil {
			t.Fatal(err)
		}
		ek = dk.EncapsulationKey().Bytes()
	}
	list := append([]uint16(nil), ini.ciphers...)
	if askTicket {
		list = append(list, ticketRequest)
	}
	list = append(list, workSignal)
	payload1 := cat(cipherList(list), u16(len(ek)), ek)
	hsI, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: suite(), Random: ini.rand, Pattern: noise.HandshakeXX,
		Initiator: true, Prologue: cat([]byte(labelPrologue), iHello),
		PresharedKeyPlacement: 3, StaticKeypair: ini.static,
	})
	if err != nil {
		t.Fatal(err)
	}
	msg1, _, _, err := hsI.WriteMessage(nil, payload1)
	if err != nil {
		t.Fatal(err)
	}
	c.iSent = cat(c.iSent, u16(len(msg1)), msg1)

	// Responder: reads message 1, writes message 2.
	in1, ok := readFrame(t, c.iSent, &c.rRead)
	if !ok {
		t.Fatal("abort in place of message 1")
	}
	hsR, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: suite(), Random: res.rand, Pattern: noise.HandshakeXX,
		Initiator: false, Prologue: cat([]byte(labelPrologue), iHello),
		PresharedKeyPlacement: 3, StaticKeypair: res.static,
	})
	if err != nil {
		t.Fatal(err)
	}
	p1, _, _, err := hsR.ReadMessage(nil, in1)
	if err != nil {
		t.Fatalf("message 1: %v", err)
	}
	r := &reader{t: t, b: p1}
	iList := r.ciphers()
	rEK := r.bytes(r.u16())
	r.end()
	asked := slices.Contains(iList, ticketRequest)
	rPSK := make([]byte, 32)
	var ct []byte
	if len(rEK) > 0 && !res.disablePQ {
		ekey, err := mlkem.NewEncapsulationKey768(rEK)
		if err != nil {
			t.Fatal(err)
		}
		// ML-KEM.Encaps_internal(ek, m): crypto/mlkem has no derandomized
		// Encapsulate, so this uses crypto/mlkem/mlkemtest (for tests).
		m := res.rand.take(t, 32)
		rPSK, ct, err = mlkemtest.Encapsulate768(ekey, m)
		if err != nil {
			t.Fatal(err)
		}
	}
	rCipher := chooseCipher(iList, res.ciphers)
	if rCipher == 0 {
		t.Fatal("no cipher in common")
	}
	payload2 := cat(rHello, res.pub, res.sig, cipherList(res.ciphers), u16(len(ct)), ct, protoList(res.protos))
	msg2, _, _, err := hsR.WriteMessage(nil, payload2)
	if err != nil {
		t.Fatal(err)
	}
	c.rSent = cat(c.rSent, u16(len(msg2)), msg2)

	// Initiator: reads message 2, writes message 3.
	in2, ok := readFrame(t, c.rSent, &c.iRead)
	if !ok {
		t.Fatal("abort in place of message 2")
	}
	p2, _, _, err := hsI.ReadMessage(nil, in2)
	if err != nil {
		t.Fatalf("message 2: %v", err)
	}
	r = &reader{t: t, b: p2}
	if echo := r.bytes(8); !bytes.Equal(echo, rHello) {
		t.Fatalf("echoed hello %x, received %x", echo, rHello)
	}
	rID := r.bytes(32)
	rSig := r.bytes(64)
	rList := r.ciphers()
	iCT := r.bytes(r.u16())
	rProtos := r.protos()
	r.end()
	if !ed25519.Verify(rID, cat([]byte(labelSignature), hsI.PeerStatic()), rSig) {
		t.Fatal("responder's static signature does not verify")
	}
	iCipher := chooseCipher(list, rList)
	iProto := chooseProto(t, ini.protos, rProtos)
	iPSK := make([]byte, 32)
	if len(iCT) > 0 {
		if dk == nil {
			t.Fatal("ciphertext not asked for")
		}
		if iPSK, err = dk.Decapsulate(iCT); err != nil {
			t.Fatal(err)
		}
	}
	if err := hsI.SetPresharedKey(iPSK); err != nil {
		t.Fatal(err)
	}
	msg3, ics1, ics2, err := hsI.WriteMessage(nil, cat(ini.pub, ini.sig, protoList(ini.protos)))
	if err != nil {
		t.Fatal(err)
	}
	c.iSent = cat(c.iSent, u16(len(msg3)), msg3)

	// Responder: reads message 3.
	in3, ok := readFrame(t, c.iSent, &c.rRead)
	if !ok {
		t.Fatal("abort in place of message 3")
	}
	if err := hsR.SetPresharedKey(rPSK); err != nil {
		t.Fatal(err)
	}
	p3, rcs1, rcs2, err := hsR.ReadMessage(nil, in3)
	if err != nil {
		t.Fatalf("message 3: %v", err)
	}
	r = &reader{t: t, b: p3}
	iID := r.bytes(32)
	iSig := r.bytes(64)
	iProtos := r.protos()
	r.end()
	if !ed25519.Verify(iID, cat([]byte(labelSignature), hsR.PeerStatic()), iSig) {
		t.Fatal("initiator's static signature does not verify")
	}
	if !bytes.Equal(iID, ini.pub) || !bytes.Equal(rID, res.pub) {
		t.Fatal("identities")
	}
	ik = splitKeys(ics1, ics2, hsI.ChannelBinding(), iCipher, len(iCT) > 0, iProto)
	rk = splitKeys(rcs1, rcs2, hsR.ChannelBinding(), rCipher, len(ct) > 0, chooseProto(t, iProtos, res.protos))
	ik.asked, rk.asked = askTicket, asked
	return ik, rk
}

func splitKeys(cs1, cs2 *noise.CipherState, h []byte, c uint16, pq bool, proto []byte) *keys {
	k1, k2 := cs1.UnsafeKey(), cs2.UnsafeKey()
	return &keys{k1: k1[:], k2: k2[:], h: bytes.Clone(h), cipher: c, pq: pq, proto: proto}
}

// --- tickets on the initiator's side ---

type cached struct {
	ticket, secret []byte
	responder      []byte
	initiator      []byte
	pq             bool
	expiry         int64
}

// issuer is the responder's ticket policy for one session: its clock and
// its ticket key.
type issuer struct {
	now       int64
	ticketKey []byte
	// foreign, when set, is the vector's responder stream for a session
	// whose ticket key the vector does not give: the new ticket is taken
	// from it instead of sealed (see checkVector, unknown_key).
	foreign []byte
}

// ticketFromStream opens the responder's first record in a stream at off,
// with the receiving side's keys, and returns the ticket record's fields.
func ticketFromStream(t *testing.T, k *keys, stream []byte, off int) (uint32, []byte) {
	t.Helper()
	in := stream[off:]
	typ, pt := newDirection(t, k, false).open(t, &in)
	if typ != recordTicket || len(pt) < 5 {
		t.Fatalf("the responder's first record is type %d of %d bytes, want a ticket", typ, len(pt))
	}
	return binary.BigEndian.Uint32(pt), pt[4:]
}

// dataPhase runs the records after a handshake: the initiator writes its
// data and its end of stream; the responder reads them, then writes its
// ticket record (if it gives one), its data and its end of stream. It
// returns the ticket the initiator took, if any.
func dataPhase(t *testing.T, c *conn, ini, res *peer, ik, rk *keys, iData, rData []byte, give *ticketState, is issuer) *cached {
	t.Helper()
	if !bytes.Equal(ik.k1, rk.k1) || !bytes.Equal(ik.k2, rk.k2) || !bytes.Equal(ik.h, rk.h) ||
		ik.cipher != rk.cipher || ik.pq != rk.pq || !bytes.Equal(ik.proto, rk.proto) {
		t.Fatal("the two sides disagree on the session")
	}
	c.recOff = len(c.rSent)
	// The ticket's nonce is drawn when the handshake completes; the
	// lifetime is what is left of the 7 days from auth_time.
	var ticketRecord []byte
	if give != nil && rk.asked {
		give.secret = rk.resumptionSecret(t)
		nonce := res.rand.take(t, 24)
		lifetime := uint32(int64(give.expires) - is.now)
		tk := sealTicket(t, is.ticketKey, nonce, *give)
		if is.foreign != nil {
			// The vector does not hold this responder's ticket key: take
			// the ticket it sent, and check what can be checked without
			// the key (its size, key name, nonce and lifetime).
			life, vt := ticketFromStream(t, rk, is.foreign, c.recOff)
			if len(vt) != len(tk) || life != lifetime || !bytes.Equal(vt[8:32], nonce) {
				t.Fatalf("new ticket: %d bytes, lifetime %d, nonce %x; want %d, %d, %x", len(vt), life, vt[8:32], len(tk), lifetime, nonce)
			}
			tk = vt
		}
		ticketRecord = cat(binary.BigEndian.AppendUint32(nil, lifetime), tk)
	}

	iw, ir := newDirection(t, ik, true), newDirection(t, ik, false)
	rw, rr := newDirection(t, rk, false), newDirection(t, rk, true)

	c.iSent = cat(c.iSent, iw.seal(recordData, iData), iw.seal(recordEnd, nil))

	in := c.iSent[c.rRead:]
	if typ, pt := rr.open(t, &in); typ != recordData || !bytes.Equal(pt, iData) {
		t.Fatalf("responder read record %d %x", typ, pt)
	}
	if typ, pt := rr.open(t, &in); typ != recordEnd || len(pt) != 0 {
		t.Fatalf("responder read record %d %x, want end of stream", typ, pt)
	}
	if len(in) != 0 {
		t.Fatalf("%d bytes after the initiator's end of stream", len(in))
	}
	c.rRead = len(c.iSent)

	if ticketRecord != nil {
		c.rSent = cat(c.rSent, rw.seal(recordTicket, ticketRecord))
	}
	c.rSent = cat(c.rSent, rw.seal(recordData, rData), rw.seal(recordEnd, nil))

	in = c.rSent[c.iRead:]
	var got *cached
	typ, pt := ir.open(t, &in)
	if typ == recordTicket {
		if len(pt) < 5 || len(pt) > 4+1024 {
			t.Fatalf("malformed ticket record of %d bytes", len(pt))
		}
		life := int64(binary.BigEndian.Uint32(pt))
		if life < 1 || life > ticketMaxLife {
			t.Fatalf("ticket lifetime %d", life)
		}
		got = &cached{
			ticket: bytes.Clone(pt[4:]), secret: ik.resumptionSecret(t),
			responder: res.pub, initiator: ini.pub, pq: ik.pq, expiry: is.now + life,
		}
		typ, pt = ir.open(t, &in)
	}
	if typ != recordData || !bytes.Equal(pt, rData) {
		t.Fatalf("initiator read record %d %x", typ, pt)
	}
	if typ, pt := ir.open(t, &in); typ != recordEnd || len(pt) != 0 {
		t.Fatalf("initiator read record %d %x, want end of stream", typ, pt)
	}
	if len(in) != 0 {
		t.Fatalf("%d bytes after the responder's end of stream", len(in))
	}
	c.iRead = len(c.rSent)
	return got
}

// --- the resumed handshake (PROTOCOL.md, "Session resumption") ---

func resumptionNoise(t *testing.T, p *peer, initiator bool, psk, iHello, ticket []byte) *noise.HandshakeState {
	t.Helper()
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: suite(), Random: p.rand, Pattern: noise.HandshakeNN,
		Initiator: initiator, Prologue: cat([]byte(labelResPrologue), iHello, ticket),
		PresharedKey: psk, PresharedKeyPlacement: 0,
	})
	if err != nil {
		t.Fatal(err)
	}
	return hs
}

// honours is "The responder's answer".
func honours(t *testing.T, res *peer, is issuer, ticket []byte) (ticketState, bool) {
	st, ok := openTicket(t, is.ticketKey, ticket)
	if !ok {
		return st, false
	}
	if st.flags&^ticketFlagPQ != 0 || is.now >= int64(st.expires) || !bytes.Equal(st.responder, res.pub) {
		return st, false
	}
	if st.flags&ticketFlagPQ == 0 && !res.disablePQ {
		return st, false
	}
	return st, true
}

// secondSession offers the ticket, and either resumes or falls back to a
// full handshake. It returns the initiator's keys and whether it resumed.
func secondSession(t *testing.T, c *conn, ini, res *peer, tk *cached, is issuer, iData, rData []byte) (*keys, bool) {
	t.Helper()
	iHello := hello(modeInitiator, flagResume)
	rHello := hello(modeResponder, 0)

	// Initiator: hello with the resume flag, resumption message 1.
	hsI := resumptionNoise(t, ini, true, tk.secret, iHello, tk.ticket)
	msg, _, _, err := hsI.WriteMessage(nil, cat(cipherList(ini.ciphers), protoList(ini.protos)))
	if err != nil {
		t.Fatal(err)
	}
	body := cat(u16(len(tk.ticket)), tk.ticket, msg)
	c.iSent = cat(iHello, u16(len(body)), body)
	c.rSent = rHello
	c.rRead, c.iRead = 8, 8

	// Responder.
	in1, ok := readFrame(t, c.iSent, &c.rRead)
	if !ok {
		t.Fatal("abort in place of message 1")
	}
	tl := int(binary.BigEndian.Uint16(in1))
	ticket, noiseMsg := in1[2:2+tl], in1[2+tl:]
	st, honour := honours(t, res, is, ticket)
	if !honour {
		c.rSent = cat(c.rSent, []byte{0, 0, 5})
		if code, ok := readFrame(t, c.rSent, &c.iRead); ok || code[0] != 5 {
			t.Fatalf("initiator read %x, want 00 00 05", code)
		}
		ik, rk := fullHandshake(t, c, ini, res, iHello, rHello, true)
		give := &ticketState{
			authTime: uint64(is.now), expires: uint64(is.now + ticketMaxLife),
			responder: res.pub, initiator: ini.pub,
		}
		if rk.pq {
			give.flags = ticketFlagPQ
		}
		dataPhase(t, c, ini, res, ik, rk, iData, rData, give, is)
		return ik, false
	}
	hsR := resumptionNoise(t, res, false, st.secret, iHello, ticket)
	pR1, _, _, err := hsR.ReadMessage(nil, noiseMsg)
	if err != nil {
		t.Fatalf("resumption message 1: %v", err)
	}
	r := &reader{t: t, b: pR1}
	iList := r.ciphers()
	iProtos := r.protos()
	r.end()
	rCipher := chooseCipher(iList, res.ciphers)
	rProto := chooseProto(t, iProtos, res.protos)
	msg2, rcs1, rcs2, err := hsR.WriteMessage(nil, cat(rHello, cipherList(res.ciphers), protoList(res.protos)))
	if err != nil {
		t.Fatal(err)
	}
	c.rSent = cat(c.rSent, u16(len(msg2)), msg2)
	rk := splitKeys(rcs1, rcs2, hsR.ChannelBinding(), rCipher, st.flags&ticketFlagPQ != 0, rProto)
	rk.asked = true // a resumption message 1 asks for a new ticket

	// Initiator: message 2, then finished.
	in2, ok := readFrame(t, c.rSent, &c.iRead)
	if !ok {
		t.Fatalf("abort %x in place of resumption message 2", in2)
	}
	pR2, ics1, ics2, err := hsI.ReadMessage(nil, in2)
	if err != nil {
		t.Fatalf("resumption message 2: %v", err)
	}
	r = &reader{t: t, b: pR2}
	if echo := r.bytes(8); !bytes.Equal(echo, rHello) {
		t.Fatal("echoed hello altered")
	}
	rList := r.ciphers()
	rProtos := r.protos()
	r.end()
	ik := splitKeys(ics1, ics2, hsI.ChannelBinding(), chooseCipher(ini.ciphers, rList), tk.pq, chooseProto(t, ini.protos, rProtos))
	finished := hkdfSHA256(t, cat(ik.k1, ik.k2), ik.h, labelFinished, 32)
	c.iSent = cat(c.iSent, u16(len(finished)), finished)

	// Responder: checks finished, gives a new ticket with the old auth_time.
	inF, ok := readFrame(t, c.iSent, &c.rRead)
	want := hkdfSHA256(t, cat(rk.k1, rk.k2), rk.h, labelFinished, 32)
	if !ok || subtle.ConstantTimeCompare(inF, want) != 1 {
		t.Fatal("finished does not match")
	}
	give := &ticketState{
		authTime: st.authTime, expires: st.expires, flags: st.flags,
		responder: res.pub, initiator: ini.pub,
	}
	dataPhase(t, c, ini, res, ik, rk, iData, rData, give, is)
	return ik, true
}

// --- the test ---

func TestResumptionVectors(t *testing.T) {
	files, err := filepath.Glob("../../testdata/vectors/resumption*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no resumption vectors: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) { checkVector(t, readVector(t, f)) })
	}
}

func checkVector(t *testing.T, v vector) {
	iRand := &randStream{b: v.hex(t, "initiator_rand")}
	rRand := &randStream{b: v.hex(t, "responder_rand")}
	ini := newPeer(t, v.hex(t, "initiator_identity_seed"))
	res := newPeer(t, v.hex(t, "responder_identity_seed"))
	ini.rand, res.rand = iRand, rRand
	ini.ciphers, res.ciphers = v.ciphers(t, "initiator_ciphers"), v.ciphers(t, "responder_ciphers")
	ini.protos, res.protos = v.protos("initiator_next_protos"), v.protos("responder_next_protos")
	ini.disablePQ = v["initiator_disable_post_quantum"] == "true"
	res.disablePQ = v["responder_disable_post_quantum"] == "true"
	iData, rData := v.hex(t, "initiator_data"), v.hex(t, "responder_data")
	now := v.int(t, "time")
	ticketKey := v.hex(t, "ticket_key")
	kind := v["resumption"]
	if kind == "classical_ticket" {
		// The vector's comment: the responder had DisablePostQuantum in
		// the first session and not in the second (the settings fields
		// give the second session's). It changes no byte of the first
		// session, where the initiator offers no ML-KEM key.
		res.disablePQ = true
	}

	// First session: a full handshake in which the initiator asks for a
	// ticket and the responder gives one.
	c := &conn{iSent: hello(modeInitiator, 0), rSent: hello(modeResponder, 0), iRead: 8, rRead: 8}
	ik, rk := fullHandshake(t, c, ini, res, c.iSent[:8], c.rSent[:8], true)
	give := &ticketState{
		authTime: uint64(now), expires: uint64(now + ticketMaxLife),
		responder: res.pub, initiator: ini.pub,
	}
	if rk.pq {
		give.flags = ticketFlagPQ
	}
	tk := dataPhase(t, c, ini, res, ik, rk, iData, rData, give, issuer{now: now, ticketKey: ticketKey})
	firstResponder := v.hex(t, "first_responder_sent")
	compare(t, "first_initiator_sent", c.iSent, v.hex(t, "first_initiator_sent"))
	compare(t, "first_responder_sent", c.rSent, firstResponder)
	if tk == nil {
		t.Fatal("no ticket from the first session")
	}

	// The ticket in the vector's bytes opens with ticket_key and holds
	// what "Tickets" says.
	life, vt := ticketFromStream(t, ik, firstResponder, c.recOff)
	checkTicket(t, "first ticket", ticketKey, vt, now, ticketMaxLife, ticketState{
		authTime: uint64(now), responder: res.pub, initiator: ini.pub,
		secret: ik.resumptionSecret(t), flags: give.flags,
	})
	if life != ticketMaxLife {
		t.Errorf("first ticket lifetime %d", life)
	}

	// Second session. The vectors give one time; "expired" says the
	// responder's clock is 8 days later; the other responders' clocks are
	// taken to be unchanged (the bytes confirm both: the new tickets'
	// auth_time and lifetime depend on them).
	is := issuer{now: now, ticketKey: ticketKey}
	responderSent := v.hex(t, "responder_sent")
	switch kind {
	case "resumed":
	case "expired":
		is.now = now + 8*24*60*60
	case "other_identity":
		other := newPeer(t, v.hex(t, "second_responder_identity_seed"))
		other.rand, other.ciphers, other.protos, other.disablePQ = res.rand, res.ciphers, res.protos, res.disablePQ
		res = other
	case "classical_ticket":
		res.disablePQ = v["responder_disable_post_quantum"] == "true"
	case "unknown_key":
		// The vector does not give the replacement key: use another key
		// (so the ticket is not honoured) and take the new ticket from the
		// vector's bytes (see dataPhase).
		is.ticketKey = bytes.Repeat([]byte{0x55}, 32)
		is.foreign = responderSent
	default:
		t.Fatalf("unknown resumption kind %q", kind)
	}
	c2 := &conn{}
	k2, resumed := secondSession(t, c2, ini, res, tk, is, iData, rData)
	compare(t, "initiator_sent", c2.iSent, v.hex(t, "initiator_sent"))
	compare(t, "responder_sent", c2.rSent, responderSent)
	compare(t, "channel_binding", k2.binding(t), v.hex(t, "channel_binding"))
	if got := strconv.FormatBool(resumed); got != v["did_resume"] {
		t.Errorf("did_resume %s, vector %s", got, v["did_resume"])
	}
	if got := strconv.FormatBool(k2.pq); got != v["post_quantum"] {
		t.Errorf("post_quantum %s, vector %s", got, v["post_quantum"])
	}
	if got := strconv.Itoa(iRand.used); got != v["initiator_rand_used"] {
		t.Errorf("initiator_rand_used %s, vector %s", got, v["initiator_rand_used"])
	}
	if got := strconv.Itoa(rRand.used); got != v["responder_rand_used"] {
		t.Errorf("responder_rand_used %s, vector %s", got, v["responder_rand_used"])
	}

	// The second session's ticket, from the vector's bytes.
	life, vt = ticketFromStream(t, k2, responderSent, c2.recOff)
	want := ticketState{
		authTime: uint64(is.now), responder: res.pub, initiator: ini.pub,
		secret: k2.resumptionSecret(t),
	}
	if k2.pq {
		want.flags = ticketFlagPQ
	}
	if resumed {
		want.authTime = uint64(now) // carried from the full handshake
	}
	wantLife := int64(want.authTime) + ticketMaxLife - is.now
	if int64(life) != wantLife {
		t.Errorf("second ticket lifetime %d, want %d", life, wantLife)
	}
	if kind == "unknown_key" {
		if old, _ := ticketAEAD(t, ticketKey); bytes.Equal(vt[:8], old) {
			t.Error("the replaced responder sealed its ticket with the old ticket_key")
		}
		return
	}
	checkTicket(t, "second ticket", ticketKey, vt, is.now, wantLife, want)
}

// checkTicket opens a ticket with the ticket key secret and checks its
// fields: format, auth_time, expires = auth_time + 7 days, flags, both
// identities and the resumption secret.
func checkTicket(t *testing.T, what string, key, ticket []byte, now, life int64, want ticketState) {
	t.Helper()
	if len(ticket) != 162 {
		t.Errorf("%s is %d bytes, want 162", what, len(ticket))
	}
	st, ok := openTicket(t, key, ticket)
	if !ok {
		t.Fatalf("%s does not open with ticket_key", what)
	}
	if st.authTime != want.authTime || st.expires != st.authTime+ticketMaxLife ||
		int64(st.expires)-now != life || st.flags != want.flags ||
		!bytes.Equal(st.responder, want.responder) || !bytes.Equal(st.initiator, want.initiator) ||
		!bytes.Equal(st.secret, want.secret) {
		t.Errorf("%s: auth_time %d expires %d flags %#x responder %x initiator %x; want auth_time %d flags %#x responder %x initiator %x",
			what, st.authTime, st.expires, st.flags, st.responder, st.initiator,
			want.authTime, want.flags, want.responder, want.initiator)
	}
}

func compare(t *testing.T, name string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	t.Errorf("%s differs at byte %d (got %d bytes, vector %d)", name, i, len(got), len(want))
}
