package securepeer

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/mlkem"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/flynn/noise"

	"github.com/securepeer/securepeer/internal/wire"
)

// The full handshake (PROTOCOL.md, "Overview"): Noise XXpsk3, whose PSK is
// the ML-KEM-768 shared secret, after each side's hello.
//
//	initiator                                    responder
//	hello [len] msg1: e, payload1              ->
//	                                          <- hello [len] msg2: e, ee, s, es, payload2
//	[len] msg3: s, se, psk, payload3           ->
//	records                                   <-> records
//
// The resumed handshake ("Session resumption"): Noise NNpsk0 keyed with
// the resumption secret from the responder's ticket, then the initiator's
// finished message.
//
//	initiator                                    responder
//	hello(FlagResume) [len] ticket, e, payload ->
//	                                          <- hello, [len] e, ee, payload
//	[len] finished                             ->
//	                                          <- ticket record
//
// This file holds the state, the steps until the roles are settled (the
// hellos, the roles) and what both roles share: the Noise state, the checks of the
// peer, the key schedule and the framing. Each role's flow, full and
// resumed, is in handshake_initiator.go or handshake_responder.go; taking
// and keeping tickets in ticket.go.

// handshakeState is the state of one handshake, discarded when it ends.
type handshakeState struct {
	c   *Conn
	ctx context.Context
	cfg *Config
	dh  *x25519

	myHello   [wire.HelloSize]byte
	peerHello [wire.HelloSize]byte
	peerMode  wire.Mode // from the peer's hello, once read
	static    noise.DHKey
	staticSig []byte // this side's proof of static, valid at authTime
	noise     *noise.HandshakeState
	initiator bool

	// flight receives the result of writing the first flight when a
	// goroutine of its own writes it, concurrently with reading the peer's
	// first messages; nil once joined. flightErr is the result once known.
	flight    chan error
	flightErr error
	// helloHeld says that this side's hello waits to go with its next
	// write (peerFlightArrived).
	helloHeld bool

	// rbuf holds what was read of the peer's handshake and not yet used,
	// rbuf[rr:rw] (readFull); nil until the first read, and while the
	// handshake waits for the peer (awaitPeer) or for a turn of CPU
	// (acquireCPU). It is *rbufp, from handshakeBufPool.
	rbuf   []byte
	rbufp  *[]byte
	rr, rw int

	// Initiator only: the ML-KEM key offered in message 1, if any.
	kemKey *mlkem.DecapsulationKey768
	msg1   []byte // as sent, for the simultaneous-open tie-break

	cipher      Cipher
	protocol    string   // the negotiated application protocol
	psk         [32]byte // the ML-KEM shared secret, or zero without the hybrid
	postQuantum bool
	remote      PublicKey

	// Resumption ("Session resumption").
	session     *ClientSession // initiator: the ticket offered in message 1
	peerResume  bool           // the peer's hello has FlagResume
	giveTicket  bool           // responder: the initiator asked for a ticket
	offeredWork bool           // initiator: its message 1 lists wire.WorkSignal
	resumed     bool
	authTime    time.Time // of the full handshake this session descends from
}

// handshake runs the protocol of PROTOCOL.md, "The Noise handshake", as
// one flat list of steps for each role, each named for what it does and the
// section it implements. c.handshakeMutex is held.
func (c *Conn) handshake(ctx context.Context) error {
	hs := &handshakeState{c: c, ctx: ctx, cfg: c.config, dh: new(x25519)}
	defer hs.clear()
	defer hs.endFlight() // on failure it may still be on its way, or held
	if err := hs.checkConfig(); err != nil {
		return err
	}
	hs.static = hs.dh.add(c.config.Identity.static)
	hs.authTime = hs.cfg.now()
	// An identity behind a signer may need a new proof, or have none left:
	// then nothing is sent ("Identities and static keys").
	sig, err := c.config.Identity.staticProof(ctx, hs.authTime)
	if err != nil {
		return err
	}
	hs.staticSig = sig
	if c.mode != wire.ModeResponder {
		hs.session = hs.takeSession() // "Session resumption"
	}

	// "The hello", "Roles".
	if err := hs.sendFirstFlight(); err != nil {
		return err
	}
	if err := hs.readHello(); err != nil {
		return err
	}
	peerMsg1, err := hs.settleRoles()
	if err != nil {
		return err
	}
	switch {
	case hs.initiator && hs.session != nil:
		return hs.runResumingInitiator()
	case hs.initiator:
		return hs.runInitiator()
	case hs.peerResume:
		return hs.runResumingResponder(peerMsg1)
	}
	return hs.runResponder(peerMsg1)
}

