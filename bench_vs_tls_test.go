package securepeer

// BenchmarkVsTLS measures issue 20's speed table in one run: every row of
// securepeer against crypto/tls 1.3 (the configuration of bench_test.go:
// mutual authentication with pinned Ed25519 certificates, the default
// X25519MLKEM768 key exchange, checked on every handshake), and beside
// each row its floor, the sum of what the row cannot avoid, built from
// micro-benchmarks of the primitives and of the bare TCP connection
// measured in the same rounds (BENCHMARKS.md, "Speed at the floor"). The
// handshake rows show crypto/tls's own floor too, counted by the same
// rules, so that each side's distance from its floor can be compared.
//
//	go test -run '^$' -bench VsTLS -benchtime 40x -count 3
//
// One op is one round (use -benchtime Nx, N ≥ 2: the testing package's
// first call, with one round, reports no table). A round runs a slice of every row and of every
// micro-benchmark, in an order that rotates from round to round, so that
// the two sides of a ratio run moments apart under the same load; each
// ratio is the median of its per-round ratios. Costs are CPU time of the
// whole process (getrusage: user and system, both ends and the kernel's
// loopback work), which moves far less with the machine's other load than
// the wall clock; the wall-clock ratios are reported too.

import (
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/mlkem"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// A vsSlice is one measured piece of a round: ops operations of one row or
// micro-benchmark. prepare, if not nil, runs untimed before each slice.
type vsSlice struct {
	name    string
	ops     int
	prepare func(ops int) error
	run     func(ops int) error
}

// vsCosts holds every slice's cost per op, by name, one entry a round: ns
// of wall clock and of process CPU.
type vsCosts struct {
	wall, cpu map[string][]float64
}

// The slices' sizes: about 0.25 s a round on the machine of BENCHMARKS.md.
const (
	vsConns     = 20      // connections per connection slice
	vsPings     = 400     // round trips per ping-pong slice
	vsBulkBytes = 8 << 20 // bytes per bulk slice, in 64 KiB writes
	vsPingSize  = 64
	vsBulkSize  = 64 << 10
)

func BenchmarkVsTLS(b *testing.B) {
	env := getBenchEnv(b)
	var slices []vsSlice
	slices = append(slices, vsPrimitiveSlices(b)...)
	slices = append(slices, vsConnSlices(b, env)...)
	slices = append(slices, vsStreamSlices(b, env)...)

	costs := vsCosts{wall: map[string][]float64{}, cpu: map[string][]float64{}}
	b.ResetTimer()
	for round := range b.N {
		for j := range slices {
			s := slices[(round+j)%len(slices)]
			if s.prepare != nil {
				if err := s.prepare(s.ops); err != nil {
					b.Fatalf("bench: %s: %v", s.name, err)
				}
			}
			cpu, start := processCPU(), time.Now()
			if err := s.run(s.ops); err != nil {
				b.Fatalf("bench: %s: %v", s.name, err)
			}
			wall := time.Since(start)
			cpu = processCPU() - cpu
			costs.wall[s.name] = append(costs.wall[s.name], float64(wall.Nanoseconds())/float64(s.ops))
			costs.cpu[s.name] = append(costs.cpu[s.name], float64(cpu.Nanoseconds())/float64(s.ops))
		}
	}
	b.StopTimer()
	vsReport(b, costs)
	if b.N > 1 { // not in the testing package's first call, with b.N = 1
		vsReportMemory(b, env)
	}
	b.ReportMetric(0, "ns/op")
}

// vsPrimitiveSlices are the micro-benchmarks of the primitives the floors
// are made of, each on one core. Inputs are fixed: none of these
// primitives takes a different time for different inputs.
func vsPrimitiveSlices(b *testing.B) []vsSlice {
	seed := make([]byte, 32)
	rand.Read(seed)
	local, err := ecdh.X25519().NewPrivateKey(seed)
	if err != nil {
		b.Fatal(err)
	}
	peer, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	kemSeed := make([]byte, mlkem.SeedSize)
	rand.Read(kemSeed)
	dk, err := mlkem.NewDecapsulationKey768(kemSeed)
	if err != nil {
		b.Fatal(err)
	}
	ek := dk.EncapsulationKey().Bytes()
	_, kemCT := dk.EncapsulationKey().Encapsulate()
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	proofMsg := staticSignedMessage(local.PublicKey().Bytes())
	proofSig := ed25519.Sign(edPriv, proofMsg)
	key := make([]byte, 32)
	aead, err := AES256GCM.newAEAD(key)
	if err != nil {
		b.Fatal(err)
	}
	chacha, err := chacha20poly1305.New(key)
	if err != nil {
		b.Fatal(err)
	}
	xchacha, err := chacha20poly1305.NewX(key)
	if err != nil {
		b.Fatal(err)
	}
	nonce := make([]byte, aead.NonceSize())
	xnonce := make([]byte, xchacha.NonceSize())
	kib := make([]byte, 1<<10)
	small, big := make([]byte, vsPingSize), make([]byte, vsBulkSize)
	sealedSmall := aead.Seal(nil, nonce, small, nil)
	sealedBig := aead.Seal(nil, nonce, big, nil)
	out := make([]byte, 0, vsBulkSize+64)
	ticketState := make([]byte, 114)
	var sink byte

	loop := func(f func() error) func(int) error {
		return func(ops int) error {
			for range ops {
				if err := f(); err != nil {
					return err
				}
			}
			return nil
		}
	}
	return []vsSlice{
		{name: "x25519-keygen", ops: 40, run: loop(func() error {
			k, err := ecdh.X25519().NewPrivateKey(seed)
			if err == nil {
				sink ^= k.PublicKey().Bytes()[0]
			}
			return err
		})},
		{name: "x25519-fixed-base", ops: 40, run: loop(func() error {
			pub, err := x25519FixedBase(seed)
			sink ^= pub[0]
			return err
		})},
		{name: "x25519-dh", ops: 40, run: loop(func() error {
			s, err := local.ECDH(peer.PublicKey())
			if err == nil {
				sink ^= s[0]
			}
			return err
		})},
		{name: "mlkem768-keygen", ops: 20, run: loop(func() error {
			k, err := mlkem.NewDecapsulationKey768(kemSeed)
			if err == nil {
				sink ^= k.EncapsulationKey().Bytes()[0]
			}
			return err
		})},
		{name: "mlkem768-encaps", ops: 20, run: loop(func() error {
			k, err := mlkem.NewEncapsulationKey768(ek)
			if err == nil {
				ss, _ := k.Encapsulate()
				sink ^= ss[0]
			}
			return err
		})},
		{name: "mlkem768-decaps", ops: 20, run: loop(func() error {
			ss, err := dk.Decapsulate(kemCT)
			if err == nil {
				sink ^= ss[0]
			}
			return err
		})},
		{name: "ed25519-sign", ops: 40, run: loop(func() error {
			sink ^= ed25519.Sign(edPriv, proofMsg)[0]
			return nil
		})},
		{name: "ed25519-verify", ops: 20, run: loop(func() error {
			if !ed25519.Verify(edPub, proofMsg, proofSig) {
				return errors.New("the signature does not verify")
			}
			return nil
		})},
		{name: "hmac-sha256", ops: 2000, run: loop(func() error {
			m := hmac.New(sha256.New, key)
			m.Write(key)
			sink ^= m.Sum(out[:0])[0]
			return nil
		})},
		{name: "sha256-1KiB", ops: 2000, run: loop(func() error {
			s := sha256.Sum256(kib)
			sink ^= s[0]
			return nil
		})},
		{name: "chacha20poly1305-1KiB", ops: 2000, run: loop(func() error {
			sink ^= chacha.Seal(out[:0], nonce, kib, nil)[0]
			return nil
		})},
		{name: "xchacha20poly1305-ticket", ops: 2000, run: loop(func() error {
			sink ^= xchacha.Seal(out[:0], xnonce, ticketState, nil)[0]
			return nil
		})},
		{name: "aes256gcm-seal-64B", ops: 5000, run: loop(func() error {
			sink ^= aead.Seal(out[:0], nonce, small, nil)[0]
			return nil
		})},
		{name: "aes256gcm-open-64B", ops: 5000, run: loop(func() error {
			_, err := aead.Open(out[:0], nonce, sealedSmall, nil)
			return err
		})},
		{name: "aes256gcm-seal-64KiB", ops: 50, run: loop(func() error {
			sink ^= aead.Seal(out[:0], nonce, big, nil)[0]
			return nil
		})},
		{name: "aes256gcm-open-64KiB", ops: 50, run: loop(func() error {
			_, err := aead.Open(out[:0], nonce, sealedBig, nil)
			return err
		})},
	}
}

// vsConnSlices are the connection rows: each op is a new loopback TCP
// connection, both handshakes, one byte from the server, both closed
// (newRowConnector). "tcp-conn" is the TCP connection and the byte alone.
func vsConnSlices(b *testing.B, env *benchEnv) []vsSlice {
	conn := func(name string, row resumeRow, prepare func(int) error) vsSlice {
		connect := newRowConnector(b, name, row)
		return vsSlice{name: name, ops: vsConns, prepare: prepare, run: func(ops int) error {
			for range ops {
				if err := connect(); err != nil {
					return err
				}
			}
			return nil
		}}
	}
	spFirst, spFirstPrepare := vsSPFirstContactRow(b, env)
	tlsFirst, tlsFirstPrepare := vsTLSFirstContactRow(b, env)
	return []vsSlice{
		conn("tcp-conn", newResumeRow(env, resTCP), nil),
		conn("tls-full", newResumeRow(env, resTLSFull), nil),
		conn("sp-full", newResumeRow(env, resSPFull), nil),
		conn("tls-first", tlsFirst, tlsFirstPrepare),
		conn("sp-first", spFirst, spFirstPrepare),
		conn("tls-resumed", newResumeRow(env, resTLSResumed), nil),
		conn("sp-resumed", newResumeRow(env, resSPResumed), nil),
	}
}

// vsPool hands out one pre-made client per connection, made untimed
// before each slice, and knows which keys it made, for the server's
// Verify. The server's checks read the set while the benchmark goroutine
// fills it between slices, hence the mutex.
type vsPool[T any] struct {
	mu    sync.Mutex
	items []T
	keys  map[string]bool
}

func (p *vsPool[T]) next() T {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.items) == 0 {
		panic("bench: client pool empty")
	}
	it := p.items[0]
	p.items = p.items[1:]
	return it
}

