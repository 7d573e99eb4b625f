//go:build linux

package locate

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/natlab"
	"github.com/securepeer/securepeer/internal/natlab/natlabtest"
	"github.com/securepeer/securepeer/p2p"
)

// The NAT lab test runs each peer in a process of its own inside a host
// of the lab: the test binary again, as TestLocatePeerProcess, told what
// to be by locatePeerEnv.

const locatePeerEnv = "P2P_LOCATE_PEER"

// locatePeerSpec tells a peer process what to be.
type locatePeerSpec struct {
	Role   string // "hub" (a relay and a DHT member), "listener" or "dialer"
	Key    []byte // the node's identity, an OpenSSH private key
	Addr   string // the host's address
	Relay  string // the hub's relay, for the listener
	DHT    string // the hub's DHT member, for the others
	Target string // the listener's key, for the dialer
}

// TestLocatePeerProcess is not a test: it is a peer in the NAT lab, run
// by TestLocateThroughNATs in a process of its own. It prints "ready"
// lines, and the dialer a "result" line, as JSON.
func TestLocatePeerProcess(t *testing.T) {
	var spec locatePeerSpec
	natlabtest.ReadSpec(t, locatePeerEnv, "run by TestLocateThroughNATs", &spec)
	id, err := securepeer.ParseIdentity(spec.Key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := func(kind string, v any) {
		b, _ := json.Marshal(v)
		fmt.Printf("%s %s\n", kind, b)
	}
	listen := []string{fmt.Sprintf("/ip4/%s/tcp/4001", spec.Addr)}
	switch spec.Role {
	case "hub":
		r, err := p2p.RunRelay(ctx, p2p.RelayConfig{Identity: id, ListenAddrs: listen})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		l, err := Start(ctx, Config{Server: true, ListenAddrs: []string{fmt.Sprintf("/ip4/%s/tcp/4002", spec.Addr)}})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		out("ready", []string{r.Addrs()[0], l.Addrs()[0]})
		io.Copy(io.Discard, os.Stdin)
	case "listener":
		n, err := p2p.Start(ctx, p2p.Config{Identity: id, ListenAddrs: listen, Relays: []string{spec.Relay}})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		ln, err := n.Listen("echo/1")
		if err != nil {
			t.Fatal(err)
		}
		echo(ln)
		if err := n.Ready(ctx); err != nil {
			t.Fatal(err)
		}
		l, err := Start(ctx, Config{Bootstrap: []string{spec.DHT}})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		for l.Peers() == 0 {
			time.Sleep(10 * time.Millisecond) // the DHT adds its bootstrap peer once identified
		}
		if err := l.Publish(ctx, id, n.Addrs()); err != nil {
			t.Fatal(err)
		}
		out("ready", n.Addrs())
		io.Copy(io.Discard, os.Stdin)
	case "dialer":
		out("result", dialFound(ctx, id, spec))
	}
}

// A locateResult is what the dialer found and how its dial went.
type locateResult struct {
	Addrs []string
	Path  string
	Err   string
}

// dialFound looks the target up through the DHT, dials it at what it
// found (the dialer has no relay of its own) and echoes a byte.
func dialFound(ctx context.Context, id *securepeer.Identity, spec locatePeerSpec) (res locateResult) {
	fail := func(err error) locateResult { res.Err = err.Error(); return res }
	target, err := securepeer.ParsePublicKey(spec.Target)
	if err != nil {
		return fail(err)
	}
	l, err := Start(ctx, Config{Bootstrap: []string{spec.DHT}})
	if err != nil {
		return fail(err)
	}
	defer l.Close()
	for l.Peers() == 0 {
		time.Sleep(10 * time.Millisecond) // the DHT adds its bootstrap peer once identified
	}
	if res.Addrs, err = l.Lookup(ctx, target); err != nil {
		return fail(err)
	}
	n, err := p2p.Start(ctx, p2p.Config{Identity: id, ListenAddrs: []string{fmt.Sprintf("/ip4/%s/tcp/4001", spec.Addr)}})
	if err != nil {
		return fail(err)
	}
	defer n.Close()
	if err := n.AddAddrs(target, res.Addrs); err != nil {
		return fail(err)
	}
	s, err := n.Dial(ctx, target, "echo/1")
	if err != nil {
		return fail(err)
	}
	defer s.Close()
	res.Path = s.Path().String()
	if _, err := s.Write([]byte{7}); err != nil {
		return fail(err)
	}
	if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
		return fail(err)
	}
	return res
}

// startLocatePeer runs a peer process in h and returns its first line of
// kind, decoded into v; the process ends with the test.
func startLocatePeer(t *testing.T, h *natlab.Host, spec locatePeerSpec, kind string, v any) {
	t.Helper()
	spec.Addr = h.Addr().String()
	_, stdout := natlabtest.StartProcess(t, h, "TestLocatePeerProcess", locatePeerEnv, spec)
	lines := bufio.NewScanner(stdout)
	for lines.Scan() {
		if rest, ok := strings.CutPrefix(lines.Text(), kind+" "); ok {
			if err := json.Unmarshal([]byte(rest), v); err != nil {
				t.Fatal(err)
			}
			go io.Copy(io.Discard, stdout)
			return
		}
	}
	t.Fatalf("the %s process ended without a %q line", spec.Role, kind)
}

func identityPEM(t *testing.T) (*securepeer.Identity, []byte) {
	t.Helper()
	id := newIdentity(t)
	pem, err := id.MarshalOpenSSH("")
	if err != nil {
		t.Fatal(err)
	}
	return id, pem
}

// TestLocateThroughNATs: in the NAT lab, a listener behind a
// port-restricted NAT holds a reservation on a public relay and publishes
// its addresses (the relay's circuit address among them) in a DHT whose
// member is public; a dialer behind another port-restricted NAT, with no
// relay of its own, looks the listener up by key, dials it at what it
// found, and gets its echo.
func TestLocateThroughNATs(t *testing.T) {
	lab := natlab.New(t)
	_, hubKey := identityPEM(t)
	var hub []string
	startLocatePeer(t, lab.AddPublicHost("hub"), locatePeerSpec{Role: "hub", Key: hubKey}, "ready", &hub)
	lid, lkey := identityPEM(t)
	var published []string
	startLocatePeer(t, lab.AddHost("l", natlab.PortRestricted), locatePeerSpec{Role: "listener", Key: lkey, Relay: hub[0], DHT: hub[1]}, "ready", &published)
	_, dkey := identityPEM(t)
	var res locateResult
	startLocatePeer(t, lab.AddHost("d", natlab.PortRestricted), locatePeerSpec{Role: "dialer", Key: dkey, DHT: hub[1], Target: lid.PublicKey().String()}, "result", &res)
	t.Logf("published %v; found %v; the stream went %s", published, res.Addrs, res.Path)
	if res.Err != "" {
		t.Fatalf("the dialer: %s", res.Err)
	}
	if len(res.Addrs) != len(published) {
		t.Errorf("found %v, want what was published, %v", res.Addrs, published)
	}
}