// checkConfig refuses a Config whose lists this side could not send.
func (hs *handshakeState) checkConfig() error {
	for i, c := range hs.cfg.Ciphers {
		if c.keySize() == 0 {
			return errorf("Config.Ciphers lists unsupported cipher %v", c)
		}
		if slices.Contains(hs.cfg.Ciphers[:i], c) {
			return errorf("Config.Ciphers lists %v twice", c)
		}
	}
	if len(hs.cfg.Ciphers) > wire.MaxCiphers {
		return errorf("Config.Ciphers lists more than %d ciphers", wire.MaxCiphers)
	}
	if err := wire.CheckProtocols(hs.cfg.NextProtos); err != nil {
		return errorf("Config.NextProtos: %v", err)
	}
	return nil
}

// sendFirstFlight writes this side's hello, and message 1 if this side may
// initiate. Both peers write first, and a write may wait for the peer to
// read (a net.Pipe's always does), so the flight is written concurrently
// with reading the peer's hello, and two peers that write first never wait
// for each other; only where the kernel takes the whole flight without
// waiting for the peer (writesAtOnce) is it written at once, which saves a
// goroutine and two hand-offs. A responder that has its peer's first flight
// already holds its hello back, to go with its answer (peerFlightArrived).
func (hs *handshakeState) sendFirstFlight() error {
	c := hs.c
	hs.myHello = wire.Hello{Version: wire.Version, Mode: c.mode, Resume: hs.session != nil}.Marshal()
	if c.mode == wire.ModeResponder && hs.peerFlightArrived() {
		hs.helloHeld = true
		return nil
	}
	flight := hs.myHello[:]
	if hs.session != nil {
		msg1, err := hs.buildResumeMessage1()
		if err != nil {
			return err
		}
		flight = wire.AppendHandshakeMessage(flight, msg1)
	} else if c.mode != wire.ModeResponder {
		msg1, err := hs.buildMessage1()
		if err != nil {
			return err
		}
		flight = wire.AppendHandshakeMessage(flight, msg1)
	}
	if writesAtOnce(c.conn, len(flight)) {
		_, hs.flightErr = c.conn.Write(flight)
		return nil
	}
	hs.flight = make(chan error, 1)
	go func() {
		_, err := c.conn.Write(flight)
		hs.flight <- err
	}()
	return nil
}

// maxFlightAtOnce is the longest first flight written without a goroutine
// of its own. Such a write waits for the peer's application only once the
// flight fills this side's send buffer and the peer's receive buffer, and
// on a connection nothing was written to before, 2 KiB fills neither even
// at the smallest sizes Linux allows (SO_SNDBUF's floor, 4,608 bytes of
// accounting, is sized for two 2 KiB packet buffers with their headers;
// SO_RCVBUF's for one). A full handshake's flight is at most 1,277 bytes,
// a resumption's 250 to 400 with this package's tickets; a longer one (up
// to 9,310, with a long protocol list) keeps the goroutine.
const maxFlightAtOnce = 2048

// takeHello returns this side's hello if it was held back
// (peerFlightArrived), followed by room for n more bytes, for the write it
// goes with; else an empty slice with room for n bytes.
func (hs *handshakeState) takeHello(n int) []byte {
	if !hs.helloHeld {
		return make([]byte, 0, n)
	}
	hs.helloHeld = false
	return append(make([]byte, 0, wire.HelloSize+n), hs.myHello[:]...)
}

// writesAtOnce reports whether a first flight of n bytes can be written to
// nc without waiting for the peer to read: nc is a TCP connection, perhaps
// behind a listener's admission, and n at most maxFlightAtOnce. Nothing
// has been written to such a connection before the first flight, so its
// send buffer is empty. Every other net.Conn may wait for the peer (a
// net.Pipe, a TLS or a multiplexed stream with a small window), and gets
// the goroutine.
func writesAtOnce(nc net.Conn, n int) bool {
	if ac, ok := nc.(admittedConn); ok {
		nc = ac.NetConn()
	}
	_, tcp := nc.(*net.TCPConn)
	return tcp && n <= maxFlightAtOnce
}

