package libp2psec

import (
	"context"
	"io"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/sec"
	"github.com/libp2p/go-libp2p/core/transport"
	tptu "github.com/libp2p/go-libp2p/p2p/net/upgrader"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	ma "github.com/multiformats/go-multiaddr"
)

// The benchmarks compare securepeer with go-libp2p's Noise and TLS
// transports, each alone in an upgrader over go-libp2p's TCP transport
// with yamux, on loopback: what a libp2p host does for every connection,
// without the host's own protocols (identify) on top. BENCHMARKS.md has
// the figures and the command.

var securities = []struct {
	name string
	new  func(protocol.ID, crypto.PrivKey, []tptu.StreamMuxer) (sec.SecureTransport, error)
	id   protocol.ID
}{
	{"securepeer", func(id protocol.ID, k crypto.PrivKey, m []tptu.StreamMuxer) (sec.SecureTransport, error) {
		return New(id, k, m)
	}, ID},
	{"noise", func(id protocol.ID, k crypto.PrivKey, m []tptu.StreamMuxer) (sec.SecureTransport, error) {
		return noise.New(id, k, m)
	}, noise.ID},
	{"tls", func(id protocol.ID, k crypto.PrivKey, m []tptu.StreamMuxer) (sec.SecureTransport, error) {
		return libp2ptls.New(id, k, m)
	}, libp2ptls.ID},
}

type benchPair struct {
	dialer   transport.Transport
	listener transport.Listener
	peer     peer.ID
	accepted chan transport.CapableConn
}

// newBenchPair returns a TCP transport to dial with and a listening one,
// both secured by the security at index i. The listener's connections go
// to accepted.
func newBenchPair(b *testing.B, i int) *benchPair {
	b.Helper()
	mk := func() (transport.Transport, peer.ID) {
		k := newKey(b)
		st, err := securities[i].new(securities[i].id, k, yamuxOnly)
		if err != nil {
			b.Fatal(err)
		}
		u, err := tptu.New([]sec.SecureTransport{st}, yamuxOnly, nil, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		tr, err := tcp.NewTCPTransport(u, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		id, _ := peer.IDFromPrivateKey(k)
		return tr, id
	}
	p := &benchPair{accepted: make(chan transport.CapableConn, 1024)}
	p.dialer, _ = mk()
	var lt transport.Transport
	lt, p.peer = mk()
	ln, err := lt.Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		b.Fatal(err)
	}
	p.listener = ln
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(p.accepted)
				return
			}
			p.accepted <- c
		}
	}()
	return p
}

func (p *benchPair) dial(b *testing.B) transport.CapableConn {
	c, err := p.dialer.Dial(context.Background(), p.listener.Multiaddr(), p.peer)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkHandshake makes a new TCP connection per iteration, secured and
// with its stream multiplexer negotiated, and waits for both ends. It also
// reports the CPU time of both ends per connection, as cpu-us/op.
func BenchmarkHandshake(b *testing.B) {
	for i, s := range securities {
		b.Run(s.name, func(b *testing.B) {
			p := newBenchPair(b, i)
			cpu := processCPU()
			for b.Loop() {
				c := p.dial(b)
				sc := <-p.accepted
				c.Close()
				sc.Close()
			}
			cpu = processCPU() - cpu
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/op")
		})
	}
}

// BenchmarkStream sends bulk data on one yamux stream of one connection.
// The clock stops once the receiving end has read every byte, not when the
// last Write returns. Both ends live in this process, so besides MB/s it
// reports the CPU time the whole process spent (user and system, from
// getrusage) per byte carried, as cpu-ns/B: on a machine whose cores both
// ends share, that is the fairer measure of what each transport costs.
func BenchmarkStream(b *testing.B) {
	for i, s := range securities {
		b.Run(s.name, func(b *testing.B) {
			p := newBenchPair(b, i)
			c := p.dial(b)
			defer c.Close()
			sc := <-p.accepted
			defer sc.Close()
			done := make(chan error, 1)
			go func() {
				st, err := sc.AcceptStream()
				if err == nil {
					_, err = io.Copy(io.Discard, st)
				}
				done <- err
			}()
			st, err := c.OpenStream(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 64<<10)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			cpu := processCPU()
			for range b.N {
				if _, err := st.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			st.CloseWrite()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			cpu = processCPU() - cpu
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*len(buf)), "cpu-ns/B")
		})
	}
}

// processCPU returns the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkIdleConn reports the heap held per idle connection, both ends
// counted (they live in one process), after the handshake and the yamux
// setup, with yamux's reading goroutines blocked.
func BenchmarkIdleConn(b *testing.B) {
	const n = 200
	for i, s := range securities {
		b.Run(s.name, func(b *testing.B) {
			p := newBenchPair(b, i)
			var perConn float64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				conns := make([]transport.CapableConn, 0, 2*n)
				for range n {
					conns = append(conns, p.dial(b), <-p.accepted)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				perConn = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
				for _, c := range conns {
					c.Close()
				}
			}
			b.ReportMetric(perConn, "heapB/conn")
		})
	}
}
