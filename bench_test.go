package securepeer

// Benchmarks against crypto/tls 1.3 and raw TCP, all over loopback TCP, run
// side by side so that one command gives comparable numbers (BENCHMARKS.md
// records a run and the command). They run only with -bench:
//
//	go test -run '^$' -bench . -benchtime 1s -count 3
//
// Each family ends with a "ratios" sub-benchmark that reports securepeer's
// result divided by crypto/tls's (and raw TCP's) from the runs just made
// (medians, with -count), so the ratios always compare numbers from the same
// run. Run a whole family, not a single sub-benchmark, to get them. Loopback
// numbers swing by 20% or more from run to run, and far more on a machine
// that is doing anything else: run on an otherwise idle machine.
//
// The crypto/tls side is what a Go developer would write to get what
// securepeer gives: TLS 1.3, mutual authentication with self-signed Ed25519
// certificates pinned by public key in VerifyConnection (InsecureSkipVerify
// on the client, RequireAnyClientCert on the server), default key exchange
// preferences, which pick the hybrid X25519MLKEM768 (checked on every
// handshake), default session tickets.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// The kinds of connection compared.
const (
	kindTCP        = "tcp"        // the loopback TCP connection itself
	kindTLS        = "tls"        // crypto/tls 1.3, pinned Ed25519 certificates, X25519MLKEM768
	kindSP         = "securepeer" // securepeer defaults: hybrid ML-KEM-768, AES-256-GCM here
	kindTLSClassic = "tls-classical"
	kindSPClassic  = "securepeer-classical" // DisablePostQuantum on both sides
)

// benchEnv holds the identities and configurations every benchmark shares.
type benchEnv struct {
	tlsClient, tlsServer               *tls.Config
	tlsClientClassic, tlsServerClassic *tls.Config
	spClient, spServer                 *Config
	spClientClassic, spServerClassic   *Config
}

var (
	benchEnvOnce sync.Once
	benchEnvVal  *benchEnv
	benchEnvErr  error
)

func getBenchEnv(tb testing.TB) *benchEnv {
	tb.Helper()
	benchEnvOnce.Do(func() { benchEnvVal, benchEnvErr = newBenchEnv() })
	if benchEnvErr != nil {
		tb.Fatal(benchEnvErr)
	}
	return benchEnvVal
}

func newBenchEnv() (*benchEnv, error) {
	env := new(benchEnv)

	clientCert, clientPub, err := newBenchCert("client")
	if err != nil {
		return nil, err
	}
	serverCert, serverPub, err := newBenchCert("server")
	if err != nil {
		return nil, err
	}
	env.tlsClient = &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{clientCert},
		InsecureSkipVerify: true, // the server's key is pinned in VerifyConnection
		VerifyConnection:   pinTLSKey(serverPub),
	}
	env.tlsServer = &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{serverCert},
		ClientAuth:       tls.RequireAnyClientCert, // the client's key is pinned in VerifyConnection
		VerifyConnection: pinTLSKey(clientPub),
	}
	env.tlsClientClassic = env.tlsClient.Clone()
	env.tlsClientClassic.CurvePreferences = []tls.CurveID{tls.X25519}
	env.tlsServerClassic = env.tlsServer.Clone()
	env.tlsServerClassic.CurvePreferences = []tls.CurveID{tls.X25519}

	clientID, err := GenerateIdentity()
	if err != nil {
		return nil, err
	}
	serverID, err := GenerateIdentity()
	if err != nil {
		return nil, err
	}
	env.spClient = &Config{Identity: clientID, Verify: pinKey(serverID.PublicKey())}
	env.spServer = &Config{Identity: serverID, Verify: pinKey(clientID.PublicKey())}
	env.spClientClassic = &Config{Identity: clientID, Verify: pinKey(serverID.PublicKey()), DisablePostQuantum: true}
	env.spServerClassic = &Config{Identity: serverID, Verify: pinKey(clientID.PublicKey()), DisablePostQuantum: true}
	return env, nil
}

// newBenchCert returns a self-signed Ed25519 certificate with its parsed
// leaf set, as tls.X509KeyPair would return it.
func newBenchCert(name string) (tls.Certificate, ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}, pub, nil
}

// pinTLSKey accepts exactly one peer certificate whose key is want.
func pinTLSKey(want ed25519.PublicKey) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) != 1 {
			return errors.New("bench: expected exactly one peer certificate")
		}
		got, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
		if !ok || subtle.ConstantTimeCompare(got, want) != 1 {
			return errors.New("bench: peer key does not match the pin")
		}
		return nil
	}
}

