package securepeer

import (
	"container/list"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"sync"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/securepeer/securepeer/internal/wire"
)

// Session resumption (PROTOCOL.md, "Session resumption"): after a handshake
// the responder may give the initiator a ticket, which lets the initiator
// come back with a one-round-trip handshake that costs two X25519 key pairs
// and no signature, static key or ML-KEM operation.

// A ClientSession is what an initiator keeps to resume a session: the
// responder's ticket and the secret that goes with it. It is opaque, and
// used once.
type ClientSession struct {
	ticket      []byte
	secret      [32]byte
	local       PublicKey // this side's identity when the ticket was issued
	remote      PublicKey // the responder's
	postQuantum bool
	expires     time.Time
}

// A ClientSessionCache holds [ClientSession]s for initiators, keyed by
// the responder's address, so that they can resume sessions
// ([Config.ClientSessionCache]). A ticket is used at most once, so that
// nobody watching can link two sessions by it: Take removes what it
// returns. Implementations must be safe for concurrent use.
type ClientSessionCache interface {
	// Take returns and removes a session stored for key, if any; the most
	// recently stored first.
	Take(key string) (*ClientSession, bool)
	// Put stores a session for key.
	Put(key string, s *ClientSession)
}

// NewLRUClientSessionCache returns an in-memory [ClientSessionCache] that
// holds sessions for up to capacity keys, dropping the least recently used
// key when full, and up to 4 sessions per key (one for each connection
// open at once to that responder). If capacity is less than 1, 64 is used.
func NewLRUClientSessionCache(capacity int) ClientSessionCache {
	if capacity < 1 {
		capacity = 64
	}
	return &lruSessionCache{capacity: capacity, m: make(map[string]*list.Element)}
}

// sessionsPerKey bounds the sessions an lruSessionCache keeps for one key.
const sessionsPerKey = 4

type lruSessionCache struct {
	mu       sync.Mutex
	capacity int
	m        map[string]*list.Element // of *lruEntry, in q
	q        list.List                // most recently used first
}

type lruEntry struct {
	key      string
	sessions []*ClientSession // oldest first
}

func (c *lruSessionCache) Take(key string) (*ClientSession, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[key]
	if !ok {
		return nil, false
	}
	e := el.Value.(*lruEntry)
	s := e.sessions[len(e.sessions)-1]
	e.sessions = e.sessions[:len(e.sessions)-1]
	if len(e.sessions) == 0 {
		c.q.Remove(el)
		delete(c.m, key)
	}
	return s, true
}

func (c *lruSessionCache) Put(key string, s *ClientSession) {
	if s == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[key]; ok {
		e := el.Value.(*lruEntry)
		if len(e.sessions) == sessionsPerKey {
			e.sessions[0].erase()
			e.sessions = append(e.sessions[:0], e.sessions[1:]...)
		}
		e.sessions = append(e.sessions, s)
		c.q.MoveToFront(el)
		return
	}
	if c.q.Len() >= c.capacity {
		el := c.q.Back()
		e := el.Value.(*lruEntry)
		for _, s := range e.sessions {
			s.erase()
		}
		c.q.Remove(el)
		delete(c.m, e.key)
	}
	c.m[key] = c.q.PushFront(&lruEntry{key: key, sessions: []*ClientSession{s}})
}

// erase clears the session's secret, best effort.
func (s *ClientSession) erase() { clear(s.secret[:]) }

// Ticket key schedule: a key encrypts new tickets for ticketKeyRotation and
// then decrypts them for as long as a ticket may live, as crypto/tls does
// with its automatic keys.
const (
	ticketKeyRotation = 24 * time.Hour
	ticketLifetime    = wire.MaxTicketLifetime * time.Second
	ticketKeyLifetime = ticketKeyRotation + ticketLifetime
)

// A ticketKey seals and opens tickets.
type ticketKey struct {
	name    [ticketKeyNameSize]byte
	aead    cipher.AEAD
	created time.Time
}

