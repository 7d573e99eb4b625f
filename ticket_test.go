package securepeer

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/securepeer/securepeer/internal/testenv/fuzzseed"
	"github.com/securepeer/securepeer/internal/wire"
)

// Each session gets a new ticket and offers it once: no two resumption
// attempts carry the same ticket, so an observer cannot link them.
func TestTicketsAreNotReused(t *testing.T) {
	client, server := ticketConfigs(t)
	recordedSession(t, client, server)
	seen := map[string]bool{}
	for i := range 5 {
		sent, cs := recordedSession(t, client, server)
		if !cs.DidResume {
			t.Fatalf("session %d not resumed", i)
		}
		m, err := wire.ParseResumeMessage1(frameAfterHello(t, sent))
		if err != nil {
			t.Fatal(err)
		}
		if seen[string(m.Ticket)] {
			t.Fatal("a ticket was offered twice")
		}
		seen[string(m.Ticket)] = true
	}
	// With the cache empty, the next session is full.
	for {
		if _, ok := client.ClientSessionCache.Take(""); !ok {
			break
		}
	}
	if _, cs := recordedSession(t, client, server); cs.DidResume {
		t.Fatal("resumed without a ticket")
	}
}

// Ticket keys rotate: a ticket opens while its key is among the keys, and
// automatic keys are replaced daily and kept as long as tickets live.
func TestTicketKeyRotation(t *testing.T) {
	t.Run("set", func(t *testing.T) {
		client, server := ticketConfigs(t)
		k1, k2, k3 := [32]byte{1}, [32]byte{2}, [32]byte{3}
		server.SetSessionTicketKeys([][32]byte{k1})
		steps := []struct {
			keys [][32]byte
			want bool
		}{
			{[][32]byte{k1}, false},    // first contact
			{[][32]byte{k2, k1}, true}, // the k1 ticket still opens; a k2 ticket comes back
			{[][32]byte{k2}, true},     // k1 retired: the k2 ticket opens
			{[][32]byte{k3}, false},    // k2 retired too: full handshake
			{[][32]byte{k3, k2}, true}, // its ticket is k3's
			{nil, false},               // back to automatic keys
			{nil, true},
		}
		for i, s := range steps {
			server.SetSessionTicketKeys(s.keys)
			if _, cs := recordedSession(t, client, server); cs.DidResume != s.want {
				t.Fatalf("step %d: DidResume = %v, want %v", i, cs.DidResume, s.want)
			}
		}
	})
	t.Run("automatic", func(t *testing.T) {
		client, server := ticketConfigs(t)
		server.SetSessionTicketKeys(nil)
		now := time.Now()
		clock := func() time.Time { return now }
		client.Time, server.Time = clock, clock
		recordedSession(t, client, server)
		now = now.Add(25 * time.Hour) // a new key seals; yesterday's still opens
		if _, cs := recordedSession(t, client, server); !cs.DidResume {
			t.Fatal("a ticket of the previous key was not honoured")
		}
		if n := len(server.tickets().auto); n != 2 {
			t.Fatalf("%d automatic keys, want 2", n)
		}
		now = now.Add(9 * 24 * time.Hour) // every key and ticket is past its life
		if _, cs := recordedSession(t, client, server); cs.DidResume {
			t.Fatal("resumed after every key expired")
		}
		if n := len(server.tickets().auto); n != 1 {
			t.Fatalf("%d automatic keys, want the new one alone", n)
		}
	})
}

// A ticket past its lifetime on the client's clock is not offered: a full
// handshake, with no round trip lost to a refused ticket.
func TestExpiredTicketNotOffered(t *testing.T) {
	client, server := ticketConfigs(t)
	now := time.Now()
	client.Time = func() time.Time { return now }
	recordedSession(t, client, server)
	now = now.Add(7*24*time.Hour + time.Minute)
	sent, cs := recordedSession(t, client, server)
	if cs.DidResume || sent[7] != 0 {
		t.Fatalf("DidResume %v, hello flags %#x; want a full handshake without an offer", cs.DidResume, sent[7])
	}
}

// The chain of resumptions ends 7 days after the full handshake it started
// from, however often the peer comes back.
func TestResumptionChainEnds(t *testing.T) {
	client, server := ticketConfigs(t)
	now := time.Now()
	clock := func() time.Time { return now }
	client.Time, server.Time = clock, clock
	recordedSession(t, client, server)
	for day := 1; day <= 8; day++ {
		now = now.Add(24 * time.Hour)
		_, cs := recordedSession(t, client, server)
		if want := day < 7; cs.DidResume != want {
			t.Fatalf("day %d: DidResume = %v, want %v", day, cs.DidResume, want)
		}
		if !cs.DidResume {
			return
		}
	}
}

