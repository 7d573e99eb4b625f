package p2p

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/sec"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	pbv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	ma "github.com/multiformats/go-multiaddr"
	mss "github.com/multiformats/go-multistream"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/pkgerr"
	"github.com/securepeer/securepeer/libp2psec"
)

// ErrNotServed means that the peer was reached but does not listen for
// the application protocol asked for.
var ErrNotServed = pkgerr.New("p2p", "the peer does not serve this protocol")

// Dial opens a stream of the application protocol name to the peer with
// key. It uses a connection already open to the peer if there is one;
// otherwise it connects, trying at once the direct addresses it knows
// ([Node.AddAddrs], or learned from the peer earlier) and a circuit
// through each of its relays. When only a relayed connection comes up,
// Dial waits until [Config.DirectWait] has passed since the relayed
// connection opened for hole punching to give a direct one, and opens
// the stream on it if it appears, else on the relayed one;
// [Stream.Path] says which.
//
// The peer's key is checked inside the handshake, before this node's
// identity is sent: a host with another key, at an address or through a
// relay, is refused ([ErrWrongKey]). Failures are a [*DialError].
func (n *Node) Dial(ctx context.Context, key securepeer.PublicKey, name string) (*Stream, error) {
	id, err := protocolID(name)
	if err != nil {
		return nil, err
	}
	p, err := PeerID(key)
	if err != nil {
		return nil, err
	}
	if p == n.id {
		return nil, pkgerr.Errorf("p2p", "dialing this node's own key: %w", securepeer.ErrOwnKey)
	}
	if n.isClosed() {
		return nil, ErrClosed
	}
	n.trust(p)
	c, err := n.connect(ctx, key, p)
	if err != nil {
		return nil, err
	}
	if isCircuit(c.RemoteMultiaddr()) {
		n.awaitDirect(ctx, p, c)
	}
	s, err := n.newStream(ctx, p, id)
	if err != nil && retryStream(ctx, err) {
		// Nothing reached the peer's application: the stream failed
		// before its protocol was agreed, most often because the
		// connection it went on ended under it (a hole-punched one that
		// a NAT or the peer dropped). Once more, on the best connection
		// left, or a new one.
		if c, err = n.connect(ctx, key, p); err != nil {
			return nil, err
		}
		s, err = n.newStream(ctx, p, id)
	}
	if err != nil {
		return nil, n.streamError(key, name, c, err)
	}
	return newStream(s, name)
}

// newStream opens a stream of protocol id to p on the best connection.
func (n *Node) newStream(ctx context.Context, p peer.ID, id protocol.ID) (network.Stream, error) {
	if testOnlyNewStream != nil {
		return testOnlyNewStream(ctx, n, p, id)
	}
	return n.host.NewStream(network.WithAllowLimitedConn(ctx, "securepeer"), p, id)
}

// testOnlyNewStream, set by a test, opens Dial's streams in place of
// the host.
var testOnlyNewStream func(ctx context.Context, n *Node, p peer.ID, id protocol.ID) (network.Stream, error)

// retryStream reports whether a stream that failed with err before its
// protocol was agreed is worth opening once more: not if the peer said it
// does not serve the protocol, nor once ctx is done.
func retryStream(ctx context.Context, err error) bool {
	var unsupported mss.ErrNotSupported[protocol.ID]
	return ctx.Err() == nil && !errors.As(err, &unsupported)
}

// connect returns the best open connection to p, or makes one.
func (n *Node) connect(ctx context.Context, key securepeer.PublicKey, p peer.ID) (network.Conn, error) {
	if c := n.bestConn(p); c != nil {
		return c, nil
	}
	ps := n.host.Peerstore()
	for _, r := range n.relays {
		ps.AddAddrs(p, n.circuitAddrs(r.ID), peerstore.TempAddrTTL)
	}
	if len(ps.Addrs(p)) == 0 {
		return nil, &DialError{Peer: key, Err: ErrNoPath}
	}
	c, err := n.host.Network().DialPeer(network.WithAllowLimitedConn(ctx, "securepeer"), p)
	if err != nil {
		return nil, n.dialError(key, err)
	}
	return c, nil
}

// circuitAddrs returns the circuit addresses through relay, one of the
// node's relays: each of its addresses followed by its peer ID and
// /p2p-circuit.
func (n *Node) circuitAddrs(relay peer.ID) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, r := range n.relays {
		if r.ID != relay {
			continue
		}
		circuit := ma.StringCast("/p2p/" + r.ID.String() + "/p2p-circuit")
		for _, a := range r.Addrs {
			out = append(out, a.Encapsulate(circuit))
		}
	}
	return out
}

// bestConn returns an open connection to p, direct if there is one, or
// nil.
func (n *Node) bestConn(p peer.ID) network.Conn {
	var relayed network.Conn
	for _, c := range n.host.Network().ConnsToPeer(p) {
		switch {
		case c.IsClosed():
		case !isCircuit(c.RemoteMultiaddr()):
			return c
		default:
			relayed = c
		}
	}
	return relayed
}

// awaitDirect waits for hole punching to give a direct connection to p,
// which has the relayed connection relayed, until the node's DirectWait
// has passed since relayed opened: a stream opened later on a connection
// that stayed relayed does not wait again.
func (n *Node) awaitDirect(ctx context.Context, p peer.ID, relayed network.Conn) {
	wait := n.wait - time.Since(relayed.Stat().Opened)
	if wait <= 0 || n.punch == nil {
		return
	}
	ch := make(chan struct{})
	n.mu.Lock()
	n.waiters[p] = append(n.waiters[p], ch)
	n.mu.Unlock()
	defer n.dropWaiter(p, ch)
	if c := n.bestConn(p); c != nil && !isCircuit(c.RemoteMultiaddr()) {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
	case <-n.ctx.Done():
	}
}

