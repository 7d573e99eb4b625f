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
	"os"
	"slices"
	"time"

	"github.com/flynn/noise"

	"github.com/securepeer/securepeer/internal/wire"
)

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

	// flight receives the result of writing the first flight, which runs
	// concurrently with reading the peer's first messages; nil once joined.
	flight chan error

	// Initiator only: the ML-KEM key offered in message 1, if any.
	kemKey *mlkem.DecapsulationKey768
	msg1   []byte // as sent, for the simultaneous-open tie-break

	cipher      Cipher
	protocol    string   // the negotiated application protocol
	psk         [32]byte // the ML-KEM shared secret, or zero without the hybrid
	postQuantum bool
	remote      PublicKey

	// Resumption ("Session resumption").
	session    *ClientSession // initiator: the ticket offered in message 1
	peerResume bool           // the peer's hello has FlagResume
	giveTicket bool           // responder: the initiator asked for a ticket
	resumed    bool
	authTime   time.Time // of the full handshake this session descends from
}

// handshake runs the protocol of PROTOCOL.md, "The Noise handshake", as
// one flat list of steps for each role, each named for what it does and the
// section it implements. c.handshakeMutex is held.
func (c *Conn) handshake(ctx context.Context) error {
	hs := &handshakeState{c: c, ctx: ctx, cfg: c.config, dh: new(x25519)}
	defer hs.clear()
	defer hs.settleFlight() // on failure it may still be on its way
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

// runInitiator completes the handshake as initiator, message 1 sent.
func (hs *handshakeState) runInitiator() error {
	p2, err := hs.readMessage2() // "Message 2"
	if err != nil {
		return err
	}
	if err := hs.checkMessage2(p2); err != nil {
		return err
	}
	if err := hs.verify(); err != nil { // "Verify, rejection and identity hiding"
		// The initiator refuses before message 3, so a responder it does
		// not trust never learns its identity.
		hs.abort(wire.AbortRejected)
		return err
	}
	cs1, cs2, err := hs.sendMessage3() // "Message 3"
	if err != nil {
		return err
	}
	return hs.installTrafficKeys(cs1, cs2) // "Key schedule"
}

// runResponder completes the handshake as responder to the peer's message 1.
func (hs *handshakeState) runResponder(msg1 []byte) error {
	p1, err := hs.readMessage1(msg1) // "Message 1"
	if err != nil {
		return err
	}
	if err := hs.agreeCipher(p1.Ciphers, hs.cipherList()); err != nil { // "Cipher choice"
		return err
	}
	hs.giveTicket = slices.Contains(p1.Ciphers, wire.TicketsSignal) && !hs.cfg.SessionTicketsDisabled
	if err := hs.acquireCPU(); err != nil {
		return err
	}
	if err := hs.sendMessage2(p1.KEMKey); err != nil { // "Message 2"
		return err
	}
	p3, cs1, cs2, err := hs.readMessage3() // "Message 3"
	if err != nil {
		return err
	}
	if err := hs.checkMessage3(p3); err != nil {
		return err
	}
	hs.proved()
	if err := hs.installTrafficKeys(cs1, cs2); err != nil { // "Key schedule"
		return err
	}
	return hs.verifyInitiator()
}

// verifyInitiator asks Config.Verify about the initiator, keys installed
// ("Verify, rejection and identity hiding"), then gives it a ticket if it
// asked for one ("Tickets").
func (hs *handshakeState) verifyInitiator() error {
	if err := hs.verify(); err != nil {
		// The keys are in place, so the refusal reaches the initiator
		// authenticated, as an alert record.
		c := hs.c
		c.out.Lock()
		if c.alertLocked(wire.AlertRejected) == nil {
			c.lingerForAlert()
		}
		c.out.Unlock()
		return err
	}
	if hs.giveTicket {
		return hs.sendTicket()
	}
	return nil
}

// proved tells a listener that the peer has authenticated ("Servers on the
// open internet"): its connection no longer ranks with those that cost
// their sender nothing. internal/admit's connections take the call.
func (hs *handshakeState) proved() {
	if p, ok := hs.c.conn.(interface{ Proved() }); ok {
		p.Proved()
	}
}

// acquireCPU waits for a listener's turn of handshake CPU before the
// responder computes its answer ("Servers on the open internet"): handshake
// CPU is shared by source address, and a handshake that stops before
// computing (a refused ticket, a malformed message 1) never takes a turn.
// internal/admit's connections take the call; the turn goes back when the
// handshake next waits for the peer.
func (hs *handshakeState) acquireCPU() error {
	if a, ok := hs.c.conn.(interface{ AcquireCPU(context.Context) error }); ok {
		return a.AcquireCPU(hs.ctx)
	}
	return nil
}

// sendFirstFlight starts writing this side's hello, and message 1 if this
// side may initiate, while the peer's hello is read, so that two peers that
// both write first (simultaneous open, or a net.Pipe) never deadlock.
func (hs *handshakeState) sendFirstFlight() error {
	c := hs.c
	hs.myHello = wire.Hello{Version: wire.Version, Mode: c.mode, Resume: hs.session != nil}.Marshal()
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
	hs.flight = make(chan error, 1)
	go func() {
		_, err := c.conn.Write(flight)
		hs.flight <- err
	}()
	return nil
}

func (hs *handshakeState) checkConfig() error {
	for i, c := range hs.cfg.Ciphers {
		if c.keySize() == 0 {
			return fmt.Errorf("securepeer: Config.Ciphers lists unsupported cipher %v", c)
		}
		if slices.Contains(hs.cfg.Ciphers[:i], c) {
			return fmt.Errorf("securepeer: Config.Ciphers lists %v twice", c)
		}
	}
	if len(hs.cfg.Ciphers) > wire.MaxCiphers {
		return fmt.Errorf("securepeer: Config.Ciphers lists more than %d ciphers", wire.MaxCiphers)
	}
	if err := wire.CheckProtocols(hs.cfg.NextProtos); err != nil {
		return fmt.Errorf("securepeer: Config.NextProtos: %v", err)
	}
	return nil
}

func (hs *handshakeState) newNoise(initiator bool, initiatorHello []byte) error {
	var err error
	hs.noise, err = noise.NewHandshakeState(noise.Config{
		CipherSuite:           noise.NewCipherSuite(hs.dh, noise.CipherChaChaPoly, noise.HashSHA256),
		Random:                hs.cfg.rand(),
		Pattern:               noise.HandshakeXX,
		Initiator:             initiator,
		Prologue:              append([]byte(labelPrologue), initiatorHello...),
		PresharedKeyPlacement: 3,
		StaticKeypair:         hs.static,
	})
	return err
}

// buildMessage1 starts the Noise handshake as initiator and returns message
// 1 ("Message 1"): the ephemeral key and, readable by anyone, this side's
// cipher list and ML-KEM encapsulation key. It sends nothing.
func (hs *handshakeState) buildMessage1() ([]byte, error) {
	if err := hs.newNoise(true, hs.myHello[:]); err != nil {
		return nil, err
	}
	p := wire.InitPayload{Ciphers: hs.initiatorCipherList()}
	if !hs.cfg.DisablePostQuantum {
		seed := make([]byte, mlkem.SeedSize)
		defer clear(seed)
		if _, err := io.ReadFull(hs.cfg.rand(), seed); err != nil {
			return nil, fmt.Errorf("securepeer: reading randomness: %w", err)
		}
		dk, err := mlkem.NewDecapsulationKey768(seed)
		if err != nil {
			return nil, err
		}
		hs.kemKey = dk
		p.KEMKey = dk.EncapsulationKey().Bytes()
	}
	msg, _, _, err := hs.noise.WriteMessage(nil, p.Marshal(nil))
	if err != nil {
		return nil, err
	}
	hs.msg1 = msg
	return msg, nil
}

func (hs *handshakeState) readHello() error {
	if _, err := io.ReadFull(hs.c.conn, hs.peerHello[:]); err != nil {
		return readHandshakeError(err)
	}
	h, err := wire.ParseHello(hs.peerHello[:])
	switch {
	case errors.Is(err, wire.ErrNotSecurepeer):
		if hs.peerHello[0] == '{' {
			return ErrLegacyPeer
		}
		return errors.New("securepeer: the peer is not speaking the securepeer protocol")
	case errors.Is(err, wire.ErrVersion):
		return fmt.Errorf("securepeer: the peer speaks protocol version %d and this side version %d", h.Version, wire.Version)
	case err != nil:
		return errors.New("securepeer: the peer sent a malformed hello")
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
		return nil, errors.New("securepeer: both sides tried to initiate (Client or Dial on both); use Server, Listen or NewConn on one side")
	case me == wire.ModeResponder && peer == wire.ModeResponder:
		return nil, errors.New("securepeer: both sides waited for the other to initiate (Server on both); use Client, Dial or NewConn on one side")

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
		return nil, errors.New("securepeer: the peer sent this side's own handshake back; it is talking to itself or being reflected")
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

// readMessage2 reads and decrypts message 2 and parses its payload.
func (hs *handshakeState) readMessage2() (*wire.RespPayload, error) {
	payload, _, _, err := hs.readNoise(slotMessage2)
	if err != nil {
		return nil, err
	}
	p, err := wire.ParseRespPayload(payload)
	if err != nil {
		return nil, hs.protocolError("message 2 is malformed")
	}
	return p, nil
}

// checkMessage2 checks message 2 as "Message 2" lists, and takes the
// cipher, the application protocol and the ML-KEM shared secret from it.
func (hs *handshakeState) checkMessage2(p *wire.RespPayload) error {
	if p.Hello != hs.peerHello {
		return hs.protocolError("the hello was altered in transit")
	}
	if err := hs.checkIdentity(p.Identity, p.Signature); err != nil {
		return err
	}
	if err := hs.agreeCipher(hs.initiatorCipherList(), p.Ciphers); err != nil {
		return err
	}
	if err := hs.agreeProtocol(hs.cfg.NextProtos, p.Protocols); err != nil {
		return err
	}
	switch {
	case p.KEMCiphertext != nil && hs.kemKey == nil:
		return hs.protocolError("the peer answered an ML-KEM offer that was not made")
	case p.KEMCiphertext != nil:
		ss, err := hs.kemKey.Decapsulate(p.KEMCiphertext)
		if err != nil {
			return hs.protocolError("the ML-KEM ciphertext is malformed")
		}
		copy(hs.psk[:], ss)
		clear(ss)
		hs.postQuantum = true
	}
	return nil
}

// agreeProtocol settles the application protocol from both lists
// ("Application protocol"), or aborts.
func (hs *handshakeState) agreeProtocol(initiator, responder []string) error {
	proto, ok := chooseProtocol(initiator, responder)
	if !ok {
		hs.abort(wire.AbortNoALPN)
		return fmt.Errorf("%w (initiator: %q, responder: %q)", ErrNoCommonProtocol, initiator, responder)
	}
	hs.protocol = proto
	return nil
}

// sendMessage3 sets the PSK and writes message 3, which carries this side's
// identity and application protocols.
func (hs *handshakeState) sendMessage3() (cs1, cs2 *noise.CipherState, err error) {
	if err := hs.noise.SetPresharedKey(hs.psk[:]); err != nil {
		return nil, nil, err
	}
	id := hs.cfg.Identity
	final := wire.FinalPayload{Protocols: hs.cfg.NextProtos}
	copy(final.Identity[:], id.pub.key[:])
	copy(final.Signature[:], hs.staticSig)
	return hs.writeNoise(final.Marshal(nil))
}

// readMessage1 decrypts the peer's message 1 and parses its payload.
func (hs *handshakeState) readMessage1(msg1 []byte) (*wire.InitPayload, error) {
	if err := hs.newNoise(false, hs.peerHello[:]); err != nil {
		return nil, err
	}
	payload, _, _, err := hs.noise.ReadMessage(nil, msg1)
	if err != nil {
		return nil, hs.protocolError("message 1 is malformed")
	}
	p, err := wire.ParseInitPayload(payload)
	if err != nil {
		return nil, hs.protocolError("message 1 is malformed")
	}
	return p, nil
}

// agreeCipher settles the cipher from both lists as sent ("Cipher choice"),
// or aborts.
func (hs *handshakeState) agreeCipher(initiator, responder []uint16) error {
	cipher, ok := chooseCipher(fromCipherIDs(initiator), fromCipherIDs(responder))
	if !ok {
		hs.abort(wire.AbortNoCipher)
		return fmt.Errorf("%w (initiator: %v, responder: %v)", ErrNoCommonCipher, fromCipherIDs(initiator), fromCipherIDs(responder))
	}
	hs.cipher = cipher
	return nil
}

// sendMessage2 encapsulates to the initiator's ML-KEM key, if it offered one
// and this side accepts, and writes message 2.
func (hs *handshakeState) sendMessage2(kemKey []byte) error {
	p2 := wire.RespPayload{Hello: hs.myHello, Ciphers: hs.cipherList(), Protocols: hs.cfg.NextProtos}
	if kemKey != nil && !hs.cfg.DisablePostQuantum {
		ek, err := mlkem.NewEncapsulationKey768(kemKey)
		if err != nil {
			return hs.protocolError("the ML-KEM encapsulation key is malformed")
		}
		ss, ct, err := hs.encapsulate(ek)
		if err != nil {
			return err
		}
		copy(hs.psk[:], ss)
		clear(ss)
		p2.KEMCiphertext = ct
		hs.postQuantum = true
	}
	id := hs.cfg.Identity
	copy(p2.Identity[:], id.pub.key[:])
	copy(p2.Signature[:], hs.staticSig)
	_, _, err := hs.writeNoise(p2.Marshal(nil))
	return err
}

// readMessage3 sets the PSK, reads and decrypts message 3, and parses its
// payload.
func (hs *handshakeState) readMessage3() (p *wire.FinalPayload, cs1, cs2 *noise.CipherState, err error) {
	if err := hs.noise.SetPresharedKey(hs.psk[:]); err != nil {
		return nil, nil, nil, err
	}
	payload, cs1, cs2, err := hs.readNoise(slotMessage3)
	if err != nil {
		return nil, nil, nil, err
	}
	if p, err = wire.ParseFinalPayload(payload); err != nil {
		// The initiator has finished its handshake and reads records now,
		// where an abort would be read as a malformed record: say nothing.
		return nil, nil, nil, handshakeFailed("message 3 is malformed")
	}
	return p, cs1, cs2, nil
}

// checkMessage3 checks the initiator's identity and settles the application
// protocol.
func (hs *handshakeState) checkMessage3(p *wire.FinalPayload) error {
	if err := hs.checkIdentity(p.Identity, p.Signature); err != nil {
		return err
	}
	proto, ok := chooseProtocol(p.Protocols, hs.cfg.NextProtos)
	if !ok {
		// An honest initiator aborts before message 3 instead.
		return fmt.Errorf("%w (this side: %q, peer: %q; the peer went on regardless)", ErrNoCommonProtocol, hs.cfg.NextProtos, p.Protocols)
	}
	hs.protocol = proto
	return nil
}

// lingerForAlert lets an alert reach a peer that may already have sent
// data: closing a TCP connection with unread data sends a reset, which can
// overtake the alert, so that the peer reads "connection reset" instead of
// why it was refused. It ends this side's writing and reads the peer's data
// away until the peer closes, for at most a second and 1 MiB, so that a
// refused peer cannot hold this side up.
func (c *Conn) lingerForAlert() {
	cw, ok := c.NetConn().(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	c.conn.SetReadDeadline(time.Now().Add(time.Second))
	io.CopyN(io.Discard, c.conn, 1<<20)
}

// encapsulate runs ML-KEM encapsulation. Only the package's own tests can
// derandomize it (testingOnlyEncapsulate, from Config.Rand), so that the
// known-answer vectors are reproducible; crypto/mlkem offers no
// derandomized encapsulation outside its test package, which production
// code does not import.
func (hs *handshakeState) encapsulate(ek *mlkem.EncapsulationKey768) (ss, ct []byte, err error) {
	if hs.cfg.Rand == nil || testingOnlyEncapsulate == nil {
		ss, ct = ek.Encapsulate()
		return ss, ct, nil
	}
	var m [32]byte
	defer clear(m[:])
	if _, err := io.ReadFull(hs.cfg.Rand, m[:]); err != nil {
		return nil, nil, fmt.Errorf("securepeer: reading randomness: %w", err)
	}
	return testingOnlyEncapsulate(ek, m[:])
}

// testingOnlyEncapsulate, set by the package's tests, encapsulates with the
// randomness m, as FIPS 203's ML-KEM.Encaps_internal does.
var testingOnlyEncapsulate func(ek *mlkem.EncapsulationKey768, m []byte) (ss, ct []byte, err error)

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
			return fmt.Errorf("securepeer: refused peer key %s: %w", hs.remote.Fingerprint(), ErrOwnKey)
		}
		return nil
	}
	if err := hs.cfg.Verify(hs.ctx, hs.remote); err != nil {
		return fmt.Errorf("securepeer: refused peer key %s: %w", hs.remote.Fingerprint(), err)
	}
	return nil
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

// writeNoise writes the next Noise message, carrying payload, after the
// first flight.
func (hs *handshakeState) writeNoise(payload []byte) (cs1, cs2 *noise.CipherState, err error) {
	msg, cs1, cs2, err := hs.noise.WriteMessage(nil, payload)
	if err != nil {
		return nil, nil, err
	}
	if err := hs.joinFlight(); err != nil {
		return nil, nil, err
	}
	if _, err := hs.c.conn.Write(wire.AppendHandshakeMessage(nil, msg)); err != nil {
		return nil, nil, fmt.Errorf("securepeer: sending the handshake: %w", err)
	}
	return cs1, cs2, nil
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
// message longer than max is refused before its body is read.
func (hs *handshakeState) readMessage(s slot, max int) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(hs.c.conn, l[:]); err != nil {
		return nil, readHandshakeError(err)
	}
	n := int(binary.BigEndian.Uint16(l[:]))
	if n == 0 {
		var reason [1]byte
		if _, err := io.ReadFull(hs.c.conn, reason[:]); err != nil {
			return nil, readHandshakeError(err)
		}
		return nil, hs.abortError(s, reason[0])
	}
	if n > max {
		return nil, hs.protocolError(fmt.Sprintf("a handshake message of %d bytes, more than the %d it may have", n, max))
	}
	// The buffer grows as the body arrives, so a peer that announces 64 KiB
	// and sends nothing makes this side hold nothing.
	msg, err := io.ReadAll(io.LimitReader(hs.c.conn, int64(n)))
	if err == nil && len(msg) < n {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, readHandshakeError(err)
	}
	return msg, nil
}

func readHandshakeError(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("securepeer: the peer closed the connection during the handshake: %w", io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("securepeer: reading the handshake: %w", err)
}

// joinFlight waits for the first flight to be written, so that nothing is
// written concurrently with it.
func (hs *handshakeState) joinFlight() error {
	if hs.flight == nil {
		return nil
	}
	err := <-hs.flight
	hs.flight = nil
	if err != nil {
		return fmt.Errorf("securepeer: sending the handshake: %w", err)
	}
	return nil
}

// settleFlight waits a moment for the first flight to be written, so that
// the peer hears why a failing handshake stops, then cuts it short: a peer
// that does not read must not hold this side up. It reports whether the
// flight was written in full.
func (hs *handshakeState) settleFlight() bool {
	if hs.flight == nil {
		return true
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
	hs.flight = nil
	return err == nil
}

// abort tells the peer, best effort, why this side gives up the handshake.
func (hs *handshakeState) abort(reason byte) {
	if !hs.settleFlight() {
		return // the stream is broken; an abort would not be understood
	}
	hs.c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	hs.c.conn.Write(wire.AppendAbort(nil, reason))
}

func (hs *handshakeState) protocolError(what string) error {
	hs.abort(wire.AbortProtocol)
	return handshakeFailed(what)
}

func handshakeFailed(what string) error {
	return fmt.Errorf("securepeer: handshake failed: %s; the peer is broken or the connection was tampered with", what)
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
}

// cipherList is this side's cipher list as it sends it, which is also the
// list its side of the choice counts positions in ("Cipher choice").
func (hs *handshakeState) cipherList() []uint16 {
	ids := cipherIDs(hs.cfg.ciphers())
	if testingOnlyCipherList != nil {
		ids = testingOnlyCipherList(hs.cfg, ids)
	}
	return ids
}

// initiatorCipherList is the cipher list of this side's message 1: its
// cipherList, then the tickets signal if it wants a ticket ("Tickets").
func (hs *handshakeState) initiatorCipherList() []uint16 {
	ids := hs.cipherList()
	if hs.wantsTickets() && len(ids) < wire.MaxCiphers {
		ids = append(ids, wire.TicketsSignal)
	}
	return ids
}

// testingOnlyCipherList, set by a test, rewrites the cipher list a side
// sends, to add identifiers this implementation does not know.
var testingOnlyCipherList func(*Config, []uint16) []uint16

func cipherIDs(cs []Cipher) []uint16 {
	ids := make([]uint16, len(cs))
	for i, c := range cs {
		ids[i] = uint16(c)
	}
	return ids
}

func fromCipherIDs(ids []uint16) []Cipher {
	cs := make([]Cipher, len(ids))
	for i, id := range ids {
		cs[i] = Cipher(id)
	}
	return cs
}
