package securepeer

import (
	"crypto/mlkem"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/flynn/noise"

	"github.com/securepeer/securepeer/internal/wire"
)

// The initiator's side of the handshake, from its first flight to the
// traffic keys: buildMessage1 and runInitiator for a full handshake
// (PROTOCOL.md, "The Noise handshake"); buildResumeMessage1 and
// runResumingInitiator when it offers a ticket ("Session resumption"),
// which fall back to runInitiator when the responder asks for a full
// handshake.

// buildMessage1 starts the Noise handshake as initiator and returns message
// 1 ("Message 1"): the ephemeral key and, readable by anyone, this side's
// cipher list and ML-KEM encapsulation key. It sends nothing.
func (hs *handshakeState) buildMessage1() ([]byte, error) {
	if err := hs.startNoise(true, nil, nil); err != nil {
		return nil, err
	}
	p := wire.InitPayload{Ciphers: hs.initiatorCipherList()}
	hs.offeredWork = slices.Contains(p.Ciphers, wire.WorkSignal)
	if !hs.cfg.DisablePostQuantum {
		seed := make([]byte, mlkem.SeedSize)
		defer clear(seed)
		if _, err := io.ReadFull(hs.cfg.rand(), seed); err != nil {
			return nil, errorf("reading randomness: %w", err)
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

// runInitiator completes a full handshake as initiator, message 1 sent.
func (hs *handshakeState) runInitiator() error {
	p2, err := hs.readMessage2() // "Message 2"
	if err != nil {
		return err
	}
	if err := hs.checkMessage2(p2); err != nil {
		return err
	}
	if err := hs.verifyResponder(); err != nil {
		return err
	}
	cs1, cs2, err := hs.sendMessage3() // "Message 3"
	if err != nil {
		return err
	}
	return hs.installTrafficKeys(cs1, cs2) // "Key schedule"
}

// readMessage2 reads and decrypts message 2 and parses its payload. A
// demand for work in its place is answered first, once.
func (hs *handshakeState) readMessage2() (*wire.RespPayload, error) {
	payload, _, _, err := hs.readNoise(slotMessage2)
	if errors.Is(err, errWorkDemanded) {
		if err := hs.answerWork(); err != nil {
			return nil, err
		}
		payload, _, _, err = hs.readNoise(slotMessage2Worked)
	}
	if err != nil {
		return nil, err
	}
	p, err := wire.ParseRespPayload(payload)
	if err != nil {
		return nil, hs.protocolError("message 2 is malformed")
	}
	return p, nil
}

// answerWork reads the rest of the responder's demand for work, does the
// work, and sends the nonce ("Work under load"). A demand for more than
// wire.MaxWorkBits is malformed: nobody on the path can make this side
// compute for long. The work stops when the handshake's context ends.
func (hs *handshakeState) answerWork() error {
	b, err := hs.readFull(wire.WorkDemandSize)
	if err != nil {
		return readHandshakeError(err)
	}
	bits, seed, ok := wire.ParseWorkDemand(b)
	if !ok {
		return hs.protocolError(fmt.Sprintf("the demand for work asks for %d bits, not 1 to %d", b[0], wire.MaxWorkBits))
	}
	nonce, err := wire.SolveWork(hs.ctx, bits, &seed, hs.msg1[:wire.EphemeralKeySize])
	if err != nil {
		return err
	}
	return hs.writeFrame(binary.BigEndian.AppendUint64(nil, nonce))
}

// checkMessage2 checks message 2 as "Message 2" lists, and takes the
// cipher, the application protocol and the ML-KEM shared secret from it.
func (hs *handshakeState) checkMessage2(p *wire.RespPayload) error {
	if err := hs.checkHello(p.Hello); err != nil {
		return err
	}
	if err := hs.checkIdentity(p.Identity, p.Signature); err != nil {
		return err
	}
	if err := hs.agree(hs.initiatorCipherList(), p.Ciphers, hs.cfg.NextProtos, p.Protocols); err != nil {
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

// verifyResponder asks Config.Verify about the responder's key ("Verify,
// rejection and identity hiding"), and aborts if it refuses: the initiator
// refuses before message 3, so a responder it does not trust never learns
// its identity.
func (hs *handshakeState) verifyResponder() error {
	if err := hs.verify(); err != nil {
		hs.abort(wire.AbortRejected)
		return err
	}
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

// buildResumeMessage1 returns the resumption message 1 that offers
// hs.session's ticket ("Resumption message 1"). It sends nothing.
func (hs *handshakeState) buildResumeMessage1() ([]byte, error) {
	s := hs.session
	if err := hs.startNoise(true, s.ticket, s.secret[:]); err != nil {
		return nil, err
	}
	p := wire.ResumeInitPayload{Ciphers: hs.cipherList(), Protocols: hs.cfg.NextProtos}
	msg, _, _, err := hs.noise.WriteMessage(nil, p.Marshal(nil))
	if err != nil {
		return nil, err
	}
	hs.msg1 = msg
	m := wire.ResumeMessage1{Ticket: s.ticket, Noise: msg}
	return m.Marshal(nil), nil
}

// runResumingInitiator completes the handshake as an initiator that
// offered a ticket: resumed, or full if the responder asks for it.
func (hs *handshakeState) runResumingInitiator() error {
	payload, cs1, cs2, err := hs.readNoise(slotResumeMessage2) // "Resumption message 2"
	if errors.Is(err, errRetryFull) {
		return hs.fallBackToFull()
	}
	if err != nil {
		return err
	}
	if err := hs.checkResumeMessage2(payload); err != nil {
		return err
	}
	if err := hs.verifyResponder(); err != nil {
		return err
	}
	fin, err := finished(cs1, cs2, hs.noise.ChannelBinding())
	if err != nil {
		return err
	}
	if err := hs.writeFrame(fin); err != nil { // "Resumption message 3"
		return err
	}
	return hs.installTrafficKeys(cs1, cs2)
}

// checkResumeMessage2 checks resumption message 2's payload and takes the
// cipher and the application protocol from it, and the rest of the
// session from the ticket's.
func (hs *handshakeState) checkResumeMessage2(payload []byte) error {
	p, err := wire.ParseResumeRespPayload(payload)
	if err != nil {
		return hs.protocolError("resumption message 2 is malformed")
	}
	if err := hs.checkHello(p.Hello); err != nil {
		return err
	}
	if err := hs.agree(hs.cipherList(), p.Ciphers, hs.cfg.NextProtos, p.Protocols); err != nil {
		return err
	}
	hs.remote, hs.postQuantum, hs.resumed = hs.session.remote, hs.session.postQuantum, true
	return nil
}

// fallBackToFull answers the responder's RetryFull ("Falling back to a full
// handshake"): the same connection, a full message 1, and nothing of the
// resumption carried over.
func (hs *handshakeState) fallBackToFull() error {
	hs.session.erase()
	hs.session = nil
	msg1, err := hs.buildMessage1()
	if err != nil {
		return err
	}
	if err := hs.writeFrame(msg1); err != nil {
		return err
	}
	return hs.runInitiator()
}
