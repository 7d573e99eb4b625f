package testutil

import (
	"fmt"
	"testing"
	"time"
)

// Timeout bounds what a test waits for: a hang, not a slow machine; it is
// generous for a loaded 2-core machine running -race.
const Timeout = 60 * time.Second

// WaitFor waits until cond holds, polling it every 20ms, and fails the
// test with log once [Timeout] has passed.
func WaitFor(t testing.TB, cond func() bool, log fmt.Stringer) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v\n%s", Timeout, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A Stringer is a function as a [fmt.Stringer], for what a test logs when
// it fails, built only then.
type Stringer func() string

// String returns s().
func (s Stringer) String() string { return s() }
