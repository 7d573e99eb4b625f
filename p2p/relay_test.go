package p2p

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/securepeer/securepeer"
)

const sinkProto = "sink/1"

// sink accepts one stream on l and reads it to its end: accepted closes
// once it has the stream, and the error it read, nil for a clean end,
// arrives on done.
func sink(t testing.TB, l *Listener) (accepted <-chan struct{}, done <-chan error) {
	t.Helper()
	took := make(chan struct{})
	ended := make(chan error, 1)
	go func() {
		s, err := l.AcceptStream()
		if err != nil {
			ended <- err
			return
		}
		close(took)
		defer s.Close()
		_, err = io.Copy(io.Discard, s)
		ended <- err
	}()
	return took, ended
}

// TestCircuitLimits: a relay cuts a circuit at its data limit, or at its
// time limit, and both peers are told which, on their streams and in
// their events.
func TestCircuitLimits(t *testing.T) {
	const dataLimit = 64 << 10
	for _, tc := range []struct {
		name   string
		limits RelayLimits
		// send is what the dialer sends before it waits for the cut.
		send int
		want error
	}{
		{"data", RelayLimits{CircuitData: dataLimit}, 1 << 20, ErrCircuitDataLimit},
		{"time", RelayLimits{CircuitDuration: 3 * time.Second}, 1 << 10, ErrCircuitTimeLimit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startRelay(t, RelayConfig{Limits: tc.limits})
			levents := newEventLog()
			l := startNode(t, Config{Relays: r.Addrs(), Notify: levents.notify})
			accepted, received := sink(t, listen(t, l, sinkProto))
			devents := newEventLog()
			d := startNode(t, Config{Relays: r.Addrs(), DirectWait: -1, NoHolePunching: true, Notify: devents.notify})
			s := dial(t, d, l.Key(), sinkProto)
			if !s.Path().Relayed {
				t.Fatalf("path %v, want relayed", s.Path())
			}
			// The first KiB, then the rest once the listener has the
			// stream: a circuit cut before the listener's host has read
			// the stream's protocol leaves it no stream to tell of the cut.
			_, err := s.Write(make([]byte, 1<<10))
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-accepted:
			case err := <-received:
				t.Fatalf("the listener's AcceptStream: %v", err)
			case <-time.After(testTimeout):
				t.Fatal("the listener never accepted the stream")
			}
			for sent := 1 << 10; sent < tc.send && err == nil; sent += 1 << 10 {
				_, err = s.Write(make([]byte, 1<<10))
			}
			if err == nil {
				// Everything was written: the cut shows when reading.
				_, err = s.Read(make([]byte, 1))
			}
			wantErr(t, err, tc.want)
			t.Log(err)
			select {
			case err := <-received:
				wantErr(t, err, tc.want)
			case <-time.After(testTimeout):
				t.Fatal("the listener's stream was never cut")
			}
			for _, side := range []struct {
				name   string
				events *eventLog
				peer   *Node
			}{{"dialer", devents, l}, {"listener", levents, d}} {
				e := side.events.wait(t, side.name+" told", kind(EventDisconnected, side.peer.Key()))
				var ce *CircuitError
				if !errors.As(e.Err, &ce) || !errors.Is(ce, tc.want) || ce.Relay != r.Key() {
					t.Errorf("%s: event %v, want a circuit cut by %s", side.name, e, r.Key().Fingerprint())
				}
			}
		})
	}
}

// TestRelayCircuitsBound: a relay refuses a circuit beyond its Circuits.
func TestRelayCircuitsBound(t *testing.T) {
	r := startRelay(t, RelayConfig{Limits: RelayLimits{Circuits: 2}})
	l := startNode(t, Config{Relays: r.Addrs(), NoHolePunching: true})
	echo(t, listen(t, l, echoProto))
	for i := range 3 {
		d := startNode(t, Config{Relays: r.Addrs(), DirectWait: -1, NoHolePunching: true})
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		s, err := d.Dial(ctx, l.Key(), echoProto)
		cancel()
		if i < 2 {
			if err != nil {
				t.Fatalf("circuit %d: %v", i, err)
			}
			roundTrip(t, s, "hello")
			continue
		}
		wantErr(t, err, ErrRelayRefused)
		t.Log(err)
	}
	if got := r.Stats(); got.Circuits != 2 || got.CircuitsRefused != 1 {
		t.Errorf("stats %+v, want 2 circuits open and 1 refused", got)
	}
}

// TestRelayAllowCircuit: a relay restricted to some keys carries circuits
// only between them.
func TestRelayAllowCircuit(t *testing.T) {
	allowed := newIdentity(t)
	r := startRelay(t, RelayConfig{AllowCircuit: func(from, _ securepeer.PublicKey) bool { return from == allowed.PublicKey() }})
	l := startNode(t, Config{Relays: r.Addrs(), NoHolePunching: true})
	echo(t, listen(t, l, echoProto))
	for _, tc := range []struct {
		name string
		id   *securepeer.Identity
		want error
	}{
		{"allowed", allowed, nil},
		{"another key", newIdentity(t), ErrRelayRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startNode(t, Config{Identity: tc.id, Relays: r.Addrs(), DirectWait: -1, NoHolePunching: true})
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			s, err := d.Dial(ctx, l.Key(), echoProto)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				roundTrip(t, s, "allowed")
				s.Close()
				return
			}
			wantErr(t, err, tc.want)
		})
	}
}