func (p *vsPool[T]) known(key []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.keys[string(key)]
}

func (p *vsPool[T]) refill(n int, newItem func() (T, []byte, error)) error {
	items, keys := make([]T, 0, n), make(map[string]bool, n)
	for range n {
		it, key, err := newItem()
		if err != nil {
			return err
		}
		items, keys[string(key)] = append(items, it), true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := range p.keys {
		keys[k] = true // the warm-up connection's client is still in use
	}
	p.items, p.keys = items, keys
	return nil
}

// vsSPFirstContactRow is securepeer's first contact: every connection's
// client has a new identity (made untimed), which the server accepts, and
// the identity-proof cache is emptied before each, so that each side
// verifies the other's proof as two peers that never met do.
func vsSPFirstContactRow(b *testing.B, env *benchEnv) (resumeRow, func(int) error) {
	pool := new(vsPool[*Config])
	server := &Config{Identity: env.spServer.Identity, Verify: func(_ context.Context, remote PublicKey) error {
		if !pool.known(remote.key[:]) {
			return errors.New("bench: unknown client identity")
		}
		return nil
	}}
	prepare := func(n int) error {
		return pool.refill(n+1, func() (*Config, []byte, error) {
			id, err := GenerateIdentity()
			if err != nil {
				return nil, nil, err
			}
			pub := id.PublicKey()
			return &Config{Identity: id, Verify: env.spClient.Verify}, pub.key[:], nil
		})
	}
	if err := prepare(1); err != nil {
		b.Fatal(err)
	}
	row := newResumeRow(env, resSPFull)
	row.server = func(raw net.Conn) (net.Conn, error) {
		c := Server(raw, server)
		return c, c.Handshake()
	}
	row.client = func(raw net.Conn) (net.Conn, bool, error) {
		c := Client(raw, pool.next())
		if err := c.Handshake(); err != nil {
			return nil, false, err
		}
		if !c.ConnectionState().PostQuantum {
			return nil, false, errors.New("bench: securepeer session is not post-quantum")
		}
		return c, false, nil
	}
	row.before = forgetProofs
	return row, prepare
}

// vsTLSFirstContactRow is crypto/tls's: every connection's client has a
// new certificate and key (made untimed), which the server accepts.
func vsTLSFirstContactRow(b *testing.B, env *benchEnv) (resumeRow, func(int) error) {
	pool := new(vsPool[*tls.Config])
	server := env.tlsServer.Clone()
	server.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) != 1 {
			return errors.New("bench: expected exactly one peer certificate")
		}
		pub, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
		if !ok || !pool.known(pub) {
			return errors.New("bench: unknown client certificate")
		}
		return nil
	}
	prepare := func(n int) error {
		return pool.refill(n+1, func() (*tls.Config, []byte, error) {
			cert, pub, err := newBenchCert("client")
			if err != nil {
				return nil, nil, err
			}
			cfg := env.tlsClient.Clone()
			cfg.Certificates = []tls.Certificate{cert}
			return cfg, pub, nil
		})
	}
	if err := prepare(1); err != nil {
		b.Fatal(err)
	}
	row := newResumeRow(env, resTLSFull)
	row.server = func(raw net.Conn) (net.Conn, error) {
		c := tls.Server(raw, server)
		return c, c.Handshake()
	}
	row.client = func(raw net.Conn) (net.Conn, bool, error) {
		c := tls.Client(raw, pool.next())
		if err := c.Handshake(); err != nil {
			return nil, false, err
		}
		if st := c.ConnectionState(); st.CurveID != tls.X25519MLKEM768 {
			return nil, false, fmt.Errorf("bench: tls used key exchange %v", st.CurveID)
		}
		return c, false, nil
	}
	return row, prepare
}

