package execproto

import (
	"fmt"
	"testing"
	"time"
)

// testTimeout bounds what a test waits for: a hang, not a slow machine.
const testTimeout = 60 * time.Second

// waitFor waits until cond holds, failing the test with log after
// testTimeout.
func waitFor(t testing.TB, cond func() bool, log fmt.Stringer) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v\n%s", testTimeout, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type stringer func() string

func (s stringer) String() string { return s() }
