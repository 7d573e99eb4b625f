package natlab_test

import (
	"testing"

	"github.com/securepeer/securepeer/internal/natlab"
)

// punchTable says, for every pair of kinds, whether a TCP simultaneous
// open between hosts behind them succeeds: each side listens with
// SO_REUSEPORT, learns its public address from a relay, and dials the
// other's from its listening port. A row's reason names the SYN that gets
// through. TestPunchable checks natlab.Punchable against it and
// TestTCPSimultaneousOpen checks the lab.
var punchTable = []struct {
	a, b natlab.Kind
	want bool
	// predict marks the pairs that go direct only because the
	// symmetric side announces the ports its NAT will give out next
	// (port prediction, in the p2p engine); the lab's own probe
	// (TestTCPSimultaneousOpen) dials the observed ports only.
	predict bool
}{
	// A public host takes any SYN at its listening port.
	{natlab.Public, natlab.Public, true, false},
	{natlab.Public, natlab.FullCone, true, false},
	{natlab.Public, natlab.AddressRestricted, true, false},
	{natlab.Public, natlab.PortRestricted, true, false},
	{natlab.Public, natlab.Symmetric, true, false}, // from the symmetric side's new port, to the public listener
	{natlab.Public, natlab.Firewall, true, false},
	// A full cone takes any SYN at its mapped port.
	{natlab.FullCone, natlab.FullCone, true, false},
	{natlab.FullCone, natlab.AddressRestricted, true, false},
	{natlab.FullCone, natlab.PortRestricted, true, false},
	{natlab.FullCone, natlab.Symmetric, true, false}, // the symmetric side's SYN, from a new port, to the cone's mapping
	{natlab.FullCone, natlab.Firewall, true, false},
	// An address-restricted cone takes any SYN from an address it has
	// sent to, once its own SYN has gone out.
	{natlab.AddressRestricted, natlab.AddressRestricted, true, false},
	{natlab.AddressRestricted, natlab.PortRestricted, true, false},
	{natlab.AddressRestricted, natlab.Symmetric, true, false}, // the symmetric side's SYN, from its new port, to the cone
	{natlab.AddressRestricted, natlab.Firewall, true, false},
	// Port-restricted cones and firewalls take the SYN from the exact
	// address and port they sent theirs to: both sides' SYNs meet,
	// since neither changes its port.
	{natlab.PortRestricted, natlab.PortRestricted, true, false},
	{natlab.PortRestricted, natlab.Firewall, true, false},
	{natlab.Firewall, natlab.Firewall, true, false},
	// A symmetric NAT's SYN leaves from a port no one has seen, so a
	// port-restricted or firewalled peer drops it, and it drops every SYN
	// to the port the relay saw; unless the symmetric side announced the
	// ports its NAT hands out next, and the peer's SYNs to them, from
	// its one port, opened its filter for the symmetric side's SYN.
	{natlab.PortRestricted, natlab.Symmetric, true, true},
	{natlab.Symmetric, natlab.Firewall, true, true},
	// Both sides' SYNs leave from ports the other has not aimed at.
	{natlab.Symmetric, natlab.Symmetric, false, false},
}

// TestPunchable checks that natlab.Punchable, derived from the kinds' mapping and
// filtering, gives punchTable, for both orders of each pair, and that the
// table holds every pair once.
func TestPunchable(t *testing.T) {
	seen := make(map[[2]natlab.Kind]bool)
	for _, row := range punchTable {
		for _, pair := range [][2]natlab.Kind{{row.a, row.b}, {row.b, row.a}} {
			if got := natlab.Punchable(pair[0], pair[1]); got != row.want {
				t.Errorf("natlab.Punchable(%v, %v) = %v, want %v", pair[0], pair[1], got, row.want)
			}
			seen[pair] = true
		}
	}
	n := len(natlab.Kinds())
	if len(seen) != n*n || len(punchTable) != n*(n+1)/2 {
		t.Errorf("punchTable has %d rows covering %d ordered pairs, want %d rows covering %d", len(punchTable), len(seen), n*(n+1)/2, n*n)
	}
}

// TestBehaviors checks each kind's RFC 4787 behaviours, which the
// lab's tests and natlab.Punchable rely on.
func TestBehaviors(t *testing.T) {
	tests := []struct {
		kind       natlab.Kind
		name       string
		translates bool
		mapping    natlab.Behavior
		filtering  natlab.Behavior
	}{
		{natlab.Public, "public", false, natlab.EndpointIndependent, natlab.Open},
		{natlab.FullCone, "full-cone", true, natlab.EndpointIndependent, natlab.EndpointIndependent},
		{natlab.AddressRestricted, "address-restricted", true, natlab.EndpointIndependent, natlab.AddressDependent},
		{natlab.PortRestricted, "port-restricted", true, natlab.EndpointIndependent, natlab.AddressAndPortDependent},
		{natlab.Symmetric, "symmetric", true, natlab.AddressAndPortDependent, natlab.AddressAndPortDependent},
		{natlab.Firewall, "firewall", false, natlab.EndpointIndependent, natlab.AddressAndPortDependent},
		{natlab.SymmetricRandom, "symmetric-random", true, natlab.AddressAndPortDependent, natlab.AddressAndPortDependent},
	}
	if len(tests) != len(natlab.Kinds())+1 {
		t.Fatalf("%d kinds tested, %d exist", len(tests), len(natlab.Kinds())+1)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := tt.kind
			if k.String() != tt.name || k.Translates() != tt.translates || k.Mapping() != tt.mapping || k.Filtering() != tt.filtering {
				t.Errorf("%v: translates %v, mapping %v, filtering %v; want %s, %v, %v, %v",
					k, k.Translates(), k.Mapping(), k.Filtering(), tt.name, tt.translates, tt.mapping, tt.filtering)
			}
		})
	}
	for _, k := range natlab.Kinds() {
		if k.Sequential() != (k == natlab.Symmetric) {
			t.Errorf("%v.Sequential() = %v", k, k.Sequential())
		}
	}
	if natlab.SymmetricRandom.Sequential() || natlab.Punchable(natlab.SymmetricRandom, natlab.PortRestricted) {
		t.Error("a NAT that picks ports at random is predictable")
	}
	if got := natlab.Kind(99).String(); got != "Kind(99)" {
		t.Errorf("natlab.Kind(99).String() = %q", got)
	}
}
