package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/pkgerr"
)

const demoUsage = `Usage: securepeer demo

Runs two peers in this process, each with a fresh identity, over loopback
TCP. They shake hands, each pinning the other's key, and each prints its own
fingerprint, the peer's, the cipher, whether the session is post-quantum and
its role. The client sends "beep boop"; the server echoes it upper-cased.
Nothing is written to disk.

Example:
    go run ./cmd/securepeer demo
`

// demoTimeout bounds the whole demo.
const demoTimeout = 30 * time.Second

// demoSide is what one side of the demo reports.
type demoSide struct {
	name string
	own  securepeer.PublicKey
	s    *stream
}

func (d demoSide) print(w io.Writer) {
	pq := "no"
	if d.s.postQuantum {
		pq = "yes (X25519 + ML-KEM-768)"
	}
	fmt.Fprintf(w, "%s\n", d.name)
	fmt.Fprintf(w, "  own key       %s\n", d.own.Fingerprint())
	fmt.Fprintf(w, "  peer key      %s\n", d.s.peer.Fingerprint())
	fmt.Fprintf(w, "  cipher        %s\n", d.s.cipher)
	fmt.Fprintf(w, "  post-quantum  %s\n", pq)
	fmt.Fprintf(w, "  role          %s\n", d.s.role())
}

// pinned accepts only want, as -expect does.
func pinned(want securepeer.PublicKey) verifyFunc {
	return func(_ context.Context, k peerKey) error {
		pk, ok := k.(securepeer.PublicKey)
		if !ok || !pk.Equal(want) {
			return rejectedErrorf("unexpected peer key %s", k.Fingerprint())
		}
		return nil
	}
}

func runDemo(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("demo: takes no arguments")
	}
	ctx, cancel := context.WithTimeout(ctx, demoTimeout)
	defer cancel()

	serverID, err := securepeer.GenerateIdentity()
	if err != nil {
		return err
	}
	clientID, err := securepeer.GenerateIdentity()
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return listenError("127.0.0.1:0", err)
	}
	defer l.Close()
	fmt.Fprintf(e.stdout, "two peers with fresh identities, over %s\n\n", l.Addr())

	type result struct {
		side demoSide
		err  error
	}
	served := make(chan result, 1)
	go func() {
		side, err := demoServer(ctx, l, serverID, clientID.PublicKey())
		served <- result{side, err}
	}()

	discard := slog.New(slog.DiscardHandler)
	h := &nativeHandshaker{id: clientID, timeout: demoTimeout}
	s, err := dial(ctx, h, l.Addr().String(), pinned(serverID.PublicKey()), discard)
	if err != nil {
		l.Close()
		<-served
		return err
	}
	const message = "beep boop"
	_, err = io.WriteString(s.conn, message+"\n")
	if err == nil {
		err = s.conn.CloseWrite()
	}
	var reply []byte
	if err == nil {
		reply, err = io.ReadAll(s.conn)
	}
	s.close()
	r := <-served
	if err = errors.Join(r.err, err); err != nil {
		return pkgerr.Plainf("demo failed: %w", err)
	}
	r.side.print(e.stdout)
	demoSide{"client", clientID.PublicKey(), s}.print(e.stdout)
	fmt.Fprintf(e.stdout, "\nclient sent %q, server echoed %q\n", message, strings.TrimSpace(string(reply)))
	return nil
}

// demoServer accepts one connection and echoes it upper-cased, as the
// original secure-peer example did.
func demoServer(ctx context.Context, l net.Listener, id *securepeer.Identity, client securepeer.PublicKey) (demoSide, error) {
	raw, err := l.Accept()
	if err != nil {
		return demoSide{}, err
	}
	h := &nativeHandshaker{id: id, timeout: demoTimeout}
	s, err := h.handshake(ctx, raw, false, pinned(client))
	if err != nil {
		return demoSide{}, pkgerr.Plainf("server: %w", err)
	}
	defer s.close()
	msg, err := io.ReadAll(s.conn)
	if err != nil {
		return demoSide{}, pkgerr.Plainf("server: %w", err)
	}
	if _, err := s.conn.Write([]byte(strings.ToUpper(string(msg)))); err != nil {
		return demoSide{}, pkgerr.Plainf("server: %w", err)
	}
	return demoSide{"server", id.PublicKey(), s}, s.conn.CloseWrite()
}
