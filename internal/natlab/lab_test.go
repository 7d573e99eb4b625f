//go:build linux

package natlab_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/securepeer/securepeer/internal/natlab"
)

// The test binary doubles as the programs the tests run inside a lab: with
// helperEnv set it runs one of these instead of the tests.
const (
	helperEnv   = "NATLAB_HELPER"
	observerEnv = "NATLAB_OBSERVER" // the observer helperUDPProbe asks
	// helperUDPProbe sends a datagram to the observer and prints
	// "<local address> <address the observer saw>".
	helperUDPProbe = "udp-probe"
	// helperBlock prints its pid and waits for a SIGTERM that does not
	// come: a process left running in a namespace.
	helperBlock = "block"
)

// labModeEnv makes TestHelperLab build a lab, print its prefix, and then
// end as it says: "fail", "panic", or "hang" until it is killed.
const labModeEnv = "NATLAB_HELPER_LAB"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case helperUDPProbe:
		if err := udpProbe(os.Getenv(observerEnv)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case helperBlock:
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		fmt.Println(os.Getpid())
		<-term
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%s\n", helperEnv, os.Getenv(helperEnv))
		os.Exit(2)
	}
	os.Exit(0)
}

// udpProbe asks the observer at addr which address it sees, from a new
// UDP port, and prints the port's local address and the answer.
func udpProbe(addr string) error {
	obs, err := netip.ParseAddrPort(addr)
	if err != nil {
		return err
	}
	// The route to the observer picks the source address, which the
	// connected socket reports.
	cc, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(obs))
	if err != nil {
		return err
	}
	defer cc.Close()
	seen, err := observeUDPConnected(cc)
	if err != nil {
		return err
	}
	fmt.Println(cc.LocalAddr(), seen)
	return nil
}

// observeUDPConnected asks the observer c is connected to which address it
// sees.
func observeUDPConnected(c *net.UDPConn) (netip.AddrPort, error) {
	if _, err := c.Write([]byte("?")); err != nil {
		return netip.AddrPort{}, err
	}
	c.SetReadDeadline(time.Now().Add(probeTimeout))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.ParseAddrPort(string(buf[:n]))
}

// TestHelperLab is not a test: the tests of cleanup run the test binary
// with labModeEnv set to make it a lab that ends badly.
func TestHelperLab(t *testing.T) {
	mode := os.Getenv(labModeEnv)
	if mode == "" {
		t.Skip("a helper for TestCleanupAfterFailure and TestStaleLabRemoved")
	}
	lab := natlab.New(t)
	h := lab.AddHost("a", natlab.PortRestricted)
	if mode == "hang" {
		// A process left in the lab, which the next lab must kill.
		cmd := h.Command(context.Background(), os.Args[0])
		cmd.Env = append(os.Environ(), helperEnv+"="+helperBlock)
		pid := readPid(t, cmd)
		fmt.Printf("natlab pid: %d\n", pid)
	}
	fmt.Printf("natlab prefix: %s\n", lab.Prefix())
	switch mode {
	case "fail":
		t.Fatal("failing on purpose")
	case "panic":
		panic("panicking on purpose")
	case "hang":
		io.Copy(io.Discard, os.Stdin)
	}
}

// readPid starts cmd, a helperBlock, and returns the pid it prints.
func readPid(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("the helper printed no pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// runHelperLab runs TestHelperLab in a new process in mode, and returns the
// command and a reader of its standard output; its standard input stays
// open until the test ends, and its standard error is logged if the test
// fails.
func runHelperLab(t *testing.T, mode string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperLab$", "-test.count=1")
	cmd.Env = append(os.Environ(), labModeEnv+"="+mode)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("the helper's standard error:\n%s", stderr.Bytes())
		}
	})
	return cmd, bufio.NewReader(out)
}

// readField reads lines from r until one starts with "natlab <name>: " and
// returns the rest of it.
func readField(t *testing.T, r *bufio.Reader, name string) string {
	t.Helper()
	for {
		line, err := r.ReadString('\n')
		if v, ok := strings.CutPrefix(line, "natlab "+name+": "); ok {
			return strings.TrimSpace(v)
		}
		if err != nil {
			t.Fatalf("the helper printed no %s: %v", name, err)
		}
	}
}

// labNamespaces returns the names of the namespaces that start with
// prefix.
func labNamespaces(t *testing.T, prefix string) []string {
	t.Helper()
	entries, err := os.ReadDir("/var/run/netns")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names
}

