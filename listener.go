package securepeer

import (
	"context"
	"net"

	"github.com/securepeer/securepeer/internal/admit"
	"github.com/securepeer/securepeer/internal/wire"
)

// NewListener returns a listener that accepts connections from inner and
// runs the responder side of the handshake on each, concurrently. Accept
// returns only connections whose handshake has completed, as *[Conn]; a
// peer that fails the handshake is dropped. Closing the listener closes
// inner and every connection not yet returned by Accept.
//
// The listener is built for the open internet: whatever peers that never
// authenticate can make it hold is bounded, and shared fairly between
// source addresses (an IPv4 address, or an IPv6 /64). PROTOCOL.md,
// "Servers on the open internet", has the table of what a peer holds in
// each state, for how long, and in which order it is dropped.
//
//   - It never stops accepting. At most 4096 connections are pending
//     (waiting for their first handshake message, in the handshake, or
//     done and waiting for Accept); when a new one arrives with all of them
//     taken, one is dropped, ranked by what its peer has proved: first the
//     connections whose peer has not authenticated yet, whatever they wait
//     for (a message 1 can be replayed and a ticket forged, so a stall
//     after either proves nothing), then those whose peer did the work
//     the listener demanded (below) and nothing more yet, then those whose
//     peer has authenticated and whose Verify runs, then those waiting for
//     Accept. Within a rank, only the
//     older half is dropped from: the source holding the most connections
//     in it gives up the one that has waited longest since its accept (or
//     since it was asked for a full handshake in place of a resumption).
//     Every connection thus keeps its place until half of its rank has
//     arrived after it, however crowded its address; a legitimate peer
//     answers each message within a round trip, so the stalled connections
//     that came before it go before it does, also from its own address.
//   - The peer's first message (its hello and Noise message 1) must arrive
//     within 10 seconds of the accept, or [Config.HandshakeTimeout] if
//     that is shorter; after a refused ticket, the full message 1 has the
//     same deadline from the refusal. [Config.HandshakeTimeout] bounds the
//     whole handshake, from the accept, Verify included. A message 1
//     longer than any valid one (1267 bytes, 9300 for a resumption) is
//     refused as soon as its length arrives.
//   - At most GOMAXPROCS handshakes compute at once, each taking its turn
//     only when it computes; the others queue by source address and are
//     served in turn, so a source that sends first messages in a loop
//     cannot starve the others.
//   - While more than 64 handshakes per processor wait for their turn,
//     the listener demands work of each new initiator that can do it
//     (every securepeer initiator): 2^16 hashes (about 10 ms), more when
//     many who did wait too, up to 2^20. Those that proved work go first,
//     so forged first messages, which cost their sender microseconds and
//     the listener a message 2 each, cannot crowd out a real peer from
//     however many addresses they come (PROTOCOL.md, "Work under
//     load").
//   - A first message that repeats the ephemeral key of one received
//     recently (of about the last million) is refused before anything is
//     computed for it: an honest initiator draws a fresh key for every
//     handshake, so a recorded message replayed is answered once. An
//     honest one is refused by chance with probability 3.7e-9; its
//     initiator's next attempt has a fresh key. The listener holds 4 MiB
//     for this, whatever peers send.
//   - A connection waiting for its first message costs a socket, a buffer
//     that grows only with the bytes received, and a goroutine with a
//     small stack: at most 4 KiB (BENCHMARKS.md, "Under attack").
//   - Accept errors, such as running out of file descriptors, never end the
//     listener: it retries after 5 ms, doubling up to 1 s, and when out of
//     descriptors drops a connection whose peer has proved nothing. Only a
//     closed inner listener ends Accept.
func NewListener(inner net.Listener, config *Config) net.Listener {
	timeout := defaultHandshakeTimeout
	if config != nil {
		timeout = config.handshakeTimeout()
	}
	return &listener{admit.NewListener(inner, admit.Config[*Conn]{
		MaxPending:       maxPending,
		FirstFlight:      wire.FirstFlightLen,
		HandshakeTimeout: timeout,
		CPUOnDemand:      true,
		ReplayKey:        wire.FirstFlightEphemeral,
		DemandWork:       true,
		Handshake: func(ctx context.Context, c net.Conn) (*Conn, error) {
			sc := Server(c, config)
			if err := sc.HandshakeContext(ctx); err != nil {
				return nil, err
			}
			return sc, nil
		},
	})}
}

// maxPending is admit's default; a variable so that tests can shrink it.
var maxPending = admit.DefaultMaxPending

type listener struct {
	l *admit.Listener[*Conn]
}

// Accept waits for and returns the next connection whose handshake has
// completed. It returns a *Conn.
func (l *listener) Accept() (net.Conn, error) {
	c, err := l.l.Accept()
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Close stops the listener, closes inner, and ends the handshakes in
// progress. It waits for their goroutines to finish.
func (l *listener) Close() error { return l.l.Close() }

func (l *listener) Addr() net.Addr { return l.l.Addr() }

// An admittedConn is the connection a listener hands to [Server]: internal/admit's
// Conn, here and in the command's own accept loop. The handshake finds it
// by this interface, so that the dependency points one way, from the
// listener to the connection ("Servers on the open internet"):
//
//   - Proved says that the peer has authenticated, so that the connection
//     no longer ranks with those that cost their sender nothing;
//   - AcquireCPU waits for the source's turn of handshake CPU before the
//     responder computes, a turn that goes back when the handshake next
//     waits for the peer: reading past the first flight gives it back, and
//     so does ReleaseCPU, before the handshake waits on the descriptor;
//   - AwaitFirstFlight waits, under the first flight's deadline and ranked
//     as a new connection, for the full message 1 that answers RetryFull,
//     and replays it to the next reads;
//   - WorkDemand, ReadWork and Worked demand work of an initiator whose
//     handshake would queue behind many, read its answer as the rest of
//     its first flight, and queue the handshake ahead of those whose peers
//     proved less ("Work under load");
//   - Buffered and NetConn let the record layer read the socket directly
//     once nothing read ahead is left to replay.
type admittedConn interface {
	net.Conn
	Proved()
	AcquireCPU(ctx context.Context) error
	ReleaseCPU()
	AwaitFirstFlight(ctx context.Context, need func([]byte) int) error
	WorkDemand() int
	ReadWork(ctx context.Context, need func([]byte) int) error
	Worked(bits int)
	Buffered() int
	NetConn() net.Conn
}

var _ admittedConn = (*admit.Conn)(nil)
