//go:build linux

package securepeer

// BenchmarkUnderAttack is the stress harness of issue 7: the figures of
// BENCHMARKS.md, "Under attack". It runs only with -bench; the documented
// command is
//
//	go test -run '^$' -bench UnderAttack -benchtime 1x -timeout 2h
//
// Each sub-benchmark runs its scenario once, whatever b.N is (-benchtime
// 1x keeps the testing package from asking for more). Scenarios, all
// against Listen("tcp", "127.0.0.1:0", &Config{Identity: ...}) with
// nothing else set:
//
//   - KIND-K (silent, hello, trickle; K = 256, 1000, 5000): K attackers
//     (attack_test.go), half on 127.0.0.1 and half over 127.0.2.1-64, each
//     reconnecting when dropped. Once they have all connected (or 20 s
//     have passed) and 2 s more, rounds of two legitimate handshakes, one
//     from 127.0.0.1 and one from 127.0.1.1, one after the other, each
//     timed from the start of its dial to the server's Accept returning
//     it, and capped at -stress.cap. Rounds stop after -stress.rounds, at
//     the first handshake that hits the cap, or once -stress.budget has
//     been spent.
//   - replay-500: 500 connections from 127.0.0.1 replaying a recorded
//     first flight in a loop; the same rounds (127.0.1.1 is the target,
//     127.0.0.1 is for information).
//   - memory-KIND-K: the attackers run in a helper process (the test binary
//     re-executed), so this process holds the server alone; runtime memory
//     (HeapAlloc + StackInuse after two GCs) with the attackers connected,
//     minus the same before they started, over the server's open sockets
//     (from /proc/self/fd), which are the pending connections.
//   - fd-exhaustion: a listener in a helper process with RLIMIT_NOFILE 64,
//     60 peers at once, all closed, then a real client.
//   - idle-10k: 10,000 authenticated connections from a helper process, one
//     server goroutine blocked in Read on each; memory per connection, then
//     a byte each way on every one.

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	stressCap    = flag.Duration("stress.cap", 60*time.Second, "BenchmarkUnderAttack: the longest a legitimate handshake may take before it counts as timed out")
	stressRounds = flag.Int("stress.rounds", 5, "BenchmarkUnderAttack: rounds of legitimate handshakes (one from each address) per scenario")
	stressBudget = flag.Duration("stress.budget", 150*time.Second, "BenchmarkUnderAttack: no new round starts after this much time measuring one scenario")
)

func BenchmarkUnderAttack(b *testing.B) {
	flight := recordFirstFlight(b)
	for _, k := range []int{256, 1000, 5000} {
		for _, kind := range []attackKind{attackSilent, attackHello, attackTrickle} {
			b.Run(fmt.Sprintf("%s-%d", kind, k), func(b *testing.B) {
				benchAdmission(b, attackConfig{kind: kind, n: k, source: fromSpread, flight: flight})
			})
		}
	}
	b.Run("replay-500", func(b *testing.B) {
		benchAdmission(b, attackConfig{kind: attackReplay, n: 500, source: fromLocal, flight: flight})
	})
	for _, kind := range []attackKind{attackSilent, attackHello} {
		for _, k := range []int{256, 1000} {
			b.Run(fmt.Sprintf("memory-%s-%d", kind, k), func(b *testing.B) { benchPendingMemory(b, kind, k) })
		}
	}
	b.Run("fd-exhaustion", func(b *testing.B) {
		latency, err := fdExhaustion(b, 60, *stressCap)
		if err != nil {
			b.Logf("FAILED: %v", err)
			b.ReportMetric(0, "accepted")
		} else {
			b.ReportMetric(float64(latency)/1e6, "ms/legit-handshake")
			b.ReportMetric(1, "accepted")
		}
		b.ReportMetric(0, "ns/op")
	})
	b.Run("idle-10k", func(b *testing.B) { benchIdleConns(b, 10_000) })
}