// pinKey is a Config.Verify that accepts exactly want.
func pinKey(want PublicKey) func(ctx context.Context, remote PublicKey) error {
	return func(_ context.Context, remote PublicKey) error {
		if !remote.Equal(want) {
			return errors.New("bench: peer key does not match the pin")
		}
		return nil
	}
}

// benchListen opens a loopback listener closed when tb ends.
func benchListen(tb testing.TB) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	return ln
}

// dialLoopback returns both ends of a new TCP connection to ln.
func dialLoopback(ln net.Listener) (client, server net.Conn, err error) {
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		ch <- accepted{c, err}
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	a := <-ch
	if err != nil || a.err != nil {
		if client != nil {
			client.Close()
		}
		if a.c != nil {
			a.c.Close()
		}
		return nil, nil, errors.Join(err, a.err)
	}
	return client, a.c, nil
}

// clientHandshake wraps raw as the client side of kind and completes the
// handshake.
func (env *benchEnv) clientHandshake(kind string, raw net.Conn) (net.Conn, error) {
	switch kind {
	case kindTCP:
		return raw, nil
	case kindTLS, kindTLSClassic:
		cfg, want := env.tlsClient, tls.X25519MLKEM768
		if kind == kindTLSClassic {
			cfg, want = env.tlsClientClassic, tls.X25519
		}
		c := tls.Client(raw, cfg)
		if err := c.Handshake(); err != nil {
			return nil, err
		}
		if st := c.ConnectionState(); st.Version != tls.VersionTLS13 || st.CurveID != want {
			return nil, fmt.Errorf("bench: tls used version %#x, key exchange %v; want TLS 1.3 with %v", st.Version, st.CurveID, want)
		}
		return c, nil
	case kindSP, kindSPClassic:
		cfg := env.spClient
		if kind == kindSPClassic {
			cfg = env.spClientClassic
		}
		c := Client(raw, cfg)
		if err := c.Handshake(); err != nil {
			return nil, err
		}
		if st := c.ConnectionState(); st.PostQuantum != (kind == kindSP) {
			return nil, fmt.Errorf("bench: securepeer PostQuantum = %v for %s", st.PostQuantum, kind)
		}
		return c, nil
	}
	return nil, fmt.Errorf("bench: unknown kind %q", kind)
}

// serverHandshake wraps raw as the server side of kind and completes the
// handshake.
func (env *benchEnv) serverHandshake(kind string, raw net.Conn) (net.Conn, error) {
	switch kind {
	case kindTCP:
		return raw, nil
	case kindTLS, kindTLSClassic:
		cfg := env.tlsServer
		if kind == kindTLSClassic {
			cfg = env.tlsServerClassic
		}
		c := tls.Server(raw, cfg)
		if err := c.Handshake(); err != nil {
			return nil, err
		}
		return c, nil
	case kindSP, kindSPClassic:
		cfg := env.spServer
		if kind == kindSPClassic {
			cfg = env.spServerClassic
		}
		c := Server(raw, cfg)
		if err := c.Handshake(); err != nil {
			return nil, err
		}
		return c, nil
	}
	return nil, fmt.Errorf("bench: unknown kind %q", kind)
}

// A benchPair is both ends of one connection of some kind, handshake done.
type benchPair struct {
	c, s       net.Conn // client and server ends
	cRaw, sRaw net.Conn // their TCP connections
}

func (p benchPair) Close() {
	p.c.Close()
	p.s.Close()
	p.cRaw.Close()
	p.sRaw.Close()
}

// newBenchPair opens a connection of kind on ln. If wrap is not nil, the
// client side runs over wrap(its TCP connection).
func newBenchPair(env *benchEnv, ln net.Listener, kind string, wrap func(net.Conn) net.Conn) (benchPair, error) {
	cRaw, sRaw, err := dialLoopback(ln)
	if err != nil {
		return benchPair{}, err
	}
	cUnder := cRaw
	if wrap != nil {
		cUnder = wrap(cRaw)
	}
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := env.serverHandshake(kind, sRaw)
		ch <- result{s, err}
	}()
	c, cerr := env.clientHandshake(kind, cUnder)
	if cerr != nil {
		cRaw.Close() // unblocks the server side
	}
	r := <-ch
	if cerr != nil || r.err != nil {
		cRaw.Close()
		sRaw.Close()
		return benchPair{}, fmt.Errorf("bench: %s handshake: client: %v, server: %v", kind, cerr, r.err)
	}
	return benchPair{c: c, s: r.c, cRaw: cRaw, sRaw: sRaw}, nil
}

func mustBenchPair(b *testing.B, kind string, wrap func(net.Conn) net.Conn) benchPair {
	b.Helper()
	p, err := newBenchPair(getBenchEnv(b), benchListen(b), kind, wrap)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Close)
	return p
}