// A ticket given to another identity of the same client is not used.
func TestTicketOfAnotherLocalIdentity(t *testing.T) {
	client, server := ticketConfigs(t)
	server.Verify = nil
	recordedSession(t, client, server)
	other := &Config{Identity: testIdentity(t, 5), Verify: client.Verify, ClientSessionCache: client.ClientSessionCache}
	if sent, cs := recordedSession(t, other, server); cs.DidResume || sent[7] != 0 {
		t.Fatal("a ticket of another identity was offered")
	}
}

// A responder sends a ticket only to an initiator that asked for one; an
// initiator that did not ask refuses one.
// Only a responder sends ticket records, and only to an initiator that
// asked: a ticket record anywhere else ends the connection (PROTOCOL.md,
// "Tickets").
func TestUnaskedTicket(t *testing.T) {
	for _, toResponder := range []bool{false, true} {
		name := map[bool]string{false: "to an initiator that did not ask", true: "to a responder"}[toResponder]
		t.Run(name, func(t *testing.T) {
			client, server := ticketConfigs(t)
			client.ClientSessionCache = nil
			a, b := tcpPair(t)
			x, y := Client(a, client), Server(b, server)
			other := run(y.Handshake)
			if err := x.Handshake(); err != nil {
				t.Fatal(err)
			}
			if err := wait(t, other); err != nil {
				t.Fatal(err)
			}
			// Make one side send one anyway, as a broken peer would.
			sender, receiver := y, x
			if toResponder {
				sender, receiver = x, y
			}
			sender.out.Lock()
			sender.out.ticket = (&wire.TicketRecord{Lifetime: 60, Ticket: []byte{1}}).Marshal(nil)
			sender.out.Unlock()
			go sender.Write([]byte("x"))
			_, err := receiver.Read(make([]byte, 1))
			if err == nil || !strings.Contains(err.Error(), "ticket") {
				t.Fatalf("read %v, want a refused ticket", err)
			}
			x.Close()
			y.Close()
		})
	}
}

// TestTicketsSignal checks where 0xff01 counts (PROTOCOL.md, "Asking for a
// ticket"): toward the 16 identifiers of a list, so that an initiator with
// 16 asks for no ticket and 16 ciphers with the signal are malformed; and
// anywhere in the list, at its position, as an unknown identifier to the
// cipher choice.
func TestTicketsSignal(t *testing.T) {
	unknown := func(n int) []uint16 {
		ids := make([]uint16, n)
		for i := range ids {
			ids[i] = 0x7f01 + uint16(i)
		}
		return ids
	}
	aes, chacha := uint16(AES256GCM), uint16(ChaCha20Poly1305)
	tests := []struct {
		name       string
		sent       []uint16 // the initiator's list as sent
		classical  bool     // the initiator sends no ML-KEM key
		malformed  bool
		wantTicket bool
		wantCipher Cipher
	}{
		{"16 identifiers, the signal last", append(append([]uint16{aes}, unknown(14)...), wire.TicketsSignal), false, false, true, AES256GCM},
		{"16 identifiers without the signal", append([]uint16{aes}, unknown(15)...), false, false, false, AES256GCM},
		// Longer than any valid message 1 with an ML-KEM key, so refused
		// by its length; without one, by the list's bound.
		{"16 ciphers and the signal", append(append([]uint16{aes}, unknown(15)...), wire.TicketsSignal), false, true, false, 0},
		{"16 ciphers and the signal, classical", append(append([]uint16{aes}, unknown(15)...), wire.TicketsSignal), true, true, false, 0},
		{"the signal last moves nothing", []uint16{chacha, aes, wire.TicketsSignal}, false, false, true, AES256GCM},                // a tie, 1 + 0 and 0 + 1
		{"the signal between keeps its position", []uint16{chacha, wire.TicketsSignal, aes}, false, false, true, ChaCha20Poly1305}, // 0 + 1 against 2 + 0
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := ticketConfigs(t)
			server.Ciphers = []Cipher{AES256GCM, ChaCha20Poly1305}
			client.DisablePostQuantum = tt.classical
			testOnlyCipherList = func(c *Config, ids []uint16) []uint16 {
				if c == client {
					return tt.sent
				}
				return ids
			}
			defer func() { testOnlyCipherList = nil }()
			a, b := tcpPair(t)
			cs, _, cerr, serr := pairSession(t, a, b, client, server)
			if tt.malformed {
				if serr == nil || cerr == nil || !strings.Contains(cerr.Error(), "found this side's messages malformed") {
					t.Fatalf("responder %v, initiator %v; want the abort 0x03", serr, cerr)
				}
				return
			}
			if cerr != nil || serr != nil {
				t.Fatal(cerr, serr)
			}
			if cs.Cipher != tt.wantCipher {
				t.Errorf("cipher %v, want %v", cs.Cipher, tt.wantCipher)
			}
			if _, got := client.ClientSessionCache.Take(""); got != tt.wantTicket {
				t.Errorf("a ticket was given: %v, want %v", got, tt.wantTicket)
			}
		})
	}
}

