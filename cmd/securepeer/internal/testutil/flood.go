package testutil

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

// The hostile peer of the tunnel tests (package internal/tunnel's and
// package main's BenchmarkTunnelStreamFlood): a yamux client that opens
// securepeer-tunnel/1 streams as fast as it likes.

// HostileSession is a yamux client over conn that opens streams as fast as
// it likes and waits for nothing.
func HostileSession(tb testing.TB, conn net.Conn) *yamux.Session {
	tb.Helper()
	cfg := yamux.DefaultConfig()
	cfg.EnableKeepAlive = false
	cfg.StreamOpenTimeout = 0
	cfg.ConnectionWriteTimeout = Timeout
	cfg.LogOutput = io.Discard
	sess, err := yamux.Client(conn, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return sess
}

// StreamMsg is what a securepeer-tunnel/1 stream for name sends first: its
// header, then a data frame, size bytes in all (the header alone if size
// leaves no room for data).
func StreamMsg(name string, size int) []byte {
	msg := make([]byte, max(size, 4+len(name)))
	binary.BigEndian.PutUint32(msg, uint32(len(name)))
	copy(msg[4:], name)
	if rest := len(msg) - 4 - len(name); rest > 4 {
		binary.BigEndian.PutUint32(msg[4+len(name):], uint32(rest-4))
	}
	return msg
}

// A SentStream is a stream [FloodStreams] opened, with how much it sent.
type SentStream struct {
	St   *yamux.Stream
	Sent int
}

// FloodStreams opens n streams on sess, eight at a time, then more for as
// long as more says (at most [Timeout]; more may be nil, for n streams
// only), sends msg(i) on the i-th (at most yamux's initial window, so that
// no write waits for the other side) and closes none. It returns how many
// writes failed (streams the other side reset before all was sent), and
// the streams if keep.
func FloodStreams(sess *yamux.Session, n int, more func() bool, msg func(i int) []byte, keep bool) (int, []SentStream) {
	if more == nil {
		more = func() bool { return false }
	}
	var failed atomic.Int64
	var mu sync.Mutex
	var kept []SentStream
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
				st.SetWriteDeadline(time.Now().Add(Timeout))
				m := msg(i)
				if _, err := st.Write(m); err != nil {
					failed.Add(1)
					continue
				}
				if keep {
					mu.Lock()
					kept = append(kept, SentStream{st, len(m)})
					mu.Unlock()
				}
			}
		})
	}
	deadline := time.Now().Add(Timeout)
	for i := 0; i < n || more() && time.Now().Before(deadline); i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	return int(failed.Load()), kept
}