// benchResults keeps each sub-benchmark's results, by name, for the
// "ratios" sub-benchmarks: with -count n, every sub-benchmark runs n times
// in a row, and a ratio compares the medians. Only the final result of each
// run counts (the testing package calls a benchmark with growing b.N; the
// last call is the reported one). Sub-benchmarks run one at a time; the
// mutex only keeps the race detector quiet.
var benchResults = struct {
	sync.Mutex
	m    map[string][]float64
	last map[string]*testing.B
}{m: make(map[string][]float64), last: make(map[string]*testing.B)}

// recordResult records v as b's result under name, replacing what an
// earlier call with the same b (a smaller b.N) recorded.
func recordResult(b *testing.B, name string, v float64) {
	benchResults.Lock()
	defer benchResults.Unlock()
	if benchResults.last[name] == b {
		vs := benchResults.m[name]
		vs[len(vs)-1] = v
		return
	}
	benchResults.last[name] = b
	benchResults.m[name] = append(benchResults.m[name], v)
}

func median(vs []float64) float64 {
	vs = slices.Clone(vs)
	slices.Sort(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2]
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
}

// reportRatios runs a "ratios" sub-benchmark reporting, for each pair, the
// median of the results recorded as num divided by the median of those
// recorded as den, in the unit "num/den". It reports nothing for a pair
// whose results did not both run.
func reportRatios(b *testing.B, pairs ...[2]string) {
	b.Run("ratios", func(b *testing.B) {
		benchResults.Lock()
		defer benchResults.Unlock()
		for _, p := range pairs {
			nums, dens := benchResults.m[p[0]], benchResults.m[p[1]]
			if len(nums) == 0 || len(dens) == 0 {
				continue
			}
			num, den := median(nums), median(dens)
			if den == 0 {
				continue
			}
			b.ReportMetric(num/den, ratioUnit(p[0])+"/"+ratioUnit(p[1]))
		}
		b.ReportMetric(0, "ns/op")
	})
}

// ratioUnit is the kind in a result name "family/kind". Result names start
// with their family, so that families never mix.
func ratioUnit(name string) string {
	for i := len(name) - 1; i >= 0; i-- {
		if name[i] == '/' {
			return name[i+1:]
		}
	}
	return name
}

// BenchmarkThroughput measures bulk transfer one way: the client writes
// buffers of the given size in a loop, the server reads into a buffer of the
// same size and discards. The time includes draining the last byte.
func BenchmarkThroughput(b *testing.B) {
	for _, size := range []int{1 << 20, 64 << 10} {
		name := fmt.Sprintf("%dKiB", size>>10)
		b.Run(name, func(b *testing.B) {
			for _, kind := range []string{kindTCP, kindTLS, kindSP} {
				b.Run(kind, func(b *testing.B) { benchThroughput(b, kind, size, name+"/"+kind) })
			}
			reportRatios(b,
				[2]string{name + "/" + kindSP, name + "/" + kindTLS},
				[2]string{name + "/" + kindSP, name + "/" + kindTCP},
				[2]string{name + "/" + kindTLS, name + "/" + kindTCP})
		})
	}
}

func benchThroughput(b *testing.B, kind string, size int, result string) {
	p := mustBenchPair(b, kind, nil)
	total := int64(b.N) * int64(size)
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, size)
		var n int64
		for n < total {
			m, err := p.s.Read(buf)
			n += int64(m)
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	buf := make([]byte, size)
	rand.Read(buf)

	b.SetBytes(int64(size))
	b.ResetTimer()
	for range b.N {
		if _, err := p.c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	recordResult(b, result, float64(total)/1e6/b.Elapsed().Seconds())
}

// BenchmarkHandshake measures full handshakes, one at a time, each on a new
// TCP connection: dial, both sides' handshakes (the server's in an accepting
// goroutine), close. It reports handshakes/s; "-classical" are X25519 only.
func BenchmarkHandshake(b *testing.B) {
	for _, kind := range []string{kindTCP, kindTLS, kindSP, kindTLSClassic, kindSPClassic} {
		b.Run(kind, func(b *testing.B) { benchHandshake(b, kind) })
	}
	reportRatios(b,
		[2]string{"handshake/" + kindSP, "handshake/" + kindTLS},
		[2]string{"handshake/" + kindSPClassic, "handshake/" + kindTLSClassic},
		[2]string{"handshake/" + kindSPClassic, "handshake/" + kindSP})
}

func benchHandshake(b *testing.B, kind string) {
	env := getBenchEnv(b)
	ln := benchListen(b)
	type result struct {
		c   net.Conn
		err error
	}
	results := make(chan result, 1)
	go func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return // the listener was closed
			}
			c, err := env.serverHandshake(kind, raw)
			if err != nil {
				raw.Close()
			}
			results <- result{c, err}
		}
	}()
	addr := ln.Addr().String()

	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		c, err := env.clientHandshake(kind, raw)
		if err != nil {
			raw.Close()
			b.Fatal(err)
		}
		r := <-results
		if r.err != nil {
			b.Fatal(r.err)
		}
		c.Close()
		r.c.Close()
	}
	b.StopTimer()
	rate := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "handshakes/s")
	recordResult(b, "handshake/"+kind, rate)
}

