package main

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// listenLocal listens on a loopback port of its own, which it keeps until
// the test closes it.
func listenLocal(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// The hostile peer of BenchmarkTunnelStreamFlood, as in package
// internal/tunnel's tests.

// hostileSession is a yamux client over conn that opens streams as fast as
// it likes and waits for nothing.
func hostileSession(tb testing.TB, conn net.Conn) *yamux.Session {
	tb.Helper()
	cfg := yamux.DefaultConfig()
	cfg.EnableKeepAlive = false
	cfg.StreamOpenTimeout = 0
	cfg.ConnectionWriteTimeout = testTimeout
	cfg.LogOutput = io.Discard
	sess, err := yamux.Client(conn, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return sess
}

// streamMsg is what a stream for name sends first: its header, then a
// data frame, size bytes in all (the header alone if size leaves no room
// for data).
func streamMsg(name string, size int) []byte {
	msg := make([]byte, max(size, 4+len(name)))
	binary.BigEndian.PutUint32(msg, uint32(len(name)))
	copy(msg[4:], name)
	if rest := len(msg) - 4 - len(name); rest > 4 {
		binary.BigEndian.PutUint32(msg[4+len(name):], uint32(rest-4))
	}
	return msg
}

// A sentStream is a stream floodStreams opened, with how much it sent.
type sentStream struct {
	st   *yamux.Stream
	sent int
}

// floodStreams opens n streams on sess, eight at a time, sends msg(i) on
// the i-th (at most yamux's initial window, so that no write waits for the
// other side) and closes none. It returns how many writes failed (streams
// the other side reset before all was sent), and the streams if keep.
func floodStreams(sess *yamux.Session, n int, msg func(i int) []byte, keep bool) (int, []sentStream) {
	var failed atomic.Int64
	var mu sync.Mutex
	var kept []sentStream
	work := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range work {
				st, err := sess.OpenStream()
				if err != nil {
					failed.Add(1)
					continue
				}
				st.SetWriteDeadline(time.Now().Add(testTimeout))
				m := msg(i)
				if _, err := st.Write(m); err != nil {
					failed.Add(1)
					continue
				}
				if keep {
					mu.Lock()
					kept = append(kept, sentStream{st, len(m)})
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	return int(failed.Load()), kept
}