func (n *Node) dropWaiter(p peer.ID, ch chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ws := slices.DeleteFunc(n.waiters[p], func(w chan struct{}) bool { return w == ch })
	if len(ws) == 0 {
		delete(n.waiters, p)
	} else {
		n.waiters[p] = ws
	}
}

// dialError turns go-libp2p's dial error into a *DialError: what each
// relay said, why each direct address failed.
func (n *Node) dialError(key securepeer.PublicKey, err error) error {
	de := &DialError{Peer: key}
	var sde *swarm.DialError
	if !errors.As(err, &sde) {
		de.Err = err
		if errors.Is(err, swarm.ErrNoAddresses) {
			de.Err = ErrNoPath
		}
		return de
	}
	byRelay := make(map[peer.ID]*RelayError)
	for _, te := range sde.DialErrors {
		relay, ok := circuitRelay(te.Address)
		if !ok {
			de.Addrs = append(de.Addrs, &AddrError{Addr: te.Address.String(), Err: directError(te.Cause), Cause: te.Cause})
			continue
		}
		re := circuitError(relay, te.Cause)
		if prev, ok := byRelay[relay]; !ok || rank(re.Err) < rank(prev.Err) {
			byRelay[relay] = re
		}
	}
	// The node's relays in their order, then any others (from addresses
	// given to AddAddrs).
	for _, r := range n.relays {
		if re, ok := byRelay[r.ID]; ok {
			de.Relays = append(de.Relays, re)
			delete(byRelay, r.ID)
		}
	}
	for _, re := range byRelay {
		de.Relays = append(de.Relays, re)
	}
	switch {
	case len(de.Relays) == 0:
		de.Err = ErrNoPath
	case len(de.Relays) > 0 && !slices.ContainsFunc(de.Relays, func(r *RelayError) bool { return !errors.Is(r.Err, ErrNoRelay) }):
		de.Err = ErrNoRelay
	case len(sde.DialErrors) == 0 && sde.Cause != nil:
		de.Err = sde.Cause
	}
	return de
}

// circuitRelay returns the relay of a circuit address.
func circuitRelay(a ma.Multiaddr) (peer.ID, bool) {
	if !isCircuit(a) {
		return "", false
	}
	before, _ := ma.SplitFunc(a, func(c ma.Component) bool { return c.Code() == ma.P_CIRCUIT })
	_, id := peer.SplitAddr(before)
	return id, id != ""
}

// directError returns ErrWrongKey if a host with another key answered at
// a direct address, ErrNotSecurepeer if one that does not speak
// securepeer did, else nil.
func directError(err error) error {
	var mismatch sec.ErrPeerIDMismatch
	switch {
	case errors.As(err, &mismatch):
		return ErrWrongKey
	case slices.Contains(unsupported(err), libp2psec.ID):
		return ErrNotSecurepeer
	}
	return nil
}

// circuitError says what happened to a circuit through relay.
func circuitError(relay peer.ID, cause error) *RelayError {
	re := &RelayError{Cause: cause}
	re.Relay, _ = KeyOf(relay)
	var mismatch sec.ErrPeerIDMismatch
	var de *swarm.DialError
	switch {
	case errors.As(cause, &de) && de.Peer == relay:
		re.Err = ErrNoRelay
	case errors.As(cause, &mismatch) && mismatch.Expected == relay:
		re.Err = ErrNoRelay // a host with another key at the relay's address
	case errors.As(cause, &mismatch):
		re.Err = ErrWrongKey
	case slices.Contains(unsupported(cause), proto.ProtoIDv2Hop):
		re.Err = ErrNoRelay // the host at the relay's address is no relay
	case slices.Contains(unsupported(cause), libp2psec.ID):
		re.Err = ErrNotSecurepeer
	default:
		re.Err = relayStatusError(cause)
	}
	return re
}

// unsupported returns the protocols offered in a multistream-select
// negotiation that failed for want of a common one.
func unsupported(err error) []protocol.ID {
	var ns mss.ErrNotSupported[protocol.ID]
	if errors.As(err, &ns) {
		return ns.Protos
	}
	return nil
}

// relayStatusError returns ErrNoReservation or ErrRelayRefused for the
// status a relay answered a circuit request with. go-libp2p's circuit
// client puts the status in its error's text only (its error type is
// unexported), as "error opening relay circuit: NAME (CODE)"; the name is
// taken from go-libp2p's own table, and TestDialErrors checks the match
// against the real relay. An error without a status came after the relay
// opened the circuit: ErrCircuitEnded.
func relayStatusError(err error) error {
	const prefix = "error opening relay circuit: "
	msg := err.Error()
	i := strings.Index(msg, prefix)
	if i < 0 {
		return ErrCircuitEnded
	}
	if strings.HasPrefix(msg[i+len(prefix):], pbv2.Status_NO_RESERVATION.String()+" ") {
		return ErrNoReservation
	}
	return ErrRelayRefused
}

// streamError says why a stream could not be opened to the peer with
// key, over c or a newer connection.
func (n *Node) streamError(key securepeer.PublicKey, name string, c network.Conn, err error) error {
	if tc := trackedOf(c); tc != nil {
		if why := tc.endErr(); why != nil {
			return &DialError{Peer: key, Err: why}
		}
	}
	var unsupported mss.ErrNotSupported[protocol.ID]
	if errors.As(err, &unsupported) {
		return &DialError{Peer: key, Err: fmt.Errorf("%w (%q)", ErrNotServed, name)}
	}
	return &DialError{Peer: key, Err: err}
}
