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
//	flags   uint8   0 (reserved)
const HelloSize = 8

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
}

// Marshal returns the encoded hello.
func (h Hello) Marshal() [HelloSize]byte {
	var b [HelloSize]byte
	copy(b[:], Magic)
	b[5] = h.Version
	b[6] = byte(h.Mode)
	return b
}

// ParseHello decodes a hello. A hello with another magic returns
// ErrNotSecurepeer, one with another version ErrVersion (with the version in
// the returned Hello), and one with an unknown mode or nonzero flags
// ErrMalformed.
func ParseHello(b []byte) (Hello, error) {
	if len(b) != HelloSize || string(b[:5]) != Magic {
		return Hello{}, ErrNotSecurepeer
	}
	h := Hello{Version: b[5], Mode: Mode(b[6])}
	if h.Version != Version {
		return h, ErrVersion
	}
	if h.Mode < ModeInitiator || h.Mode > ModeEither || b[7] != 0 {
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
// while b is shorter, then the hello, the length and message 1 (or an abort
// and its reason). For a hello that is not a valid initiating one it
// returns HelloSize, since the handshake fails on it alone.
func FirstFlightLen(b []byte) int {
	if len(b) < HelloSize {
		return HelloSize
	}
	if h, err := ParseHello(b[:HelloSize]); err != nil || h.Mode == ModeResponder {
		return HelloSize
	}
	if len(b) < HelloSize+2 {
		return HelloSize + 2
	}
	n := int(binary.BigEndian.Uint16(b[HelloSize:]))
	if n == 0 {
		return HelloSize + 3 // an abort and its reason
	}
	return HelloSize + 2 + n
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
	p := new(InitPayload)
	var ok bool
	if p.Ciphers, b, ok = readCiphers(b); !ok {
		return nil, ErrMalformed
	}
	if p.KEMKey, b, ok = readBytes16(b, KEMKeySize); !ok || len(b) != 0 {
		return nil, ErrMalformed
	}
	return p, nil
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
	p := new(RespPayload)
	const fixed = HelloSize + IdentitySize + SignatureSize
	if len(b) < fixed {
		return nil, ErrMalformed
	}
	copy(p.Hello[:], b)
	copy(p.Identity[:], b[HelloSize:])
	copy(p.Signature[:], b[HelloSize+IdentitySize:])
	b = b[fixed:]
	var ok bool
	if p.Ciphers, b, ok = readCiphers(b); !ok {
		return nil, ErrMalformed
	}
	if p.KEMCiphertext, b, ok = readBytes16(b, KEMCiphertext); !ok {
		return nil, ErrMalformed
	}
	if p.Protocols, b, ok = readProtocols(b); !ok || len(b) != 0 {
		return nil, ErrMalformed
	}
	return p, nil
}

// Marshal appends the encoded payload to b.
func (p *FinalPayload) Marshal(b []byte) []byte {
	b = append(b, p.Identity[:]...)
	b = append(b, p.Signature[:]...)
	return AppendProtocols(b, p.Protocols)
}

// ParseFinalPayload decodes a FinalPayload, which must fill b exactly.
func ParseFinalPayload(b []byte) (*FinalPayload, error) {
	if len(b) < IdentitySize+SignatureSize {
		return nil, ErrMalformed
	}
	p := new(FinalPayload)
	copy(p.Identity[:], b)
	copy(p.Signature[:], b[IdentitySize:])
	var ok bool
	if p.Protocols, b, ok = readProtocols(b[IdentitySize+SignatureSize:]); !ok || len(b) != 0 {
		return nil, ErrMalformed
	}
	return p, nil
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
	if typ < RecordData || typ > RecordAlert || length < TagSize || length > MaxRecordLength {
		return typ, length, ErrMalformed
	}
	return typ, length, nil
}