// The rows of BenchmarkResumption.
const (
	resTCP          = kindTCP                    // the TCP connection and the byte alone
	resTLSFull      = "tls-full"                 // kindTLS: no session cache
	resTLSResumed   = "tls-resumed"              // kindTLS with a ClientSessionCache: every connection resumes
	resSPFirst      = "securepeer-first-contact" // kindSP, and neither side has seen the other's identity proof
	resSPFull       = "securepeer-full"          // kindSP: no session cache, as BenchmarkHandshake
	resSPFullAsking = "securepeer-full-asking"   // the client asks for tickets, the server has them disabled
	resSPFullTicket = "securepeer-full-ticket"   // the server gives a ticket every time; the client never offers one
	resSPResumed    = "securepeer-resumed"       // a ClientSessionCache: every connection resumes
)

// BenchmarkResumption measures session resumption (issue 12) against full
// handshakes, one connection at a time, each a new TCP connection: dial,
// both sides' handshakes (the server's in an accepting goroutine), the
// server writes one byte and the client reads it, close. The byte is what
// makes resumption work from one connection to the next: securepeer and
// crypto/tls 1.3 both send the session ticket after the handshake, and the
// client takes it when it reads. Every row pays for that byte, so the rows
// compare; the tcp row is that byte on a bare TCP connection.
//
// The "-resumed" rows check ConnectionState().DidResume on every measured
// connection (after two connections of warm-up, the first of which is a
// full handshake that gets the first ticket). Besides handshakes/s, each
// row reports cpu-us/op: the process's user and system CPU time
// (getrusage) per connection, both ends and the kernel's TCP work
// included, which on a machine whose two cores run both ends is a fairer
// measure of cost than the wall clock. The "-cpu" ratios compare
// connections per CPU second.
//
// On crypto/tls resumption with mutual authentication: the server keeps
// the client's certificate in the ticket and requires it on resumption
// (RequireAnyClientCert), and both sides still call VerifyConnection, with
// the peer certificates from the session, so the pins are checked on every
// resumed connection, as securepeer calls Verify. No certificate is sent
// or signature made.
func BenchmarkResumption(b *testing.B) {
	for _, kind := range []string{resTCP, resTLSFull, resTLSResumed, resSPFirst, resSPFull, resSPFullAsking, resSPFullTicket, resSPResumed} {
		b.Run(kind, func(b *testing.B) { benchResumption(b, kind) })
	}
	var pairs [][2]string
	for _, p := range [][2]string{
		{resSPResumed, resTLSFull},    // issue 12's target: ≥ 2.5
		{resSPResumed, resTLSResumed}, // issue 12's target: ≥ 1.5
		{resTLSResumed, resTLSFull},
		{resSPResumed, resSPFull},
		{resSPFull, resTLSFull},
		{resSPFirst, resTLSFull},
		{resSPFullAsking, resSPFull},
		{resSPFullTicket, resSPFull},
	} {
		pairs = append(pairs, [2]string{"resumption/" + p[0], "resumption/" + p[1]})
	}
	pairs = append(pairs,
		[2]string{"resumption/" + resSPResumed + "-cpu", "resumption/" + resTLSFull + "-cpu"},
		[2]string{"resumption/" + resSPResumed + "-cpu", "resumption/" + resTLSResumed + "-cpu"},
		[2]string{"resumption/" + resSPFull + "-cpu", "resumption/" + resTLSFull + "-cpu"})
	reportRatios(b, pairs...)
}

// A resumeRow is one row's two sides. client completes the handshake and
// reports whether it resumed.
type resumeRow struct {
	client  func(raw net.Conn) (c net.Conn, resumed bool, err error)
	server  func(raw net.Conn) (net.Conn, error)
	resumes bool   // every measured connection must resume
	before  func() // if not nil, called before each connection
}

