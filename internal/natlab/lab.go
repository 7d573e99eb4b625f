//go:build linux

package natlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// RequireEnv names the environment variable that turns a lab the machine
// cannot build (not root, no ip or nft, no namespaces or nftables NAT in
// the kernel) from a skipped test into a failed one. .ci/run sets it to 1.
const RequireEnv = "SECUREPEER_REQUIRE_NETNS"

// netnsDir is where ip netns keeps the namespaces it names.
const netnsDir = "/var/run/netns"

// namePrefix starts the name of every namespace a lab makes. The rest of a
// lab's prefix is "<pid>-<start>-<n>-": the process that made it, that
// process's start time (so that a reused pid is not taken for the dead run)
// and a counter for labs within one process.
const namePrefix = "natlab-"

// maxLinks bounds the links a lab's internet router has: link i is
// 198.18.i.0/24, and a firewall's host takes 198.18.(128+i).0/24.
const maxLinks = 127

// commandTimeout bounds each ip or nft command the lab runs to build or
// tear itself down.
const commandTimeout = 30 * time.Second

// A Lab is a set of network namespaces on one machine that stand for the
// internet and the hosts on it: an internet router, public hosts on it, and
// hosts behind NAT or firewall routers of the [Kind] asked for. The package
// documentation draws it. A Lab's methods may be called from several
// goroutines.
type Lab struct {
	t      testing.TB
	prefix string
	inet   string // the internet router's namespace
	ip     string // path of ip
	nft    string // path of nft

	mu    sync.Mutex
	links int // links made so far on the internet router
	hosts map[string]*Host
}

// labCount numbers the labs this process makes.
var labCount atomic.Uint64

// New builds an empty lab's internet for t and deletes everything the lab
// makes when t ends, after a failure or a panic too. It first deletes the
// namespaces that labs of processes no longer running left behind (a run
// killed before its cleanup). If the machine cannot build a lab, New skips
// t, or fails it when [RequireEnv] is "1"; any other error fails t.
func New(t testing.TB) *Lab {
	t.Helper()
	l, err := newLab(t)
	switch {
	case errors.Is(err, errUnavailable):
		unavailable(t, err)
	case err != nil:
		t.Fatal(err)
	}
	return l
}

// errUnavailable marks the errors that say this machine cannot build a lab
// at all.
var errUnavailable = errors.New("natlab: this machine cannot build a NAT lab")

func newLab(t testing.TB) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: it needs root for network namespaces and nftables (run: sudo go test ./internal/natlab)", errUnavailable)
	}
	ipPath, err := lookSbin("ip")
	if err != nil {
		return nil, fmt.Errorf("%w: ip is not installed (apt-get install iproute2): %w", errUnavailable, err)
	}
	nftPath, err := lookSbin("nft")
	if err != nil {
		return nil, fmt.Errorf("%w: nft is not installed (apt-get install nftables): %w", errUnavailable, err)
	}
	start, err := processStart(os.Getpid())
	if err != nil {
		return nil, err
	}
	l := &Lab{
		t:      t,
		prefix: fmt.Sprintf("%s%d-%d-%d-", namePrefix, os.Getpid(), start, labCount.Add(1)),
		ip:     ipPath,
		nft:    nftPath,
		hosts:  make(map[string]*Host),
	}
	if err := removeStale(ipPath); err != nil {
		return nil, err
	}
	t.Cleanup(l.cleanup)
	l.inet = l.prefix + "inet"
	if err := l.addNamespace(l.inet, roleInet); err != nil {
		return nil, fmt.Errorf("%w: %w", errUnavailable, err)
	}
	if err := l.nftLoad(l.inet, nftProbe); err != nil {
		return nil, fmt.Errorf("%w: the kernel refused an nftables NAT table: %w", errUnavailable, err)
	}
	return l, nil
}

// nftProbe is a throwaway table with what the rulesets need from the
// kernel (a NAT chain, conntrack, a dynamic set with timeouts), loaded into
// the internet router once to find out whether this kernel has them, and
// deleted in the same transaction.
const nftProbe = `table ip natlabprobe {
	set s {
		type inet_proto . inet_service
		flags dynamic, timeout
		timeout 1m
	}
	chain c {
		type nat hook postrouting priority srcnat; policy accept;
		ct state new update @s { meta l4proto . th sport } masquerade
	}
}
delete table ip natlabprobe
`

// lookSbin returns the path of an administration tool: on PATH, or in
// /usr/sbin or /sbin, which a user's PATH often lacks.
func lookSbin(name string) (string, error) {
	path, err := exec.LookPath(name)
	if err == nil {
		return path, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p, err := exec.LookPath(filepath.Join(dir, name)); err == nil {
			return p, nil
		}
	}
	return "", err
}

// unavailable skips t for err, or fails it when RequireEnv is "1".
func unavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%v (%s=1 makes that a failure)", err, RequireEnv)
		return
	}
	t.Skip(err)
}

// Prefix returns the start of the name of every namespace the lab makes.
func (l *Lab) Prefix() string { return l.prefix }

// processStart returns the start time of process pid, in clock ticks since
// boot, from /proc/<pid>/stat.
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("natlab: %w", err)
	}
	// The command name, in parentheses, may hold spaces; the fields after
	// it start with the state, field 3, and the start time is field 22.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("natlab: /proc/%d/stat has no command name", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 {
		return 0, fmt.Errorf("natlab: /proc/%d/stat has no start time", pid)
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("natlab: /proc/%d/stat: %w", pid, err)
	}
	return start, nil
}

