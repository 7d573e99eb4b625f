package libp2psec

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/security/noise"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// multistreamProposal is what a dialer that lists securepeer first sends
// before anything else: multistream-select's header and its first
// proposal, each a varint length, the name and a newline.
var multistreamProposal = []byte("\x13/multistream/1.0.0\n\x12" + ID + "\n")

// A downgrader is an attacker on the path between a dialer and a
// listener: a TCP proxy that rewrites the dialer's proposal of securepeer
// into a protocol the listener does not know, so that the listener answers
// "na" and the hosts settle on the next security protocol they share.
type downgrader struct {
	addr      ma.Multiaddr
	rewritten atomic.Int32

	mu    sync.Mutex
	conns []net.Conn // closed when the test ends
}

// track records c, to be closed when the test ends.
func (d *downgrader) track(c net.Conn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.conns = append(d.conns, c)
}

func startDowngrader(t *testing.T, target host.Host, rewrite bool) *downgrader {
	t.Helper()
	to, err := manet.ToNetAddr(target.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &downgrader{}
	if d.addr, err = manet.FromNetAddr(ln.Addr()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		d.mu.Lock()
		for _, c := range d.conns {
			c.Close()
		}
		d.mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d.track(c)
			wg.Go(func() { d.relay(t, c, to.String(), rewrite) })
		}
	})
	return d
}

func (d *downgrader) relay(t *testing.T, dialer net.Conn, to string, rewrite bool) {
	defer dialer.Close()
	listener, err := net.Dial("tcp", to)
	if err != nil {
		t.Error(err)
		return
	}
	d.track(listener)
	defer listener.Close()
	if rewrite {
		first := make([]byte, len(multistreamProposal))
		if _, err := io.ReadFull(dialer, first); err != nil {
			return
		}
		if !bytes.Equal(first, multistreamProposal) {
			t.Errorf("the dialer began with %q, want %q", first, multistreamProposal)
		} else {
			first = bytes.Replace(first, []byte(ID), []byte("/securepeer/6.6.6"), 1)
			d.rewritten.Add(1)
		}
		if _, err := listener.Write(first); err != nil {
			return
		}
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(listener, dialer); done <- struct{}{} }()
	go func() { io.Copy(dialer, listener); done <- struct{}{} }()
	<-done
	dialer.Close()
	listener.Close()
	<-done
}

// keyedHost returns a host whose key is key, listing the security
// transports security, with gate as its connection gater if not nil.
func keyedHost(t *testing.T, key crypto.PrivKey, security libp2p.Option, gate func(peer.ID) bool) host.Host {
	opts := []libp2p.Option{libp2p.Identity(key), security}
	if gate != nil {
		opts = append(opts, libp2p.ConnectionGater(RequireSecurepeer(gate, nil)))
	}
	return newHost(t, opts...)
}

// TestDowngrade puts an attacker on the path who rewrites the dialer's
// multistream-select proposal of /securepeer/1.0.0. Hosts that list Noise
// as well then connect with Noise, without the post-quantum hybrid; a
// host that lists securepeer alone, or requires it of the peer
// (RequireSecurepeer), gets no connection instead.
func TestDowngrade(t *testing.T) {
	tests := []struct {
		name               string
		dialer, listener   libp2p.Option
		rewrite            bool
		dialerRequires     bool // securepeer of the listener
		listenerRequires   bool // securepeer of the dialer
		listenerRequiresID bool // securepeer of another peer only
		want               protocol.ID
	}{
		{"with Noise listed, the attack works", securepeerThenNoise, securepeerThenNoise, true, false, false, false, noise.ID},
		{"the dialer lists securepeer alone", securepeerOnly, securepeerThenNoise, true, false, false, false, ""},
		{"the listener lists securepeer alone", securepeerThenNoise, securepeerOnly, true, false, false, false, ""},
		{"the dialer requires securepeer of the listener", securepeerThenNoise, securepeerThenNoise, true, true, false, false, ""},
		{"the listener requires securepeer of the dialer", securepeerThenNoise, securepeerThenNoise, true, false, true, false, ""},
		{"without the attack, both gates pass securepeer", securepeerThenNoise, securepeerThenNoise, false, true, true, false, ID},
		{"a peer not required may use Noise", noiseOnly, securepeerThenNoise, false, false, false, true, noise.ID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dk, lk := newKey(t), newKey(t)
			did, _ := peer.IDFromPrivateKey(dk)
			lid, _ := peer.IDFromPrivateKey(lk)
			var dgate, lgate func(peer.ID) bool
			if tt.dialerRequires {
				dgate = func(p peer.ID) bool { return p == lid }
			}
			switch {
			case tt.listenerRequires:
				lgate = func(p peer.ID) bool { return p == did }
			case tt.listenerRequiresID:
				other, _ := peer.IDFromPrivateKey(newKey(t))
				lgate = func(p peer.ID) bool { return p == other }
			}
			l := keyedHost(t, lk, tt.listener, lgate)
			d := keyedHost(t, dk, tt.dialer, dgate)
			mitm := startDowngrader(t, l, tt.rewrite)
			dGone, lGone := watchDisconnects(d), watchDisconnects(l)

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := d.Connect(ctx, peer.AddrInfo{ID: lid, Addrs: []ma.Multiaddr{mitm.addr}})
			if tt.rewrite && mitm.rewritten.Load() == 0 {
				t.Fatal("the proposal was not rewritten")
			}
			if tt.want != "" {
				if err != nil {
					t.Fatal(err)
				}
				conns := d.Network().ConnsToPeer(lid)
				if len(conns) != 1 || conns[0].ConnState().Security != tt.want {
					t.Fatalf("connections %v, want one secured with %s", conns, tt.want)
				}
				if _, ok := SecurepeerState(conns[0]); ok != (tt.want == ID) {
					t.Errorf("SecurepeerState found %v, want %v", ok, tt.want == ID)
				}
				return
			}
			// No connection: the side that requires securepeer never
			// keeps one, and the other side's, if its upgrade
			// completed, is closed.
			if tt.dialerRequires && err == nil {
				t.Error("the dialer connected")
			}
			if n := len(l.Network().ConnsToPeer(did)); tt.listenerRequires && n != 0 {
				t.Errorf("the listener has %d connections to the dialer", n)
			}
			waitNoConns(ctx, t, d, lid, dGone)
			waitNoConns(ctx, t, l, did, lGone)
		})
	}
}

// watchDisconnects returns a channel that receives a value, without
// blocking the host, when one of h's connections closes.
func watchDisconnects(h host.Host) <-chan struct{} {
	gone := make(chan struct{}, 1)
	h.Network().Notify(&network.NotifyBundle{DisconnectedF: func(network.Network, network.Conn) {
		select {
		case gone <- struct{}{}:
		default:
		}
	}})
	return gone
}

// waitNoConns waits until h has no connection to p, woken by gone (from
// watchDisconnects), failing t if ctx ends first.
func waitNoConns(ctx context.Context, t *testing.T, h host.Host, p peer.ID, gone <-chan struct{}) {
	t.Helper()
	for len(h.Network().ConnsToPeer(p)) > 0 {
		select {
		case <-gone:
		case <-ctx.Done():
			t.Fatalf("%s kept a connection to %s, secured with %q", h.ID(), p, h.Network().ConnsToPeer(p)[0].ConnState().Security)
		}
	}
}
