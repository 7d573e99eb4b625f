package p2p

import (
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
)

func obsAt(by string, local int, addr string) observation {
	return observation{by: by, local: local, addr: netip.MustParseAddrPort(addr)}
}

// TestPredictPorts: which ports a node predicts, from what evidence.
func TestPredictPorts(t *testing.T) {
	relay := obsAt("relay", 4001, "198.18.0.7:20000")
	for _, tc := range []struct {
		name  string
		obs   []observation // the relays', then the latest
		later int
		k     int
		want  []uint16
	}{
		{"one relay saw another port", []observation{relay, relay}, 0, 3, []uint16{20001, 20002, 20003}},
		{"flows since the latest", []observation{relay, relay}, 4, 2, []uint16{20005, 20006}},
		{"two observers, two ports", []observation{relay, obsAt("peer", 4001, "198.18.0.7:20002")}, 0, 3, []uint16{20003, 20004, 20005}},
		{"skips observed ports", []observation{relay, obsAt("peer", 4001, "198.18.0.7:19999")}, 0, 2, []uint16{20001, 20002}},
		{"wraps to 1", []observation{obsAt("relay", 4001, "198.18.0.7:65534"), obsAt("relay", 4001, "198.18.0.7:65534")}, 0, 3, []uint16{65535, 1, 2}},
		{"bound k", []observation{relay, relay}, 0, 1, []uint16{20001}},
		{"k zero", []observation{relay, relay}, 0, 0, nil},
		{"port kept", []observation{obsAt("relay", 4001, "198.18.0.7:4001"), obsAt("relay", 4001, "198.18.0.7:4001")}, 0, 3, nil},
		{"two observers agree on a moved port", []observation{relay, obsAt("peer", 4001, "198.18.0.7:20000")}, 0, 3, nil},
		{"no relay saw the latest's address", []observation{relay, obsAt("peer", 4001, "203.0.113.9:20005")}, 0, 3, nil},
		{"no relay", []observation{obsAt("peer", 4001, "198.18.0.7:20005")}, 0, 3, nil},
		{"nothing observed", nil, 0, 3, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := predictPorts(tc.obs, tc.later, tc.k); !slices.Equal(got, tc.want) {
				t.Errorf("predictPorts = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestPredictRoom: the predictions fit beside the rest in the dials a
// peer makes at once, and never exceed maxPredicted.
func TestPredictRoom(t *testing.T) {
	for others, want := range map[int]int{0: maxPredicted, 2: maxPredicted, 3: 5, 8: 0, 20: 0} {
		if got := predictRoom(others); got != want {
			t.Errorf("predictRoom(%d) = %d, want %d", others, got, want)
		}
	}
}

// TestFlowLog: a dial to a destination dialed within flowMemory is the
// same flow; a dial taken back is no flow; the log is bounded.
func TestFlowLog(t *testing.T) {
	var l flowLog
	a, b := ma.StringCast("/ip4/198.18.0.1/tcp/1"), ma.StringCast("/ip4/198.18.0.2/tcp/1")
	now := time.Now()
	l.dialed(a, now)
	first := l.flowTo(a)
	l.dialed(b, now)
	l.dialed(a, now.Add(time.Second))
	if later, ok := l.since(first); !ok || later != 1 {
		t.Errorf("since = %d, %v; want 1 flow after the first", later, ok)
	}
	c := ma.StringCast("/ip4/198.18.0.3/tcp/1")
	l.dialed(c, now.Add(2*time.Second))
	l.undo(c, now.Add(2*time.Second))
	if later, _ := l.since(first); later != 1 {
		t.Errorf("after an undo, since = %d, want 1", later)
	}
	l.dialed(a, now.Add(flowMemory+time.Second))
	if later, _ := l.since(first); later != 2 {
		t.Errorf("a dial after flowMemory: since = %d, want 2", later)
	}
	for i := range maxFlows {
		l.dialed(ma.StringCast("/ip4/198.18.1.1/tcp/"+strconv.Itoa(i+1)), now)
	}
	if _, ok := l.since(first); ok || len(l.flows) != maxFlows {
		t.Errorf("the log holds %d flows and still knows the first: %v", len(l.flows), ok)
	}
}