// vsStreamSlices are the rows on established connections: 64-byte
// ping-pong round trips (the server echoes) and one-way bulk in 64 KiB
// writes, for tcp, tls and securepeer.
func vsStreamSlices(b *testing.B, env *benchEnv) []vsSlice {
	var slices []vsSlice
	for _, kind := range []string{kindTCP, kindTLS, kindSP} {
		short := map[string]string{kindTCP: "tcp", kindTLS: "tls", kindSP: "sp"}[kind]
		ping := mustBenchPair(b, kind, nil)
		go func() { // echoes until the pair is closed
			buf := make([]byte, vsPingSize)
			for {
				if _, err := io.ReadFull(ping.s, buf); err != nil {
					return
				}
				if _, err := ping.s.Write(buf); err != nil {
					return
				}
			}
		}()
		msg, reply := make([]byte, vsPingSize), make([]byte, vsPingSize)
		slices = append(slices, vsSlice{name: short + "-pingpong", ops: vsPings, run: func(ops int) error {
			for range ops {
				if _, err := ping.c.Write(msg); err != nil {
					return err
				}
				if _, err := io.ReadFull(ping.c, reply); err != nil {
					return err
				}
			}
			return nil
		}})

		bulk := mustBenchPair(b, kind, nil)
		want, got := make(chan int64), make(chan error)
		go func() { // reads what it is told to, until want is closed
			buf := make([]byte, vsBulkSize)
			for n := range want {
				var err error
				for n > 0 && err == nil {
					var m int
					m, err = bulk.s.Read(buf)
					n -= int64(m)
				}
				got <- err
			}
		}()
		b.Cleanup(func() { close(want) })
		data := make([]byte, vsBulkSize)
		rand.Read(data)
		slices = append(slices, vsSlice{name: short + "-bulk", ops: vsBulkBytes / vsBulkSize, run: func(ops int) error {
			want <- int64(ops) * vsBulkSize
			for range ops {
				if _, err := bulk.c.Write(data); err != nil {
					return err
				}
			}
			return <-got
		}})
	}
	return slices
}