// readHello reads and checks the peer's hello ("The hello").
func (hs *handshakeState) readHello() error {
	b, err := hs.readFull(wire.HelloSize)
	if err != nil {
		return readHandshakeError(err)
	}
	copy(hs.peerHello[:], b)
	h, err := wire.ParseHello(hs.peerHello[:])
	switch {
	case errors.Is(err, wire.ErrNotSecurepeer):
		if hs.peerHello[0] == '{' {
			return errorf("%w", ErrLegacyPeer)
		}
		return newError("the peer is not speaking the securepeer protocol")
	case errors.Is(err, wire.ErrVersion):
		return errorf("the peer speaks protocol version %d and this side version %d", h.Version, wire.Version)
	case err != nil:
		return newError("the peer sent a malformed hello")
	}
	hs.peerMode = h.Mode
	hs.peerResume = h.Resume
	return nil
}

// settleRoles decides which side initiates from the two hellos ("Roles").
// When this side becomes the responder it returns the peer's message 1.
func (hs *handshakeState) settleRoles() (peerMsg1 []byte, err error) {
	me, peer := hs.c.mode, hs.peerMode
	defer func() {
		if !hs.initiator && hs.session != nil {
			// This side responds: its ticket was offered to no avail,
			// and is not used again.
			hs.session.erase()
			hs.session = nil
		}
	}()
	switch {
	case me == wire.ModeInitiator && peer == wire.ModeInitiator:
		return nil, newError("both sides tried to initiate (Client or Dial on both); use Server, Listen or NewConn on one side")
	case me == wire.ModeResponder && peer == wire.ModeResponder:
		return nil, newError("both sides waited for the other to initiate (Server on both); use Client, Dial or NewConn on one side")

	case me == wire.ModeInitiator && peer == wire.ModeResponder:
		hs.initiator = true
		return nil, nil
	case me == wire.ModeInitiator && peer == wire.ModeEither:
		// The peer sent a speculative message 1: read it and drop it.
		hs.initiator = true
		_, err := hs.readMessage1Frame()
		return nil, err
	case me == wire.ModeEither && peer == wire.ModeResponder:
		// This side initiates with the message 1 it already sent.
		hs.initiator = true
		return nil, nil

	case me == wire.ModeResponder, peer == wire.ModeInitiator:
		// The peer initiates; its message 1 follows its hello. An
		// either-mode side's own message 1 is dropped by the peer.
		return hs.readMessage1Frame()
	}

	// Both either: both sent message 1. The larger ephemeral key (the first
	// 32 bytes of message 1) initiates; the other side answers the peer's
	// message 1 and drops its own.
	msg, err := hs.readMessage1Frame()
	if err != nil {
		return nil, err
	}
	switch bytes.Compare(hs.msg1[:32], hs.peerEphemeral(msg)) {
	case 0:
		return nil, newError("the peer sent this side's own handshake back; it is talking to itself or being reflected")
	case 1:
		hs.initiator = true
		return nil, nil
	}
	return msg, nil
}

// readMessage1Frame reads the frame of the peer's message 1, which it does
// not decrypt (readMessage1 does, if this side responds to it).
func (hs *handshakeState) readMessage1Frame() ([]byte, error) {
	msg, err := hs.readMessage(slotMessage1, wire.MaxMessage1Len(hs.peerResume))
	if err != nil {
		return nil, err
	}
	if len(msg) < 32 {
		return nil, hs.protocolError("message 1 is too short")
	}
	if hs.peerResume {
		if _, err := wire.ParseResumeMessage1(msg); err != nil {
			return nil, hs.protocolError("resumption message 1 is malformed")
		}
	}
	return msg, nil
}

// peerEphemeral returns the ephemeral key of the peer's message 1, which
// readMessage1Frame has checked.
func (hs *handshakeState) peerEphemeral(msg []byte) []byte {
	if hs.peerResume {
		m, _ := wire.ParseResumeMessage1(msg)
		return m.Noise[:32]
	}
	return msg[:32]
}