// newResumeRow returns kind's sides, with session caches and servers of
// its own, so that nothing carries over from another row or from an
// earlier call with a smaller b.N.
func newResumeRow(env *benchEnv, kind string) resumeRow {
	tlsClient := func(cfg *tls.Config) func(net.Conn) (net.Conn, bool, error) {
		return func(raw net.Conn) (net.Conn, bool, error) {
			c := tls.Client(raw, cfg)
			if err := c.Handshake(); err != nil {
				return nil, false, err
			}
			st := c.ConnectionState()
			if st.Version != tls.VersionTLS13 || st.CurveID != tls.X25519MLKEM768 {
				return nil, false, fmt.Errorf("bench: tls used version %#x, key exchange %v; want TLS 1.3 with X25519MLKEM768", st.Version, st.CurveID)
			}
			return c, st.DidResume, nil
		}
	}
	tlsServer := func(cfg *tls.Config) func(net.Conn) (net.Conn, error) {
		return func(raw net.Conn) (net.Conn, error) {
			c := tls.Server(raw, cfg)
			return c, c.Handshake()
		}
	}
	spClient := func(cfg *Config) func(net.Conn) (net.Conn, bool, error) {
		return func(raw net.Conn) (net.Conn, bool, error) {
			c := Client(raw, cfg)
			if err := c.Handshake(); err != nil {
				return nil, false, err
			}
			st := c.ConnectionState()
			if !st.PostQuantum {
				return nil, false, errors.New("bench: securepeer session is not post-quantum")
			}
			return c, st.DidResume, nil
		}
	}
	spServer := func(cfg *Config) func(net.Conn) (net.Conn, error) {
		return func(raw net.Conn) (net.Conn, error) {
			c := Server(raw, cfg)
			return c, c.Handshake()
		}
	}
	// Fresh Configs (not copies: a Config holds its ticket keys).
	newSPServer := func() *Config {
		return &Config{Identity: env.spServer.Identity, Verify: env.spServer.Verify}
	}
	newSPClient := func(cache ClientSessionCache) *Config {
		return &Config{Identity: env.spClient.Identity, Verify: env.spClient.Verify, ClientSessionCache: cache}
	}
	switch kind {
	case resTCP:
		return resumeRow{
			client: func(raw net.Conn) (net.Conn, bool, error) { return raw, false, nil },
			server: func(raw net.Conn) (net.Conn, error) { return raw, nil },
		}
	case resTLSFull:
		return resumeRow{client: tlsClient(env.tlsClient), server: tlsServer(env.tlsServer.Clone())}
	case resTLSResumed:
		cfg := env.tlsClient.Clone()
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(0)
		return resumeRow{client: tlsClient(cfg), server: tlsServer(env.tlsServer.Clone()), resumes: true}
	case resSPFirst:
		return resumeRow{client: spClient(newSPClient(nil)), server: spServer(newSPServer()), before: forgetProofs}
	case resSPFull:
		return resumeRow{client: spClient(newSPClient(nil)), server: spServer(newSPServer())}
	case resSPFullAsking:
		srv := newSPServer()
		srv.SessionTicketsDisabled = true
		return resumeRow{client: spClient(newSPClient(NewLRUClientSessionCache(0))), server: spServer(srv)}
	case resSPFullTicket:
		return resumeRow{client: spClient(newSPClient(forgetfulCache{})), server: spServer(newSPServer())}
	case resSPResumed:
		return resumeRow{client: spClient(newSPClient(NewLRUClientSessionCache(0))), server: spServer(newSPServer()), resumes: true}
	}
	panic("bench: unknown resumption row " + kind)
}

// forgetProofs empties the identity-proof cache, so that the next
// handshake verifies both identity proofs as on a first contact.
func forgetProofs() {
	proofs.mu.Lock()
	defer proofs.mu.Unlock()
	clear(proofs.entries)
}

// forgetfulCache is a ClientSessionCache that asks for tickets and drops
// them: every connection is a full handshake in which the server seals a
// ticket and the client takes it, as a first contact between two peers
// that both have resumption on.
type forgetfulCache struct{}

func (forgetfulCache) Take(string) (*ClientSession, bool) { return nil, false }
func (forgetfulCache) Put(_ string, s *ClientSession)     { s.erase() }

