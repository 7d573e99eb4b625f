// Package wire encodes and decodes the messages of the securepeer protocol
// that are not Noise's own: the hello, the handshake payloads and the record
// header. Every decoder bounds every length before using it, rejects trailing
// bytes, and never panics; PROTOCOL.md is the specification.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Version is the protocol version this package speaks.
const Version = 1

// Hello is the fixed-size cleartext message each peer sends first.
//
//	magic   [5]byte "speer"
//	version uint8   1
//	mode    uint8   ModeInitiator, ModeResponder or ModeEither
//	flags   uint8   0, or FlagResume from a side that sends message 1
const HelloSize = 8

// FlagResume in a hello says that the message 1 following it is a
// resumption message 1 (ResumeMessage1), not a full one. Only a side whose
// mode lets it send message 1 (initiator or either) may set it.
const FlagResume = 0x01

// Magic starts every hello.
const Magic = "speer"

// A Mode is what a peer announces in its hello: whether it initiates,
// responds, or may do either ("Roles").
type Mode uint8

// The modes.
const (
	ModeInitiator Mode = 1
	ModeResponder Mode = 2
	ModeEither    Mode = 3
)

// Errors returned by the decoders. Callers wrap them with context.
var (
	ErrNotSecurepeer = errors.New("the peer did not send a securepeer hello")
	ErrVersion       = errors.New("unsupported protocol version")
	ErrMalformed     = errors.New("malformed message")
)

// Hello is a decoded hello.
type Hello struct {
	Version uint8
	Mode    Mode
	Resume  bool // FlagResume is set
}

// Marshal returns the encoded hello.
func (h Hello) Marshal() [HelloSize]byte {
	var b [HelloSize]byte
	copy(b[:], Magic)
	b[5] = h.Version
	b[6] = byte(h.Mode)
	if h.Resume {
		b[7] = FlagResume
	}
	return b
}

// ParseHello decodes a hello. A hello with another magic returns
// ErrNotSecurepeer, one with another version ErrVersion (with the version in
// the returned Hello), and one with an unknown mode, unknown flags, or
// FlagResume from a responder ErrMalformed.
func ParseHello(b []byte) (Hello, error) {
	if len(b) != HelloSize || string(b[:5]) != Magic {
		return Hello{}, ErrNotSecurepeer
	}
	h := Hello{Version: b[5], Mode: Mode(b[6])}
	if h.Version != Version {
		return h, ErrVersion
	}
	if h.Mode < ModeInitiator || h.Mode > ModeEither || b[7]&^FlagResume != 0 {
		return h, ErrMalformed
	}
	h.Resume = b[7] == FlagResume
	if h.Resume && h.Mode == ModeResponder {
		return h, ErrMalformed
	}
	return h, nil
}

