package p2p_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"strings"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/p2p"
)

// A listener and a dialer that know each other only by key, meeting
// through a relay. (Hole punching is off, so that the path printed does
// not depend on how fast a punch on loopback is.)
func Example() {
	ctx := context.Background()
	newIdentity := func() *securepeer.Identity {
		id, err := securepeer.GenerateIdentity()
		if err != nil {
			log.Fatal(err)
		}
		return id
	}
	loopback := []string{"/ip4/127.0.0.1/tcp/0"}

	relay, err := p2p.RunRelay(ctx, p2p.RelayConfig{Identity: newIdentity(), ListenAddrs: loopback})
	if err != nil {
		log.Fatal(err)
	}
	defer relay.Close()

	// The listener holds a reservation on the relay and upper-cases what
	// it receives.
	listener, err := p2p.Start(ctx, p2p.Config{Identity: newIdentity(), ListenAddrs: loopback, Relays: relay.Addrs(), NoHolePunching: true})
	if err != nil {
		log.Fatal(err)
	}
	defer listener.Close()
	ln, err := listener.Listen("upper/1")
	if err != nil {
		log.Fatal(err)
	}
	if err := listener.Ready(ctx); err != nil {
		log.Fatal(err)
	}
	go func() {
		s, err := ln.AcceptStream()
		if err != nil {
			return
		}
		defer s.Close()
		data, _ := io.ReadAll(s)
		s.Write([]byte(strings.ToUpper(string(data))))
	}()

	// The dialer knows the listener's key and the relay, nothing else.
	dialer, err := p2p.Start(ctx, p2p.Config{Identity: newIdentity(), ListenAddrs: loopback, Relays: relay.Addrs(), NoHolePunching: true})
	if err != nil {
		log.Fatal(err)
	}
	defer dialer.Close()
	s, err := dialer.Dial(ctx, listener.Key(), "upper/1")
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	s.Write([]byte("beep boop"))
	s.CloseWrite()
	reply, _ := io.ReadAll(s)

	fmt.Println("relayed through the relay:", s.Path().Relayed && s.Path().Relay == relay.Key())
	fmt.Println("the peer's key checked:", s.RemoteKey() == listener.Key())
	fmt.Println("reply:", string(reply))
	// Output:
	// relayed through the relay: true
	// the peer's key checked: true
	// reply: BEEP BOOP
}