// startNoise starts this side's Noise handshake state, as initiator or
// responder: the full handshake's XXpsk3 ("The Noise handshake") or, given
// a ticket and its resumption secret, the resumed handshake's NNpsk0
// ("Session resumption"). The prologue binds the initiator's hello, and the
// ticket.
func (hs *handshakeState) startNoise(initiator bool, ticket, secret []byte) error {
	hello := hs.peerHello
	if initiator {
		hello = hs.myHello
	}
	cfg := noise.Config{
		CipherSuite: noise.NewCipherSuite(hs.dh, noise.CipherChaChaPoly, noise.HashSHA256),
		Random:      hs.cfg.rand(),
		Initiator:   initiator,
	}
	if ticket == nil {
		cfg.Pattern = noise.HandshakeXX
		cfg.Prologue = append([]byte(labelPrologue), hello[:]...)
		cfg.PresharedKeyPlacement = 3 // the ML-KEM secret, set before message 3
		cfg.StaticKeypair = hs.static
	} else {
		cfg.Pattern = noise.HandshakeNN
		cfg.Prologue = append(append([]byte(labelResumePrologue), hello[:]...), ticket...)
		cfg.PresharedKey = secret // placement 0
	}
	var err error
	hs.noise, err = noise.NewHandshakeState(cfg)
	return err
}

// cipherList is this side's cipher list as it sends it, which is also the
// list its side of the choice counts positions in ("Cipher choice").
func (hs *handshakeState) cipherList() []uint16 {
	ids := cipherIDs(hs.cfg.ciphers())
	if testOnlyCipherList != nil {
		ids = testOnlyCipherList(hs.cfg, ids)
	}
	return ids
}

// initiatorCipherList is the cipher list of this side's message 1: its
// cipherList, then the tickets signal if it wants a ticket ("Asking for a
// ticket"), then the work signal ("Work under load"). The signals count
// toward the 16 identifiers a list may hold, so a list of 16 has neither,
// and one of 15 only the first. (Only a test's testOnlyCipherList can put
// a signal in cipherList already; it is then not added twice.)
func (hs *handshakeState) initiatorCipherList() []uint16 {
	ids := hs.cipherList()
	if hs.wantsTickets() && len(ids) < wire.MaxCiphers && !slices.Contains(ids, wire.TicketsSignal) {
		ids = append(ids, wire.TicketsSignal)
	}
	if len(ids) < wire.MaxCiphers && !slices.Contains(ids, wire.WorkSignal) {
		ids = append(ids, wire.WorkSignal)
	}
	return ids
}

// testOnlyCipherList, set by a test, rewrites the cipher list a side
// sends, to add identifiers this implementation does not know.
var testOnlyCipherList func(*Config, []uint16) []uint16

// cipherIDs returns the identifiers of cs, as a list is sent.
func cipherIDs(cs []Cipher) []uint16 {
	ids := make([]uint16, len(cs))
	for i, c := range cs {
		ids[i] = uint16(c)
	}
	return ids
}

// fromCipherIDs returns the ciphers of a list as sent, unknown identifiers
// included, so that positions count as sent ("Cipher choice").
func fromCipherIDs(ids []uint16) []Cipher {
	cs := make([]Cipher, len(ids))
	for i, id := range ids {
		cs[i] = Cipher(id)
	}
	return cs
}

// checkHello checks the copy of this side's hello that the responder
// authenticates in message 2 ("Message 2"), or in resumption message 2.
func (hs *handshakeState) checkHello(h [wire.HelloSize]byte) error {
	if h != hs.peerHello {
		return hs.protocolError("the hello was altered in transit")
	}
	return nil
}

// agree settles the cipher and the application protocol from both sides'
// lists, the initiator's first, or aborts.
func (hs *handshakeState) agree(initiatorCiphers, responderCiphers []uint16, initiatorProtos, responderProtos []string) error {
	if err := hs.agreeCipher(initiatorCiphers, responderCiphers); err != nil {
		return err
	}
	return hs.agreeProtocol(initiatorProtos, responderProtos)
}

// agreeCipher settles the cipher from both lists as sent ("Cipher choice"),
// or aborts.
func (hs *handshakeState) agreeCipher(initiator, responder []uint16) error {
	cipher, ok := chooseCipher(fromCipherIDs(initiator), fromCipherIDs(responder))
	if !ok {
		hs.abort(wire.AbortNoCipher)
		return errorf("%w (initiator: %v, responder: %v)", ErrNoCommonCipher, fromCipherIDs(initiator), fromCipherIDs(responder))
	}
	hs.cipher = cipher
	return nil
}