func benchResumption(b *testing.B, kind string) {
	connect := newResumeConnector(b, kind)
	b.ReportAllocs()
	cpu := processCPU()
	b.ResetTimer()
	for range b.N {
		if err := connect(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cpu = processCPU() - cpu
	rate := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "handshakes/s")
	recordResult(b, "resumption/"+kind, rate)
	if cpu > 0 {
		b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/op")
		recordResult(b, "resumption/"+kind+"-cpu", float64(b.N)/cpu.Seconds())
	}
}

// newResumeConnector starts kind's server on a new listener, warms it up
// with two connections (the first gets the first ticket), and returns a
// function that makes one connection of kind: dial, handshakes, one byte
// from the server, close. It fails if the connection resumed, or did not,
// against the row's expectation.
func newResumeConnector(b *testing.B, kind string) func() error {
	return newRowConnector(b, kind, newResumeRow(getBenchEnv(b), kind))
}

// newRowConnector is newResumeConnector for a row built elsewhere; kind
// names it in errors.
func newRowConnector(b *testing.B, kind string, row resumeRow) func() error {
	ln := benchListen(b)
	type result struct {
		c   net.Conn
		err error
	}
	results := make(chan result, 1)
	go func() {
		one := []byte{1}
		for {
			raw, err := ln.Accept()
			if err != nil {
				return // the listener was closed
			}
			c, err := row.server(raw)
			if err == nil {
				_, err = c.Write(one)
			}
			if err != nil {
				raw.Close()
			}
			results <- result{c, err}
		}
	}()
	addr := ln.Addr().String()
	connect := func() (resumed bool, err error) {
		if row.before != nil {
			row.before()
		}
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			return false, err
		}
		defer raw.Close()
		c, resumed, err := row.client(raw)
		if err == nil {
			var one [1]byte
			_, err = io.ReadFull(c, one[:])
		}
		if err != nil {
			raw.Close() // unblocks the server side
		}
		r := <-results
		if err != nil || r.err != nil {
			return false, fmt.Errorf("bench: %s: client: %v, server: %v", kind, err, r.err)
		}
		c.Close()
		r.c.Close()
		return resumed, nil
	}
	if _, err := connect(); err != nil {
		b.Fatal(err)
	}
	n := 0
	return func() error {
		n++
		resumed, err := connect()
		if err != nil {
			return err
		}
		if resumed != row.resumes {
			return fmt.Errorf("bench: %s: DidResume = %v on connection %d", kind, resumed, n)
		}
		return nil
	}
}

// BenchmarkResumptionInterleaved runs the main rows of BenchmarkResumption
// in turn, 50 connections each per round (one round per op), in an order
// that rotates from round to round, and reports each row's median rate and
// CPU per connection over the rounds, and the ratios paired by round
// (median of the per-round ratios). On a shared machine whose load changes
// faster than a benchmark run, pairing by round compares rows under the
// same load, which BenchmarkResumption's run-after-run rows do not.
// Use -benchtime Nx: N rounds.
func BenchmarkResumptionInterleaved(b *testing.B) {
	const perRound = 50
	kinds := []string{resTLSFull, resTLSResumed, resSPFull, resSPResumed}
	connects := make([]func() error, len(kinds))
	for i, kind := range kinds {
		connects[i] = newResumeConnector(b, kind)
	}
	rates := make([][]float64, len(kinds)) // by kind, then round
	cpus := make([][]float64, len(kinds))
	b.ResetTimer()
	for round := range b.N {
		for j := range kinds {
			i := (round + j) % len(kinds)
			cpu := processCPU()
			start := time.Now()
			for range perRound {
				if err := connects[i](); err != nil {
					b.Fatal(err)
				}
			}
			rates[i] = append(rates[i], perRound/time.Since(start).Seconds())
			cpus[i] = append(cpus[i], float64((processCPU()-cpu).Microseconds())/perRound)
		}
	}
	b.StopTimer()
	for i, kind := range kinds {
		b.ReportMetric(median(rates[i]), kind+"-handshakes/s")
		if cpus[i][0] > 0 {
			b.ReportMetric(median(cpus[i]), kind+"-cpu-us")
		}
	}
	paired := func(num, den int) float64 {
		rs := make([]float64, len(rates[num]))
		for r := range rs {
			rs[r] = rates[num][r] / rates[den][r]
		}
		return median(rs)
	}
	b.ReportMetric(paired(3, 0), resSPResumed+"/"+resTLSFull)
	b.ReportMetric(paired(3, 1), resSPResumed+"/"+resTLSResumed)
	b.ReportMetric(paired(2, 0), resSPFull+"/"+resTLSFull)
	b.ReportMetric(paired(1, 0), resTLSResumed+"/"+resTLSFull)
	b.ReportMetric(0, "ns/op")
}

