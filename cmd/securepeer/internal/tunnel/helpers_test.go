package tunnel

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/netutil"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/testutil"
)

// testLog discards what a session logs.
var testLog = slog.New(slog.DiscardHandler)

// testTimeout bounds what a test waits for: a hang, not a slow machine.
const testTimeout = testutil.Timeout

// tcpConn is a plain TCP connection as a Conn, for tests of the tunnel
// protocol without the secure stream under it.
type tcpConn struct{ *net.TCPConn }

func (c tcpConn) Close() error {
	c.SetWriteDeadline(time.Now().Add(testTimeout))
	c.CloseWrite()
	return c.TCPConn.Close()
}

func (c tcpConn) Abort() { netutil.ResetClose(c.TCPConn) }

// secureConn is a securepeer.Conn as a Conn.
type secureConn struct{ *securepeer.Conn }

func (c secureConn) Abort() { c.Conn.Abort() }

// testServer serves a session's streams as listen -to does, with the
// targets by name (dialing them over TCP) and its refusals, its notices
// going to notef and fullf.
func testServer(targets map[string]string, notef, fullf func(string, ...any)) *Server {
	route := func(ctx context.Context, name, from string) (net.Conn, string, error) {
		to, ok := targets[name]
		if !ok {
			var names []string
			for n := range targets {
				names = append(names, fmt.Sprintf("%q", n))
			}
			slices.Sort(names)
			return nil, "", &Refusal{
				Status: fmt.Sprintf("no -to for %q on its side; it has %s", name, strings.Join(names, ", ")),
				Err:    fmt.Errorf("refused a tunnel stream for %q from %s", name, from),
			}
		}
		d := net.Dialer{Timeout: testTimeout}
		c, err := d.DialContext(ctx, "tcp", to)
		if err != nil {
			return nil, "", &Refusal{Status: "connect failed: " + err.Error(), Err: err}
		}
		return c, to, nil
	}
	return &Server{Route: route, Log: slog.New(slog.DiscardHandler), Notef: notef, Fullf: fullf}
}

// forwardAll carries each connection l accepts over a stream of m for
// the unnamed forward, as connect -from does, until ctx ends, and says
// with notef why a stream failed. It returns once every connection has
// ended.
func forwardAll(ctx context.Context, l net.Listener, m *Session, notef func(string, ...any)) {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		conns.Go(func() {
			if err := m.Forward(ctx, c, ""); err != nil && ctx.Err() == nil {
				notef("tunnel for %s: %v", c.RemoteAddr(), err)
			}
		})
	}
}
