package libp2psec_test

import (
	"context"
	"fmt"
	"log"
	"sync"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/security/noise"

	"github.com/securepeer/securepeer/libp2psec"
)

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
