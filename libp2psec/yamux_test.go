package libp2psec

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"sync/atomic"
	"testing"

	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
)

// countingConn counts the Write calls made on a connection and the bytes
// they carry.
type countingConn struct {
	net.Conn
	writes, bytes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	c.bytes.Add(int64(len(p)))
	return c.Conn.Write(p)
}

// frameConn sits between yamux and a securepeer connection over wire, and
// counts the frames yamux writes whose bytes did not reach wire in exactly
// one write of the frame plus a record's overhead.
type frameConn struct {
	net.Conn
	wire        *countingConn
	frames, bad atomic.Int64
}

func (c *frameConn) Write(p []byte) (int, error) {
	writes, bytes := c.wire.writes.Load(), c.wire.bytes.Load()
	n, err := c.Conn.Write(p)
	c.frames.Add(1)
	const recordOverhead = 4 + 16 // header and AEAD tag
	if c.wire.writes.Load()-writes != 1 || c.wire.bytes.Load()-bytes != int64(len(p)+recordOverhead) {
		c.bad.Add(1)
	}
	return n, err
}

// Bulk data through go-libp2p's yamux costs one securepeer record, and one
// write on the TCP connection, per yamux frame: go-yamux's largest frame
// (64 KiB, its header included) fits in one record, and the transport
// neither splits nor buffers what yamux writes. Noise, whose messages hold
// at most 65519 bytes, needs two for a full frame.
func TestOneRecordPerYamuxFrame(t *testing.T) {
	a, b := newTransport(t), newTransport(t)
	cc, sc := tcpPair(t)
	wire := &countingConn{Conn: cc}
	ch := make(chan handshakeResult, 1)
	go func() {
		c, err := b.SecureInbound(context.Background(), sc, "")
		ch <- handshakeResult{c, err}
	}()
	out, err := a.SecureOutbound(context.Background(), wire, b.localID)
	if err != nil {
		t.Fatal(err)
	}
	in := <-ch
	if in.err != nil {
		t.Fatal(in.err)
	}
	mux := &frameConn{Conn: out, wire: wire}
	client, err := yamux.DefaultTransport.NewConn(mux, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := yamux.DefaultTransport.NewConn(in.conn, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()

	data := make([]byte, 4<<20)
	rand.Read(data)
	got := make(chan [32]byte, 1)
	go func() {
		defer close(got)
		st, err := server.AcceptStream()
		if err != nil {
			return
		}
		h := sha256.New()
		if _, err := io.Copy(h, st); err == nil {
			got <- [32]byte(h.Sum(nil))
		}
	}()
	st, err := client.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for p := data; len(p) > 0; p = p[1<<20:] {
		if _, err := st.Write(p[:1<<20]); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if sum, ok := <-got; !ok || sum != sha256.Sum256(data) {
		t.Fatal("the receiver did not get the data intact")
	}
	if frames := mux.frames.Load(); frames < int64(len(data))/(64<<10) {
		t.Fatalf("yamux wrote %d frames for %d bytes", frames, len(data))
	}
	if bad := mux.bad.Load(); bad != 0 {
		t.Errorf("%d of %d yamux frames did not go out as one record in one write", bad, mux.frames.Load())
	}
}
