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
//     it, and capped at -stress.cap; -stress.pause between rounds. Rounds
//     stop after -stress.rounds, after a round in which a handshake hit
//     the cap, or once -stress.budget has been spent.
//   - replay-500: 500 connections from 127.0.0.1 replaying a recorded
//     first flight in a loop; the same rounds (127.0.1.1 is the target,
//     127.0.0.1 is for information).
//   - stall-KIND-SPREAD (issue 16; KIND msg1, ticket, replay1, nomsg3 as
//     attack_test.go's stall kinds; SPREAD one-source, 127.0.0.1, or
//     4500-sources, 127.1.0.1 and up): 5000 attackers that hold their
//     connection in the kind's state and reconnect at once when dropped;
//     the same rounds, from an attacker's address (127.0.0.1, or
//     127.1.4.1, which one attacker uses) and from 127.0.1.1.
//   - memory-KIND-K (silent, hello; K = 256, 1000; len64k, msg1: K = 4000,
//     10 bytes each, a hello and a message 1 length of 65535 or of the
//     longest valid message 1): the listener runs in a
//     fresh helper process (the test binary re-executed), so that its
//     memory is the server's alone, untouched by earlier scenarios; K
//     attackers here, spread evenly over 127.0.4.1-250. Runtime memory
//     (HeapAlloc + StackInuse after two GCs) with the attackers connected,
//     minus the same before they started, over the helper's new open
//     sockets (from /proc/self/fd), which are the pending connections.
//   - fd-exhaustion: a listener in a helper process with RLIMIT_NOFILE 64,
//     60 peers at once, all closed, then a real client.
//   - command-KIND-K, command-stall-KIND-SPREAD: the same attacks against
//     the built command, `securepeer listen -insecure-exec-any-key -exec
//     cat`; a legitimate
//     client's time is from its dial to the echo of one byte through cat.
//   - helper-stall-KIND-SPREAD: the same attacks against a default
//     listener in a helper process of its own (helperServer), whose
//     application echoes a byte after Accept: the library's listener
//     without the attackers and the client in its process.
//   - idle-10k: 10,000 authenticated connections from this process to a
//     listener in a fresh helper process whose application has one
//     goroutine per connection blocked in Read; the server's memory per
//     connection, measured as above, then a byte each way on every one.

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
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
	stressPause  = flag.Duration("stress.pause", 3*time.Second, "BenchmarkUnderAttack: pause between rounds, so that the rounds span the listener's first-flight deadline (10 s) and the attackers' reconnections")
	stressBudget = flag.Duration("stress.budget", 150*time.Second, "BenchmarkUnderAttack: no new round starts after this much time measuring one scenario")
)

