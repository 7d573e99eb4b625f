package libp2psec

import (
	"context"
	"io"
	"runtime"
	"slices"
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
		if t, ok := st.(*Transport); ok {
			// Full handshakes, as Noise and TLS make: the dialer would
			// otherwise resume with the ticket of its previous connection.
			t.base.SessionTicketsDisabled = true
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

// The Interleaved benchmarks measure the three transports in turn under
// the same conditions, for machines whose load changes from second to
// second (loopback throughput on a shared VM varies by more than 20% from
// one run to the next). Each of their b.N rounds runs a slice of work on
// every transport, in an order that rotates from round to round, and
// measures each slice's wall time and the CPU time of the whole process
// (both ends). They report, per transport, the medians over the rounds,
// and the medians of the per-round ratios of Noise's CPU time and wall
// time to securepeer's (noise/securepeer-cpu, noise/securepeer-time: above
// 1 means securepeer is cheaper, or faster). Run them with -benchtime Nx,
// N the number of rounds.

// BenchmarkStreamInterleaved sends 32 MiB per slice through one yamux
// stream of one connection, timed until the receiver has every byte, and
// reports throughput (MB/s) and CPU time per byte (cpu-ns/B).
func BenchmarkStreamInterleaved(b *testing.B) {
	const slice = 32 << 20
	work := make([]func(), len(securities))
	for i := range securities {
		p := newBenchPair(b, i)
		c := p.dial(b)
		b.Cleanup(func() { c.Close() })
		sc := <-p.accepted
		b.Cleanup(func() { sc.Close() })
		st, err := c.OpenStream(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := st.Write([]byte{0}); err != nil { // so that the peer accepts the stream
			b.Fatal(err)
		}
		rs, err := sc.AcceptStream()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(rs, make([]byte, 1)); err != nil {
			b.Fatal(err)
		}
		done := make(chan error)
		go func() {
			// Read each slice to its end, then tell the sender.
			for {
				_, err := io.CopyN(io.Discard, rs, slice)
				done <- err
				if err != nil {
					return
				}
			}
		}()
		buf := make([]byte, 64<<10)
		work[i] = func() {
			for range slice / len(buf) {
				if _, err := st.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		}
	}
	interleave(b, work, func(name string, wall, cpu float64) {
		b.ReportMetric(slice/wall/1e6, name+"-MB/s")
		b.ReportMetric(cpu/slice*1e9, name+"-cpu-ns/B")
	})
}

// BenchmarkHandshakeInterleaved makes 20 connections per slice, as
// BenchmarkHandshake does, and reports the wall time and the CPU time of
// both ends per connection (us/conn, cpu-us/conn).
func BenchmarkHandshakeInterleaved(b *testing.B) {
	const slice = 20
	work := make([]func(), len(securities))
	for i := range securities {
		p := newBenchPair(b, i)
		work[i] = func() {
			for range slice {
				c := p.dial(b)
				sc := <-p.accepted
				c.Close()
				sc.Close()
			}
		}
	}
	interleave(b, work, func(name string, wall, cpu float64) {
		b.ReportMetric(wall/slice*1e6, name+"-us/conn")
		b.ReportMetric(cpu/slice*1e6, name+"-cpu-us/conn")
	})
}

// interleave runs b.N rounds of work, one slice per transport in a
// rotating order, and reports for each transport report(name, median wall
// seconds, median CPU seconds) per slice, then the paired ratios.
func interleave(b *testing.B, work []func(), report func(name string, wall, cpu float64)) {
	wall := make([][]float64, len(work))
	cpu := make([][]float64, len(work))
	b.ResetTimer()
	for round := range b.N {
		for k := range work {
			i := (round + k) % len(work)
			start, cpu0 := time.Now(), processCPU()
			work[i]()
			wall[i] = append(wall[i], time.Since(start).Seconds())
			cpu[i] = append(cpu[i], (processCPU() - cpu0).Seconds())
		}
	}
	b.StopTimer()
	const sp, noise = 0, 1
	if securities[sp].name != "securepeer" || securities[noise].name != "noise" {
		b.Fatal("securities are not in the order securepeer, noise")
	}
	for i, s := range securities {
		report(s.name, median(wall[i]), median(cpu[i]))
	}
	cpuRatio := make([]float64, b.N)
	wallRatio := make([]float64, b.N)
	for r := range b.N {
		cpuRatio[r] = cpu[noise][r] / cpu[sp][r]
		wallRatio[r] = wall[noise][r] / wall[sp][r]
	}
	b.ReportMetric(median(cpuRatio), "noise/securepeer-cpu")
	b.ReportMetric(median(wallRatio), "noise/securepeer-time")
	b.ReportMetric(0, "ns/op")
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if n := len(v); n%2 == 0 {
		return (v[n/2-1] + v[n/2]) / 2
	}
	return v[len(v)/2]
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
