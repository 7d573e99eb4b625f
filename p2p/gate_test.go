package p2p

import (
	"context"
	"testing"
)

// TestNodeConnsLimit: a node that holds Limits.Conns connections refuses
// the next peer that connects to it, once its handshake completes, and
// lets one in again when a connection ends.
func TestNodeConnsLimit(t *testing.T) {
	events := newEventLog()
	l := startNode(t, Config{Limits: Limits{Conns: 2}, Notify: events.notify})
	echo(t, listen(t, l, echoProto))
	var peers []*Node
	for range 3 {
		d := startNode(t, Config{DirectWait: -1, NoHolePunching: true})
		if err := d.AddAddrs(l.Key(), l.Addrs()); err != nil {
			t.Fatal(err)
		}
		peers = append(peers, d)
	}
	for _, d := range peers[:2] {
		roundTrip(t, dial(t, d, l.Key(), echoProto), "in")
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if s, err := peers[2].Dial(ctx, l.Key(), echoProto); err == nil {
		s.Close()
		t.Fatal("a third peer connected to a node of two connections")
	}
	peers[0].Close()
	events.wait(t, "the first peer's disconnection", kind(EventDisconnected, peers[0].Key()))
	roundTrip(t, dial(t, peers[2], l.Key(), echoProto), "in after one left")
}