func BenchmarkUnderAttack(b *testing.B) {
	flight := recordFirstFlight(b)
	same := []net.IP{nil, otherIP} // 127.0.0.1 (the kernel's choice, as Dial makes it), 127.0.1.1
	for _, k := range []int{256, 1000, 5000} {
		for _, kind := range []attackKind{attackSilent, attackHello, attackTrickle} {
			b.Run(fmt.Sprintf("%s-%d", kind, k), func(b *testing.B) {
				benchAdmission(b, attackConfig{kind: kind, n: k, source: fromSpread, flight: flight}, same)
			})
		}
	}
	b.Run("replay-500", func(b *testing.B) {
		benchAdmission(b, attackConfig{kind: attackReplay, n: 500, source: fromLocal, flight: flight}, same)
	})
	flights := recordFirstFlights(b, 16)
	for _, kind := range benchStallKinds {
		for _, sp := range stallSpreads {
			b.Run(fmt.Sprintf("stall-%s-%s", kind, sp.name), func(b *testing.B) {
				benchAdmission(b, attackConfig{kind: kind, n: 5000, source: sp.source, flight: flight, flights: flights}, []net.IP{sp.own, otherIP})
			})
		}
	}
	for _, kind := range []attackKind{attackSilent, attackHello} {
		for _, k := range []int{256, 1000} {
			b.Run(fmt.Sprintf("memory-%s-%d", kind, k), func(b *testing.B) { benchPendingMemory(b, kind, k) })
		}
	}
	for _, kind := range []attackKind{attackLen64K, stallPartial} {
		b.Run(fmt.Sprintf("memory-%s-4000", kind), func(b *testing.B) { benchPendingMemory(b, kind, 4000) })
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
	for _, k := range []int{256, 1000, 5000} {
		for _, kind := range []attackKind{attackSilent, attackHello, attackTrickle} {
			b.Run(fmt.Sprintf("command-%s-%d", kind, k), func(b *testing.B) {
				benchCommandAdmission(b, attackConfig{kind: kind, n: k, source: fromSpread, flight: flight}, same)
			})
		}
	}
	for _, kind := range benchStallKinds {
		for _, sp := range stallSpreads {
			b.Run(fmt.Sprintf("command-stall-%s-%s", kind, sp.name), func(b *testing.B) {
				benchCommandAdmission(b, attackConfig{kind: kind, n: 5000, source: sp.source, flight: flight, flights: flights}, []net.IP{sp.own, otherIP})
			})
		}
	}
	for _, kind := range benchStallKinds {
		for _, sp := range stallSpreads {
			b.Run(fmt.Sprintf("helper-stall-%s-%s", kind, sp.name), func(b *testing.B) {
				benchHelperAdmission(b, attackConfig{kind: kind, n: 5000, source: sp.source, flight: flight, flights: flights}, []net.IP{sp.own, otherIP})
			})
		}
	}
}

// benchCommandAdmission is benchAdmission against `securepeer listen
// -insecure-exec-any-key -exec cat`, the built command, instead of the
// library's listener. The command shows no Accept, so a legitimate
// handshake is timed from the start of its dial to the echo of one byte
// through cat: the handshake, the admission and an exec.
func benchCommandAdmission(b *testing.B, cfg attackConfig, srcs []net.IP) {
	dir := b.TempDir()
	bin := dir + "/securepeer"
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/securepeer").CombinedOutput(); err != nil {
		b.Fatalf("building the command: %v\n%s", err, out)
	}
	env := append(os.Environ(), "SECUREPEER_HOME="+dir+"/home")
	run := func(args ...string) string {
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("securepeer %v: %v", args, err)
		}
		return string(out)
	}
	run("keygen")
	serverKey, err := ParsePublicKey(strings.SplitN(run("id"), "\n", 2)[0])
	if err != nil {
		b.Fatal(err)
	}
	// Port 0, and the port the command got from /proc, since it prints no
	// address: a port picked here and closed for it to take could be
	// taken by another program meanwhile.
	srv := exec.Command(bin, "listen", "-insecure-exec-any-key", "-exec", "cat", "127.0.0.1:0")
	srv.Env = env
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		srv.Process.Signal(os.Interrupt)
		srv.Wait()
	}()
	var addr string
	for deadline := time.Now().Add(10 * time.Second); addr == ""; {
		if addr = listeningAddr(srv.Process.Pid); addr == "" && time.Now().After(deadline) {
			b.Fatal("securepeer listen did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}

	benchEchoUnderAttack(b, addr, serverKey, cfg, srcs)
}

// benchHelperAdmission is benchAdmission against a default listener in a
// helper process of its own (helperServer), as the command runs in one:
// the listener's goroutines do not share a process with the 5000
// attackers and the client. A legitimate client's time is from its dial
// to the echo of one byte, after the application's Accept.
func benchHelperAdmission(b *testing.B, cfg attackConfig, srcs []net.IP) {
	const serverSeed = 0x61
	h := startHelper(b, helperArgs{Mode: "server", ServerSeed: serverSeed, Duration: 30 * time.Minute})
	defer h.stop()
	addr, err := h.expect("addr ", 30*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	benchEchoUnderAttack(b, addr, testIdentity(b, serverSeed).PublicKey(), cfg, srcs)
}

// benchEchoUnderAttack runs the attack cfg against the listener at addr,
// whose key is serverKey and whose application echoes a byte, and times
// legitimate echoes from srcs meanwhile.
func benchEchoUnderAttack(b *testing.B, addr string, serverKey PublicKey, cfg attackConfig, srcs []net.IP) {
	cfg.target = addr
	cfg.maxDuration = 30 * time.Minute
	a := startAttack(context.Background(), cfg)
	defer a.stop()
	all := a.waitConnected(20 * time.Second)
	time.Sleep(2 * time.Second)
	b.Logf("settled (all connected: %v): %v", all, a)

	clientCfg := &Config{Identity: testIdentity(b, 0x53), Verify: pin(serverKey), HandshakeTimeout: *stressCap}
	echo := func(src net.IP) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), *stressCap)
		defer cancel()
		start := time.Now()
		c, err := legitDial(ctx, src, addr, clientCfg)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(*stressCap))
		if _, err := c.Write([]byte("x")); err != nil {
			return 0, err
		}
		var one [1]byte
		if _, err := io.ReadFull(c, one[:]); err != nil {
			return 0, err
		}
		return time.Since(start), nil
	}
	lat, timeouts := legitRounds(b, srcs, echo)
	reportLegit(b, srcs, lat, "echo")
	b.ReportMetric(float64(timeouts), "timeouts")
	b.ReportMetric(0, "ns/op")
}