// agreeProtocol settles the application protocol from both lists
// ("Application protocol"), or aborts.
func (hs *handshakeState) agreeProtocol(initiator, responder []string) error {
	proto, ok := chooseProtocol(initiator, responder)
	if !ok {
		hs.abort(wire.AbortNoALPN)
		return errorf("%w (initiator: %q, responder: %q)", ErrNoCommonProtocol, initiator, responder)
	}
	hs.protocol = proto
	return nil
}

// checkIdentity checks the peer's proof that its identity key vouches for
// the Noise static key it used ("Identities and static keys").
func (hs *handshakeState) checkIdentity(identity [32]byte, sig [64]byte) error {
	remote, err := NewPublicKey(identity[:])
	if err != nil {
		return errAuth
	}
	if !verifyStaticProof(identity[:], hs.noise.PeerStatic(), sig[:], hs.authTime) {
		return errAuth
	}
	hs.remote = remote
	return nil
}

// verify asks Config.Verify about the peer's key ("Verify, rejection and
// identity hiding").
func (hs *handshakeState) verify() error {
	if hs.cfg.Verify == nil {
		// "Any key" does not include this side's own: a peer that presents
		// it is another session of this identity, cross-wired by whoever
		// relays the two, or a reflection. A Verify that wants it can say
		// so ("A peer with this side's own key").
		if hs.remote == hs.cfg.Identity.PublicKey() {
			return errorf("refused peer key %s: %w", hs.remote.Fingerprint(), ErrOwnKey)
		}
		return nil
	}
	if err := hs.cfg.Verify(hs.ctx, hs.remote); err != nil {
		return errorf("refused peer key %s: %w", hs.remote.Fingerprint(), err)
	}
	return nil
}

// proved tells a listener that the peer has authenticated
// (admittedConn.Proved).
func (hs *handshakeState) proved() {
	if a, ok := hs.c.conn.(admittedConn); ok {
		a.Proved()
	}
}

// acquireCPU waits for a listener's turn of handshake CPU before the
// responder computes its answer (admittedConn.AcquireCPU): a handshake that
// stops before computing (a refused ticket, a malformed message 1) never
// takes a turn. It waits without a read buffer: all it read, message 1
// replayed from the listener's first flight, is used (and copied where it
// is still needed), so the buffer goes back to the pool, and "queued for
// CPU" costs what it did before the handshake read ahead (PROTOCOL.md,
// "Servers on the open internet").
func (hs *handshakeState) acquireCPU() error {
	a, ok := hs.c.conn.(admittedConn)
	if !ok {
		return nil
	}
	if hs.rr == hs.rw {
		hs.dropReadBuffer()
	}
	return a.AcquireCPU(hs.ctx)
}

// installTrafficKeys derives the traffic keys from the Noise split ("Key
// schedule") and installs them in the record layer.
func (hs *handshakeState) installTrafficKeys(cs1, cs2 *noise.CipherState) error {
	k1, k2 := cs1.UnsafeKey(), cs2.UnsafeKey()
	defer clear(k1[:])
	defer clear(k2[:])
	h := hs.noise.ChannelBinding()
	n := hs.cipher.keySize()
	suffix := fmt.Sprintf(" %04x", uint16(hs.cipher))
	i2r, err := hkdf.Key(sha256.New, k1[:], h, labelTrafficI2R+suffix, n+12)
	if err != nil {
		return err
	}
	r2i, err := hkdf.Key(sha256.New, k2[:], h, labelTrafficR2I+suffix, n+12)
	if err != nil {
		return err
	}
	// The channel binding and the resumption secret share their input and
	// salt: one extraction serves both.
	prk, err := hkdf.Extract(sha256.New, append(k1[:], k2[:]...), h)
	if err != nil {
		return err
	}
	defer clear(prk)
	binding, err := hkdf.Expand(sha256.New, prk, labelChannelBinding, 32)
	if err != nil {
		return err
	}
	out, in := i2r, r2i
	if !hs.initiator {
		out, in = r2i, i2r
	}
	c := hs.c
	if err := c.out.setup(hs.cipher, out[:n], out[n:]); err != nil {
		return err
	}
	if err := c.in.setup(hs.cipher, in[:n], in[n:]); err != nil {
		return err
	}
	if hs.wantsSecret() {
		secret, err := hkdf.Expand(sha256.New, prk, labelResumption, 32)
		if err != nil {
			return err
		}
		copy(hs.c.resumption.secret[:], secret)
		clear(secret)
		hs.c.resumption.pending = hs.initiator
	}
	c.in.raw = c.rawConn()
	c.in.ahead = hs.readAhead()
	c.state = ConnectionState{
		DidResume:          hs.resumed,
		HandshakeComplete:  true,
		RemoteKey:          hs.remote,
		Cipher:             hs.cipher,
		PostQuantum:        hs.postQuantum,
		Initiator:          hs.initiator,
		NegotiatedProtocol: hs.protocol,
		ChannelBinding:     binding,
	}
	return nil
}

