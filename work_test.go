package securepeer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/securepeer/securepeer/internal/wire"
)

// workConn is an admittedConn over a TCP connection with its first flight
// all read, whose listener demands bits of work and records what the
// handshake reports.
type workConn struct {
	cpuProbeConn
	bits   int
	worked atomic.Int64
	asked  atomic.Bool
}

func (c *workConn) WorkDemand() int { c.asked.Store(true); return c.bits }
func (c *workConn) Worked(bits int) { c.worked.Store(int64(bits)) }

// rewriteConn changes what its side writes: rewrite sees each write.
type rewriteConn struct {
	net.Conn
	rewrite func(b []byte) []byte
}

func (c *rewriteConn) Write(b []byte) (int, error) {
	if _, err := c.Conn.Write(c.rewrite(bytes.Clone(b))); err != nil {
		return 0, err
	}
	return len(b), nil
}

// TestWorkDemand runs handshakes whose responder's listener demands work
// ("Work under load"): an initiator that listed the work signal answers,
// and the responder queues it as having proved the work; a wrong answer,
// an initiator that did not list the signal, and a listener that demands
// nothing are each handled as PROTOCOL.md says.
func TestWorkDemand(t *testing.T) {
	checkNoLeaks(t)
	// The initiator sends the least nonce that proves the work, so the
	// one before it proves less (unless it is 0, 1 in 2^16: then the
	// largest, which proves 16 bits 1 in 2^16 times).
	wrongNonce := func(b []byte) []byte {
		if len(b) == 2+wire.WorkNonceSize && b[0] == 0 && b[1] == wire.WorkNonceSize {
			binary.BigEndian.PutUint64(b[2:], binary.BigEndian.Uint64(b[2:])-1)
		}
		return b
	}
	for _, tc := range []struct {
		name       string
		demand     int
		noSignal   bool
		clientConn func(net.Conn) net.Conn
		worked     int
		serverErr  string // "" for success
	}{
		{"demanded and answered", 8, false, nil, 8, ""},
		{"demanded, 16 bits", 16, false, nil, 16, ""},
		{"no demand", 0, false, nil, 0, ""},
		{"initiator without the signal", 8, true, nil, 0, ""},
		{"a wrong answer", 16, false, func(c net.Conn) net.Conn { return &rewriteConn{c, wrongNonce} }, 0, "does not prove 16 bits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.noSignal {
				// 16 identifiers leave no room for a signal.
				testOnlyCipherList = func(_ *Config, ids []uint16) []uint16 {
					for len(ids) < wire.MaxCiphers {
						ids = append(ids, 0x7f00+uint16(len(ids)))
					}
					return ids
				}
				defer func() { testOnlyCipherList = nil }()
			}
			a, b := tcpPair(t)
			wc := &workConn{cpuProbeConn: cpuProbeConn{Conn: b, acquire: func() {}}, bits: tc.demand}
			server := Server(wc, &Config{Identity: testIdentity(t, 2)})
			srv := run(func() error {
				err := server.Handshake()
				b.Close()
				return err
			})
			var ca net.Conn = a
			if tc.clientConn != nil {
				ca = tc.clientConn(a)
			}
			cerr := Client(ca, &Config{Identity: testIdentity(t, 1)}).Handshake()
			a.Close()
			serr := wait(t, srv)
			if tc.serverErr == "" {
				if cerr != nil || serr != nil {
					t.Fatalf("client %v, server %v", cerr, serr)
				}
			} else if serr == nil || !strings.Contains(serr.Error(), tc.serverErr) {
				t.Fatalf("server %v, want %q", serr, tc.serverErr)
			}
			if got := int(wc.worked.Load()); got != tc.worked {
				t.Errorf("the listener was told of %d bits of work, want %d", got, tc.worked)
			}
			if tc.noSignal && wc.asked.Load() {
				t.Error("the responder asked its listener for a demand for an initiator that cannot answer it")
			}
		})
	}
}

// fakeResponder reads an initiator's first flight from c, then runs
// script with the initiator's ephemeral key, c, and the responder's
// hello; then it reads c until it ends.
func fakeResponder(c net.Conn, script func(e []byte, c net.Conn, hello []byte) error) <-chan error {
	return run(func() error {
		defer c.Close()
		head := make([]byte, wire.HelloSize+2)
		if _, err := io.ReadFull(c, head); err != nil {
			return err
		}
		msg1 := make([]byte, binary.BigEndian.Uint16(head[wire.HelloSize:]))
		if _, err := io.ReadFull(c, msg1); err != nil {
			return err
		}
		hello := wire.Hello{Version: wire.Version, Mode: wire.ModeResponder}.Marshal()
		err := script(msg1[:wire.EphemeralKeySize], c, hello[:])
		io.Copy(io.Discard, c)
		return err
	})
}