// reportLegit logs the latencies of legitRounds and reports their medians
// from each address (the first is the attackers', the second another) and
// the worst, as ms/legit-WHAT-….
func reportLegit(b *testing.B, srcs []net.IP, lat [][]time.Duration, what string) {
	for i, src := range srcs {
		b.Logf("from %v: %v", srcName(src), roundAll(lat[i]))
	}
	for i, name := range []string{"same-addr", "other-addr"} {
		if len(lat[i]) > 0 {
			b.ReportMetric(ms(medianDuration(lat[i])), "ms/legit-"+what+"-"+name)
		}
	}
	b.ReportMetric(ms(slices.Max(slices.Concat(lat...))), "ms/legit-"+what+"-max")
}

// legitRounds runs rounds of measure, once from each of srcs, one after the
// other: -stress.rounds of them, -stress.pause apart, and no new round
// after one with a timeout (the next would take as long) or once
// -stress.budget has been spent. A failure counts as -stress.cap.
func legitRounds(b *testing.B, srcs []net.IP, measure func(src net.IP) (time.Duration, error)) (lat [][]time.Duration, timeouts int) {
	lat = make([][]time.Duration, len(srcs))
	start := time.Now()
	for round := 0; round < *stressRounds && timeouts == 0 && time.Since(start) < *stressBudget; round++ {
		if round > 0 {
			time.Sleep(*stressPause)
		}
		for i, src := range srcs {
			d, err := measure(src)
			if err != nil {
				b.Logf("round %d, from %v: %v", round, srcName(src), err)
				lat[i] = append(lat[i], *stressCap)
				timeouts++
				continue
			}
			lat[i] = append(lat[i], d)
			time.Sleep(200 * time.Millisecond)
		}
	}
	return lat, timeouts
}