const ticketKeyNameSize = 8

// newTicketKey derives a ticket key from 32 secret bytes (PROTOCOL.md,
// "Tickets"): its name, sent in clear in each ticket, and its
// XChaCha20-Poly1305 key.
func newTicketKey(secret [32]byte, created time.Time) (ticketKey, error) {
	name, err := hkdf.Key(sha256.New, secret[:], nil, labelTicketKeyName, ticketKeyNameSize)
	if err != nil {
		return ticketKey{}, err
	}
	key, err := hkdf.Key(sha256.New, secret[:], nil, labelTicketKey, chacha20poly1305.KeySize)
	if err != nil {
		return ticketKey{}, err
	}
	defer clear(key)
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return ticketKey{}, err
	}
	k := ticketKey{aead: aead, created: created}
	copy(k.name[:], name)
	return k, nil
}

// ticketKeys is a responder's ticket keys, those set by
// [Config.SetSessionTicketKeys] or else automatic ones, made on first use
// and rotated on schedule.
type ticketKeys struct {
	mu   sync.Mutex
	set  []ticketKey // from SetSessionTicketKeys; the first seals
	auto []ticketKey // newest first
}

// SetSessionTicketKeys sets the keys with which a responder seals and
// opens session tickets, in place of the automatic ones: it seals with the
// first, and opens tickets sealed with any of them. Servers behind one
// address that share their keys (and an identity) resume each other's
// sessions. The caller rotates them: to retire a key, move it out of the
// first place for as long as tickets live (7 days), then drop it. Whoever
// learns a key can open every ticket sealed with it (PROTOCOL.md, "What a
// stolen ticket key exposes"). If keys is empty, the automatic keys are used
// again. It may be called while the Config is in use.
//
// The automatic keys are random, held in memory only, and rotated every 24
// hours; each opens tickets for 8 days. A Config shares its keys only with
// its clones ([Config.Clone]): reuse one Config, or clone one, for its
// tickets to be honoured.
func (c *Config) SetSessionTicketKeys(keys [][32]byte) {
	ks := make([]ticketKey, 0, len(keys))
	for _, k := range keys {
		tk, err := newTicketKey(k, c.now())
		if err != nil {
			panic("securepeer: deriving a ticket key: " + err.Error()) // HKDF-SHA256 cannot fail for these sizes
		}
		ks = append(ks, tk)
	}
	t := c.tickets()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.set = ks
}

// tickets returns the Config's ticket keys, creating them on first use
// unless Clone shared another Config's.
func (c *Config) tickets() *ticketKeys {
	c.ticketOnce.Do(func() {
		if c.ticketKeys == nil {
			c.ticketKeys = new(ticketKeys)
		}
	})
	return c.ticketKeys
}

// sealingKey returns the key new tickets are sealed with, and all keys that
// open tickets, rotating the automatic keys first if due.
func (c *Config) currentTicketKeys() (seal ticketKey, open []ticketKey, err error) {
	t := c.tickets()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.set) > 0 {
		return t.set[0], t.set, nil
	}
	now := c.now()
	if len(t.auto) == 0 || now.Sub(t.auto[0].created) >= ticketKeyRotation || now.Before(t.auto[0].created) {
		var secret [32]byte
		defer clear(secret[:])
		if _, err := io.ReadFull(rand.Reader, secret[:]); err != nil {
			return ticketKey{}, nil, errorf("reading randomness: %w", err)
		}
		k, err := newTicketKey(secret, now)
		if err != nil {
			return ticketKey{}, nil, err
		}
		t.auto = append([]ticketKey{k}, t.auto...)
	}
	// A new slice: callers read the one returned before without the lock.
	keep := make([]ticketKey, 0, len(t.auto))
	for _, k := range t.auto {
		if now.Sub(k.created) < ticketKeyLifetime {
			keep = append(keep, k)
		}
	}
	t.auto = keep
	return t.auto[0], t.auto, nil
}

