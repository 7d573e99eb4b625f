// Package natlab builds a NAT lab on one machine, for tests only: Linux
// network namespaces joined by veth pairs stand for an internet, public
// hosts on it, and hosts behind NATs and firewalls whose behaviour
// (RFC 4787's mapping and filtering) nftables rulesets give. It lets tests
// check how peers behind every kind of NAT reach each other, hole punching
// included, without leaving the machine.
//
// # What it builds
//
// [New] makes the internet: one namespace that routes between links, with
// no NAT and no filter. [Lab.AddPublicHost] puts a host on a link of its own;
// [Lab.AddHost] puts one behind a router namespace of a [Kind]:
//
//	host ──eth0── lan0 [router] wan0 ──p1── [internet] ──p2── eth0 public host
//
// Every namespace's name starts with the lab's prefix,
// "natlab-<pid>-<start>-<n>-" (the process, its start time, and a counter
// of its labs), so that labs of parallel test processes never collide, then
// "inet", "r-<host>" (a router) or "h-<host>" (a host). Interfaces are made
// inside the lab's namespaces, never in the machine's own, and no link leads
// out of them: no packet leaves the lab. When the test ends, t.Cleanup
// deletes every namespace with the lab's prefix (and with them every veth
// and nftables table), after a failure or a panic too, and kills any
// process still running inside. A run that is killed cannot clean up; the
// next [New] deletes the namespaces of labs whose process is gone.
//
// # Addresses
//
// All come from 198.18.0.0/15, which RFC 2544 reserves for benchmarking.
//
//   - Link i of the internet router (one per public host or router, i from
//     1 to 127) is 198.18.i.0/24: the internet router is 198.18.i.1, the
//     public host or the router's wan0 198.18.i.2.
//   - Behind a NAT router on link i, lan0 is 198.19.i.1 and the host
//     198.19.i.2. Nothing on the internet routes 198.19.0.0/16: the
//     internet router answers a packet to it with an ICMP unreachable,
//     at once, so a dial to a private address fails fast.
//   - Behind a firewall on link i, lan0 is 198.18.(128+i).1 and the host
//     198.18.(128+i).2, a public address the internet router routes
//     through the firewall.
//
// [Host.Addr] is the host's own address, [Host.PublicAddr] the one the
// internet sees.
//
// # Kinds
//
//	Kind                mapping                      filtering
//	public              its own address and port     none
//	full-cone           endpoint-independent         endpoint-independent
//	address-restricted  endpoint-independent         address-dependent
//	port-restricted     endpoint-independent         address-and-port-dependent
//	symmetric           address-and-port-dependent   address-and-port-dependent
//	firewall            its own address and port     address-and-port-dependent
//
// The same holds for TCP and UDP. Keeping its own address and port is an
// endpoint-independent mapping ([Kind.Mapping] says so), and the
// endpoint-independent NATs keep the host's port too. The symmetric NAT
// hands out ports in turn from 20000. NAT and firewall routers drop what
// they refuse in silence (no RST, no ICMP), as home routers do, and record
// it for [Host.Dropped]. A TCP simultaneous open (both sides
// dialing each other's observed address from their listening port, with
// SO_REUSEPORT) gets through every pair except a symmetric NAT facing a
// symmetric NAT, a port-restricted NAT or a firewall; [Punchable] derives
// that from the behaviours, and the package's tests check the lab against
// it. ruleset.go holds each kind's ruleset and says why it behaves so.
//
// # Running
//
// The tests need root (for namespaces and nftables), ip (iproute2) and nft
// (nftables), and a kernel with network namespaces, veth, conntrack and
// nftables NAT:
//
//	sudo go test ./internal/natlab
//
// Without them New skips the test, and fails it when
// SECUREPEER_REQUIRE_NETNS=1, as .ci/run sets after installing nftables and
// iproute2. A test uses a lab so:
//
//	lab := natlab.New(t)
//	relay := lab.AddPublicHost("relay")
//	alice := lab.AddHost("alice", natlab.PortRestricted)
//	cmd := alice.Command(ctx, "/path/to/peer", "-relay", relay.Addr().String())
//
// [Host.Command] runs a program inside a host's namespace; [Host.Do] and
// the socket helpers ([Host.ListenTCP], [Host.DialTCP], [Host.ListenUDP])
// open sockets there from the test's own process.
package natlab
