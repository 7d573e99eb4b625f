package p2p

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	pbv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	"github.com/securepeer/securepeer/internal/pkgerr"
)

// Reservation timing: how long one attempt may take, and the pause after
// a failure, doubling from the first to the last value.
const (
	reserveTimeout = 30 * time.Second
	retryMin       = time.Second
	retryMax       = time.Minute
)

// A reserver keeps a reservation on each of a node's relays: it makes
// one, renews it when three quarters of its time have passed, and makes
// a new one when the connection to the relay is lost, retrying with
// backoff after a failure.
type reserver struct {
	n *Node

	mu      sync.Mutex
	state   map[peer.ID]*relayState
	changed chan struct{} // closed, and replaced, at every change
}

type relayState struct {
	held    bool
	expires time.Time
	err     error         // the last failure, if not held
	lost    chan struct{} // closed when the connection to the relay is lost
}

// startReservations starts keeping reservations, once.
func (n *Node) startReservations() {
	n.mu.Lock()
	if n.reserver != nil || len(n.relays) == 0 || n.closed {
		n.mu.Unlock()
		return
	}
	r := &reserver{n: n, state: make(map[peer.ID]*relayState), changed: make(chan struct{})}
	for _, relay := range n.relays {
		r.state[relay.ID] = &relayState{lost: make(chan struct{})}
	}
	n.reserver = r
	n.mu.Unlock()
	for _, relay := range n.relays {
		n.wg.Go(func() { r.keep(relay) })
	}
}

// keep keeps a reservation on relay until the node closes.
func (r *reserver) keep(relay peer.AddrInfo) {
	n := r.n
	backoff := retryMin
	for n.ctx.Err() == nil {
		lost := r.lostChan(relay.ID)
		rsvp, err := r.reserve(relay)
		if err == nil && !n.liveConn(relay.ID) {
			err = r.relayError(relay.ID, ErrNoRelay, errors.New("the connection to the relay closed"))
		}
		if err != nil {
			r.set(relay.ID, false, time.Time{}, err)
			if !sleep(n.ctx, backoff) {
				return
			}
			backoff = min(2*backoff, retryMax)
			continue
		}
		backoff = retryMin
		r.set(relay.ID, true, rsvp.Expiration, nil)
		renew := time.NewTimer(time.Until(rsvp.Expiration) * 3 / 4)
		select {
		case <-renew.C:
		case <-lost:
			renew.Stop()
			r.set(relay.ID, false, time.Time{}, r.relayError(relay.ID, ErrRelayLost, nil))
		case <-n.ctx.Done():
			renew.Stop()
			return
		}
	}
}

// reserve connects to relay and reserves a slot on it.
func (r *reserver) reserve(relay peer.AddrInfo) (*client.Reservation, error) {
	ctx, cancel := context.WithTimeout(r.n.ctx, reserveTimeout)
	defer cancel()
	if err := r.n.host.Connect(ctx, relay); err != nil {
		return nil, r.relayError(relay.ID, ErrNoRelay, err)
	}
	rsvp, err := client.Reserve(ctx, r.n.host, relay)
	if err == nil {
		return rsvp, nil
	}
	var re client.ReservationError
	var de *swarm.DialError
	switch {
	case errors.As(err, &de):
		return nil, r.relayError(relay.ID, ErrNoRelay, err)
	case errors.As(err, &re) && re.Status != pbv2.Status_CONNECTION_FAILED:
		return nil, r.relayError(relay.ID, ErrReservationRefused, fmt.Errorf("the relay answered %v", re.Status))
	}
	return nil, r.relayError(relay.ID, ErrReservationRefused, err)
}

func (r *reserver) relayError(relay peer.ID, sentinel, cause error) *RelayError {
	e := &RelayError{Err: sentinel, Cause: cause}
	e.Relay, _ = KeyOf(relay)
	return e
}

// set records relay's state, reports it, and wakes Ready.
func (r *reserver) set(relay peer.ID, held bool, expires time.Time, err error) {
	r.mu.Lock()
	st := r.state[relay]
	st.held, st.expires, st.err = held, expires, err
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	key, _ := KeyOf(relay)
	if held {
		r.n.emit(Event{Kind: EventReserved, Relay: key, Expires: expires})
	} else {
		r.n.emit(Event{Kind: EventReservationFailed, Relay: key, Err: err})
	}
}

func (r *reserver) lostChan(relay peer.ID) chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state[relay].lost
}

// relayDown wakes the keeper of relay's reservation: the node has no
// connection to it any more.
func (r *reserver) relayDown(relay peer.ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.state[relay]
	if !ok {
		return
	}
	close(st.lost)
	st.lost = make(chan struct{})
}

// held returns the relays on which a reservation is held.
func (r *reserver) held() []peer.ID {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []peer.ID
	for _, relay := range r.n.relays {
		if r.state[relay.ID].held {
			out = append(out, relay.ID)
		}
	}
	return out
}

// Ready waits until the node holds a reservation on one of its relays,
// and returns nil; or until every relay has been tried and none gave
// one, and returns an error that wraps each relay's [*RelayError]. With
// no relays it returns nil at once; before [Node.Listen] (which starts
// the reservations) it returns an error.
func (n *Node) Ready(ctx context.Context) error {
	if len(n.relays) == 0 {
		return nil
	}
	n.mu.Lock()
	r := n.reserver
	n.mu.Unlock()
	if r == nil {
		return pkgerr.New("p2p", "Ready called before Listen: a node reserves slots on its relays once it listens")
	}
	for {
		held, errs, changed := r.summary()
		switch {
		case held:
			return nil
		case len(errs) == len(n.relays):
			return pkgerr.Errorf("p2p", "no reservation on any relay: %w", errors.Join(errs...))
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return pkgerr.Errorf("p2p", "waiting for a reservation: %w", ctx.Err())
		case <-n.ctx.Done():
			return ErrClosed
		}
	}
}

// summary returns whether a reservation is held, the failures of the
// relays that have failed, and the channel closed at the next change.
func (r *reserver) summary() (held bool, errs []error, changed chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, relay := range r.n.relays {
		st := r.state[relay.ID]
		held = held || st.held
		if st.err != nil {
			errs = append(errs, st.err)
		}
	}
	return held, errs, r.changed
}

// sleep waits for d, or until ctx is done, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