// sessionState is what a ticket carries (PROTOCOL.md, "Tickets").
type sessionState struct {
	authTime    time.Time // of the full handshake the session descends from
	expires     time.Time
	postQuantum bool
	responder   PublicKey
	initiator   PublicKey
	secret      [32]byte
}

const (
	ticketFormat    = 1
	ticketPlainSize = 1 + 8 + 8 + 1 + 32 + 32 + 32
	ticketNonceSize = chacha20poly1305.NonceSizeX
	ticketSize      = ticketKeyNameSize + ticketNonceSize + ticketPlainSize + chacha20poly1305.Overhead
)

func (s *sessionState) marshal() []byte {
	b := make([]byte, 0, ticketPlainSize)
	b = append(b, ticketFormat)
	b = binary.BigEndian.AppendUint64(b, uint64(s.authTime.Unix()))
	b = binary.BigEndian.AppendUint64(b, uint64(s.expires.Unix()))
	var flags byte
	if s.postQuantum {
		flags |= 1
	}
	b = append(b, flags)
	b = append(b, s.responder.key[:]...)
	b = append(b, s.initiator.key[:]...)
	return append(b, s.secret[:]...)
}

var errBadTicket = newError("the ticket is not one of this side's, or is damaged")

func parseSessionState(b []byte) (*sessionState, error) {
	if len(b) != ticketPlainSize || b[0] != ticketFormat || b[17]&^1 != 0 {
		return nil, errBadTicket
	}
	s := &sessionState{
		authTime:    time.Unix(int64(binary.BigEndian.Uint64(b[1:])), 0),
		expires:     time.Unix(int64(binary.BigEndian.Uint64(b[9:])), 0),
		postQuantum: b[17] == 1,
	}
	// The keys are not checked again: a ticket is authentic (only this
	// side's ticket key seals one) and holds keys checked in a handshake.
	copy(s.responder.key[:], b[18:50])
	copy(s.initiator.key[:], b[50:82])
	copy(s.secret[:], b[82:])
	return s, nil
}

// sealTicket seals s under k with a random nonce from r.
func sealTicket(k ticketKey, s *sessionState, r io.Reader) ([]byte, error) {
	plain := s.marshal()
	defer clear(plain)
	t := make([]byte, ticketKeyNameSize+ticketNonceSize, ticketSize)
	copy(t, k.name[:])
	nonce := t[ticketKeyNameSize:]
	if _, err := io.ReadFull(r, nonce); err != nil {
		return nil, errorf("reading randomness: %w", err)
	}
	return k.aead.Seal(t, nonce, plain, t[:ticketKeyNameSize]), nil
}

// openTicket opens a ticket sealed with one of keys.
func openTicket(keys []ticketKey, t []byte) (*sessionState, error) {
	if len(t) != ticketSize {
		return nil, errBadTicket
	}
	name, nonce, sealed := t[:ticketKeyNameSize], t[ticketKeyNameSize:ticketKeyNameSize+ticketNonceSize], t[ticketKeyNameSize+ticketNonceSize:]
	for _, k := range keys {
		if string(k.name[:]) != string(name) {
			continue
		}
		plain, err := k.aead.Open(nil, nonce, sealed, name)
		if err != nil {
			return nil, errBadTicket
		}
		defer clear(plain)
		return parseSessionState(plain)
	}
	return nil, errBadTicket
}

// The handshake's part in resumption: an initiator asks for tickets, takes
// one from its cache to offer and keeps the one the responder sends; a
// responder decides whether it honours a ticket, and seals the next one.

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
		return newError("the peer sent a session ticket where the protocol allows none")
	}
	r.pending = false
	defer clear(r.secret[:])
	t, err := wire.ParseTicketRecord(plain)
	if err != nil {
		return newError("the peer sent a malformed session ticket")
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