// benchAdmission runs the attack cfg against a default listener and times
// legitimate handshakes from srcs meanwhile: an attacker's address, then
// another.
func benchAdmission(b *testing.B, cfg attackConfig, srcs []net.IP) {
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
	dials0, replies0, start := a.dials.Load(), a.replies.Load(), time.Now()
	lat, timeouts := legitRounds(b, srcs, func(src net.IP) (time.Duration, error) {
		r := measureLegit(w, []net.IP{src}, clientCfg, *stressCap)[0]
		return r.latency, r.err
	})
	elapsed := time.Since(start)
	b.Logf("measured over %v: %v", elapsed.Round(time.Millisecond), a)
	reportLegit(b, srcs, lat, "handshake")
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

// serverMemory is what a "server" helper process says when told to
// measure.
type serverMemory struct {
	mem       int64 // runtime memory: HeapAlloc + StackInuse after two GCs
	sockets   int   // open sockets, the listener's included
	accepted  int   // connections Accept has returned
	pending   int   // connections the listener holds
	unproved  int   // of which unproved
	completed int   // of which completed, waiting for Accept
}

func (h *helperProc) measure() (serverMemory, error) {
	var m serverMemory
	if err := h.send("measure"); err != nil {
		return m, err
	}
	out, err := h.expect("memory ", time.Minute)
	if err != nil {
		return m, err
	}
	_, err = fmt.Sscan(out, &m.mem, &m.sockets, &m.accepted, &m.pending, &m.unproved, &m.completed)
	return m, err
}

// benchPendingMemory measures the server's memory per pending connection:
// a default listener in a fresh helper process, k attackers of kind in this
// one, spread evenly over 250 source addresses. The pending connections are
// the helper's open sockets but the listener.
func benchPendingMemory(b *testing.B, kind attackKind, k int) {
	h := startHelper(b, helperArgs{Mode: "server", ServerSeed: 0x52, Duration: 10 * time.Minute})
	defer h.stop()
	addr, err := h.expect("addr ", 30*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	base, err := h.measure()
	if err != nil {
		b.Fatal(err)
	}
	a := startAttack(context.Background(), attackConfig{kind: kind, target: addr, n: k, source: fromEven, maxDuration: 10 * time.Minute})
	defer a.stop()
	a.waitConnected(30 * time.Second)
	time.Sleep(2 * time.Second) // every handshake the server will start has started
	m, err := h.measure()
	if err != nil {
		b.Fatal(err)
	}
	held := m.sockets - base.sockets
	b.Logf("%v; server: %d sockets held, runtime memory %+d B", a, held, m.mem-base.mem)
	if held < 1 {
		// len64k against a listener that refuses the length at once.
		b.Logf("the server holds no attacker connection: it refused them all")
		b.ReportMetric(float64(m.mem-base.mem), "B/server-delta")
		b.ReportMetric(0, "pending-conns")
		b.ReportMetric(0, "ns/op")
		return
	}
	b.ReportMetric(float64(m.mem-base.mem)/float64(held), "B/pending-conn")
	b.ReportMetric(float64(held), "pending-conns")
	b.ReportMetric(0, "ns/op")
}

// benchIdleConns opens n authenticated connections from this process to a
// default listener in a fresh helper process, whose application runs one
// goroutine per connection blocked in Read; it measures the server's
// memory per connection, then exchanges a byte each way on every
// connection. The clients come from 127.0.3.1 to 127.0.3.16.
func benchIdleConns(b *testing.B, n int) {
	const serverSeed, clientSeed = 0x56, 0x57
	h := startHelper(b, helperArgs{Mode: "server", ServerSeed: serverSeed, Duration: 20 * time.Minute})
	defer h.stop()
	addr, err := h.expect("addr ", 30*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	base, err := h.measure()
	if err != nil {
		b.Fatal(err)
	}

	cfg := &Config{Identity: testIdentity(b, clientSeed), Verify: pin(testIdentity(b, serverSeed).PublicKey())}
	conns := make([]*Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	start := time.Now()
	if err := parallel16(n, func(i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, err := legitDial(ctx, net.IPv4(127, 0, 3, byte(1+i%16)), addr, cfg)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		conns[i] = c
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	setup := time.Since(start)
	time.Sleep(5 * time.Second) // idle
	m, err := h.measure()
	if err != nil {
		b.Fatal(err)
	}
	if m.accepted != n {
		b.Fatalf("the server accepted %d of %d", m.accepted, n)
	}
	var ok atomic.Int64
	err = parallel16(n, func(i int) error {
		c := conns[i]
		c.SetDeadline(time.Now().Add(time.Minute))
		one := []byte{byte(i)}
		if _, err := c.Write(one); err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		if _, err := io.ReadFull(c, one); err != nil || one[0] != byte(i) {
			return fmt.Errorf("connection %d: echo %v, %v", i, one, err)
		}
		ok.Add(1)
		return nil
	})
	b.Logf("%d connections set up in %v; server: %d sockets, runtime memory %+d B; %d exchanged a byte each way",
		n, setup.Round(time.Millisecond), m.sockets-base.sockets, m.mem-base.mem, ok.Load())
	if err != nil {
		b.Errorf("only %d of %d idle connections still work: %v", ok.Load(), n, err)
	}
	b.ReportMetric(float64(ok.Load()), "conns-working")
	b.ReportMetric(float64(m.mem-base.mem)/float64(n), "B/idle-conn-blocked-read")
	b.ReportMetric(setup.Seconds(), "s/setup")
	b.ReportMetric(0, "ns/op")
}

// parallel16 runs f(i) for i in [0, n), 16 at a time, and returns the
// first error.
func parallel16(n int, f func(i int) error) error {
	var next atomic.Int64
	errs := make([]error, 16)
	var wg sync.WaitGroup
	for w := range errs {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := f(i); err != nil && errs[w] == nil {
					errs[w] = err
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// helperServer runs a default listener with the usual application loop:
// one goroutine per accepted connection, blocked in Read; it echoes the
// first byte, then reads until the end of stream. It says "addr ADDR", and
// on each line "measure" says "memory MEM SOCKETS ACCEPTED PENDING
// UNPROVED COMPLETED": runtime memory, open sockets, the connections
// Accept has returned, and those the listener holds (all, unproved, and
// completed); "count" says "count SOCKETS PENDING UNPROVED COMPLETED"
// without collecting garbage first. args.Hold "verify" gives it a Verify
// that holds every key but args.LegitSeed's until the helper ends;
// "accept" starts the application loop only on the line "accept". With
// either, the handshake timeout is the helper's Duration.
func helperServer(ctx context.Context, tb testing.TB, args helperArgs, stdin <-chan string) error {
	cfg := &Config{Identity: testIdentity(tb, args.ServerSeed)}
	if args.Hold != "" {
		// Long enough for thousands of handshakes queued for the CPU under
		// the race detector, so that they complete and stay.
		cfg.HandshakeTimeout = args.Duration
	}
	if args.Hold == "verify" {
		legit := testIdentity(tb, args.LegitSeed).PublicKey()
		cfg.Verify = func(vctx context.Context, k PublicKey) error {
			if k.Equal(legit) {
				return nil
			}
			select {
			case <-vctx.Done():
			case <-ctx.Done():
			}
			return errNotAllowed
		}
	}
	ln, err := Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		return err
	}
	al := ln.(*listener).l
	var (
		wg       sync.WaitGroup
		accepted atomic.Int64
	)
	defer wg.Wait()
	defer ln.Close()
	startAccepting := make(chan struct{})
	if args.Hold != "accept" {
		close(startAccepting)
	}
	wg.Go(func() {
		select {
		case <-startAccepting:
		case <-ctx.Done():
			return
		}
		for range 10_000_000 {
			c, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				time.Sleep(10 * time.Millisecond)
				continue
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
				io.Copy(io.Discard, c)
			})
		}
	})
	helperSay("addr %s", ln.Addr())
	for {
		select {
		case line := <-stdin:
			switch line {
			case "measure":
				mem := liveHeapAndStacks()
				helperSay("memory %d %d %d %d %d %d", mem, openSockets(tb), accepted.Load(), al.Pending(), al.Unproved(), al.Completed())
			case "count":
				helperSay("count %d %d %d %d", openSockets(tb), al.Pending(), al.Unproved(), al.Completed())
			case "accept":
				close(startAccepting)
			default:
				return fmt.Errorf("unexpected %q", line)
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// listeningAddr is the address of a TCP socket on IPv4 that process pid
// listens on, from /proc, or "" if it has none yet.
func listeningAddr(pid int) string {
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	inodes := map[string]bool{}
	for _, fd := range fds {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if inode, ok := strings.CutPrefix(l, "socket:["); ok {
			inodes[strings.TrimSuffix(inode, "]")] = true
		}
	}
	table, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	for _, line := range strings.Split(string(table), "\n")[1:] {
		// sl local_address rem_address st ... inode: 0A is LISTEN.
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] {
			continue
		}
		ip, port, ok := strings.Cut(f[1], ":")
		a, err1 := strconv.ParseUint(ip, 16, 32)
		p, err2 := strconv.ParseUint(port, 16, 16)
		if !ok || err1 != nil || err2 != nil {
			continue
		}
		// The kernel prints the address's four bytes as an integer in
		// the host's byte order.
		var ipv4 [4]byte
		binary.NativeEndian.PutUint32(ipv4[:], uint32(a))
		return net.JoinHostPort(net.IP(ipv4[:]).String(), strconv.FormatUint(p, 10))
	}
	return ""
}