// TestCleanup checks that a lab's namespaces exist while its test runs and
// are gone when it ends, with the process that was left running in one.
func TestCleanup(t *testing.T) {
	var prefix string
	var cmd *exec.Cmd
	t.Run("lab", func(t *testing.T) {
		lab := natlab.New(t)
		h := lab.AddHost("a", natlab.Symmetric)
		prefix = lab.Prefix()
		want := []string{prefix + "h-a", prefix + "inet", prefix + "r-a"}
		if got := labNamespaces(t, prefix); !slices.Equal(got, want) {
			t.Errorf("namespaces %v, want %v", got, want)
		}
		cmd = h.Command(context.Background(), os.Args[0])
		cmd.Env = append(os.Environ(), helperEnv+"="+helperBlock)
		readPid(t, cmd)
	})
	if cmd == nil {
		return // the subtest failed or skipped
	}
	err := cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("the process left in the lab ended with %v, want killed", err)
	}
	if got := labNamespaces(t, prefix); len(got) != 0 {
		t.Errorf("namespaces %v are left after the test", got)
	}
}

// TestCleanupAfterFailure checks that a lab is deleted when its test fails
// or panics, in a process of its own.
func TestCleanupAfterFailure(t *testing.T) {
	natlab.New(t) // skips the test where a lab cannot be built
	for _, mode := range []string{"fail", "panic"} {
		t.Run(mode, func(t *testing.T) {
			cmd, out := runHelperLab(t, mode)
			prefix := readField(t, out, "prefix")
			io.Copy(io.Discard, out)
			if err := cmd.Wait(); err == nil {
				t.Error("the helper test passed")
			}
			if got := labNamespaces(t, prefix); len(got) != 0 {
				t.Errorf("namespaces %v are left after the test", got)
			}
		})
	}
}

// TestStaleLabRemoved checks that the namespaces of a run that was killed,
// and a process left in them, go when the next lab is made, and that a
// running process's labs stay.
func TestStaleLabRemoved(t *testing.T) {
	natlab.New(t) // skips the test where a lab cannot be built
	cmd, out := runHelperLab(t, "hang")
	pid, err := strconv.Atoi(readField(t, out, "pid"))
	if err != nil {
		t.Fatal(err)
	}
	prefix := readField(t, out, "prefix")
	cmd.Process.Kill()
	cmd.Wait()
	switch got := labNamespaces(t, prefix); len(got) {
	case 3:
	case 0:
		// A lab that another test process (another package) made
		// in the last moment removed them first.
		t.Logf("the killed run's namespaces were removed before this test's lab was made")
	default:
		t.Fatalf("the killed run left namespaces %v, want its 3", got)
	}

	// A lab of this process that the next lab must leave alone.
	start, err := natlab.ProcessStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	live := fmt.Sprintf("natlab-%d-%d-999999-inet", os.Getpid(), start)
	ip, err := natlab.LookSbin("ip")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(ip, "netns", "add", live).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command(ip, "netns", "delete", live).Run() })

	natlab.New(t)
	if got := labNamespaces(t, prefix); len(got) != 0 {
		t.Errorf("namespaces %v of the killed run are left", got)
	}
	if got := labNamespaces(t, live); len(got) != 1 {
		t.Errorf("the running process's namespace %s was deleted", live)
	}
	if alive(pid) {
		t.Errorf("process %d, left in the killed run's lab, still runs", pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// alive reports whether process pid runs, waiting a little for the exit
// of a process that was just killed; a zombie does not run.
func alive(pid int) bool {
	deadline := time.Now().Add(probeTimeout)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 && strings.HasPrefix(string(b[i+1:]), " Z") {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// TestRootNamespaceUntouched checks that a lab makes no interface in the
// machine's own namespace, so nothing in it can reach the machine's
// networks.
func TestRootNamespaceUntouched(t *testing.T) {
	before := rootLinks(t)
	lab := natlab.New(t)
	for _, k := range natlab.Kinds() {
		lab.AddHost(hostName(k, 1), k)
	}
	if after := rootLinks(t); !slices.Equal(before, after) {
		t.Errorf("the machine's interfaces were %v and are %v with a lab", before, after)
	}
}

// rootLinks returns the names of the machine's own interfaces.
func rootLinks(t *testing.T) []string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	slices.Sort(names)
	return names
}
