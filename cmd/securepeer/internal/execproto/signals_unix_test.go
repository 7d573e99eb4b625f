//go:build unix

package execproto

import (
	"os"
	"os/exec"
	"testing"
)

// TestHangupUnderNohup runs the hangup tests in a process that ignores
// SIGHUP from its start, as `nohup securepeer listen -exec ...` does: a
// command on a terminal must still take its hangup, and a shell's HUP
// trap must run. Before the server made the session's signals default in
// its commands (defaultChildSignals), the ignored SIGHUP was inherited,
// the shell could not set its trap, and the test failed every time.
func TestHangupUnderNohup(t *testing.T) {
	t.Parallel()
	if os.Getenv("EXECPROTO_UNDER_NOHUP") != "" {
		t.Skip("already under nohup")
	}
	nohup, err := exec.LookPath("nohup")
	if err != nil {
		t.Skip("no nohup on this machine")
	}
	cmd := exec.Command(nohup, os.Args[0], "-test.run", "^TestExecSessionTTY$/^hangup", "-test.count", "1", "-test.v")
	cmd.Env = append(os.Environ(), "EXECPROTO_UNDER_NOHUP=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the hangup tests failed in a process that ignores SIGHUP: %v\n%s", err, out)
	}
}