// finished is the initiator's proof, in resumption message 3, that it holds
// the session's keys.
func finished(cs1, cs2 *noise.CipherState, h []byte) ([]byte, error) {
	k1, k2 := cs1.UnsafeKey(), cs2.UnsafeKey()
	defer clear(k1[:])
	defer clear(k2[:])
	return hkdf.Key(sha256.New, append(k1[:], k2[:]...), h, labelFinished, wire.FinishedSize)
}

// writeNoise writes the next Noise message, carrying payload, after the
// first flight.
func (hs *handshakeState) writeNoise(payload []byte) (cs1, cs2 *noise.CipherState, err error) {
	msg, cs1, cs2, err := hs.noise.WriteMessage(nil, payload)
	if err != nil {
		return nil, nil, err
	}
	if err := hs.writeFrame(msg); err != nil {
		return nil, nil, err
	}
	return cs1, cs2, nil
}

// writeFrame writes one handshake message after the first flight.
func (hs *handshakeState) writeFrame(msg []byte) error {
	return hs.send(wire.AppendHandshakeMessage(hs.takeHello(2+len(msg)), msg))
}

// send writes b, framed handshake messages or an abort, once the first
// flight has been written, so that nothing is written concurrently with
// it.
func (hs *handshakeState) send(b []byte) error {
	err := hs.joinFlight()
	if err == nil {
		_, err = hs.c.conn.Write(b)
	}
	if err != nil {
		return errorf("sending the handshake: %w", err)
	}
	return nil
}

// joinFlight waits for the first flight to be written, so that nothing is
// written concurrently with it, and returns the write's error.
func (hs *handshakeState) joinFlight() error {
	if hs.flight != nil {
		hs.flightErr = <-hs.flight
		hs.flight = nil
	}
	return hs.flightErr
}

// endFlight ends the first flight of a handshake that has ended: it
// settles a flight still being written and, if the handshake failed
// before this side's hello went out, sends it, as it would have been at
// once without peerFlightArrived.
func (hs *handshakeState) endFlight() {
	if hs.settleFlight() && hs.helloHeld {
		hs.c.conn.SetWriteDeadline(time.Now().Add(time.Second))
		hs.c.conn.Write(hs.takeHello(0))
	}
}

