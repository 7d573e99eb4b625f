package legacy

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/securepeer/securepeer/internal/testenv"
)

// TestMain fails the run if goroutines started by this package outlive the
// tests: every handshake writer, watcher and test helper must have ended.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := leakedGoroutines(10 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "legacy: goroutines leaked by the tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines waits up to d for every goroutine running code from this
// package, other than the caller, to exit, and returns the stacks of those
// that remain.
func leakedGoroutines(d time.Duration) string {
	return testenv.LeakedGoroutines("securepeer/legacy.", d, "legacy.TestMain")
}