// The hashing and symmetric encryption of the handshakes, per side, counted
// from PROTOCOL.md (see "Speed at the floor" in BENCHMARKS.md): HMAC-SHA256
// computations (an HKDF output is one; flynn/noise's MixKey is three, its
// MixKeyAndHash four, Split three), KiB hashed by MixHash, and KiB of
// handshake payload under ChaCha20-Poly1305.
const (
	// Noise XXpsk3: MixKey for e, e, ee, es, se (15), MixKeyAndHash for the
	// PSK (4), Split (3); then the key schedule: two traffic keys of 44
	// bytes (an extraction and two expansions each), one extraction for the
	// channel binding, its expansion, the resumption secret (9).
	vsFullHMACs = 15 + 4 + 3 + 9
	// The protocol name, prologue, both ephemeral keys, both encrypted
	// static keys and the three payloads (payload1 and payload2 carry the
	// ML-KEM key, 1184 bytes, and ciphertext, 1088), with h each time; and
	// the proof cache's hash of a known peer's proof.
	vsFullHashKiB = 3.2
	// payload1, both static keys, payload2, payload3.
	vsFullAEADKiB = 2.6
	// Noise NNpsk0: MixKeyAndHash for the PSK (4), MixKey for e, e, ee
	// (9), Split (3); the finished message (an extraction and an
	// expansion); the key schedule as above (9).
	vsResumedHMACs = 4 + 9 + 3 + 2 + 9
	// The prologue (with the 162-byte ticket), both ephemeral keys and the
	// two short payloads, with h each time.
	vsResumedHashKiB = 0.5
	vsResumedAEADKiB = 0.05

	// crypto/tls 1.3's handshakes, counted the same way from RFC 8446,
	// section 7, per side: the key schedule's extractions and derived
	// secrets (10), the key and IV of four traffic secrets (8), the two
	// finished keys and the two Finished MACs (4); the transcript
	// (ClientHello with both key shares, ServerHello with the ML-KEM
	// ciphertext, both certificates, CertificateVerify and Finished
	// messages); and what is encrypted of the handshake.
	vsTLSFullHMACs = 10 + 8 + 4
	vsTLSHashKiB   = 3.5
	vsTLSAEADKiB   = 1.1
	// A resumption adds the PSK's early secret, the binder key, its
	// finished key and the binder (4), and sends no certificates.
	vsTLSResumedHMACs   = vsTLSFullHMACs + 4
	vsTLSResumedHashKiB = 2.8
	vsTLSResumedAEADKiB = 0.2
)