// settleFlight waits a moment for the first flight to be written, so that
// the peer hears why a failing handshake stops, then cuts it short: a peer
// that does not read must not hold this side up. It reports whether the
// flight was written in full.
func (hs *handshakeState) settleFlight() bool {
	if hs.flight == nil {
		return hs.flightErr == nil
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	var err error
	select {
	case err = <-hs.flight:
	case <-t.C:
		hs.c.conn.SetDeadline(time.Unix(1, 0))
		err = <-hs.flight
		if err == nil {
			err = os.ErrDeadlineExceeded
		}
	}
	hs.flight, hs.flightErr = nil, err
	return err == nil
}

// readNoise reads the next Noise message, the message of slot s, and
// returns its payload. A message that fails to decrypt is the
// authentication failure, whatever the cause.
func (hs *handshakeState) readNoise(s slot) (payload []byte, cs1, cs2 *noise.CipherState, err error) {
	msg, err := hs.readMessage(s, wire.MaxHandshakeMessage)
	if err != nil {
		return nil, nil, nil, err
	}
	payload, cs1, cs2, err = hs.noise.ReadMessage(nil, msg)
	if err != nil {
		return nil, nil, nil, errAuth
	}
	return payload, cs1, cs2, nil
}

// readMessage reads one framed handshake message, the message of slot s,
// turning an abort into the error it stands for there (abortError). A
// message longer than max is refused before its body is read. The message
// is valid until the next read (readFull).
func (hs *handshakeState) readMessage(s slot, max int) ([]byte, error) {
	l, err := hs.readFull(2)
	if err != nil {
		return nil, readHandshakeError(err)
	}
	n := int(binary.BigEndian.Uint16(l))
	if n == 0 {
		reason, err := hs.readFull(1)
		if err != nil {
			return nil, readHandshakeError(err)
		}
		return nil, hs.abortError(s, reason[0])
	}
	if n > max {
		return nil, hs.protocolError(fmt.Sprintf("a handshake message of %d bytes, more than the %d it may have", n, max))
	}
	msg, err := hs.readBody(n)
	if err != nil {
		return nil, readHandshakeError(err)
	}
	return msg, nil
}

// handshakeReadSize is the size of the handshake's read buffer: one read
// takes in a hello and the message 2 behind it (1.3 KB with ML-KEM), or a
// message 3 and the first records behind it.
const handshakeReadSize = 2048

// readFull returns the next n bytes of the peer's handshake, n at most
// handshakeReadSize. It reads ahead, as much as the buffer holds, so that
// one system call takes in all the peer has sent; the bytes read past the
// handshake's last message go to the record layer (readAhead). Only from a
// listener's connection whose first flight is not all read yet does it
// read no more than n: those reads cost no system call, and what follows
// the first flight may be a new first flight, which the listener reads
// itself (retryFull). Once all it holds is used, the buffer goes back to
// the pool, so that a handshake that waits for its peer holds none
// (awaitPeer). The bytes returned are valid until the next read, after
// which another handshake may own them: no caller keeps them.
func (hs *handshakeState) readFull(n int) ([]byte, error) {
	if hs.rr == hs.rw {
		hs.dropReadBuffer()
		if err := hs.awaitPeer(); err != nil {
			return nil, err
		}
	}
	if hs.rw-hs.rr < n {
		if hs.rbuf == nil {
			hs.rbufp = hs.getReadBuffer()
			hs.rbuf = *hs.rbufp
		}
		if hs.rr+n > len(hs.rbuf) {
			hs.rw = copy(hs.rbuf, hs.rbuf[hs.rr:hs.rw])
			hs.rr = 0
		}
		end := len(hs.rbuf)
		if a, ok := hs.c.conn.(admittedConn); ok && a.Buffered() > 0 {
			end = hs.rr + n
		}
		for hs.rw-hs.rr < n {
			m, err := hs.c.conn.Read(hs.rbuf[hs.rw:end])
			hs.rw += m
			if err != nil && hs.rw-hs.rr < n {
				return nil, err
			}
		}
	}
	b := hs.rbuf[hs.rr : hs.rr+n]
	hs.rr += n
	return b, nil
}

// awaitPeer waits for the peer's next bytes without a read buffer where
// the connection has a descriptor the record layer reads from
// (Conn.rawConn), and reads them: as the record layer does (awaitRecord),
// it takes a buffer from the pool just before each attempt to read, and
// gives it back if nothing has arrived. So a handshake that waits for its
// peer, as a listener's does for message 3, holds no buffer (PROTOCOL.md,
// "Servers on the open internet"). A listener's connection first gives its
// turn of handshake CPU back, as a read through it past its first flight
// does (admittedConn.ReleaseCPU): this read bypasses it. Elsewhere (no
// descriptor, or a first flight still being replayed) it does nothing, and
// readFull reads through the connection into a buffer. hs holds no buffer.
func (hs *handshakeState) awaitPeer() error {
	raw := hs.c.rawConn()
	if raw == nil {
		return nil
	}
	if a, ok := hs.c.conn.(admittedConn); ok {
		a.ReleaseCPU()
	}
	var rerr error
	err := raw.Read(func(fd uintptr) bool {
		bp := hs.getReadBuffer()
		n, err := readFD(fd, *bp)
		if err == errWouldBlock {
			hs.putReadBuffer(bp)
			return false
		}
		hs.rbufp, hs.rbuf, hs.rr, hs.rw = bp, *bp, 0, n
		rerr = err
		return true
	})
	if err != nil {
		return err
	}
	return rerr
}

// readBody returns the next n bytes of the peer's handshake, a message's
// body, valid until the next read. One longer than the read buffer is read
// into a buffer that grows as it arrives, so that a peer that announces 64
// KiB and sends nothing makes this side hold no more.
func (hs *handshakeState) readBody(n int) ([]byte, error) {
	if n <= handshakeReadSize {
		return hs.readFull(n)
	}
	have := hs.rbuf[hs.rr:hs.rw] // less than n
	hs.rr, hs.rw = 0, 0
	rest, err := io.ReadAll(io.LimitReader(hs.c.conn, int64(n-len(have))))
	if err == nil && len(have)+len(rest) < n {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, err
	}
	return append(have[:len(have):len(have)], rest...), nil
}

// handshakeBufPool holds the handshakes' read buffers, which hold only
// what the peer sent in the clear or encrypted, between handshakes.
var handshakeBufPool = sync.Pool{New: func() any {
	b := make([]byte, handshakeReadSize)
	return &b
}}

// getReadBuffer takes a read buffer from the pool.
func (hs *handshakeState) getReadBuffer() *[]byte {
	if testOnlyReadBuffers != nil {
		testOnlyReadBuffers(hs.c, 1)
	}
	return handshakeBufPool.Get().(*[]byte)
}

// putReadBuffer gives b back to the pool; nothing may use it after.
func (hs *handshakeState) putReadBuffer(b *[]byte) {
	if testOnlyReadBuffers != nil {
		testOnlyReadBuffers(hs.c, -1)
	}
	handshakeBufPool.Put(b)
}

// testOnlyReadBuffers, set by a test, is told of each read buffer a
// handshake of c takes (1) and gives back (-1).
var testOnlyReadBuffers func(c *Conn, delta int)

// readAhead returns, in a slice of its own, what the handshake read past
// its last message, for the record layer to read first; nil if nothing.
// The read buffer goes back to the pool.
func (hs *handshakeState) readAhead() []byte {
	var b []byte
	if hs.rr < hs.rw {
		b = bytes.Clone(hs.rbuf[hs.rr:hs.rw])
	}
	hs.dropReadBuffer()
	return b
}

// dropReadBuffer gives the read buffer back to the pool, with what it
// holds: nothing read from it may be used after.
func (hs *handshakeState) dropReadBuffer() {
	if hs.rbufp != nil {
		hs.putReadBuffer(hs.rbufp)
	}
	hs.rbuf, hs.rbufp, hs.rr, hs.rw = nil, nil, 0, 0
}

// readHandshakeError is the error for a failed read of the handshake: the
// peer closed the connection, or the read failed.
func readHandshakeError(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errorf("the peer closed the connection during the handshake: %w", io.ErrUnexpectedEOF)
	}
	return errorf("reading the handshake: %w", err)
}

// abort tells the peer, best effort, why this side gives up the handshake.
func (hs *handshakeState) abort(reason byte) {
	if !hs.settleFlight() {
		return // the stream is broken; an abort would not be understood
	}
	hs.c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	hs.c.conn.Write(wire.AppendAbort(hs.takeHello(3), reason))
}

// protocolError aborts with 0x03 and returns the error for a message that
// is malformed as what says.
func (hs *handshakeState) protocolError(what string) error {
	hs.abort(wire.AbortProtocol)
	return handshakeFailed(what)
}

// handshakeFailed is the error for a message of the peer's that is
// malformed as what says.
func handshakeFailed(what string) error {
	return errorf("handshake failed: %s; the peer is broken or the connection was tampered with", what)
}

// clear erases the handshake's secrets, best effort: Go cannot guarantee
// that no copy remains elsewhere in memory.
func (hs *handshakeState) clear() {
	clear(hs.psk[:])
	if hs.session != nil {
		hs.session.erase()
	}
	// ecdh.PrivateKey and mlkem.DecapsulationKey768 give no way to erase
	// themselves: drop them, so the collector can reuse their memory.
	hs.dh.keys = nil
	hs.kemKey = nil
	hs.noise = nil
	hs.dropReadBuffer()
}