// TestWorkDemandInitiator checks what an initiator does with demands for
// work from a responder it cannot trust yet: it answers one within
// wire.MaxWorkBits, with the least nonce that proves it; it refuses a
// larger one, one for nothing, and a second one; and it stops working
// when its handshake's time is up.
func TestWorkDemandInitiator(t *testing.T) {
	checkNoLeaks(t)
	seed := [wire.WorkSeedSize]byte{1, 2, 3}
	demand := func(bits byte) []byte { return wire.AppendWorkDemand(nil, bits, &seed) }
	send := func(b []byte) func([]byte, net.Conn, []byte) error {
		return func(_ []byte, c net.Conn, hello []byte) error {
			_, err := c.Write(append(hello, b...))
			return err
		}
	}
	// twice demands 4 bits, checks the answer, and demands again.
	twice := func(e []byte, c net.Conn, hello []byte) error {
		if _, err := c.Write(append(hello, demand(4)...)); err != nil {
			return err
		}
		ans := make([]byte, 2+wire.WorkNonceSize)
		if _, err := io.ReadFull(c, ans); err != nil {
			return err
		}
		nonce := binary.BigEndian.Uint64(ans[2:])
		if ans[1] != wire.WorkNonceSize || !wire.CheckWork(4, &seed, e, nonce) || nonce > 0 && wire.CheckWork(4, &seed, e, nonce-1) {
			return fmt.Errorf("answer %x is not the least nonce that proves 4 bits", ans)
		}
		_, err := c.Write(demand(4))
		return err
	}
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		script  func([]byte, net.Conn, []byte) error
		want    string
	}{
		{"a demand over the limit", 0, send(demand(wire.MaxWorkBits + 1)), "asks for 25 bits, not 1 to 24"},
		{"a demand for nothing", 0, send(demand(0)), "asks for 0 bits"},
		{"a demand cut short", 0, func(e []byte, c net.Conn, hello []byte) error {
			if err := send(demand(8)[:10])(e, c, hello); err != nil {
				return err
			}
			return c.(interface{ CloseWrite() error }).CloseWrite()
		}, "EOF"},
		{"a second demand", 0, twice, "a demand for work where no securepeer peer sends one"},
		{"work longer than the handshake may take", 300 * time.Millisecond, send(demand(wire.MaxWorkBits)), "timed out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := tcpPair(t)
			srv := fakeResponder(b, tc.script)
			cfg := &Config{Identity: testIdentity(t, 1), HandshakeTimeout: tc.timeout}
			start := time.Now()
			err := Client(a, cfg).Handshake()
			a.Close()
			if serr := wait(t, srv); serr != nil && !errors.Is(serr, io.EOF) && !errors.Is(serr, net.ErrClosed) {
				t.Errorf("fake responder: %v", serr)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if tc.timeout > 0 && time.Since(start) > tc.timeout+2*time.Second {
				t.Errorf("the initiator worked %v past a handshake timeout of %v", time.Since(start), tc.timeout)
			}
		})
	}
}

// FuzzWorkAnswer feeds arbitrary bytes, after a real first flight, to a
// Server whose listener demands 4 bits of work: as the initiator's answer
// and whatever follows it. The handshake must fail (no captured message 3
// fits the message 2 that a demand moves along the server's randomness)
// with an error, never a panic, a hang or a leaked goroutine; and the
// listener is told of work only when the answer proves it.
func FuzzWorkAnswer(f *testing.F) {
	cs := fzGetCaptures(f)
	flight := cs.serverClient.received
	flight = flight[:wire.HelloSize+2+int(binary.BigEndian.Uint16(flight[wire.HelloSize:]))]
	// The server's first 16 random bytes are the demand's seed.
	var seed [wire.WorkSeedSize]byte
	io.ReadFull(newFzRand(fzRandServer), seed[:])
	e := flight[wire.HelloSize+2:][:wire.EphemeralKeySize]
	nonce, _ := wire.SolveWork(f.Context(), 4, &seed, e)
	answer := wire.AppendHandshakeMessage(nil, binary.BigEndian.AppendUint64(nil, nonce))
	f.Add(answer)
	f.Add(append(answer, cs.serverClient.received[len(flight):]...))
	f.Add(wire.AppendHandshakeMessage(nil, binary.BigEndian.AppendUint64(nil, nonce+1)))
	f.Add([]byte{0, 0, wire.AbortProtocol})
	f.Add([]byte{0, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		base := runtime.NumGoroutine()
		wc := &workConn{cpuProbeConn: cpuProbeConn{Conn: newFzConn(append(slices.Clone(flight), in...)), acquire: func() {}}, bits: 4}
		c := Server(wc, fzConfig(fzResponderID, fzRandServer))
		if err := fzHandshake(t, c, base); err == nil {
			t.Fatalf("the handshake completed:\n%x", in)
		}
		worked := wc.worked.Load() == 4
		valid := len(in) >= 10 && bytes.Equal(in[:2], []byte{0, 8}) && wire.CheckWork(4, &seed, e, binary.BigEndian.Uint64(in[2:10]))
		if worked != valid {
			t.Fatalf("the listener was told of work %v for an answer that proves it %v:\n%x", worked, valid, in)
		}
	})
}
