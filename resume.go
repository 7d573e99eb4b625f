package securepeer

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/flynn/noise"

	"github.com/securepeer/securepeer/internal/wire"
)

// The resumed handshake (PROTOCOL.md, "Session resumption"): Noise NNpsk0
// keyed with the resumption secret from the responder's ticket, then the
// initiator's finished message.
//
//	initiator                                    responder
//	hello(FlagResume) [len] ticket, e, payload ->
//	                                          <- hello, [len] e, ee, payload
//	[len] finished                             ->
//	                                          <- ticket record

// errRetryFull is readMessage's report of the responder's RetryFull.
var errRetryFull = errors.New("securepeer: the responder asked for a full handshake")

// wantsTickets reports whether this side asks for tickets as initiator.
func (hs *handshakeState) wantsTickets() bool {
	return hs.cfg.ClientSessionCache != nil && !hs.cfg.SessionTicketsDisabled
}

// wantsSecret reports whether the session's resumption secret is needed:
// by an initiator that asked for a ticket (or resumed, which asks), or a
// responder that is to give one.
func (hs *handshakeState) wantsSecret() bool {
	if hs.initiator {
		return hs.wantsTickets()
	}
	return hs.giveTicket
}

// sessionKey is the key of the connection's sessions in a
// ClientSessionCache: Config.SessionCacheKey if set, else the responder's
// address, or "" if it has none.
func sessionKey(c *Conn) string {
	if c.config.SessionCacheKey != "" {
		return c.config.SessionCacheKey
	}
	a := c.conn.RemoteAddr()
	if a == nil {
		return ""
	}
	return a.Network() + " " + a.String()
}

// takeSession takes from the cache a session this side may offer: one of
// its own identity, not expired, and post-quantum unless this side has
// turned the hybrid off (a full handshake might give what the ticket lacks).
func (hs *handshakeState) takeSession() *ClientSession {
	if !hs.wantsTickets() {
		return nil
	}
	key := sessionKey(hs.c)
	if key == "" {
		return nil
	}
	for range sessionsPerKey {
		s, ok := hs.cfg.ClientSessionCache.Take(key)
		if !ok || s == nil {
			return nil
		}
		if s.local == hs.cfg.Identity.PublicKey() && hs.authTime.Before(s.expires) &&
			(s.postQuantum || hs.cfg.DisablePostQuantum) {
			return s
		}
		s.erase()
	}
	return nil
}

func (hs *handshakeState) newResumeNoise(initiator bool, initiatorHello, ticket []byte, secret []byte) error {
	prologue := append([]byte(labelResumePrologue), initiatorHello...)
	prologue = append(prologue, ticket...)
	var err error
	hs.noise, err = noise.NewHandshakeState(noise.Config{
		CipherSuite:           noise.NewCipherSuite(hs.dh, noise.CipherChaChaPoly, noise.HashSHA256),
		Random:                hs.cfg.rand(),
		Pattern:               noise.HandshakeNN,
		Initiator:             initiator,
		Prologue:              prologue,
		PresharedKey:          secret,
		PresharedKeyPlacement: 0,
	})
	return err
}