// AppendHandshakeMessage appends msg, framed as a handshake message, to b.
// msg must be 1 to MaxHandshakeMessage bytes.
func AppendHandshakeMessage(b, msg []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

// AppendAbort appends an abort with reason to b.
func AppendAbort(b []byte, reason byte) []byte {
	return append(b, 0, 0, reason)
}

// FirstFlightLen returns the length of the first flight a responder reads,
// the peer's hello and message 1, given its first bytes b: the hello alone
// while b is shorter, then the hello and what Message1Len says of the rest.
// For a hello that is not a valid initiating one it returns HelloSize,
// since the handshake fails on it alone.
func FirstFlightLen(b []byte) int {
	if len(b) < HelloSize {
		return HelloSize
	}
	h, err := ParseHello(b[:HelloSize])
	if err != nil || h.Mode == ModeResponder {
		return HelloSize
	}
	return HelloSize + Message1Len(b[HelloSize:], h.Resume)
}

// Message1Len returns the length of a framed message 1 (resumption message
// 1 if resume) given its first bytes b: the length field alone while b is
// shorter, then the field and the message, or an abort and its reason. A
// length field over MaxMessage1Len(resume) returns 2, the field alone, so
// that a reader stops there and the handshake refuses the message without
// reading it. A responder that has answered a resumption message 1 with
// RetryFull reads the full message 1 that follows with Message1Len(b,
// false).
func Message1Len(b []byte, resume bool) int {
	if len(b) < 2 {
		return 2
	}
	n := int(binary.BigEndian.Uint16(b))
	switch {
	case n == 0:
		return 3 // an abort and its reason
	case n > MaxMessage1Len(resume):
		return 2
	}
	return 2 + n
}

// EphemeralKeySize is the size of an X25519 public key, the ephemeral key
// that starts the Noise part of every message 1.
const EphemeralKeySize = 32

// FirstFlightEphemeral returns the initiator's ephemeral key from the
// first flight a responder has read: its hello and message 1, as
// FirstFlightLen delimits them, or, if retry, the framed full message 1
// that answers RetryFull. The key is the first 32 bytes of a full message
// 1, or of the Noise message that follows the ticket in a resumption
// message 1. ok is false unless b starts with such a message 1, complete
// and one a responder goes on with: an initiating hello, a length within
// MaxMessage1Len (not an abort), room for the key, and for a resumption a
// well-formed ResumeMessage1. Bytes after the message are ignored; the key
// is a slice of b. A listener refuses a first flight whose key it has
// seen before (PROTOCOL.md, "Servers on the open internet").
func FirstFlightEphemeral(b []byte, retry bool) (key []byte, ok bool) {
	resume := false
	if !retry {
		if len(b) < HelloSize {
			return nil, false
		}
		h, err := ParseHello(b[:HelloSize])
		if err != nil || h.Mode == ModeResponder {
			return nil, false
		}
		resume, b = h.Resume, b[HelloSize:]
	}
	if len(b) < 2 {
		return nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	if n == 0 || n > MaxMessage1Len(resume) || len(b) < 2+n {
		return nil, false
	}
	msg := b[2 : 2+n]
	if resume {
		m, err := ParseResumeMessage1(msg)
		if err != nil {
			return nil, false
		}
		msg = m.Noise
	}
	if len(msg) < EphemeralKeySize {
		return nil, false
	}
	return msg[:EphemeralKeySize:EphemeralKeySize], true
}

// The longest message 1s, by their formats (PROTOCOL.md, "Handshake
// messages and aborts"). A responder refuses a longer one before reading
// it, so a first flight never makes it hold more than a valid one.
const (
	// MaxMessage1 is the longest full message 1: an ephemeral key, a
	// payload1 with MaxCiphers ciphers and the ML-KEM key, and a tag.
	MaxMessage1 = 32 + 1 + 2*MaxCiphers + 2 + KEMKeySize + TagSize

	// MaxResumeMessage1 is the longest resumption message 1: a ticket of
	// MaxTicket bytes with its length, an ephemeral key, a payloadR1 with
	// MaxCiphers ciphers and MaxProtocols names of MaxProtocol bytes, and a
	// tag.
	MaxResumeMessage1 = 2 + MaxTicket + 32 + 1 + 2*MaxCiphers + 1 + MaxProtocols*(1+MaxProtocol) + TagSize
)

// MaxMessage1Len returns MaxResumeMessage1 if resume, else MaxMessage1.
func MaxMessage1Len(resume bool) int {
	if resume {
		return MaxResumeMessage1
	}
	return MaxMessage1
}

// Handshake messages travel as a uint16 big-endian length and that many bytes
// of Noise message, outside the record layer. A length of zero is an abort:
// one reason byte follows.
const (
	MaxHandshakeMessage = 65535

	AbortRejected = 1 // the sender's Verify refused the receiver's key
	AbortNoCipher = 2 // no cipher in common
	AbortProtocol = 3 // the sender could not continue the handshake
	AbortNoALPN   = 4 // no application protocol in common

	// RetryFull is not an abort: a responder sends it instead of a
	// resumption message 2 when it will not resume, and waits for a full
	// message 1.
	RetryFull = 5
)

// Sizes of the fields in handshake payloads.
const (
	IdentitySize  = 32   // Ed25519 public key
	SignatureSize = 64   // Ed25519 signature
	MaxCiphers    = 16   // entries in a cipher list
	KEMKeySize    = 1184 // ML-KEM-768 encapsulation key
	KEMCiphertext = 1088 // ML-KEM-768 ciphertext
	MaxProtocols  = 32   // entries in an application protocol list
	MaxProtocol   = 255  // bytes in an application protocol name
)

// InitPayload is the payload of the first handshake message, sent by the
// initiator in clear (but hashed into the Noise transcript).
//
//	uint8  n           number of ciphers, 1..MaxCiphers
//	uint16 cipher[n]   preference order, most preferred first, none twice
//	uint16 k           0 or KEMKeySize
//	[k]byte kemKey     ML-KEM-768 encapsulation key, if the initiator offers the hybrid
type InitPayload struct {
	Ciphers []uint16
	KEMKey  []byte
}

// RespPayload is the payload of the second message, sent by the responder
// inside Noise encryption.
//
//	[HelloSize]byte hello      the responder's own hello, echoed to authenticate it
//	[32]byte identity          Ed25519 public key
//	[64]byte signature         over the responder's Noise static key
//	uint8  n, uint16 cipher[n] as in InitPayload
//	uint16 c                   0 or KEMCiphertext
//	[c]byte kemCiphertext      ML-KEM-768 ciphertext, if the responder accepts the hybrid
//	protocols                  the responder's application protocols, as below
type RespPayload struct {
	Hello         [HelloSize]byte
	Identity      [IdentitySize]byte
	Signature     [SignatureSize]byte
	Ciphers       []uint16
	KEMCiphertext []byte
	Protocols     []string
}

// FinalPayload is the payload of the third message, sent by the initiator
// inside Noise encryption keyed with the hybrid secret.
//
//	[32]byte identity
//	[64]byte signature
//	protocols                  the initiator's application protocols:
//
// An application protocol list is
//
//	uint8 n                    number of names, 0..MaxProtocols
//	n times: uint8 len (1..MaxProtocol), [len]byte name
//
// with no name twice; an empty list means no negotiation.
type FinalPayload struct {
	Identity  [IdentitySize]byte
	Signature [SignatureSize]byte
	Protocols []string
}

// Marshal appends the encoded payload to b.
func (p *InitPayload) Marshal(b []byte) []byte {
	b = appendCiphers(b, p.Ciphers)
	return appendBytes16(b, p.KEMKey)
}

// ParseInitPayload decodes an InitPayload, which must fill b exactly.
func ParseInitPayload(b []byte) (*InitPayload, error) {
	r := reader{b: b}
	p := new(InitPayload)
	p.Ciphers = r.ciphers()
	p.KEMKey = r.bytes16(KEMKeySize)
	return parsed(p, &r)
}

// Marshal appends the encoded payload to b.
func (p *RespPayload) Marshal(b []byte) []byte {
	b = append(b, p.Hello[:]...)
	b = append(b, p.Identity[:]...)
	b = append(b, p.Signature[:]...)
	b = appendCiphers(b, p.Ciphers)
	b = appendBytes16(b, p.KEMCiphertext)
	return AppendProtocols(b, p.Protocols)
}

// ParseRespPayload decodes a RespPayload, which must fill b exactly.
func ParseRespPayload(b []byte) (*RespPayload, error) {
	r := reader{b: b}
	p := new(RespPayload)
	copy(p.Hello[:], r.fixed(HelloSize))
	copy(p.Identity[:], r.fixed(IdentitySize))
	copy(p.Signature[:], r.fixed(SignatureSize))
	p.Ciphers = r.ciphers()
	p.KEMCiphertext = r.bytes16(KEMCiphertext)
	p.Protocols = r.protocols()
	return parsed(p, &r)
}

// Marshal appends the encoded payload to b.
func (p *FinalPayload) Marshal(b []byte) []byte {
	b = append(b, p.Identity[:]...)
	b = append(b, p.Signature[:]...)
	return AppendProtocols(b, p.Protocols)
}

// ParseFinalPayload decodes a FinalPayload, which must fill b exactly.
func ParseFinalPayload(b []byte) (*FinalPayload, error) {
	r := reader{b: b}
	p := new(FinalPayload)
	copy(p.Identity[:], r.fixed(IdentitySize))
	copy(p.Signature[:], r.fixed(SignatureSize))
	p.Protocols = r.protocols()
	return parsed(p, &r)
}

// CheckProtocols reports whether protos is a valid application protocol
// list: at most MaxProtocols names of 1..MaxProtocol bytes, none twice.
func CheckProtocols(protos []string) error {
	if len(protos) > MaxProtocols {
		return fmt.Errorf("more than %d application protocols", MaxProtocols)
	}
	for i, p := range protos {
		if len(p) == 0 || len(p) > MaxProtocol {
			return fmt.Errorf("application protocol %q is not 1 to %d bytes long", p, MaxProtocol)
		}
		if slices.Contains(protos[:i], p) {
			return fmt.Errorf("application protocol %q is listed twice", p)
		}
	}
	return nil
}

// AppendProtocols appends an application protocol list, which must pass
// CheckProtocols.
func AppendProtocols(b []byte, protos []string) []byte {
	b = append(b, byte(len(protos)))
	for _, p := range protos {
		b = append(b, byte(len(p)))
		b = append(b, p...)
	}
	return b
}

func readProtocols(b []byte) (protos []string, rest []byte, ok bool) {
	if len(b) < 1 || int(b[0]) > MaxProtocols {
		return nil, nil, false
	}
	n := int(b[0])
	b = b[1:]
	for range n {
		if len(b) < 1 || b[0] == 0 || len(b) < 1+int(b[0]) {
			return nil, nil, false
		}
		p := string(b[1 : 1+int(b[0])])
		if slices.Contains(protos, p) {
			return nil, nil, false
		}
		protos = append(protos, p)
		b = b[1+int(b[0]):]
	}
	return protos, b, true
}

func appendCiphers(b []byte, ciphers []uint16) []byte {
	b = append(b, byte(len(ciphers)))
	for _, c := range ciphers {
		b = binary.BigEndian.AppendUint16(b, c)
	}
	return b
}

func readCiphers(b []byte) (ciphers []uint16, rest []byte, ok bool) {
	if len(b) < 1 {
		return nil, nil, false
	}
	n := int(b[0])
	b = b[1:]
	if n == 0 || n > MaxCiphers || len(b) < 2*n {
		return nil, nil, false
	}
	ciphers = make([]uint16, n)
	for i := range ciphers {
		ciphers[i] = binary.BigEndian.Uint16(b[2*i:])
		if slices.Contains(ciphers[:i], ciphers[i]) {
			return nil, nil, false // listed twice
		}
	}
	return ciphers, b[2*n:], true
}

// A reader reads a payload's fields in order. The first field that does
// not parse makes it fail; every later read then returns nothing.
type reader struct {
	b      []byte
	failed bool
}

// fixed reads n bytes.
func (r *reader) fixed(n int) []byte {
	if r.failed || len(r.b) < n {
		r.failed = true
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// ciphers reads a cipher list (readCiphers).
func (r *reader) ciphers() (ciphers []uint16) {
	if !r.failed {
		var ok bool
		ciphers, r.b, ok = readCiphers(r.b)
		r.failed = !ok
	}
	return ciphers
}

// bytes16 reads a uint16-prefixed field of 0 or size bytes (readBytes16).
func (r *reader) bytes16(size int) (v []byte) {
	if !r.failed {
		var ok bool
		v, r.b, ok = readBytes16(r.b, size)
		r.failed = !ok
	}
	return v
}

// protocols reads an application protocol list (readProtocols).
func (r *reader) protocols() (protos []string) {
	if !r.failed {
		var ok bool
		protos, r.b, ok = readProtocols(r.b)
		r.failed = !ok
	}
	return protos
}

// parsed returns p if every field r read parsed and they filled its
// payload exactly, else ErrMalformed.
func parsed[T any](p *T, r *reader) (*T, error) {
	if r.failed || len(r.b) != 0 {
		return nil, ErrMalformed
	}
	return p, nil
}

func appendBytes16(b, v []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

// readBytes16 reads a uint16-prefixed field whose length must be 0 or size.
func readBytes16(b []byte, size int) (v, rest []byte, ok bool) {
	if len(b) < 2 {
		return nil, nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if (n != 0 && n != size) || len(b) < n {
		return nil, nil, false
	}
	if n == 0 {
		return nil, b, true
	}
	return b[:n:n], b[n:], true
}

// TicketsSignal is not a cipher: an initiator that accepts a session ticket
// lists it last in its message 1 cipher list. Responders that do not know
// it skip it as an unknown cipher identifier, whose position counts after
// every real cipher's, so the choice is unchanged.
const TicketsSignal = 0xFF01

// MaxTicket bounds a session ticket, which is opaque to the initiator.
const MaxTicket = 1024

// ResumeMessage1 is the body of a resumption message 1, the handshake
// message that follows a hello with FlagResume:
//
//	uint16 t            length of the ticket, 1..MaxTicket
//	[t]byte ticket      as the responder issued it
//	[]byte noise        Noise NNpsk0 message 1: the ephemeral key, then the
//	                    encrypted ResumeInitPayload
type ResumeMessage1 struct {
	Ticket []byte
	Noise  []byte
}

// Marshal appends the encoded message to b.
func (m *ResumeMessage1) Marshal(b []byte) []byte {
	b = appendBytes16(b, m.Ticket)
	return append(b, m.Noise...)
}

// ParseResumeMessage1 decodes a resumption message 1. The Noise message
// must hold at least an ephemeral key and a tag.
func ParseResumeMessage1(b []byte) (*ResumeMessage1, error) {
	if len(b) < 2 {
		return nil, ErrMalformed
	}
	t := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if t == 0 || t > MaxTicket || len(b) < t+32+TagSize {
		return nil, ErrMalformed
	}
	return &ResumeMessage1{Ticket: b[:t:t], Noise: b[t:]}, nil
}

// ResumeInitPayload is the payload of a resumption message 1, encrypted
// under keys from the resumption secret:
//
//	uint8  n, uint16 cipher[n] as in InitPayload
//	protocols                  the initiator's application protocols
type ResumeInitPayload struct {
	Ciphers   []uint16
	Protocols []string
}

// Marshal appends the encoded payload to b.
func (p *ResumeInitPayload) Marshal(b []byte) []byte {
	b = appendCiphers(b, p.Ciphers)
	return AppendProtocols(b, p.Protocols)
}

// ParseResumeInitPayload decodes a ResumeInitPayload, which must fill b
// exactly.
func ParseResumeInitPayload(b []byte) (*ResumeInitPayload, error) {
	r := reader{b: b}
	p := new(ResumeInitPayload)
	p.Ciphers = r.ciphers()
	p.Protocols = r.protocols()
	return parsed(p, &r)
}

// ResumeRespPayload is the payload of a resumption message 2:
//
//	[HelloSize]byte hello      the responder's own hello, echoed
//	uint8  n, uint16 cipher[n] as in InitPayload
//	protocols                  the responder's application protocols
type ResumeRespPayload struct {
	Hello     [HelloSize]byte
	Ciphers   []uint16
	Protocols []string
}

// Marshal appends the encoded payload to b.
func (p *ResumeRespPayload) Marshal(b []byte) []byte {
	b = append(b, p.Hello[:]...)
	b = appendCiphers(b, p.Ciphers)
	return AppendProtocols(b, p.Protocols)
}

// ParseResumeRespPayload decodes a ResumeRespPayload, which must fill b
// exactly.
func ParseResumeRespPayload(b []byte) (*ResumeRespPayload, error) {
	r := reader{b: b}
	p := new(ResumeRespPayload)
	copy(p.Hello[:], r.fixed(HelloSize))
	p.Ciphers = r.ciphers()
	p.Protocols = r.protocols()
	return parsed(p, &r)
}

// FinishedSize is the length of a resumption message 3, the initiator's
// proof that it holds the session keys.
const FinishedSize = 32

// TicketRecord is the plaintext of a RecordTicket:
//
//	uint32 lifetime     seconds the initiator may keep the ticket, 1..MaxTicketLifetime
//	[]byte ticket       the rest, 1..MaxTicket bytes, opaque to the initiator
type TicketRecord struct {
	Lifetime uint32
	Ticket   []byte
}

// MaxTicketLifetime is the longest a ticket may be kept: 7 days, in
// seconds, as RFC 8446 allows TLS tickets.
const MaxTicketLifetime = 7 * 24 * 3600

// Marshal appends the encoded record plaintext to b.
func (t *TicketRecord) Marshal(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, t.Lifetime)
	return append(b, t.Ticket...)
}

// ParseTicketRecord decodes a RecordTicket's plaintext.
func ParseTicketRecord(b []byte) (*TicketRecord, error) {
	if len(b) < 4+1 || len(b) > 4+MaxTicket {
		return nil, ErrMalformed
	}
	t := &TicketRecord{Lifetime: binary.BigEndian.Uint32(b), Ticket: b[4:]}
	if t.Lifetime == 0 || t.Lifetime > MaxTicketLifetime {
		return nil, ErrMalformed
	}
	return t, nil
}

// Records: after the handshake every message is a record,
//
//	uint8  type
//	uint24 length   of the ciphertext that follows, tag included
//	[length]byte    AEAD ciphertext; the 4 header bytes are its additional data
const (
	RecordHeaderSize = 4
	MaxRecordPayload = 64 << 10 // plaintext bytes in one record
	TagSize          = 16
	MaxRecordLength  = MaxRecordPayload + TagSize

	RecordData  = 1 // application data
	RecordEnd   = 2 // end of stream: the sender will write no more; empty plaintext
	RecordAlert = 3 // the connection is ending for the reason in its one plaintext byte
	// RecordTicket carries a TicketRecord from the responder, as its first
	// record, to an initiator that asked for one.
	RecordTicket = 4
)

// Alert reasons, the plaintext of a RecordAlert.
const (
	AlertRejected = 1 // the sender's Verify refused the receiver's key
	AlertAborted  = 2 // the sender gave up its stream before its end: data may be missing
)

// PutRecordHeader encodes a record header into b.
func PutRecordHeader(b []byte, typ uint8, length int) {
	b[0] = typ
	b[1] = byte(length >> 16)
	b[2] = byte(length >> 8)
	b[3] = byte(length)
}

// ParseRecordHeader decodes a 4-byte record header, checking the type is known and
// the length is within [TagSize, MaxRecordLength].
func ParseRecordHeader(b []byte) (typ uint8, length int, err error) {
	if len(b) != RecordHeaderSize {
		return 0, 0, ErrMalformed
	}
	typ = b[0]
	length = int(b[1])<<16 | int(b[2])<<8 | int(b[3])
	if typ < RecordData || typ > RecordTicket || length < TagSize || length > MaxRecordLength {
		return typ, length, ErrMalformed
	}
	return typ, length, nil
}