// benchAdmission runs the attack cfg against a default listener and times
// legitimate handshakes from 127.0.0.1 and 127.0.1.1 meanwhile.
func benchAdmission(b *testing.B, cfg attackConfig) {
	server, client := testIdentity(b, 0x52), testIdentity(b, 0x53)
	ln, err := Listen("tcp", "127.0.0.1:0", &Config{Identity: server})
	if err != nil {
		b.Fatal(err)
	}
	w := watchAccept(ln, nil)
	defer w.close()
	cfg.target = ln.Addr().String()
	cfg.maxDuration = 30 * time.Minute
	a := startAttack(context.Background(), cfg)
	defer a.stop()
	all := a.waitConnected(20 * time.Second)
	time.Sleep(2 * time.Second)
	b.Logf("settled (all connected: %v): %v", all, a)

	// The client's own HandshakeTimeout is the cap, so that a lockout
	// shows as the time it lasts, up to the cap, not the default 30 s.
	clientCfg := &Config{Identity: client, Verify: pin(server.PublicKey()), HandshakeTimeout: *stressCap}
	srcs := []net.IP{nil, otherIP} // 127.0.0.1 (the kernel's choice, as Dial makes it), 127.0.1.1
	lat := make([][]time.Duration, len(srcs))
	timeouts := 0
	dials0, replies0, start := a.dials.Load(), a.replies.Load(), time.Now()
	// After a round with a timeout no other round starts: the next would
	// take as long.
	for round := 0; round < *stressRounds && timeouts == 0 && time.Since(start) < *stressBudget; round++ {
		for i, src := range srcs {
			r := measureLegit(w, []net.IP{src}, clientCfg, *stressCap)[0]
			if r.err != nil {
				b.Logf("round %d, from %v: %v", round, srcName(src), r.err)
				lat[i] = append(lat[i], *stressCap)
				timeouts++
				continue
			}
			lat[i] = append(lat[i], r.latency)
			time.Sleep(200 * time.Millisecond)
		}
	}
	elapsed := time.Since(start)
	b.Logf("measured over %v: %v", elapsed.Round(time.Millisecond), a)
	for i, src := range srcs {
		b.Logf("from %v: %v", srcName(src), roundAll(lat[i]))
	}
	if len(lat[0]) > 0 {
		b.ReportMetric(ms(medianDuration(lat[0])), "ms/legit-handshake-same-addr")
	}
	if len(lat[1]) > 0 {
		b.ReportMetric(ms(medianDuration(lat[1])), "ms/legit-handshake-other-addr")
	}
	b.ReportMetric(ms(slices.Max(slices.Concat(lat...))), "ms/legit-handshake-max")
	b.ReportMetric(float64(len(lat[0])+len(lat[1])), "legit-handshakes")
	b.ReportMetric(float64(timeouts), "timeouts")
	b.ReportMetric(float64(a.dials.Load()-dials0)/elapsed.Seconds(), "attacker-conns/s")
	if cfg.kind == attackReplay {
		b.ReportMetric(float64(a.replies.Load()-replies0)/elapsed.Seconds(), "replayed-msg2/s")
	}
	b.ReportMetric(0, "ns/op")
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func medianDuration(ds []time.Duration) time.Duration {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	if len(ds)%2 == 1 {
		return ds[len(ds)/2]
	}
	return (ds[len(ds)/2-1] + ds[len(ds)/2]) / 2
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

// runtimeMemory returns HeapAlloc + StackInuse after two collections (the
// second empties sync.Pool's victim caches).
func runtimeMemory() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc + ms.StackInuse)
}