// BenchmarkIdleMemory measures the live heap each idle connection holds:
// runtime.GC and HeapAlloc before and after opening b.N connection pairs,
// divided by the 2·b.N endpoints. "B/endpoint" is right after the
// handshake; "B/endpoint-used" after one byte has gone each way, so that
// buffers kept after first use count too. Both include the TCP connection
// (the tcp row). "B/endpoint-blocked" is a server endpoint as the usual
// server loop holds it: used, with one goroutine blocked in Read on it,
// whose stack counts too. Pairs are made in batches to bound open files.
func BenchmarkIdleMemory(b *testing.B) {
	for _, kind := range []string{kindTCP, kindTLS, kindSP} {
		b.Run(kind, func(b *testing.B) { benchIdleMemory(b, kind) })
	}
	reportRatios(b,
		[2]string{"idle/" + kindSP, "idle/" + kindTLS},
		[2]string{"idle/" + kindSP + "-used", "idle/" + kindTLS + "-used"},
		[2]string{"idle/" + kindSP + "-blocked", "idle/" + kindTLS + "-blocked"})
}

func benchIdleMemory(b *testing.B, kind string) {
	const batch = 500
	env := getBenchEnv(b)
	ln := benchListen(b)
	var fresh, used, blocked int64
	for done := 0; done < b.N; {
		n := min(batch, b.N-done)
		done += n
		pairs := make([]benchPair, 0, n)
		before := liveHeap()
		for range n {
			p, err := newBenchPair(env, ln, kind, nil)
			if err != nil {
				b.Fatal(err)
			}
			pairs = append(pairs, p)
		}
		fresh += liveHeap() - before

		var one [1]byte
		for _, p := range pairs {
			if _, err := p.c.Write(one[:]); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(p.s, one[:]); err != nil {
				b.Fatal(err)
			}
			if _, err := p.s.Write(one[:]); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(p.c, one[:]); err != nil {
				b.Fatal(err)
			}
		}
		used += liveHeap() - before

		// The usual server loop: one goroutine per connection, blocked in
		// Read. What that adds, stack included, counts per server endpoint.
		beforeReaders := liveHeapAndStacks()
		var readers, started sync.WaitGroup
		for _, p := range pairs {
			readers.Add(1)
			started.Add(1)
			go func() {
				defer readers.Done()
				var buf [512]byte
				started.Done()
				p.s.Read(buf[:])
			}()
		}
		started.Wait()
		time.Sleep(50 * time.Millisecond) // for every reader to park in Read
		blocked += liveHeapAndStacks() - beforeReaders
		runtime.KeepAlive(pairs)
		for _, p := range pairs {
			p.Close()
		}
		readers.Wait()
	}
	perFresh := float64(fresh) / float64(2*b.N)
	perUsed := float64(used) / float64(2*b.N)
	perBlocked := perUsed + float64(blocked)/float64(b.N)
	b.ReportMetric(perFresh, "B/endpoint")
	b.ReportMetric(perUsed, "B/endpoint-used")
	b.ReportMetric(perBlocked, "B/endpoint-blocked")
	b.ReportMetric(0, "ns/op")
	recordResult(b, "idle/"+kind, perFresh)
	recordResult(b, "idle/"+kind+"-used", perUsed)
	recordResult(b, "idle/"+kind+"-blocked", perBlocked)
}

// liveHeapAndStacks is liveHeap plus the goroutine stacks in use.
func liveHeapAndStacks() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc + ms.StackInuse)
}

// liveHeap returns the live heap after a full collection. Two, so that
// sync.Pool victim caches are emptied as well.
func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// BenchmarkSteadyState measures one 1 KiB Write (or Read) per op on an
// established connection, with allocations.
//
// write: the client writes 1 KiB per op; the server's TCP connection is
// drained by a goroutine reading raw bytes, which allocates nothing, so
// allocs/op are the Write's alone.
//
// read: the server reads 1 KiB per op (one record each) while a goroutine
// writes 1 KiB per Write on the client, over a TCP connection that batches
// those writes into 64 KiB ones so that the writer outpaces the reader and
// ns/op is the Read's. allocs/op count both goroutines, so they bound the
// Read's from above; subtract the write row.
func BenchmarkSteadyState(b *testing.B) {
	for _, kind := range []string{kindTCP, kindTLS, kindSP} {
		b.Run(kind, func(b *testing.B) {
			b.Run("write", func(b *testing.B) { benchSteadyWrite(b, kind) })
			b.Run("read", func(b *testing.B) { benchSteadyRead(b, kind) })
		})
	}
}

const steadyChunk = 1 << 10

