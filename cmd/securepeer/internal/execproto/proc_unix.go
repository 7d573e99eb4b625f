//go:build unix

package execproto

import (
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// ShellCommand returns the command that runs command with /bin/sh, in a
// process group of its own so it and its children can be ended together.
// Being outside the terminal's foreground group, it does not get the
// terminal's Ctrl-C: securepeer ends it itself, after closing streams.
func ShellCommand(command string) *exec.Cmd {
	cmd := exec.Command("/bin/sh", "-c", command)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// sessionSignals are the signals a command's session relies on: the
// terminal's hangup, Ctrl-C and Ctrl-\, and the server's request to end.
var sessionSignals = []os.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM}

var defaultSignalsOnce sync.Once

// defaultChildSignals makes sessionSignals default in the commands this
// process starts, as sshd does for a session. A signal this process
// ignores from its start (SIGHUP under nohup; SIGINT and SIGQUIT in a
// script's background job) stays ignored in every child, and a command
// that ignores SIGHUP never learns that its client hung up: a shell's
// HUP trap cannot even be set. A signal this process handles is reset to
// its default in a child, so each such signal gets a handler that drops
// it: this process goes on ignoring it, its commands do not.
func defaultChildSignals() {
	defaultSignalsOnce.Do(func() {
		var ignored []os.Signal
		for _, sig := range sessionSignals {
			if signal.Ignored(sig) {
				ignored = append(ignored, sig)
			}
		}
		if len(ignored) > 0 {
			signal.Notify(make(chan os.Signal, 1), ignored...)
		}
	})
}

// terminateCommand asks the command's process group to exit.
func terminateCommand(cmd *exec.Cmd) {
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
}

// hangUpCommand tells the command's process group that its terminal is
// gone, as the kernel does when a terminal closes.
func hangUpCommand(cmd *exec.Cmd) {
	syscall.Kill(-cmd.Process.Pid, syscall.SIGHUP)
}

// killCommand kills the command's process group.
func killCommand(cmd *exec.Cmd) {
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}

// commandStatus is how the command ended, as securepeer-exec/2 says it: its
// exit code, or the signal that killed it, with 128 plus the signal's
// number as the code, as shells report it.
func commandStatus(ps *os.ProcessState) Status {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		return Status{Kind: Exited, Code: uint8(ps.ExitCode())}
	}
	name := strings.TrimPrefix(unix.SignalName(ws.Signal()), "SIG")
	if !validSignalName(name) {
		name = strconv.Itoa(int(ws.Signal()))
	}
	return Status{Kind: Signaled, Code: uint8(128 + int(ws.Signal())), Detail: name}
}

// startTTY starts cmd on a new pseudo-terminal of size sz, as the leader
// of a new session whose controlling terminal it is (so the kernel's
// hangup, job control and Ctrl-C work in it as in a login), and returns
// the terminal's master side. That file is non-blocking, so that a
// deadline or Close wakes a goroutine blocked in its Read or Write.
func startTTY(cmd *exec.Cmd, sz WinSize) (*os.File, error) {
	// A session leader leads its process group already, and may not
	// be moved to another: Setsid replaces Setpgid.
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	master, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: sz.Cols, Rows: sz.Rows})
	if err != nil {
		return nil, err
	}
	f, err := nonBlocking(master)
	if err != nil {
		killCommand(cmd)
		cmd.Wait()
		return nil, err
	}
	return f, nil
}

// nonBlocking returns f as a non-blocking, pollable file, and closes f.
// (creack/pty leaves its master in blocking mode, for which Go's Close
// would wait for a Read in progress to end by itself.)
func nonBlocking(f *os.File) (*os.File, error) {
	defer f.Close()
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return nil, err
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// setTTYSize sets the size of the terminal whose master side is f.
func setTTYSize(f *os.File, sz WinSize) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	err = rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Col: sz.Cols, Row: sz.Rows})
	})
	return errors.Join(err, ierr)
}

// ttyEnded reports whether a read error of a terminal's master side means
// that no process has the terminal open any more (Linux says EIO).
func ttyEnded(err error) bool { return errors.Is(err, syscall.EIO) }
