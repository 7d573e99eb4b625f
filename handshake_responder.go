package securepeer

import (
	"crypto/hmac"
	"crypto/mlkem"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/flynn/noise"

	"github.com/securepeer/securepeer/internal/wire"
)

// The responder's side of the handshake, from the peer's message 1 to the
// traffic keys and the ticket: runResponder for a full handshake
// (PROTOCOL.md, "The Noise handshake"), runResumingResponder for a
// resumption message 1 ("Session resumption"), which asks for a full
// handshake (retryFull) when this side does not honour the ticket.

// The hello is sent first so that two sides which both wait for the other
// to initiate find out at once, and a side whose version the peer lacks
// is told so ("The hello"). A responder that already has its peer's whole
// first flight needs neither: it reads at once whether the peer waits too,
// and then sends its hello before failing, as it does before any failure
// (endFlight). So it holds its hello back and sends it in one write with
// what it sends next, message 2, resumption message 2, 00 00 05 or an
// abort (takeHello): one system call and one wake-up of the peer less. The
// bytes on the wire are the same, and it never waits for the peer while
// its hello is held: all it reads before its answer has arrived.

// peerFlightArrived reports whether the peer's whole first flight, its
// hello and what follows it, has arrived: on a listener's connection,
// which reads it before the handshake starts (admittedConn.Buffered).
func (hs *handshakeState) peerFlightArrived() bool {
	a, ok := hs.c.conn.(admittedConn)
	return ok && a.Buffered() >= wire.HelloSize
}

// runResponder completes a full handshake as responder to the peer's
// message 1.
func (hs *handshakeState) runResponder(msg1 []byte) error {
	p1, err := hs.readMessage1(msg1) // "Message 1"
	if err != nil {
		return err
	}
	if err := hs.agreeCipher(p1.Ciphers, hs.cipherList()); err != nil { // "Cipher choice"
		return err
	}
	hs.giveTicket = slices.Contains(p1.Ciphers, wire.TicketsSignal) && !hs.cfg.SessionTicketsDisabled
	if err := hs.demandWork(p1.Ciphers); err != nil { // "Work under load"
		return err
	}
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
	return hs.finishResponder(cs1, cs2)
}

