package securepeer_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"strings"

	"github.com/securepeer/securepeer"
)

// The original secure-peer example: a server that upper-cases what it
// receives, and a client that sends "beep boop" and accepts only the
// server's key.
func Example() {
	serverID, _ := securepeer.GenerateIdentity()
	clientID, _ := securepeer.GenerateIdentity()

	ln, err := securepeer.Listen("tcp", "127.0.0.1:0", &securepeer.Config{Identity: serverID})
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				data, _ := io.ReadAll(conn)
				conn.Write([]byte(strings.ToUpper(string(data))))
			}()
		}
	}()

	serverKey := serverID.PublicKey() // known in advance, like a known_hosts entry
	conn, err := securepeer.Dial(context.Background(), "tcp", ln.Addr().String(), &securepeer.Config{
		Identity: clientID,
		Verify: func(ctx context.Context, key securepeer.PublicKey) error {
			if !key.Equal(serverKey) {
				return errors.New("unknown server key " + key.Fingerprint())
			}
			return nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("beep boop\n"))
	conn.CloseWrite()
	reply, _ := bufio.NewReader(conn).ReadString('\n')
	fmt.Print(reply)
	fmt.Println("post-quantum:", conn.ConnectionState().PostQuantum)
	// Output:
	// BEEP BOOP
	// post-quantum: true
}

// NewConn wraps any connection, and either side may initiate: here both
// ends of one pipe call NewConn at once.
func ExampleNewConn() {
	a, b := net.Pipe()
	alice, _ := securepeer.GenerateIdentity()
	bob, _ := securepeer.GenerateIdentity()
	x := securepeer.NewConn(a, &securepeer.Config{Identity: alice})
	y := securepeer.NewConn(b, &securepeer.Config{Identity: bob})
	done := make(chan error)
	go func() { done <- y.Handshake() }()
	if err := x.Handshake(); err != nil {
		log.Fatal(err)
	}
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	fmt.Println(x.RemoteKey() == bob.PublicKey(), y.RemoteKey() == alice.PublicKey())
	fmt.Println(x.ConnectionState().Initiator != y.ConnectionState().Initiator)
	// Output:
	// true true
	// true
}
