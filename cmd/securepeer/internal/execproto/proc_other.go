//go:build !unix

package execproto

import (
	"errors"
	"os"
	"os/exec"
)

// ShellCommand returns the command that runs command with the system shell.
func ShellCommand(command string) *exec.Cmd {
	return exec.Command("cmd", "/C", command)
}

// defaultChildSignals does nothing: there are no signals to inherit.
func defaultChildSignals() {}

// terminateCommand ends the command; without process groups, only the
// shell itself can be reached.
func terminateCommand(cmd *exec.Cmd) { cmd.Process.Kill() }

// hangUpCommand ends the command, as there are no hangup signals.
func hangUpCommand(cmd *exec.Cmd) { cmd.Process.Kill() }

func killCommand(cmd *exec.Cmd) { cmd.Process.Kill() }

// commandStatus is how the command ended: its exit status, 255 for one
// that does not fit a byte.
func commandStatus(ps *os.ProcessState) Status {
	code := ps.ExitCode()
	if code < 0 || code > 255 {
		code = 255
	}
	return Status{Kind: Exited, Code: uint8(code)}
}

// errNoTTY is the answer to a request for a terminal on a system where
// listen cannot make one.
var errNoTTY = errors.New("this system has no pseudo-terminals for -exec")

func startTTY(*exec.Cmd, WinSize) (*os.File, error) { return nil, errNoTTY }

func setTTYSize(*os.File, WinSize) error { return errNoTTY }

func ttyEnded(error) bool { return false }
