package p2p

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify/pb"
	"github.com/libp2p/go-msgio/pbio"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/multiformats/go-varint"
	"google.golang.org/protobuf/proto"
)

func obsAt(local int, addr string) observation {
	return observation{local: local, addr: netip.MustParseAddrPort(addr)}
}

func ports(addr string, ps ...uint16) []netip.AddrPort {
	var out []netip.AddrPort
	for _, p := range ps {
		out = append(out, netip.AddrPortFrom(netip.MustParseAddr(addr), p))
	}
	return out
}

// TestPredictPorts: which ports a node predicts from a fresh observation,
// and that it predicts none without evidence of a NAT that gives each
// flow a port of its own, or without the fresh observation.
func TestPredictPorts(t *testing.T) {
	moved := []observation{obsAt(4001, "198.18.0.7:20000")}
	const pub = "198.18.0.7"
	for _, tc := range []struct {
		name  string
		obs   []observation // the relays' earlier observations
		fresh string        // "" for none
		k     int
		want  []netip.AddrPort
	}{
		{"the next k after the fresh port", moved, pub + ":20009", 4, ports(pub, 20010, 20011, 20012, 20013)},
		{"bound k", moved, pub + ":20009", 1, ports(pub, 20010)},
		{"k zero", moved, pub + ":20009", 0, nil},
		{"wraps to 1", moved, pub + ":65534", 3, ports(pub, 65535, 1, 2)},
		{"from 65535", moved, pub + ":65535", 2, ports(pub, 1, 2)},
		{"no fresh observation", moved, "", 4, nil},
		{"no evidence: port kept", []observation{obsAt(4001, pub+":4001")}, pub + ":4001", 4, nil},
		{"no evidence: nothing observed before", nil, pub + ":20009", 4, nil},
		{"two relays, two ports for one local port", []observation{obsAt(4001, pub+":4001"), obsAt(4001, pub+":4002")}, pub + ":4005", 2, ports(pub, 4006, 4007)},
		{"fresh on an address no relay saw", moved, "203.0.113.9:20009", 4, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var fresh netip.AddrPort
			if tc.fresh != "" {
				fresh = netip.MustParseAddrPort(tc.fresh)
			}
			if got := predictPorts(tc.obs, fresh, tc.fresh != "", tc.k); !slices.Equal(got, tc.want) {
				t.Errorf("predictPorts = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestPredictRoom: predictions fit beside the rest of what a node
// announces within maxAnnounced, and never exceed predictK.
func TestPredictRoom(t *testing.T) {
	for _, tc := range []struct{ others, want int }{
		{0, predictK}, {1, predictK}, {maxAnnounced - predictK, predictK},
		{maxAnnounced - 1, 1}, {maxAnnounced, 0}, {20, 0},
	} {
		if got := predictRoom(tc.others); got != tc.want {
			t.Errorf("predictRoom(%d) = %d, want %d", tc.others, got, tc.want)
		}
	}
	if maxAnnounced < 1+predictK {
		t.Errorf("maxAnnounced %d leaves no room for predictK %d beside one observed address", maxAnnounced, predictK)
	}
}

// TestReadObserved: the observed address is read from an identify record
// among its other fields, and a record without a TCP one, too long or
// cut short gives none.
func TestReadObserved(t *testing.T) {
	record := func(observed ma.Multiaddr) []byte {
		msg := &pb.Identify{
			ProtocolVersion: proto.String("ipfs/0.1.0"),
			AgentVersion:    proto.String("securepeer-relay"),
			ListenAddrs:     [][]byte{ma.StringCast("/ip4/198.18.0.1/tcp/4001").Bytes()},
			Protocols:       []string{"/ipfs/id/1.0.0"},
		}
		if observed != nil {
			msg.ObservedAddr = observed.Bytes()
		}
		var b bytes.Buffer
		if err := pbio.NewDelimitedWriter(&b).WriteMsg(msg); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	good := record(ma.StringCast("/ip4/198.18.0.7/tcp/20009"))
	tooLong := varint.ToUvarint(maxIdentifyMsg + 1)
	for _, tc := range []struct {
		name string
		in   []byte
		want netip.AddrPort
	}{
		{"observed", good, netip.MustParseAddrPort("198.18.0.7:20009")},
		{"none", record(nil), netip.AddrPort{}},
		{"not TCP", record(ma.StringCast("/ip4/198.18.0.7/udp/20009/quic-v1")), netip.AddrPort{}},
		{"cut short", good[:len(good)-3], netip.AddrPort{}},
		{"too long", append(tooLong, make([]byte, 16)...), netip.AddrPort{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readObserved(bytes.NewReader(tc.in))
			if got != tc.want || (err == nil) != tc.want.IsValid() {
				t.Errorf("readObserved = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

// TestFirstPerIP: a node behind a NAT that gives each flow a port of its
// own dials, of a peer's addresses, the first on each IP address only.
func TestFirstPerIP(t *testing.T) {
	in := []string{
		"/ip4/198.18.0.7/tcp/20000", "/ip4/198.18.0.7/tcp/20002", "/ip4/198.19.0.2/tcp/4001",
		"/ip4/198.18.0.7/tcp/20003", "/ip6/2001:db8::1/tcp/4001", "/ip6/2001:db8::1/tcp/4002",
		"/dns4/relay.example/tcp/4001",
	}
	want := []string{"/ip4/198.18.0.7/tcp/20000", "/ip4/198.19.0.2/tcp/4001", "/ip6/2001:db8::1/tcp/4001", "/dns4/relay.example/tcp/4001"}
	var addrs []ma.Multiaddr
	for _, s := range in {
		addrs = append(addrs, ma.StringCast(s))
	}
	var got []string
	for _, a := range firstPerIP(addrs) {
		got = append(got, a.String())
	}
	if !slices.Equal(got, want) {
		t.Errorf("firstPerIP = %v, want %v", got, want)
	}
}

// TestForgetOffered: before an attempt's dials, a node forgets the ports
// its peer announced for the previous attempt, on an IP address it still
// announces, and no other address; the record goes with the peer.
func TestForgetOffered(t *testing.T) {
	n := startNode(t, Config{})
	if n.punch == nil {
		t.Fatal("the node does not hole punch")
	}
	p, err := PeerID(newIdentity(t).PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	ps := n.host.Peerstore()
	ps.AddAddr(p, ma.StringCast("/ip4/203.0.113.5/tcp/4001"), peerstore.PermanentAddrTTL)
	first := []string{"/ip4/198.18.0.7/tcp/20000", "/ip4/198.18.0.7/tcp/20002", "/ip4/198.18.0.7/tcp/20003", "/ip4/198.19.0.2/tcp/4001"}
	second := []string{"/ip4/198.18.0.7/tcp/20000", "/ip4/198.18.0.7/tcp/20005"}
	for _, attempt := range [][]string{first, second} {
		n.forgetOffered(p, attempt)
		for _, s := range attempt { // as go-libp2p's dial adds them
			ps.AddAddr(p, ma.StringCast(s), peerstore.TempAddrTTL)
		}
	}
	var got []string
	for _, a := range ps.Addrs(p) {
		got = append(got, a.String())
	}
	slices.Sort(got)
	want := []string{"/ip4/198.18.0.7/tcp/20000", "/ip4/198.18.0.7/tcp/20005", "/ip4/198.19.0.2/tcp/4001", "/ip4/203.0.113.5/tcp/4001"}
	if !slices.Equal(got, want) {
		t.Errorf("the peerstore holds %v, want %v", got, want)
	}
	n.peerGone(p)
	n.punch.mu.Lock()
	defer n.punch.mu.Unlock()
	if len(n.punch.offered) != 0 {
		t.Errorf("%d peers' offers kept after the peer left", len(n.punch.offered))
	}
}
