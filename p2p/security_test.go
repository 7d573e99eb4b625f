package p2p

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// TestRelayCannotStandIn: a relay that keeps a circuit and answers in the
// peer's place, with its own key or another, is refused inside the
// handshake, before the dialer's identity is sent; one that offers
// another security protocol than securepeer gets nothing.
func TestRelayCannotStandIn(t *testing.T) {
	mallory, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mode fakeMode
		key  func(r *fakeRelay) crypto.PrivKey
		want error
	}{
		{"with the relay's own key", impersonate, func(r *fakeRelay) crypto.PrivKey { return r.h.Peerstore().PrivKey(r.h.ID()) }, ErrWrongKey},
		{"with another key", impersonate, func(*fakeRelay) crypto.PrivKey { return mallory }, ErrWrongKey},
		{"offering Noise", offerNoise, func(*fakeRelay) crypto.PrivKey { return nil }, ErrNotSecurepeer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startFakeRelay(t, tc.mode, nil)
			r.impostor = tc.key(r)
			l := startNode(t, Config{Relays: r.addrs()})
			listen(t, l, echoProto)
			d := startNode(t, Config{Relays: r.addrs(), DirectWait: -1, NoHolePunching: true})
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			s, err := d.Dial(ctx, l.Key(), echoProto)
			if err == nil {
				s.Close()
				t.Fatal("Dial succeeded through a relay that answered in the peer's place")
			}
			wantErr(t, err, tc.want)
			var re *RelayError
			if !errors.As(err, &re) || !errors.Is(re.Err, tc.want) {
				t.Errorf("error %v does not say which relay", err)
			}
			<-r.done
			if tc.mode != impersonate {
				return
			}
			// The impostor's handshake never completed: the dialer refused
			// its key at message 2 and sent no identity. (It sends an abort
			// and resets the circuit, so the impostor reads either.)
			r.mu.Lock()
			answered := r.answered
			r.mu.Unlock()
			if len(answered) != 1 || answered[0] == nil {
				t.Errorf("the impostor's handshakes ended with %v, want one failure", answered)
			}
		})
	}
}

// TestRelaySeesOnlyCiphertext: everything a relay carries between two
// peers is securepeer records, end to end.
func TestRelaySeesOnlyCiphertext(t *testing.T) {
	r := startFakeRelay(t, forward, nil)
	l := startNode(t, Config{Relays: r.addrs()})
	echo(t, listen(t, l, echoProto))
	d := startNode(t, Config{Relays: r.addrs(), DirectWait: -1, NoHolePunching: true})
	s := dial(t, d, l.Key(), echoProto)
	if p := s.Path(); !p.Relayed {
		t.Fatalf("path %v, want relayed", p)
	}
	secret := strings.Repeat("only the two peers may read this; ", 100)
	roundTrip(t, s, secret)
	carried := r.carriedBytes()
	if len(carried) < 2*len(secret) {
		t.Fatalf("the relay carried %d bytes, less than the echo", len(carried))
	}
	for _, clear := range []string{secret[:32], "echo/1", ProtocolPrefix} {
		if bytes.Contains(carried, []byte(clear)) {
			t.Errorf("the relay saw %q in clear", clear)
		}
	}
}