func benchSteadyWrite(b *testing.B, kind string) {
	p := mustBenchPair(b, kind, nil)
	go io.Copy(io.Discard, p.sRaw) // ends when the pair is closed
	buf := make([]byte, steadyChunk)
	for range 100 { // warm up pools and buffers
		if _, err := p.c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(steadyChunk)
	b.ReportAllocs()
	m := startMallocs()
	b.ResetTimer()
	for range b.N {
		if _, err := p.c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	m.report(b)
}

func benchSteadyRead(b *testing.B, kind string) {
	var bc *batchConn
	p := mustBenchPair(b, kind, func(c net.Conn) net.Conn {
		bc = &batchConn{Conn: c}
		return bc
	})
	bc.batching = true // the handshake is over; from here only the writer uses bc
	const warmup = 100
	n := warmup + b.N
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, steadyChunk)
		for range n {
			if _, err := p.c.Write(buf); err != nil {
				done <- err
				return
			}
		}
		done <- bc.flush()
	}()
	buf := make([]byte, steadyChunk)
	for range warmup {
		if _, err := io.ReadFull(p.s, buf); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(steadyChunk)
	b.ReportAllocs()
	m := startMallocs()
	b.ResetTimer()
	for range b.N {
		if _, err := io.ReadFull(p.s, buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	m.report(b)
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// mallocCounter reports allocs/op and B/op with fractions, which the
// testing package rounds down to integers: a pool that misses once every
// few thousand records shows as "0 allocs/op" there.
type mallocCounter struct{ mallocs, bytes uint64 }

func startMallocs() mallocCounter {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return mallocCounter{ms.Mallocs, ms.TotalAlloc}
}

func (m mallocCounter) report(b *testing.B) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.Mallocs-m.mallocs)/float64(b.N), "allocs/op")
	b.ReportMetric(float64(ms.TotalAlloc-m.bytes)/float64(b.N), "B/op")
}

// batchConn collects writes, once batching is set, into writes of at least
// 64 KiB to the connection it wraps.
type batchConn struct {
	net.Conn
	batching bool
	buf      []byte
}

func (c *batchConn) Write(p []byte) (int, error) {
	if !c.batching {
		return c.Conn.Write(p)
	}
	c.buf = append(c.buf, p...)
	if len(c.buf) >= 64<<10 {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (c *batchConn) flush() error {
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

// BenchmarkHandshakeParallel measures handshakes/s with the CPUs saturated:
// 4·GOMAXPROCS clients dial, handshake and wait for the server's end of
// stream, while the server runs each handshake in its own goroutine. Where
// BenchmarkHandshake measures latency, this measures the CPU cost of both
// sides together.
func BenchmarkHandshakeParallel(b *testing.B) {
	for _, kind := range []string{kindTLS, kindSP} {
		b.Run(kind, func(b *testing.B) { benchHandshakeParallel(b, kind) })
	}
	reportRatios(b, [2]string{"parallel/" + kindSP, "parallel/" + kindTLS})
}

func benchHandshakeParallel(b *testing.B, kind string) {
	env := getBenchEnv(b)
	ln := benchListen(b)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	go func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return // the listener was closed
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := env.serverHandshake(kind, raw)
				if err != nil {
					raw.Close() // the client sees the error
					return
				}
				c.Close() // the client reads io.EOF: the server is done
			}()
		}
	}()
	addr := ln.Addr().String()

	b.ReportAllocs()
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var one [1]byte
		for pb.Next() {
			raw, err := net.Dial("tcp", addr)
			if err != nil {
				b.Error(err)
				return
			}
			c, err := env.clientHandshake(kind, raw)
			if err != nil {
				raw.Close()
				b.Error(err)
				return
			}
			if _, err := c.Read(one[:]); err != io.EOF {
				b.Errorf("bench: reading the server's end of stream: %v", err)
			}
			c.Close()
		}
	})
	b.StopTimer()
	rate := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "handshakes/s")
	recordResult(b, "parallel/"+kind, rate)
}

// BenchmarkAEAD measures the transport ciphers alone on 64 KiB records, the
// ceiling for securepeer's throughput on one core.
func BenchmarkAEAD(b *testing.B) {
	for _, c := range []Cipher{AES256GCM, ChaCha20Poly1305, AES128GCM} {
		b.Run(c.String(), func(b *testing.B) {
			key := make([]byte, c.keySize())
			aead, err := c.newAEAD(key)
			if err != nil {
				b.Fatal(err)
			}
			nonce := make([]byte, aead.NonceSize())
			plain := make([]byte, 64<<10)
			sealed := aead.Seal(nil, nonce, plain, nil)
			b.Run("seal", func(b *testing.B) {
				b.SetBytes(int64(len(plain)))
				buf := make([]byte, 0, len(sealed))
				for range b.N {
					aead.Seal(buf, nonce, plain, nil)
				}
			})
			b.Run("open", func(b *testing.B) {
				b.SetBytes(int64(len(plain)))
				buf := make([]byte, 0, len(plain))
				for range b.N {
					if _, err := aead.Open(buf, nonce, sealed, nil); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
