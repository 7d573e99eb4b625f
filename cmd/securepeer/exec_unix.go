//go:build unix

package main

import (
	"os"
	"os/exec"
	"syscall"
)

// shellCommand returns the command that runs command with /bin/sh, in a
// process group of its own so it and its children can be ended together.
// Being outside the terminal's foreground group, it does not get the
// terminal's Ctrl-C: securepeer ends it itself, after closing streams.
func shellCommand(command string) *exec.Cmd {
	cmd := exec.Command("/bin/sh", "-c", command)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// terminateCommand asks the command's process group to exit.
func terminateCommand(cmd *exec.Cmd) {
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
}

// killCommand kills the command's process group.
func killCommand(cmd *exec.Cmd) {
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}

// commandExitCode is the command's exit status as a shell reports it: 128 plus
// the signal's number for a command killed by a signal.
func commandExitCode(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}
