package p2p

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"

	"github.com/securepeer/securepeer"
)

// bulkProto is the protocol of the benchmarks' and the NAT lab's bulk
// transfers.
const bulkProto = "bulk/1"

// benchChunk is what each iteration of a throughput benchmark sends.
const benchChunk = 64 << 10

// sendAll writes b.N chunks on w, closes it for writing, and waits for
// the receiver's answer on r, which comes once it has read them all.
func sendAll(b *testing.B, w io.Writer, closeWrite func() error, r io.Reader) {
	b.Helper()
	b.SetBytes(benchChunk)
	buf := make([]byte, benchChunk)
	b.ResetTimer()
	for range b.N {
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := closeWrite(); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(r, buf[:1]); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
}

// drain reads c to its end and answers with one byte.
func drain(c io.ReadWriteCloser) {
	defer c.Close()
	if _, err := io.Copy(io.Discard, c); err == nil {
		c.Write([]byte{1})
	}
}

// BenchmarkThroughput measures one-way bulk data over loopback: a plain
// securepeer connection, the engine's direct and relayed streams, and,
// for the QUIC decision (PROTOCOL.md, "TCP only"), a securepeer session
// carried inside a stream of go-libp2p's QUIC transport, and that QUIC
// stream alone.
func BenchmarkThroughput(b *testing.B) {
	b.Run("securepeer", benchPlain)
	b.Run("p2p-direct", func(b *testing.B) { benchNode(b, false) })
	b.Run("p2p-relayed", func(b *testing.B) { benchNode(b, true) })
	b.Run("quic-stream", func(b *testing.B) { benchQUIC(b, false) })
	b.Run("securepeer-in-quic", func(b *testing.B) { benchQUIC(b, true) })
}

func benchPlain(b *testing.B) {
	ln, err := securepeer.Listen("tcp", "127.0.0.1:0", &securepeer.Config{Identity: newIdentity(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			drain(c)
		}
	}()
	c, err := securepeer.Dial(context.Background(), "tcp", ln.Addr().String(), &securepeer.Config{Identity: newIdentity(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	sendAll(b, c, c.CloseWrite, c)
}

func benchNode(b *testing.B, relayed bool) {
	var relays []string
	if relayed {
		r := startRelay(b, RelayConfig{Limits: RelayLimits{CircuitData: 1 << 62, CircuitDuration: 1 << 62}})
		relays = r.Addrs()
	}
	l := startNode(b, Config{Relays: relays, NoHolePunching: relayed})
	ln, err := l.Listen(bulkProto)
	if err != nil {
		b.Fatal(err)
	}
	if err := l.Ready(context.Background()); err != nil {
		b.Fatal(err)
	}
	go func() {
		s, err := ln.AcceptStream()
		if err == nil {
			drain(s)
		}
	}()
	d := startNode(b, Config{Relays: relays, NoHolePunching: relayed})
	if !relayed {
		if err := d.AddAddrs(l.Key(), l.Addrs()); err != nil {
			b.Fatal(err)
		}
	}
	s, err := d.Dial(context.Background(), l.Key(), bulkProto)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if s.Path().Relayed != relayed {
		b.Fatalf("path %v", s.Path())
	}
	sendAll(b, s, s.CloseWrite, s)
}

// benchQUIC sends over a stream of go-libp2p's QUIC transport (whose
// security is its own TLS 1.3), with a securepeer session inside the
// stream if withSecurepeer.
func benchQUIC(b *testing.B, withSecurepeer bool) {
	newHost := func() host.Host {
		h, err := libp2p.New(
			libp2p.ListenAddrStrings("/ip4/127.0.0.1/udp/0/quic-v1"),
			libp2p.NoTransports,
			libp2p.Transport(libp2pquic.NewTransport),
			libp2p.DisableRelay(),
		)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { h.Close() })
		return h
	}
	lh, dh := newHost(), newHost()
	lid, did := newIdentity(b), newIdentity(b)
	lh.SetStreamHandler(bulkProto, func(s network.Stream) {
		var c io.ReadWriteCloser = s
		if withSecurepeer {
			c = securepeer.Server(streamConn{s}, &securepeer.Config{Identity: lid})
		}
		drain(c)
	})
	ctx := context.Background()
	if err := dh.Connect(ctx, peer.AddrInfo{ID: lh.ID(), Addrs: lh.Addrs()}); err != nil {
		b.Fatal(err)
	}
	s, err := dh.NewStream(ctx, lh.ID(), bulkProto)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if !withSecurepeer {
		sendAll(b, s, s.CloseWrite, s)
		return
	}
	c := securepeer.Client(streamConn{s}, &securepeer.Config{Identity: did})
	defer c.Close()
	sendAll(b, c, c.CloseWrite, c)
}

var _ net.Conn = streamConn{}
