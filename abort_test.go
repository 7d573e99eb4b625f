package securepeer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/securepeer/securepeer/internal/wire"
)

// An abortSlot drives a real handshake, over a proxy on the path, to the
// place of one handshake message, which the proxy replaces with an abort.
type abortSlot struct {
	name string
	slot slot
	// resumed: the victim's handshake is a resumption (the session that
	// gave the ticket runs first).
	resumed bool
	// dir and index are the unit the proxy replaces (the hello is 0).
	dir   string
	index int
	// victimIsClient: the initiator reads the abort, else the responder.
	victimIsClient bool
	// honest are the reasons an honest peer sends there (PROTOCOL.md,
	// "Handshake messages and aborts", says why).
	honest []byte
}

var abortSlots = []abortSlot{
	{"message 1", slotMessage1, false, "c2s", 1, false, nil},
	{"message 2", slotMessage2, false, "s2c", 1, true, []byte{wire.AbortNoCipher, wire.AbortProtocol, wire.DemandWork}},
	{"resumption message 2", slotResumeMessage2, true, "s2c", 1, true, []byte{wire.AbortNoCipher, wire.AbortProtocol, wire.AbortNoALPN, wire.RetryFull}},
	{"message 3", slotMessage3, false, "c2s", 2, false, []byte{wire.AbortRejected, wire.AbortProtocol, wire.AbortNoALPN}},
	{"finished", slotFinished, true, "c2s", 2, false, []byte{wire.AbortRejected, wire.AbortProtocol}},
}

// abortOutcome is what a victim reports for an abort it believes: nil
// for a misplaced one, which must be reported as tampering.
var abortOutcome = map[byte]func(error) bool{
	wire.AbortRejected: func(err error) bool { return errors.Is(err, ErrRejected) },
	wire.AbortNoCipher: func(err error) bool { return errors.Is(err, ErrNoCommonCipher) },
	wire.AbortProtocol: func(err error) bool { return strings.Contains(err.Error(), "malformed") },
	wire.AbortNoALPN: func(err error) bool {
		// The peer's word is never the authenticated fact.
		return errors.Is(err, ErrPeerNoCommonProtocol) && !errors.Is(err, ErrNoCommonProtocol)
	},
}

// runAbortSlot runs a handshake whose message at s's place is replaced by
// the abort reason, and returns the victim's error.
func runAbortSlot(t *testing.T, s abortSlot, reason byte) error {
	t.Helper()
	client, server := ticketConfigs(t)
	client.HandshakeTimeout, server.HandshakeTimeout = 5*time.Second, 5*time.Second
	if s.resumed {
		recordedSession(t, client, server)
	}
	p := &proxy{
		filter: func(dir string, i int, unit []byte) [][]byte {
			if dir == s.dir && i == s.index {
				return [][]byte{{0, 0, reason}}
			}
			return [][]byte{unit}
		},
		handshakeMessages: map[string]int{"c2s": 2, "s2c": 1},
	}
	a, b := p.start(t)
	x, y := Client(a, client), Server(b, server)
	cerr, serr := handshakeClosing(t, x, y, a, b)
	if s.resumed && !x.ConnectionState().DidResume && cerr == nil {
		t.Fatal("the victim's handshake was not a resumption")
	}
	if s.victimIsClient {
		return cerr
	}
	return serr
}

// TestAbortPlacement replaces each handshake message with each abort
// reason. A reason an honest peer sends in that place is reported as the
// peer's claim; any other known reason as tampering, never as what it
// claims; an unknown reason as an abort of unknown cause.
func TestAbortPlacement(t *testing.T) {
	checkNoLeaks(t)
	reasons := []byte{wire.AbortRejected, wire.AbortNoCipher, wire.AbortProtocol, wire.AbortNoALPN, wire.RetryFull, wire.DemandWork, 0, 7, 0xff}
	for _, s := range abortSlots {
		for _, reason := range reasons {
			t.Run(fmt.Sprintf("%s/reason %d", s.name, reason), func(t *testing.T) {
				honest := slices.Contains(s.honest, reason)
				if honest != s.slot.honestAbort(reason) {
					t.Errorf("the implementation's table says honest %v", !honest)
				}
				if reason == wire.RetryFull && honest {
					t.Skip("00 00 05 there asks for a full handshake: TestResumptionFallsBack")
				}
				if reason == wire.DemandWork && honest {
					t.Skip("00 00 06 there demands work: TestWorkDemand")
				}
				err := runAbortSlot(t, s, reason)
				if err == nil {
					t.Fatal("the handshake completed")
				}
				var misplaced *misplacedAbortError
				isMisplaced := errors.As(err, &misplaced)
				known := reason >= wire.AbortRejected && reason <= wire.DemandWork
				switch {
				case !known:
					if isMisplaced || !strings.Contains(err.Error(), fmt.Sprintf("aborted the handshake (reason %d)", reason)) {
						t.Errorf("got %v, want an abort of unknown reason %d", err, reason)
					}
				case !honest:
					if !isMisplaced || !strings.Contains(err.Error(), "tampered") {
						t.Errorf("got %v, want tampering", err)
					}
					for r, claims := range abortOutcome {
						if claims(err) && r != wire.AbortProtocol {
							t.Errorf("got %v: a misplaced abort reported as what it claims", err)
						}
					}
				default:
					if isMisplaced || !abortOutcome[reason](err) {
						t.Errorf("got %v, want the peer's claim of reason %d", err, reason)
					}
				}
			})
		}
	}
}

// In a resumption the responder finds that the lists share no protocol,
// from the initiator's authenticated resumption message 1, and tells the
// initiator with an abort: the responder knows it, the initiator has only
// its word.
func TestResumptionNoCommonProtocol(t *testing.T) {
	client, server := ticketConfigs(t)
	client.NextProtos, server.NextProtos = []string{"a"}, []string{"a"}
	recordedSession(t, client, server)
	server.NextProtos = []string{"b"}
	a, b := tcpPair(t)
	x, y := Client(a, client), Server(b, server)
	srv := run(func() error {
		err := y.Handshake()
		b.Close()
		return err
	})
	cerr := x.Handshake()
	serr := wait(t, srv)
	if !errors.Is(serr, ErrNoCommonProtocol) {
		t.Errorf("responder got %v, want ErrNoCommonProtocol", serr)
	}
	if !errors.Is(cerr, ErrPeerNoCommonProtocol) || errors.Is(cerr, ErrNoCommonProtocol) {
		t.Errorf("initiator got %v, want ErrPeerNoCommonProtocol, and not ErrNoCommonProtocol", cerr)
	}
}