// vsFloors returns, for round r, each row's floor in ns of CPU per op,
// both ends.
func vsFloors(c vsCosts, r int) map[string]float64 {
	at := func(name string) float64 { return c.cpu[name][r] }
	x := at("x25519-keygen")
	dh := at("x25519-dh")
	kem := at("mlkem768-keygen") + at("mlkem768-encaps") + at("mlkem768-decaps")
	sym := func(hmacs, hashKiB, aeadKiB float64) float64 {
		return 2 * (hmacs*at("hmac-sha256") + hashKiB*at("sha256-1KiB") + aeadKiB*at("chacha20poly1305-1KiB"))
	}
	// Three flights more than the bare TCP connection's one (the byte):
	// the initiator's, the responder's and the initiator's again, 1.5 round
	// trips; and the byte's record, sealed and opened.
	conn := at("tcp-conn") + 1.5*at("tcp-pingpong") + at("aes256gcm-seal-64B") + at("aes256gcm-open-64B")
	full := conn + 2*x + 6*dh + kem + sym(vsFullHMACs, vsFullHashKiB, vsFullAEADKiB)
	resumed := conn + 2*x + 2*dh + sym(vsResumedHMACs, vsResumedHashKiB, vsResumedAEADKiB) +
		2*at("xchacha20poly1305-ticket") + at("aes256gcm-seal-64B") + at("aes256gcm-open-64B")
	// What the key generations would cost by fixed-base multiplication,
	// which needs the DH outside crypto/ecdh (BENCHMARKS.md).
	fixed := 2 * (at("x25519-fixed-base") - x)
	// crypto/tls's own floors, by the same rules, for the comparison of
	// how close each side comes to its floor: X25519MLKEM768 costs one
	// X25519 key generation and one DH a side and the same ML-KEM-768; a
	// full handshake signs and verifies each side's CertificateVerify
	// (the certificates are pinned by key, so no chain is verified), a
	// resumed one decrypts the ticket (an AEAD over about as much as
	// securepeer's ticket) and signs nothing. A new client certificate
	// costs nothing more.
	tlsFull := conn + 2*x + 2*dh + kem + 2*(at("ed25519-sign")+at("ed25519-verify")) +
		sym(vsTLSFullHMACs, vsTLSHashKiB, vsTLSAEADKiB)
	tlsResumed := conn + 2*x + 2*dh + kem + at("xchacha20poly1305-ticket") +
		sym(vsTLSResumedHMACs, vsTLSResumedHashKiB, vsTLSResumedAEADKiB)
	return map[string]float64{
		"tls-full":              tlsFull,
		"tls-first":             tlsFull,
		"tls-resumed":           tlsResumed,
		"sp-full-fixed-base":    full + fixed,
		"sp-resumed-fixed-base": resumed + fixed,
		"sp-full":               full,
		"sp-first":              full + 2*at("ed25519-verify"),
		"sp-resumed":            resumed,
		"sp-pingpong":           at("tcp-pingpong") + 2*(at("aes256gcm-seal-64B")+at("aes256gcm-open-64B")),
		"sp-bulk":               at("tcp-bulk") + at("aes256gcm-seal-64KiB") + at("aes256gcm-open-64KiB"),
	}
}

