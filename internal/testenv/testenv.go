// Package testenv holds what the project's tests share: the one rule for a
// tool that may be missing, the one goroutine-leak checker, and the one
// loopback TCP pair.
package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Required reports whether tests must fail rather than skip when a tool
// they need is missing: SECUREPEER_REQUIRE_INTEROP=1, as .ci/run sets, so
// that CI never passes by skipping.
func Required() bool { return os.Getenv("SECUREPEER_REQUIRE_INTEROP") == "1" }

// RequireTool returns the path of tool, skipping the test if it is missing,
// or failing it if Required.
func RequireTool(t testing.TB, tool string) string {
	t.Helper()
	path, err := LookTool(tool)
	if err != nil {
		Unavailable(t, err.Error())
	}
	return path
}

// LookTool returns the path of tool, or an error that says why it cannot be
// used, for callers that are not tests (a testscript condition).
func LookTool(tool string) (string, error) {
	path, err := exec.LookPath(tool)
	if err != nil {
		return "", fmt.Errorf("%s is not installed: %w", tool, err)
	}
	return path, nil
}

// Unavailable skips the test for the reason given, or fails it if Required.
func Unavailable(t testing.TB, reason string) {
	t.Helper()
	if Required() {
		t.Fatalf("%s (SECUREPEER_REQUIRE_INTEROP=1 makes that a failure)", reason)
	}
	t.Skip(reason)
}

// CheckNoLeaks fails t if, once t and its subtests have ended and a grace
// period of at most slack has passed, more goroutines run than when it was
// called. Call it first in a test, so that its check runs after every other
// cleanup.
func CheckNoLeaks(t testing.TB, slack time.Duration) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		if err := WaitGoroutines(before, slack); err != nil {
			t.Error(err)
		}
	})
}

// WaitGoroutines waits, for at most slack, until no more than n goroutines
// run, and otherwise returns an error with every goroutine's stack.
func WaitGoroutines(n int, slack time.Duration) error {
	deadline := time.Now().Add(slack)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			return fmt.Errorf("%d goroutines leaked:\n%s", runtime.NumGoroutine()-n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// LeakedGoroutines waits, for at most slack, until no goroutine runs code
// whose stack mentions frame (a package path such as "securepeer/legacy."),
// except those in skip, and returns the stacks of those left: for a
// TestMain that checks a whole package.
func LeakedGoroutines(frame string, slack time.Duration, skip ...string) string {
	deadline := time.Now().Add(slack)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
	next:
		for _, g := range strings.Split(string(buf), "\n\n") {
			if !strings.Contains(g, frame) || strings.Contains(g, "testenv.LeakedGoroutines") {
				continue
			}
			for _, s := range skip {
				if strings.Contains(g, s) {
					continue next
				}
			}
			leaked = append(leaked, g)
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TCPPair returns the two ends of a loopback TCP connection, closed when the
// test ends.
func TCPPair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		c   *net.TCPConn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := ln.AcceptTCP()
		ch <- result{c, err}
	}()
	a, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		a.Close()
		t.Fatal(r.err)
	}
	t.Cleanup(func() { a.Close(); r.c.Close() })
	return a, r.c
}