// TestTicketExpiry checks the expiry to the second, on both sides: an
// initiator offers a ticket only while its clock is before the time of
// receipt plus the lifetime, and a responder honours it only while its
// clock is before the ticket's expires (PROTOCOL.md, "Resumption message
// 1", "The responder's answer").
func TestTicketExpiry(t *testing.T) {
	const lifetime = 7 * 24 * 3600 // what the responder gives at the full handshake
	tests := []struct {
		name                   string
		clientAt, serverAt     int64 // seconds after the full handshake
		wantOffered, wantResum bool
	}{
		{"a second before", lifetime - 1, lifetime - 1, true, true},
		{"at the initiator's expiry", lifetime, lifetime - 1, false, false},
		{"at the responder's expires", lifetime - 1, lifetime, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := ticketConfigs(t)
			start := time.Unix(1_800_000_000, 0)
			clientNow, serverNow := start, start
			client.Time = func() time.Time { return clientNow }
			server.Time = func() time.Time { return serverNow }
			recordedSession(t, client, server)
			clientNow = start.Add(time.Duration(tt.clientAt) * time.Second)
			serverNow = start.Add(time.Duration(tt.serverAt) * time.Second)
			sent, cs := recordedSession(t, client, server)
			if offered := sent[7] == wire.FlagResume; offered != tt.wantOffered || cs.DidResume != tt.wantResum {
				t.Errorf("offered %v, resumed %v; want %v, %v", offered, cs.DidResume, tt.wantOffered, tt.wantResum)
			}
		})
	}
}

func TestLRUClientSessionCache(t *testing.T) {
	c := NewLRUClientSessionCache(2)
	s := func(n byte) *ClientSession { return &ClientSession{ticket: []byte{n}} }
	for n := range byte(6) {
		c.Put("a", s(n))
	}
	c.Put("b", s(10))
	c.Put("c", s(20)) // "a" is the least recently used: dropped
	if _, ok := c.Take("a"); ok {
		t.Fatal("the least recently used key was kept")
	}
	c.Put("b", s(11))
	for _, want := range []byte{11, 10} { // newest first
		got, ok := c.Take("b")
		if !ok || got.ticket[0] != want {
			t.Fatalf("Take = %v, %v; want ticket %d", got, ok, want)
		}
	}
	if _, ok := c.Take("b"); ok {
		t.Fatal("a session was returned twice")
	}
	for range sessionsPerKey + 2 {
		c.Put("d", s(1))
	}
	n := 0
	for {
		if _, ok := c.Take("d"); !ok {
			break
		}
		n++
	}
	if n != sessionsPerKey {
		t.Fatalf("%d sessions kept for one key, want %d", n, sessionsPerKey)
	}
}

// fuzzTicketKey is the key FuzzOpenTicket's seeds are sealed with.
func fuzzTicketKey(t testing.TB) ticketKey {
	k, err := newTicketKey([32]byte{0xf0}, time.Unix(1_800_000_000, 0))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// ticketSeeds are real tickets and session states, for the fuzzers' seed
// corpora.
func ticketSeeds(t testing.TB) (tickets, states map[string][]byte) {
	st := &sessionState{
		authTime:    time.Unix(1_800_000_000, 0),
		expires:     time.Unix(1_800_000_000+7*24*3600, 0),
		postQuantum: true,
		responder:   testIdentity(t, 2).PublicKey(),
		initiator:   testIdentity(t, 1).PublicKey(),
		secret:      [32]byte{1, 2, 3},
	}
	classical := *st
	classical.postQuantum = false
	k := fuzzTicketKey(t)
	tickets, states = map[string][]byte{}, map[string][]byte{}
	for name, s := range map[string]*sessionState{"hybrid": st, "classical": &classical} {
		tk, err := sealTicket(k, s, bytes.NewReader(make([]byte, ticketNonceSize)))
		if err != nil {
			t.Fatal(err)
		}
		tickets[name], states[name] = tk, s.marshal()
	}
	return tickets, states
}

func FuzzOpenTicket(f *testing.F) {
	fzRequireSeeds(f)
	k := fuzzTicketKey(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := openTicket([]ticketKey{k}, b)
		if err != nil {
			return
		}
		if again, err := parseSessionState(st.marshal()); err != nil || *again != *st {
			t.Fatalf("an opened ticket's state does not survive marshal and parse: %v", err)
		}
	})
}