// readMessage1 decrypts the peer's message 1 and parses its payload.
func (hs *handshakeState) readMessage1(msg1 []byte) (*wire.InitPayload, error) {
	if err := hs.startNoise(false, nil, nil); err != nil {
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

// demandWork asks the initiator for work, if it listed the work signal in
// ids and the listener's handshakes queue for CPU behind many others
// (admittedConn.WorkDemand), and checks the answer, which the listener
// reads as the rest of the first flight (admittedConn.ReadWork): under the
// first flight's deadline, into a buffer that grows as bytes arrive. The
// handshake then queues ahead of those whose peers proved less
// (admittedConn.Worked).
func (hs *handshakeState) demandWork(ids []uint16) error {
	a, ok := hs.c.conn.(admittedConn)
	if !ok || !slices.Contains(ids, wire.WorkSignal) {
		return nil
	}
	bits := a.WorkDemand()
	if bits == 0 {
		return nil
	}
	var seed [wire.WorkSeedSize]byte
	if _, err := io.ReadFull(hs.cfg.rand(), seed[:]); err != nil {
		return errorf("reading randomness: %w", err)
	}
	if err := hs.send(wire.AppendWorkDemand(hs.takeHello(3+wire.WorkDemandSize), byte(bits), &seed)); err != nil {
		return err
	}
	if hs.rr == hs.rw {
		hs.dropReadBuffer()
	}
	if err := a.ReadWork(hs.ctx, wire.WorkAnswerLen); err != nil {
		return readHandshakeError(err)
	}
	msg, err := hs.readMessage(slotWork, wire.WorkNonceSize)
	if err != nil {
		return err
	}
	if len(msg) != wire.WorkNonceSize {
		return hs.protocolError("the answer to the demand for work is malformed")
	}
	if !wire.CheckWork(bits, &seed, hs.noise.PeerEphemeral(), binary.BigEndian.Uint64(msg)) {
		return hs.protocolError(fmt.Sprintf("the answer to the demand for work does not prove %d bits", bits))
	}
	a.Worked(bits)
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

// encapsulate runs ML-KEM encapsulation. Only the package's own tests can
// derandomize it (testOnlyEncapsulate, from Config.Rand), so that the
// known-answer vectors are reproducible; crypto/mlkem offers no
// derandomized encapsulation outside its test package, which production
// code does not import.
func (hs *handshakeState) encapsulate(ek *mlkem.EncapsulationKey768) (ss, ct []byte, err error) {
	if hs.cfg.Rand == nil || testOnlyEncapsulate == nil {
		ss, ct = ek.Encapsulate()
		return ss, ct, nil
	}
	var m [32]byte
	defer clear(m[:])
	if _, err := io.ReadFull(hs.cfg.Rand, m[:]); err != nil {
		return nil, nil, errorf("reading randomness: %w", err)
	}
	return testOnlyEncapsulate(ek, m[:])
}

// testOnlyEncapsulate, set by the package's tests, encapsulates with the
// randomness m, as FIPS 203's ML-KEM.Encaps_internal does.
var testOnlyEncapsulate func(ek *mlkem.EncapsulationKey768, m []byte) (ss, ct []byte, err error)

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
		return errorf("%w (this side: %q, peer: %q; the peer went on regardless)", ErrNoCommonProtocol, hs.cfg.NextProtos, p.Protocols)
	}
	hs.protocol = proto
	return nil
}

// finishResponder ends the handshake once the initiator has proved that it
// holds its keys: it tells a listener so, installs the traffic keys ("Key
// schedule") and asks Config.Verify about the initiator.
func (hs *handshakeState) finishResponder(cs1, cs2 *noise.CipherState) error {
	hs.proved()
	if err := hs.installTrafficKeys(cs1, cs2); err != nil {
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

// runResumingResponder answers a resumption message 1: resumed if this side
// honours the ticket, else full, after asking the initiator for it.
func (hs *handshakeState) runResumingResponder(msg1 []byte) error {
	m, err := wire.ParseResumeMessage1(msg1)
	if err != nil {
		return hs.protocolError("resumption message 1 is malformed")
	}
	st := hs.honour(m.Ticket) // "Which tickets a responder honours"
	if st == nil {
		return hs.retryFull()
	}
	defer clear(st.secret[:])
	if err := hs.readResumeMessage1(m, st); err != nil {
		return err
	}
	if err := hs.acquireCPU(); err != nil {
		return err
	}
	p2 := wire.ResumeRespPayload{Hello: hs.myHello, Ciphers: hs.cipherList(), Protocols: hs.cfg.NextProtos}
	cs1, cs2, err := hs.writeNoise(p2.Marshal(nil)) // "Resumption message 2"
	if err != nil {
		return err
	}
	if err := hs.readFinished(cs1, cs2); err != nil { // "Resumption message 3"
		return err
	}
	return hs.finishResponder(cs1, cs2)
}

// readResumeMessage1 decrypts resumption message 1 with the secret of the
// ticket it offers, whose session st is, settles the cipher and the
// application protocol from its payload, and takes the rest of the session
// from the ticket.
func (hs *handshakeState) readResumeMessage1(m *wire.ResumeMessage1, st *sessionState) error {
	if err := hs.startNoise(false, m.Ticket, st.secret[:]); err != nil {
		return err
	}
	payload, _, _, err := hs.noise.ReadMessage(nil, m.Noise)
	if err != nil {
		// Only the holder of the ticket's secret can write it.
		return errAuth
	}
	p, err := wire.ParseResumeInitPayload(payload)
	if err != nil {
		return hs.protocolError("resumption message 1 is malformed")
	}
	if err := hs.agree(p.Ciphers, hs.cipherList(), p.Protocols, hs.cfg.NextProtos); err != nil {
		return err
	}
	hs.remote, hs.postQuantum, hs.authTime = st.initiator, st.postQuantum, st.authTime
	hs.resumed, hs.giveTicket = true, true
	return nil
}

// readFinished reads resumption message 3, the initiator's proof that it
// holds the session's keys.
func (hs *handshakeState) readFinished(cs1, cs2 *noise.CipherState) error {
	want, err := finished(cs1, cs2, hs.noise.ChannelBinding())
	if err != nil {
		return err
	}
	fin, err := hs.readMessage(slotFinished, wire.MaxHandshakeMessage)
	if err != nil {
		return err
	}
	if !hmac.Equal(fin, want) {
		return errAuth
	}
	return nil
}

// retryFull asks the initiator for a full handshake and runs it
// ("Falling back to a full handshake").
func (hs *handshakeState) retryFull() error {
	if err := hs.send(wire.AppendAbort(hs.takeHello(3), wire.RetryFull)); err != nil {
		return err
	}
	hs.peerResume = false
	// A listener waits for the full message 1 as for a first flight
	// (admittedConn.AwaitFirstFlight), into a buffer that grows only as
	// bytes arrive. The handshake has read nothing past the first flight
	// from it (readFull), so its read buffer is empty: it is dropped
	// while the listener waits.
	if a, ok := hs.c.conn.(admittedConn); ok {
		if hs.rr == hs.rw {
			hs.dropReadBuffer()
		}
		if err := a.AwaitFirstFlight(hs.ctx, retryFlightLen); err != nil {
			return readHandshakeError(err)
		}
	}
	msg1, err := hs.readMessage1Frame()
	if err != nil {
		return err
	}
	return hs.runResponder(msg1)
}

// retryFlightLen is the length of the full message 1 that answers
// RetryFull, framed, given its first bytes.
func retryFlightLen(b []byte) int { return wire.Message1Len(b, false) }
