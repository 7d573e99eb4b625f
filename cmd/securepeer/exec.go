package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"time"
)

// killDelay is how long a command gets to exit after SIGTERM before it is
// killed.
const killDelay = 3 * time.Second

// runExec runs command for the peer of s, with the stream as its stdin and
// stdout, and waits for it. The command's stdout ending ends the stream
// cleanly. If the peer's stream breaks, the command is terminated, so it
// does not act on input that may be incomplete; if ctx ends (the session is
// cut), it is terminated and the stream aborted, so the peer knows its
// output may be incomplete.
func runExec(ctx context.Context, e *env, s *stream, command string, log *slog.Logger) error {
	cmd := shellCommand(command)
	cmd.Env = append(os.Environ(),
		"SECUREPEER_PEER_KEY="+s.peer.String(),
		"SECUREPEER_PEER_FINGERPRINT="+s.peer.Fingerprint(),
		"SECUREPEER_PEER_ADDR="+s.remoteAddr,
	)
	cmd.Stderr = e.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		s.abort()
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		s.abort()
		return err
	}
	if err := cmd.Start(); err != nil {
		s.abort()
		return fmt.Errorf("-exec: cannot start %q: %v", command, err)
	}
	log.Info("command started", "pid", cmd.Process.Pid, "peer", s.peer.Fingerprint())

	inDone := make(chan error, 1)
	go func() { inDone <- feedCommand(stdin, s.conn) }()
	outDone := make(chan error, 1)
	go func() {
		_, err := copyStream(s, stdout)
		outDone <- err
	}()

	var (
		peerErr, outErr error
		killTimer       *time.Timer
		interrupted     bool
	)
	terminate := func() {
		if killTimer == nil {
			terminateCommand(cmd)
			killTimer = time.AfterFunc(killDelay, func() { killCommand(cmd) })
		}
	}
	done := ctx.Done()
	for waiting := true; waiting; {
		select {
		case outErr = <-outDone:
			waiting = false
		case err := <-inDone:
			inDone = nil
			if err != nil {
				peerErr = err
				terminate()
			}
		case <-done:
			done = nil
			interrupted = true
			terminate()
		}
	}
	// The command's output is complete: say so to the peer. Unless the
	// session was cut: then its output ended because it was terminated.
	clean := outErr == nil && peerErr == nil && !interrupted
	if clean {
		s.closeWrite()
	} else {
		s.abort()
	}
	waitErr := cmd.Wait()
	if killTimer != nil {
		killTimer.Stop()
	}
	if clean {
		s.close()
	}
	if inDone != nil {
		if err := <-inDone; err != nil && peerErr == nil && !interrupted {
			log.Info("peer stream after the command ended", "err", err)
		}
	}
	log.Info("command finished", "pid", cmd.Process.Pid, "status", cmd.ProcessState.String())

	switch {
	case peerErr != nil:
		return fmt.Errorf("-exec: terminated %q: %v", command, streamError(s, peerErr))
	case outErr != nil:
		return fmt.Errorf("-exec: sending the output of %q: %v", command, streamError(s, outErr))
	case interrupted:
		return fmt.Errorf("-exec: cut the session of %s (%q) as listen stopped; the peer was told its output may be incomplete", s.remoteAddr, command)
	case waitErr != nil:
		var ee *exec.ExitError
		if errors.As(waitErr, &ee) {
			return fmt.Errorf("-exec: %q for %s exited with %v", command, s.peer.Fingerprint(), ee.ProcessState)
		}
		return fmt.Errorf("-exec: %q: %v", command, waitErr)
	}
	return nil
}

// feedCommand copies the peer's stream to the command's stdin and closes
// it at the end. A command that stops reading is not an error; a broken
// peer stream is.
func feedCommand(stdin io.WriteCloser, conn io.Reader) error {
	defer stdin.Close()
	buf := make([]byte, bufSize)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			if _, werr := stdin.Write(buf[:n]); werr != nil {
				return nil
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
