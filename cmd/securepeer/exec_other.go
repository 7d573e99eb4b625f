//go:build !unix

package main

import (
	"os"
	"os/exec"
)

// shellCommand returns the command that runs command with the system shell.
func shellCommand(command string) *exec.Cmd {
	return exec.Command("cmd", "/C", command)
}

// terminateCommand ends the command; without process groups, only the
// shell itself can be reached.
func terminateCommand(cmd *exec.Cmd) { cmd.Process.Kill() }

func killCommand(cmd *exec.Cmd) { cmd.Process.Kill() }

// commandExitCode is the command's exit status.
func commandExitCode(ps *os.ProcessState) int {
	if c := ps.ExitCode(); c >= 0 && c <= 255 {
		return c
	}
	return 255
}
