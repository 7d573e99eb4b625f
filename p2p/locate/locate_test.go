package locate

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/p2p"
)

const testTimeout = 30 * time.Second

func newIdentity(t testing.TB) *securepeer.Identity {
	t.Helper()
	id, err := securepeer.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// privateDHT starts n DHT members on loopback, each joining through the
// first, and returns them once each has all the others in its routing
// table.
func privateDHT(t *testing.T, n int) []*Locator {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var members []*Locator
	for i := range n {
		cfg := Config{Server: true, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}}
		if i > 0 {
			cfg.Bootstrap = members[0].Addrs()
		}
		l, err := Start(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		members = append(members, l)
	}
	for _, m := range members {
		for m.Peers() < n-1 {
			select {
			case <-ctx.Done():
				t.Fatalf("a DHT member found %d others, want %d", m.Peers(), n-1)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return members
}

// TestPublishLookup: a node publishes its addresses in a private DHT
// through one member; a client that joins through another looks them up
// by the node's key, and a peer dials the node at them.
func TestPublishLookup(t *testing.T) {
	members := privateDHT(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	id := newIdentity(t)
	node, err := p2p.Start(ctx, p2p.Config{Identity: id, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	ln, err := node.Listen("echo/1")
	if err != nil {
		t.Fatal(err)
	}
	echo(ln)
	if err := members[1].Publish(ctx, id, node.Addrs()); err != nil {
		t.Fatal(err)
	}

	client, err := Start(ctx, Config{Bootstrap: members[3].Addrs()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	waitPeers(t, ctx, client)
	addrs, err := client.Lookup(ctx, id.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(addrs, node.Addrs()) {
		t.Errorf("looked up %v, want %v", addrs, node.Addrs())
	}

	d, err := p2p.Start(ctx, p2p.Config{Identity: newIdentity(t), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, DirectWait: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.AddAddrs(id.PublicKey(), addrs); err != nil {
		t.Fatal(err)
	}
	s, err := d.Dial(ctx, id.PublicKey(), "echo/1")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Write([]byte("found")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(s, got); err != nil || string(got) != "found" {
		t.Fatalf("echo %q, %v", got, err)
	}

	// A newer record replaces it.
	if err := members[2].Publish(ctx, id, []string{"/ip4/127.0.0.1/tcp/9"}); err != nil {
		t.Fatal(err)
	}
	addrs, err = client.Lookup(ctx, id.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(addrs, []string{"/ip4/127.0.0.1/tcp/9"}) {
		t.Errorf("after a newer record, looked up %v", addrs)
	}
}

// TestForgedRecord: a record signed by one key, put under another key's
// name, is refused by the DHT member asked to store it (go-libp2p-kad-dht
// validates a record with the IPNS validator before it stores or sends
// it, as public DHT peers do on receipt), and by ParseRecord; a lookup of
// a key that published nothing finds nothing.
func TestForgedRecord(t *testing.T) {
	members := privateDHT(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	victim, forger := newIdentity(t), newIdentity(t)
	forged, _, err := NewRecord(forger, []string{"/ip4/127.0.0.1/tcp/9"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	victimName, err := nameOf(victim.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if err := members[0].dht.PutValue(ctx, string(victimName.RoutingKey()), forged); err == nil {
		t.Error("the DHT stored another key's record under the victim's name")
	}
	if _, err := ParseRecord(victim.PublicKey(), forged); !errors.Is(err, ErrBadRecord) {
		t.Errorf("ParseRecord of a forged record: %v, want ErrBadRecord", err)
	}
	short, cancelShort := context.WithTimeout(ctx, 5*time.Second)
	defer cancelShort()
	if _, err := members[2].Lookup(short, victim.PublicKey()); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup of a key that published nothing: %v, want ErrNotFound", err)
	}
}

// TestRecordChecks: what NewRecord refuses, and what ParseRecord finds
// wrong.
func TestRecordChecks(t *testing.T) {
	id := newIdentity(t)
	for _, tc := range []struct {
		name  string
		addrs []string
	}{
		{"no address", nil},
		{"not a multiaddr", []string{"127.0.0.1:4001"}},
		{"too many", slices.Repeat([]string{"/ip4/127.0.0.1/tcp/1"}, maxAddrs+1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := NewRecord(id, tc.addrs, time.Now()); err == nil {
				t.Error("NewRecord accepted it")
			}
		})
	}
	old, _, err := NewRecord(id, []string{"/ip4/127.0.0.1/tcp/1"}, time.Now().Add(-2*RecordLifetime))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseRecord(id.PublicKey(), old); !errors.Is(err, ErrBadRecord) {
		t.Errorf("ParseRecord of an expired record: %v, want ErrBadRecord", err)
	}
	if _, err := ParseRecord(id.PublicKey(), []byte("not a record")); !errors.Is(err, ErrBadRecord) {
		t.Errorf("ParseRecord of garbage: %v, want ErrBadRecord", err)
	}
}

// echo echoes each stream that ln accepts, until ln is closed.
func echo(ln *p2p.Listener) {
	go func() {
		for {
			s, err := ln.AcceptStream()
			if err != nil {
				return
			}
			go func() { defer s.Close(); io.Copy(s, s) }()
		}
	}()
}

// waitPeers waits until l has a DHT peer in its routing table.
func waitPeers(t *testing.T, ctx context.Context, l *Locator) {
	t.Helper()
	for l.Peers() == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("the client found no DHT peer")
		case <-time.After(10 * time.Millisecond):
		}
	}
}
