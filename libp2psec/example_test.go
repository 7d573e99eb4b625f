package libp2psec_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"strings"
	"sync"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/p2p/security/noise"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/securepeer/securepeer/libp2psec"
)

// Two hosts that reach each other only through a circuit relay v2 host,
// with securepeer as the only security transport on every hop.
func Example() {
	newHost := func(opts ...libp2p.Option) host.Host {
		h, err := libp2p.New(append([]libp2p.Option{
			libp2p.Security(libp2psec.ID, libp2psec.New),
			libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		}, opts...)...)
		if err != nil {
			log.Fatal(err)
		}
		return h
	}
	ctx := context.Background()

	relayHost := newHost(libp2p.DisableRelay())
	defer relayHost.Close()
	if _, err := relay.New(relayHost); err != nil {
		log.Fatal(err)
	}
	relayInfo := peer.AddrInfo{ID: relayHost.ID(), Addrs: relayHost.Addrs()}

	// The server reserves a slot on the relay and serves an upper-casing echo.
	server := newHost(libp2p.EnableRelay())
	defer server.Close()
	if err := server.Connect(ctx, relayInfo); err != nil {
		log.Fatal(err)
	}
	if _, err := client.Reserve(ctx, server, relayInfo); err != nil {
		log.Fatal(err)
	}
	server.SetStreamHandler("/upper/1.0.0", func(s network.Stream) {
		defer s.Close()
		data, _ := io.ReadAll(s)
		s.Write([]byte(strings.ToUpper(string(data))))
	})

	// The client knows the server only by its address through the relay.
	cl := newHost(libp2p.EnableRelay())
	defer cl.Close()
	circuit := ma.StringCast("/p2p/" + relayHost.ID().String() + "/p2p-circuit")
	if err := cl.Connect(ctx, peer.AddrInfo{ID: server.ID(), Addrs: []ma.Multiaddr{relayHost.Addrs()[0].Encapsulate(circuit)}}); err != nil {
		log.Fatal(err)
	}
	s, err := cl.NewStream(network.WithAllowLimitedConn(ctx, "example"), server.ID(), "/upper/1.0.0")
	if err != nil {
		log.Fatal(err)
	}
	s.Write([]byte("beep boop"))
	s.CloseWrite()
	reply, _ := io.ReadAll(s)

	fmt.Println("to the relay:", cl.Network().ConnsToPeer(relayHost.ID())[0].ConnState().Security)
	_, err = s.Conn().RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT)
	fmt.Println("to the server through the relay:", err == nil)
	fmt.Println("reply:", string(reply))
	// Output:
	// to the relay: /securepeer/1.0.0
	// to the server through the relay: true
	// reply: BEEP BOOP
}

// A host that speaks securepeer, and Noise with peers that lack it. Since
// libp2p negotiates the security protocol in clear, it refuses anything
// but securepeer with the peers it knows to speak it, here those it has
// met over securepeer before, so that an attacker on the path cannot
// downgrade them to Noise. SecurepeerState shows that a redial resumed.
func Example_withNoise() {
	var mu sync.Mutex
	speaksSecurepeer := map[peer.ID]bool{}
	known := func(p peer.ID) bool {
		mu.Lock()
		defer mu.Unlock()
		return speaksSecurepeer[p]
	}

	newHost := func() host.Host {
		h, err := libp2p.New(
			libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
			libp2p.Security(libp2psec.ID, libp2psec.New), // "/securepeer/1.0.0", preferred
			libp2p.Security(noise.ID, noise.New),         // for peers that lack securepeer
			libp2p.ConnectionGater(libp2psec.RequireSecurepeer(known, nil)),
		)
		if err != nil {
			log.Fatal(err)
		}
		return h
	}
	server, client := newHost(), newHost()
	defer server.Close()
	defer client.Close()

	for range 2 {
		err := client.Connect(context.Background(), peer.AddrInfo{ID: server.ID(), Addrs: server.Addrs()})
		if err != nil {
			log.Fatal(err)
		}
		conn := client.Network().ConnsToPeer(server.ID())[0]
		if st, ok := libp2psec.SecurepeerState(conn); ok {
			fmt.Printf("%s: post-quantum %v, resumed %v\n", conn.ConnState().Security, st.PostQuantum, st.DidResume)
			mu.Lock()
			speaksSecurepeer[conn.RemotePeer()] = true // from now on, securepeer or nothing
			mu.Unlock()
		}
		client.Network().ClosePeer(server.ID())
	}
	// Output:
	// /securepeer/1.0.0: post-quantum true, resumed false
	// /securepeer/1.0.0: post-quantum true, resumed true
}