// vsRows are issue 20's rows: securepeer's slice, crypto/tls's, and the
// issue's target for the speed ratio (crypto/tls's cost over securepeer's).
var vsRows = []struct {
	title, sp, tls string
	target         float64
}{
	{"full handshake, known peer", "sp-full", "tls-full", 1.3},
	{"first contact (new client identity each time)", "sp-first", "tls-first", 1.2},
	{"resumed / TLS full", "sp-resumed", "tls-full", 2.5},
	{"resumed / TLS resumed", "sp-resumed", "tls-resumed", 2.0},
	{"64-byte ping-pong round trips", "sp-pingpong", "tls-pingpong", 1.25},
	{"bulk, 64 KiB writes", "sp-bulk", "tls-bulk", 1.3},
}

// vsReport logs the table and reports each row's ratios as metrics: every
// figure is the median over the rounds of a per-round figure, so that each
// ratio compares slices run moments apart.
func vsReport(b *testing.B, c vsCosts) {
	rounds := len(c.cpu["sp-full"])
	floors := make([]map[string]float64, rounds)
	for r := range rounds {
		floors[r] = vsFloors(c, r)
	}
	perRound := func(f func(r int) float64) []float64 {
		vs := make([]float64, rounds)
		for r := range vs {
			vs[r] = f(r)
		}
		return vs
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%d rounds; medians over rounds, [min..max] of the per-round values\n", rounds)
	fmt.Fprintf(&sb, "| row | securepeer CPU µs/op | floor µs/op | measured / floor | crypto/tls CPU µs/op | its floor µs/op | its measured / floor | ratio of floors | ratio vs TLS, CPU | ratio vs TLS, wall | target |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range vsRows {
		cpuRatio := perRound(func(r int) float64 { return c.cpu[row.tls][r] / c.cpu[row.sp][r] })
		wallRatio := perRound(func(r int) float64 { return c.wall[row.tls][r] / c.wall[row.sp][r] })
		toFloor := perRound(func(r int) float64 { return c.cpu[row.sp][r] / floors[r][row.sp] })
		floor := perRound(func(r int) float64 { return floors[r][row.sp] })
		tlsFloor, tlsToFloor, floorRatio := "–", "–", "–"
		if _, ok := floors[0][row.tls]; ok {
			tlsFloor = fmt.Sprintf("%.1f", median(perRound(func(r int) float64 { return floors[r][row.tls] }))/1e3)
			tlsToFloor = vsRange(perRound(func(r int) float64 { return c.cpu[row.tls][r] / floors[r][row.tls] }))
			floorRatio = vsRange(perRound(func(r int) float64 { return floors[r][row.tls] / floors[r][row.sp] }))
		}
		fmt.Fprintf(&sb, "| %s | %.1f | %.1f | %s | %.1f | %s | %s | %s | %s | %s | ≥ %.2f |\n", row.title,
			median(c.cpu[row.sp])/1e3, median(floor)/1e3, vsRange(toFloor),
			median(c.cpu[row.tls])/1e3, tlsFloor, tlsToFloor, floorRatio,
			vsRange(cpuRatio), vsRange(wallRatio), row.target)
		unit := strings.ReplaceAll(strings.SplitN(row.title, ",", 2)[0], " ", "-")
		unit = strings.ReplaceAll(unit, "/", "per")
		b.ReportMetric(median(wallRatio), unit+"-x-tls")
		b.ReportMetric(median(toFloor), unit+"-x-floor")
	}
	for _, name := range []string{"sp-full", "sp-resumed"} {
		fmt.Fprintf(&sb, "%s: floor %.1f µs with crypto/ecdh's key generation, %.1f µs with fixed-base key generation\n", name,
			median(perRound(func(r int) float64 { return floors[r][name] }))/1e3,
			median(perRound(func(r int) float64 { return floors[r][name+"-fixed-base"] }))/1e3)
	}
	fmt.Fprintf(&sb, "\nEvery slice, µs per op, median over rounds [min..max]:\n| slice | CPU | wall |\n|---|---|---|\n")
	names := make([]string, 0, len(c.cpu))
	for name := range c.cpu {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(&sb, "| %s | %s | %s |\n", name, vsRangeScaled(c.cpu[name], 1e-3), vsRangeScaled(c.wall[name], 1e-3))
	}
	vsPrint(b, sb.String())
}

// vsPrint writes a table to standard output, where go test passes it on
// whole (the testing package keeps only the first lines of a benchmark's
// log). The first call of a benchmark, with b.N = 1, prints nothing.
func vsPrint(b *testing.B, s string) {
	if b.N > 1 {
		fmt.Printf("BenchmarkVsTLS, %d rounds:%s\n", b.N, s)
	}
}

func vsRange(vs []float64) string { return vsRangeScaled(vs, 1) }

func vsRangeScaled(vs []float64, scale float64) string {
	lo, hi := vs[0], vs[0]
	for _, v := range vs {
		lo, hi = min(lo, v), max(hi, v)
	}
	f := "%.2f [%.2f..%.2f]"
	if scale != 1 {
		f = "%.1f [%.1f..%.1f]"
	}
	return fmt.Sprintf(f, median(vs)*scale, lo*scale, hi*scale)
}

// vsReportMemory measures the last row, heap and stack per idle server
// endpoint with a goroutine blocked in Read, after one byte each way
// ("used") and after 64 KiB each way ("warm": crypto/tls keeps an input
// buffer the size of the largest record it read). The floor is the bare
// TCP endpoint's figure plus the two record ciphers' state.
func vsReportMemory(b *testing.B, env *benchEnv) {
	const pairs = 300
	aeadSize := vsAEADSize(b)
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nHeap and stack per idle server endpoint, goroutine blocked in Read, B (minus the TCP endpoint's, in brackets):\n| exchange | tcp | crypto/tls | securepeer | securepeer / tls | floor (tcp + 2 × %d B of AES-256-GCM state) | measured / floor |\n|---|---|---|---|---|---|---|\n", aeadSize)
	for _, warm := range []int{1, vsBulkSize} {
		m := map[string]float64{}
		for _, kind := range []string{kindTCP, kindTLS, kindSP} {
			m[kind] = vsIdleEndpoint(b, env, kind, pairs, warm)
		}
		floor := m[kindTCP] + 2*float64(aeadSize)
		fmt.Fprintf(&sb, "| %d B each way | %.0f | %.0f (%.0f) | %.0f (%.0f) | %.2f (%.2f) | %.0f | %.2f |\n", warm,
			m[kindTCP], m[kindTLS], m[kindTLS]-m[kindTCP], m[kindSP], m[kindSP]-m[kindTCP],
			m[kindSP]/m[kindTLS], (m[kindSP]-m[kindTCP])/(m[kindTLS]-m[kindTCP]), floor, m[kindSP]/floor)
		if warm > 1 {
			b.ReportMetric((m[kindSP]-m[kindTCP])/(m[kindTLS]-m[kindTCP]), "idle-heap-x-tls")
			b.ReportMetric(m[kindSP]/floor, "idle-heap-x-floor")
		}
	}
	vsPrint(b, sb.String())
}

// vsAEADSize is the heap one record cipher holds (AES-256-GCM).
func vsAEADSize(b *testing.B) int64 {
	const n = 1000
	keep := make([]any, n)
	before := liveHeap()
	for i := range keep {
		a, err := AES256GCM.newAEAD(make([]byte, 32))
		if err != nil {
			b.Fatal(err)
		}
		keep[i] = a
	}
	after := liveHeap()
	runtime.KeepAlive(keep)
	return (after - before) / n
}

// vsIdleEndpoint returns the heap and stack per server endpoint of kind as
// a server holds it: warm bytes sent each way, then a goroutine blocked in
// Read. As BenchmarkIdleMemory: both endpoints' heap halved, plus the
// reader's share.
func vsIdleEndpoint(b *testing.B, env *benchEnv, kind string, n, warm int) float64 {
	ln := benchListen(b)
	before := liveHeap()
	ps := make([]benchPair, 0, n)
	defer func() {
		for _, p := range ps {
			p.Close()
		}
	}()
	wbuf, rbuf := make([]byte, warm), make([]byte, warm)
	for range n {
		p, err := newBenchPair(env, ln, kind, nil)
		if err != nil {
			b.Fatal(err)
		}
		ps = append(ps, p)
		for _, dir := range [][2]net.Conn{{p.c, p.s}, {p.s, p.c}} {
			wrote := make(chan error, 1)
			go func() {
				_, err := dir[0].Write(wbuf)
				wrote <- err
			}()
			if _, err := io.ReadFull(dir[1], rbuf); err != nil {
				b.Fatal(err)
			}
			if err := <-wrote; err != nil {
				b.Fatal(err)
			}
		}
	}
	used := liveHeap() - before
	beforeReaders := liveHeapAndStacks()
	var readers, started sync.WaitGroup
	for _, p := range ps {
		readers.Add(1)
		started.Add(1)
		go func() {
			defer readers.Done()
			var one [1]byte
			started.Done()
			p.s.Read(one[:])
		}()
	}
	started.Wait()
	time.Sleep(50 * time.Millisecond) // for every reader to park in Read
	blocked := liveHeapAndStacks() - beforeReaders
	runtime.KeepAlive(ps)
	for _, p := range ps {
		p.Close()
	}
	readers.Wait()
	ps = nil
	return float64(used)/float64(2*n) + float64(blocked)/float64(n)
}