// staleName matches a lab namespace's name and captures its maker's pid and
// start time.
var staleName = regexp.MustCompile(`^` + namePrefix + `(\d+)-(\d+)-\d+-`)

// removeStale deletes the namespaces of labs whose process is gone.
func removeStale(ip string) error {
	names, err := namespaces(namePrefix)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		m := staleName.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		start, _ := strconv.ParseUint(m[2], 10, 64)
		if now, err := processStart(pid); err == nil && now == start {
			continue // a lab of a running process
		}
		errs = append(errs, deleteNamespace(ip, name))
	}
	return errors.Join(errs...)
}

// namespaces returns the names of the namespaces ip netns knows that start
// with prefix.
func namespaces(prefix string) ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("natlab: list network namespaces: %w", err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// cleanup deletes every namespace whose name has the lab's prefix, and with
// them every interface and nftables table in them, killing what still runs
// inside first.
func (l *Lab) cleanup() {
	names, err := namespaces(l.prefix)
	if err != nil {
		l.t.Error(err)
		return
	}
	for _, name := range names {
		if pids := namespacePids(l.ip, name); len(pids) > 0 {
			l.t.Logf("natlab: killing %v, still running in %s", pids, name)
		}
		if err := deleteNamespace(l.ip, name); err != nil {
			l.t.Error(err)
		}
	}
}

// deleteNamespace kills every process still inside namespace name and
// deletes it. A namespace someone else deleted first is not an error.
func deleteNamespace(ip, name string) error {
	for _, pid := range namespacePids(ip, name) {
		// Only processes a lab started run in its namespaces; one left
		// running would keep the namespace alive after its name is gone.
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	err := run(ip, nil, "netns", "delete", name)
	if err != nil {
		if _, statErr := os.Stat(filepath.Join(netnsDir, name)); errors.Is(statErr, os.ErrNotExist) {
			return nil
		}
	}
	return err
}

// namespacePids returns the processes running in namespace name.
func namespacePids(ip, name string) []int {
	out, err := output(ip, nil, "netns", "pids", name)
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

// run runs a command the lab needs, with stdin if it is not nil, and
// returns an error with its output if it fails.
func run(name string, stdin []byte, args ...string) error {
	_, err := output(name, stdin, args...)
	return err
}

// output runs a command like run and returns its standard output.
func output(name string, stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("natlab: %s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.String(), nil
}

// The roles of a namespace, which set its sysctls.
const (
	roleHost   = iota
	roleRouter // forwards IPv4
	roleInet   // forwards IPv4, and answers every packet it has no route for with an ICMP unreachable, not only one a second per source
)

// addNamespace makes namespace name for role with its loopback up and IPv6
// off (so that no interface sends router solicitations or takes a
// link-local address).
func (l *Lab) addNamespace(name string, role int) error {
	if err := run(l.ip, nil, "netns", "add", name); err != nil {
		return err
	}
	sysctls := map[string]string{"net/ipv4/ip_forward": "0"}
	if role != roleHost {
		sysctls["net/ipv4/ip_forward"] = "1"
	}
	if role == roleInet {
		// A dial to a private address then fails at once, where the
		// per-source limit would leave a host's third and later dials
		// waiting for a SYN retransmission seconds away.
		sysctls["net/ipv4/icmp_ratelimit"] = "0"
	}
	if _, err := os.Stat("/proc/sys/net/ipv6"); err == nil {
		sysctls["net/ipv6/conf/all/disable_ipv6"] = "1"
		sysctls["net/ipv6/conf/default/disable_ipv6"] = "1"
	}
	err := inNamespace(name, func() error {
		for key, value := range sysctls {
			if err := os.WriteFile("/proc/sys/"+key, []byte(value), 0); err != nil {
				return fmt.Errorf("natlab: %s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return l.ipBatch(name, "link set lo up")
}

// ipBatch runs ip commands, one a line, inside namespace ns.
func (l *Lab) ipBatch(ns string, lines ...string) error {
	return run(l.ip, []byte(strings.Join(lines, "\n")+"\n"), "-n", ns, "-batch", "-")
}

// nftLoad loads an nftables ruleset into namespace ns.
func (l *Lab) nftLoad(ns, ruleset string) error {
	return run(l.ip, []byte(ruleset), "netns", "exec", ns, l.nft, "-f", "-")
}

// link joins namespace ns to the internet router with a new veth pair whose
// end in ns is ifname, and returns ns's address on it, 198.18.i.2 on the
// link 198.18.i.0/24 (the router is 198.18.i.1 and ns's default route).
func (l *Lab) link(ns, ifname string) (i int, addr netip.Addr, err error) {
	l.mu.Lock()
	if l.links == maxLinks {
		l.mu.Unlock()
		return 0, netip.Addr{}, fmt.Errorf("natlab: a lab holds at most %d public hosts and routers", maxLinks)
	}
	l.links++
	i = l.links
	l.mu.Unlock()
	inetIf := fmt.Sprintf("p%d", i)
	err = l.ipBatch(l.inet,
		fmt.Sprintf("link add %s type veth peer name %s netns %s", inetIf, ifname, ns),
		fmt.Sprintf("addr add 198.18.%d.1/24 dev %s", i, inetIf),
		fmt.Sprintf("link set %s up", inetIf),
	)
	if err != nil {
		return 0, netip.Addr{}, err
	}
	err = l.ipBatch(ns,
		fmt.Sprintf("addr add 198.18.%d.2/24 dev %s", i, ifname),
		fmt.Sprintf("link set %s up", ifname),
		fmt.Sprintf("route add default via 198.18.%d.1", i),
	)
	return i, netip.AddrFrom4([4]byte{198, 18, byte(i), 2}), err
}
