package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// The securepeer-exec/1 application protocol carries -exec's exit status
// to connect, which exits with it, as ssh does with the remote command's.
//
// A plain secure stream has no room for it: its authenticated end of
// stream says only that all data came. So a stdio connect offers
// execProtocol (and streamProtocol) in NextProtos, and so does listen
// -exec; when both do, the stream from listen to connect is framed: each
// frame a 4-byte big-endian length n, then n bytes of the command's
// output; a frame with n = 0 ends the output, and one last frame of at
// most maxExecStatusLen bytes holds "exit N", N from 0 to 255 (a command
// killed by a signal is 128 plus its number, as shells say it; one that
// does not exist is 127, as sh says it), before the end of stream. The
// other direction, connect's stdin, stays a plain stream. A peer that
// does not offer execProtocol (an older securepeer, another
// implementation, a stdio listen, -legacy) negotiates a plain stream and
// works as before, without the status: negotiating costs nothing on the
// wire beyond the names in the handshake, while a status sent
// unannounced would corrupt such a peer's output.
const execProtocol = "securepeer-exec/1"

// maxExecStatusLen bounds the status frame.
const maxExecStatusLen = 64

// execProtos is what a stdio connect and listen -exec offer.
func execProtos() []string { return []string{execProtocol, streamProtocol} }

// execWriter frames the command's output for execProtocol.
type execWriter struct{ s *stream }

func (w execWriter) Write(p []byte) (int, error) {
	buf := make([]byte, 4+len(p))
	binary.BigEndian.PutUint32(buf, uint32(len(p)))
	copy(buf[4:], p)
	if _, err := w.s.Write(buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// finish sends the end of the output and the exit status.
func (w execWriter) finish(code int) error {
	status := fmt.Sprintf("exit %d", code)
	buf := make([]byte, 8+len(status))
	binary.BigEndian.PutUint32(buf[4:], uint32(len(status)))
	copy(buf[8:], status)
	_, err := w.s.Write(buf)
	return err
}

// execReader reads the command's output from a framed execProtocol
// stream, and then its status: io.EOF comes only after a valid status and
// the peer's clean end of stream.
type execReader struct {
	r      io.Reader
	left   uint32
	done   bool
	status int
	hdr    [4]byte
}

func (r *execReader) Read(p []byte) (int, error) {
	if r.done {
		return 0, io.EOF
	}
	for r.left == 0 {
		if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
			return 0, r.cut(err)
		}
		r.left = binary.BigEndian.Uint32(r.hdr[:])
		if r.left == 0 {
			return 0, r.readStatus()
		}
	}
	if uint32(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.r.Read(p)
	r.left -= uint32(n)
	if err != nil && n > 0 {
		err = nil
	}
	if err != nil {
		return n, r.cut(err)
	}
	return n, nil
}

// cut turns a clean end of stream before the status into an error.
func (r *execReader) cut(err error) error {
	if errors.Is(err, io.EOF) {
		return errors.New("the peer's stream ended without the command's exit status (securepeer-exec/1)")
	}
	return err
}

func (r *execReader) readStatus() error {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		return r.cut(err)
	}
	n := binary.BigEndian.Uint32(r.hdr[:])
	if n == 0 || n > maxExecStatusLen {
		return fmt.Errorf("the peer sent an exit status of %d bytes, which securepeer-exec/1 does not allow", n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r.r, buf); err != nil {
		return r.cut(err)
	}
	code, ok := strings.CutPrefix(string(buf), "exit ")
	c, err := strconv.Atoi(code)
	if !ok || err != nil || c < 0 || c > 255 || !isDigits(code) {
		return fmt.Errorf("the peer sent an exit status %q, which securepeer-exec/1 does not allow", sanitize(string(buf)))
	}
	// Nothing may follow but the end of stream.
	if m, err := r.r.Read(make([]byte, 1)); m > 0 || !errors.Is(err, io.EOF) {
		if err == nil || errors.Is(err, io.EOF) {
			err = errors.New("data after the exit status")
		}
		return err
	}
	r.status, r.done = c, true
	return io.EOF
}

// exitStatusError is the status of the peer's -exec command, which connect
// exits with, saying nothing, as ssh does.
type exitStatusError struct{ code int }

func (e *exitStatusError) Error() string {
	return fmt.Sprintf("the peer's command exited with status %d", e.code)
}

// killDelay is how long a command gets to exit after SIGTERM before it is
// killed.
const killDelay = 3 * time.Second

// runExec runs command for the peer of s, with the stream as its stdin and
// stdout, and waits for it. The command's stdout ending ends the stream
// cleanly. If the peer's stream breaks, the command is terminated, so it
// does not act on input that may be incomplete; if ctx ends (the session is
// cut), it is terminated and the stream aborted, so the peer knows its
// output may be incomplete.
func runExec(ctx context.Context, e *env, s *stream, command string, idle time.Duration, log *slog.Logger) error {
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
	framed := s.negotiated == execProtocol
	if err := cmd.Start(); err != nil {
		if framed { // as sh says of a command it cannot find
			w := execWriter{s}
			if w.finish(127) == nil {
				s.close()
			} else {
				s.abort()
			}
		} else {
			s.abort()
		}
		return fmt.Errorf("-exec: cannot start %q: %v", command, err)
	}
	log.Info("command started", "pid", cmd.Process.Pid, "peer", s.peer.Fingerprint())

	var activity atomic.Int64 // bytes both ways, for -idle
	ctx, stopIdle := watchIdle(ctx, idle, activity.Load)
	defer stopIdle()
	inDone := make(chan error, 1)
	go func() { inDone <- feedCommand(stdin, &countingReader{s.conn, &activity}) }()
	outDone := make(chan error, 1)
	go func() {
		var w io.Writer = s
		if framed {
			w = execWriter{s}
		}
		_, err := copyStream(w, &countingReader{stdout, &activity})
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
	// With execProtocol, the exit status must come first, so the end of
	// stream waits for the command.
	clean := outErr == nil && peerErr == nil && !interrupted
	switch {
	case !clean:
		s.abort()
	case !framed:
		s.closeWrite()
	}
	waitErr := cmd.Wait()
	if killTimer != nil {
		killTimer.Stop()
	}
	if clean && framed {
		if err := (execWriter{s}).finish(commandExitCode(cmd.ProcessState)); err != nil {
			outErr = err
			s.abort()
			clean = false
		}
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
	case interrupted && errors.As(context.Cause(ctx), new(*idleError)):
		return fmt.Errorf("-exec: ended %q for %s: %v", command, s.remoteAddr, context.Cause(ctx))
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