// buildResumeMessage1 returns the resumption message 1 that offers
// hs.session's ticket ("Resumption message 1"). It sends nothing.
func (hs *handshakeState) buildResumeMessage1() ([]byte, error) {
	s := hs.session
	if err := hs.newResumeNoise(true, hs.myHello[:], s.ticket, s.secret[:]); err != nil {
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
		// "Falling back to a full handshake": the same connection, a
		// full message 1, and nothing of the resumption carried over.
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
	if err != nil {
		return err
	}
	p, err := wire.ParseResumeRespPayload(payload)
	if err != nil {
		return hs.protocolError("resumption message 2 is malformed")
	}
	if p.Hello != hs.peerHello {
		return hs.protocolError("the hello was altered in transit")
	}
	if err := hs.agreeCipher(hs.cipherList(), p.Ciphers); err != nil {
		return err
	}
	if err := hs.agreeProtocol(hs.cfg.NextProtos, p.Protocols); err != nil {
		return err
	}
	hs.remote, hs.postQuantum, hs.resumed = hs.session.remote, hs.session.postQuantum, true
	if err := hs.verify(); err != nil {
		hs.abort(wire.AbortRejected)
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

// runResumingResponder answers a resumption message 1: resumed if this side
// honours the ticket, else full, after asking the initiator for it.
func (hs *handshakeState) runResumingResponder(msg1 []byte) error {
	m, err := wire.ParseResumeMessage1(msg1)
	if err != nil {
		return hs.protocolError("resumption message 1 is malformed")
	}
	st := hs.honour(m.Ticket)
	if st == nil {
		return hs.retryFull()
	}
	defer clear(st.secret[:])
	if err := hs.newResumeNoise(false, hs.peerHello[:], m.Ticket, st.secret[:]); err != nil {
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
	if err := hs.agreeCipher(p.Ciphers, hs.cipherList()); err != nil {
		return err
	}
	if err := hs.agreeProtocol(p.Protocols, hs.cfg.NextProtos); err != nil {
		return err
	}
	hs.remote, hs.postQuantum, hs.authTime = st.initiator, st.postQuantum, st.authTime
	hs.resumed, hs.giveTicket = true, true
	if err := hs.acquireCPU(); err != nil {
		return err
	}
	p2 := wire.ResumeRespPayload{Hello: hs.myHello, Ciphers: hs.cipherList(), Protocols: hs.cfg.NextProtos}
	cs1, cs2, err := hs.writeNoise(p2.Marshal(nil)) // "Resumption message 2"
	if err != nil {
		return err
	}
	want, err := finished(cs1, cs2, hs.noise.ChannelBinding())
	if err != nil {
		return err
	}
	fin, err := hs.readMessage(slotFinished, wire.MaxHandshakeMessage) // "Resumption message 3"
	if err != nil {
		return err
	}
	if !hmac.Equal(fin, want) {
		return errAuth
	}
	hs.proved()
	if err := hs.installTrafficKeys(cs1, cs2); err != nil {
		return err
	}
	return hs.verifyInitiator()
}

// honour opens a ticket and returns its session if this side resumes it
// ("Which tickets a responder honours"), or nil.
func (hs *handshakeState) honour(ticket []byte) *sessionState {
	cfg := hs.cfg
	if cfg.SessionTicketsDisabled {
		return nil
	}
	_, keys, err := cfg.currentTicketKeys()
	if err != nil {
		return nil
	}
	st, err := openTicket(keys, ticket)
	if err != nil {
		return nil
	}
	if !hs.authTime.Before(st.expires) || st.responder != cfg.Identity.PublicKey() ||
		(!st.postQuantum && !cfg.DisablePostQuantum) {
		clear(st.secret[:])
		return nil
	}
	return st
}

// retryFull asks the initiator for a full handshake and runs it
// ("Falling back to a full handshake").
func (hs *handshakeState) retryFull() error {
	if err := hs.joinFlight(); err != nil {
		return err
	}
	if _, err := hs.c.conn.Write(wire.AppendAbort(nil, wire.RetryFull)); err != nil {
		return fmt.Errorf("securepeer: sending the handshake: %w", err)
	}
	hs.peerResume = false
	// A listener waits for the full message 1 as for a first flight
	// ("Servers on the open internet"): under the first flight's deadline,
	// ranked as a new connection, into a buffer that grows only as bytes
	// arrive. internal/admit's connections do.
	if w, ok := hs.c.conn.(firstFlightWaiter); ok {
		if err := w.AwaitFirstFlight(hs.ctx, retryFlightLen); err != nil {
			return readHandshakeError(err)
		}
	}
	msg1, err := hs.readMessage1Frame()
	if err != nil {
		return err
	}
	return hs.runResponder(msg1)
}

// A firstFlightWaiter waits for a new first flight from the peer and
// replays it to the next reads, as internal/admit's Conn does.
type firstFlightWaiter interface {
	AwaitFirstFlight(ctx context.Context, need func([]byte) int) error
}

// retryFlightLen is the length of the full message 1 that answers
// RetryFull, framed, given its first bytes.
func retryFlightLen(b []byte) int { return wire.Message1Len(b, false) }

// finished is the initiator's proof, in resumption message 3, that it holds
// the session's keys.
func finished(cs1, cs2 *noise.CipherState, h []byte) ([]byte, error) {
	k1, k2 := cs1.UnsafeKey(), cs2.UnsafeKey()
	defer clear(k1[:])
	defer clear(k2[:])
	return hkdf.Key(sha256.New, append(k1[:], k2[:]...), h, labelFinished, wire.FinishedSize)
}

// writeFrame writes one handshake message after the first flight.
func (hs *handshakeState) writeFrame(msg []byte) error {
	if err := hs.joinFlight(); err != nil {
		return err
	}
	if _, err := hs.c.conn.Write(wire.AppendHandshakeMessage(nil, msg)); err != nil {
		return fmt.Errorf("securepeer: sending the handshake: %w", err)
	}
	return nil
}

// sendTicket gives the initiator a ticket, as the responder's first record
// ("Tickets"), sent just before the first record this side writes: the
// handshake itself writes nothing more, so that it never waits for an
// initiator that is not reading (over a net.Pipe, say). The connection's
// resumption secret is erased once sealed.
func (hs *handshakeState) sendTicket() error {
	c, cfg := hs.c, hs.cfg
	defer clear(c.resumption.secret[:])
	now := cfg.now()
	expires := hs.authTime.Add(ticketLifetime)
	if !now.Before(expires.Add(-time.Second)) {
		return nil // the chain of resumptions has run out: next time, a full handshake
	}
	k, _, err := cfg.currentTicketKeys()
	if err != nil {
		return err
	}
	st := sessionState{
		authTime:    hs.authTime,
		expires:     expires,
		postQuantum: hs.postQuantum,
		responder:   cfg.Identity.PublicKey(),
		initiator:   hs.remote,
		secret:      c.resumption.secret,
	}
	defer clear(st.secret[:])
	t, err := sealTicket(k, &st, cfg.rand())
	if err != nil {
		return err
	}
	// A clock set back since the full handshake must not stretch the
	// lifetime past what the record allows.
	lifetime := min(expires.Sub(now), ticketLifetime)
	rec := wire.TicketRecord{Lifetime: uint32(lifetime / time.Second), Ticket: t}
	c.out.Lock()
	defer c.out.Unlock()
	c.out.ticket = rec.Marshal(nil)
	return nil
}

// takeTicket stores the ticket the responder sent, from the plaintext of
// its ticket record. c.in must be locked.
func (c *Conn) takeTicket(plain []byte) error {
	r := &c.resumption
	if !r.pending || c.in.seq != 1 {
		return errors.New("securepeer: the peer sent a session ticket where the protocol allows none")
	}
	r.pending = false
	defer clear(r.secret[:])
	t, err := wire.ParseTicketRecord(plain)
	if err != nil {
		return errors.New("securepeer: the peer sent a malformed session ticket")
	}
	key := sessionKey(c)
	if key == "" {
		return nil
	}
	s := &ClientSession{
		ticket:      append([]byte(nil), t.Ticket...),
		secret:      r.secret,
		local:       c.config.Identity.PublicKey(),
		remote:      c.state.RemoteKey,
		postQuantum: c.state.PostQuantum,
		expires:     c.config.now().Add(time.Duration(t.Lifetime) * time.Second),
	}
	c.config.ClientSessionCache.Put(key, s)
	return nil
}