// openSockets counts this process's open sockets.
func openSockets(tb testing.TB) int {
	des, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for _, de := range des {
		if l, err := os.Readlink("/proc/self/fd/" + de.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// benchPendingMemory measures the server's memory per pending connection:
// k attackers of kind in a helper process, spread evenly over 250 source
// addresses, against a default listener in this one.
func benchPendingMemory(b *testing.B, kind attackKind, k int) {
	ln, err := Listen("tcp", "127.0.0.1:0", &Config{Identity: testIdentity(b, 0x52)})
	if err != nil {
		b.Fatal(err)
	}
	w := watchAccept(ln, nil)
	defer w.close()
	time.Sleep(100 * time.Millisecond)
	baseMem, baseSocks := runtimeMemory(), openSockets(b)

	h := startHelper(b, helperArgs{Mode: "attackers", Kind: kind, N: k, Target: ln.Addr().String(), Sources: "even", Duration: 10 * time.Minute})
	defer h.stop()
	settled, err := h.expect("settled ", 60*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	time.Sleep(2 * time.Second) // every handshake the server will start has started
	s1 := openSockets(b)
	mem := runtimeMemory()
	s2 := openSockets(b)
	held := float64(s1+s2)/2 - float64(baseSocks)
	b.Logf("%s attackers connected: %s; server sockets held: %.0f; runtime memory %+d B", kind, settled, held, mem-baseMem)
	if held < 1 {
		b.Fatalf("the server holds no attacker connection")
	}
	b.ReportMetric(float64(mem-baseMem)/held, "B/pending-conn")
	b.ReportMetric(held, "pending-conns")
	b.ReportMetric(0, "ns/op")
}

// benchIdleConns opens n authenticated connections from a helper process
// to a default listener whose application runs one goroutine per
// connection blocked in Read, measures the memory per connection on this
// (server) side, then exchanges a byte each way on every connection.
func benchIdleConns(b *testing.B, n int) {
	const serverSeed = 0x56
	ln, err := Listen("tcp", "127.0.0.1:0", &Config{Identity: testIdentity(b, serverSeed)})
	if err != nil {
		b.Fatal(err)
	}
	var (
		wg       sync.WaitGroup
		accepted atomic.Int64
		echoed   atomic.Int64
	)
	defer wg.Wait()
	defer ln.Close()
	baseMem := runtimeMemory()
	wg.Go(func() {
		for range n {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			wg.Go(func() {
				defer c.Close()
				var one [1]byte
				if _, err := io.ReadFull(c, one[:]); err != nil {
					return
				}
				if _, err := c.Write(one[:]); err != nil {
					return
				}
				echoed.Add(1)
				io.Copy(io.Discard, c) // until the client closes
			})
		}
	})

	start := time.Now()
	h := startHelper(b, helperArgs{Mode: "idle-clients", N: n, Target: ln.Addr().String(), ServerSeed: serverSeed, Duration: 20 * time.Minute})
	defer h.stop()
	if _, err := h.expect("dialed ", 15*time.Minute); err != nil {
		b.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); accepted.Load() < int64(n) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	setup := time.Since(start)
	if got := accepted.Load(); got < int64(n) {
		b.Fatalf("accepted %d of %d", got, n)
	}
	time.Sleep(5 * time.Second) // idle
	mem := runtimeMemory()
	if err := h.send("exchange"); err != nil {
		b.Fatal(err)
	}
	out, err := h.expect("exchanged ", 5*time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	ok, _ := strconv.Atoi(out)
	b.Logf("%d connections set up in %v; %d exchanged a byte each way (server echoed %d)", n, setup.Round(time.Millisecond), ok, echoed.Load())
	if ok != n {
		b.Errorf("only %d of %d idle connections still work", ok, n)
	}
	b.ReportMetric(float64(ok), "conns-working")
	b.ReportMetric(float64(mem-baseMem)/float64(n), "B/idle-conn-blocked-read")
	b.ReportMetric(setup.Seconds(), "s/setup")
	b.ReportMetric(0, "ns/op")
}

// helperIdleClients dials N authenticated connections to Target (pinning
// the server's key), from 127.0.3.1 to 127.0.3.16, says "dialed N", and on
// the line "exchange" writes a byte on each and reads its echo, then says
// "exchanged OK" with the number that worked. It closes them all when told
// to stop.
func helperIdleClients(ctx context.Context, tb testing.TB, args helperArgs, stdin <-chan string) error {
	cfg := &Config{Identity: testIdentity(tb, 0x57), Verify: pin(testIdentity(tb, args.ServerSeed).PublicKey())}
	conns := make([]*Conn, args.N)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	// parallel runs f(i) for every connection, 16 at a time.
	parallel := func(f func(i int) error) error {
		var next atomic.Int64
		errs := make([]error, 16)
		var wg sync.WaitGroup
		for w := range errs {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < args.N && ctx.Err() == nil; i = int(next.Add(1) - 1) {
					if err := f(i); err != nil && errs[w] == nil {
						errs[w] = err
					}
				}
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		return ctx.Err()
	}
	err := parallel(func(i int) error {
		dctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		c, err := legitDial(dctx, net.IPv4(127, 0, 3, byte(1+i%16)), args.Target, cfg)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		conns[i] = c
		return nil
	})
	if err != nil {
		return err
	}
	helperSay("dialed %d", args.N)
	select {
	case line := <-stdin:
		if line != "exchange" {
			return fmt.Errorf("unexpected %q", line)
		}
	case <-ctx.Done():
		return nil
	}
	var ok atomic.Int64
	parallel(func(i int) error {
		c := conns[i]
		c.SetDeadline(time.Now().Add(time.Minute))
		one := []byte{byte(i)}
		if _, err := c.Write(one); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, one); err != nil || one[0] != byte(i) {
			return fmt.Errorf("connection %d: echo %v, %v", i, one, err)
		}
		ok.Add(1)
		return nil
	})
	helperSay("exchanged %d", ok.Load())
	<-ctx.Done()
	return nil
}
