package p2p

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	tptu "github.com/libp2p/go-libp2p/p2p/net/upgrader"
	pbv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/util"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	mss "github.com/multiformats/go-multistream"

	"github.com/securepeer/securepeer/libp2psec"
)

// A fakeRelay speaks the circuit relay v2 protocol itself, to play a
// relay that misbehaves: it grants every reservation, and answers every
// circuit request with success, then either forwards the circuit to the
// peer while recording every byte it carries, or keeps the circuit and
// answers in the peer's place.
type fakeRelay struct {
	h    host.Host
	mode fakeMode
	// impostor is the key the relay answers with in impersonate mode.
	impostor crypto.PrivKey

	mu       sync.Mutex
	carried  bytes.Buffer // every byte forwarded, both ways
	answered []error      // each impersonation's handshake result
	done     chan struct{}
}

type fakeMode int

const (
	forward     fakeMode = iota // carry the circuit, recording it
	impersonate                 // answer with securepeer and impostor's key
	offerNoise                  // answer offering only Noise
)

func startFakeRelay(t testing.TB, mode fakeMode, impostor crypto.PrivKey) *fakeRelay {
	t.Helper()
	h, err := libp2p.New(
		libp2p.ListenAddrStrings(loopback...),
		libp2p.NoTransports,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(libp2psec.ID, libp2psec.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.DisableRelay(),
	)
	if err != nil {
		t.Fatal(err)
	}
	r := &fakeRelay{h: h, mode: mode, impostor: impostor, done: make(chan struct{}, 16)}
	h.SetStreamHandler(proto.ProtoIDv2Hop, r.handleHop)
	t.Cleanup(func() { h.Close() })
	return r
}

// addrs returns the fake relay's addresses, as Config.Relays takes them.
func (r *fakeRelay) addrs() []string {
	var out []string
	for _, a := range r.h.Addrs() {
		out = append(out, a.Encapsulate(ma.StringCast("/p2p/"+r.h.ID().String())).String())
	}
	return out
}

func (r *fakeRelay) handleHop(s network.Stream) {
	rd := util.NewDelimitedReader(s, 4096)
	defer rd.Close()
	var msg pbv2.HopMessage
	if err := rd.ReadMsg(&msg); err != nil {
		s.Reset()
		return
	}
	switch msg.GetType() {
	case pbv2.HopMessage_RESERVE:
		expire := uint64(time.Now().Add(time.Hour).Unix())
		r.status(s, &pbv2.Reservation{Expire: &expire})
		s.Close()
	case pbv2.HopMessage_CONNECT:
		dest, err := util.PeerToPeerInfoV2(msg.GetPeer())
		if err != nil {
			s.Reset()
			return
		}
		switch r.mode {
		case forward:
			r.forward(s, dest.ID)
		case impersonate:
			r.status(s, nil)
			r.impersonate(s)
		case offerNoise:
			r.status(s, nil)
			mux := mss.NewMultistreamMuxer[protocol.ID]()
			mux.AddHandler(noise.ID, nil)
			mux.Negotiate(s)
			s.Reset()
			r.done <- struct{}{}
		}
	default:
		s.Reset()
	}
}

// status answers a hop request with success, and with rsvp if it was a
// reservation. No limit is announced: the circuit is unlimited.
func (r *fakeRelay) status(s network.Stream, rsvp *pbv2.Reservation) {
	msg := &pbv2.HopMessage{Type: pbv2.HopMessage_STATUS.Enum(), Status: pbv2.Status_OK.Enum(), Reservation: rsvp}
	util.NewDelimitedWriter(s).WriteMsg(msg)
}

// impersonate answers the dialer's securepeer handshake in the peer's
// place, with the impostor's key, and records how it ended.
func (r *fakeRelay) impersonate(s network.Stream) {
	defer func() { r.done <- struct{}{} }()
	mux := mss.NewMultistreamMuxer[protocol.ID]()
	mux.AddHandler(libp2psec.ID, nil)
	if _, _, err := mux.Negotiate(s); err != nil {
		r.record(err)
		s.Reset()
		return
	}
	tr, err := libp2psec.New(libp2psec.ID, r.impostor, []tptu.StreamMuxer{{ID: yamux.ID}})
	if err != nil {
		r.record(err)
		s.Reset()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := tr.SecureInbound(ctx, streamConn{s}, "")
	if err == nil {
		c.Close()
	}
	r.record(err)
}

func (r *fakeRelay) record(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answered = append(r.answered, err)
}

// forward opens the circuit to dest and carries it, recording every
// byte.
func (r *fakeRelay) forward(s network.Stream, dest peer.ID) {
	ctx, cancel := context.WithTimeout(network.WithNoDial(context.Background(), "forward"), testTimeout)
	defer cancel()
	bs, err := r.h.NewStream(ctx, dest, proto.ProtoIDv2Stop)
	if err != nil {
		s.Reset()
		return
	}
	stop := &pbv2.StopMessage{
		Type: pbv2.StopMessage_CONNECT.Enum(),
		Peer: util.PeerInfoToPeerV2(peer.AddrInfo{ID: s.Conn().RemotePeer()}),
	}
	if err := util.NewDelimitedWriter(bs).WriteMsg(stop); err != nil {
		bs.Reset()
		s.Reset()
		return
	}
	rd := util.NewDelimitedReader(bs, 4096)
	defer rd.Close()
	var answer pbv2.StopMessage
	if err := rd.ReadMsg(&answer); err != nil || answer.GetStatus() != pbv2.Status_OK {
		bs.Reset()
		s.Reset()
		return
	}
	r.status(s, nil)
	var wg sync.WaitGroup
	wg.Go(func() { r.copy(bs, s) })
	wg.Go(func() { r.copy(s, bs) })
	go func() {
		wg.Wait()
		r.done <- struct{}{}
	}()
}

// copy carries src to dst, recording what it carries.
func (r *fakeRelay) copy(dst, src network.Stream) {
	buf := make([]byte, 4096)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			r.carried.Write(buf[:n])
			r.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Reset()
				return
			}
		}
		if err == io.EOF {
			dst.CloseWrite()
			return
		}
		if err != nil {
			dst.Reset()
			return
		}
	}
}

func (r *fakeRelay) carriedBytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.carried.Bytes())
}

// streamConn is a libp2p stream as a net.Conn, for a security
// transport.
type streamConn struct{ network.Stream }

func (streamConn) LocalAddr() net.Addr  { return &net.TCPAddr{} }
func (streamConn) RemoteAddr() net.Addr { return &net.TCPAddr{} }