func FuzzParseSessionState(f *testing.F) {
	fzRequireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseSessionState(b)
		if err != nil {
			return
		}
		if enc := st.marshal(); !bytes.Equal(enc, b) {
			t.Fatalf("parseSessionState(%x) marshals to %x", b, enc)
		}
	})
}

// TestTicketFuzzSeeds writes the ticket fuzzers' seed corpora with
// -update-fuzz, and otherwise checks them, as TestFuzzSeeds does.
func TestTicketFuzzSeeds(t *testing.T) {
	tickets, states := ticketSeeds(t)
	k := fuzzTicketKey(t)
	for name, tk := range tickets {
		if _, err := openTicket([]ticketKey{k}, tk); err != nil {
			t.Fatalf("seed ticket %s does not open: %v", name, err)
		}
	}
	captures := resumeCaptures(t)
	// The fallback with its (unhonoured) ticket damaged completes the same
	// full handshake: nothing of the resumption message 1 is bound.
	damaged := bytes.Clone(captures["fallback"])
	damaged[wire.HelloSize+2+2+40] ^= 1
	captures["fallback-damaged-ticket"] = damaged
	for name, in := range captures {
		if err := Server(newFzConn(in), fzResumeServer()).Handshake(); err != nil {
			t.Fatalf("the %s capture does not replay: %v", name, err)
		}
	}
	sess, answers := initiatorCaptures(t)
	for name, in := range answers {
		if err := Client(newFzConn(in), resumingClient(sess)).Handshake(); err != nil {
			t.Fatalf("the %s answer does not replay: %v", name, err)
		}
	}
	for target, seeds := range map[string]map[string][]byte{"FuzzOpenTicket": tickets, "FuzzParseSessionState": states, "FuzzResumingResponder": captures, "FuzzResumingInitiator": answers} {
		dir := filepath.Join("testdata", "fuzz", target)
		for name, data := range seeds {
			path := filepath.Join(dir, name)
			if *updateFuzzSeeds {
				fuzzseed.Write(t, path, data)
				continue
			}
			if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, fuzzseed.File(data)) {
				t.Errorf("%s is missing or stale (go test -run TestTicketFuzzSeeds -update-fuzz rewrites it)", path)
			}
		}
	}
}

// A responder whose clock was set back since the full handshake still gives
// a ticket the initiator accepts.
func TestTicketLifetimeWithClockSetBack(t *testing.T) {
	client, server := ticketConfigs(t)
	now := time.Now()
	server.Time = func() time.Time { return now }
	recordedSession(t, client, server)
	now = now.Add(-time.Hour)
	if _, cs := recordedSession(t, client, server); !cs.DidResume {
		t.Fatal("not resumed")
	}
	if _, cs := recordedSession(t, client, server); !cs.DidResume {
		t.Fatal("the ticket given with the clock set back was not usable")
	}
}

// SessionCacheKey replaces the address as the cache key: a ticket follows
// the name, not the address.
func TestSessionCacheKey(t *testing.T) {
	client, server := ticketConfigs(t)
	client.ClientSessionCache = NewLRUClientSessionCache(0)
	client.SessionCacheKey = "bob"
	recordedSession(t, client, server) // over one address
	if _, cs := recordedSession(t, client, server); !cs.DidResume {
		t.Fatal("a ticket kept under SessionCacheKey was not used at another address")
	}
	client.SessionCacheKey = "carol"
	if _, cs := recordedSession(t, client, server); cs.DidResume {
		t.Fatal("a ticket kept for bob was offered for carol")
	}
}

// Handshakes read the ticket keys they were given without the lock while
// others rotate them: the slice they hold must never be written.
func TestTicketKeysConcurrentUse(t *testing.T) {
	cfg := &Config{Identity: testIdentity(t, 1)}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				_, open, err := cfg.currentTicketKeys()
				if err != nil {
					t.Error(err)
					return
				}
				for _, k := range open {
					_ = k.created
				}
			}
		})
	}
	wg.Wait()
}
