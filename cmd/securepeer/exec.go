package main

// -exec in the command: listen runs a command for each peer, and connect
// exits with its status, shows its error output on stderr, and with -t
// gives it a terminal, as ssh does with a remote command.
//
// Neither a plain secure stream (whose end says only that all data came)
// nor its one direction of output has room for that, so listen -exec and a
// stdio connect both offer -exec's application protocols in the handshake
// (securepeer.Config.NextProtos): securepeer-exec/2, then securepeer-exec/1
// for peers that speak only the first version, then a plain stream. Which
// one was negotiated decides the framing; a peer that offers none of them
// (another implementation, a stdio listen, -legacy) gets a plain stream,
// as before, without a status: a status sent unannounced would corrupt
// such a peer's output. PROTOCOL.md, "The command's protocols:
// securepeer-exec", has the wire formats; package internal/execproto
// implements them, and this file joins it to the command.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/execproto"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/idle"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/sanitize"
	"github.com/securepeer/securepeer/internal/pkgerr"
)

// exitHangup is the exit code of a command interrupted by SIGHUP, and of
// connect -t when its terminal hangs up.
const exitHangup = 128 + 1

// runExec runs command for the peer of s, with the stream as its stdin,
// stdout and, if the protocol carries it, stderr, and waits for it.
func runExec(ctx context.Context, e *env, s *stream, command string, idleAfter time.Duration, log *slog.Logger) error {
	x := &execproto.Server{
		Command: func() *exec.Cmd {
			cmd := execproto.ShellCommand(command)
			cmd.Env = append(os.Environ(),
				"SECUREPEER_PEER_KEY="+s.peer.String(),
				"SECUREPEER_PEER_FINGERPRINT="+s.peer.Fingerprint(),
				"SECUREPEER_PEER_ADDR="+s.remoteAddr,
			)
			return cmd
		},
		Name:     command,
		Stderr:   e.stderr,
		Idle:     idleAfter,
		Describe: func(err error) error { return streamError(s, err) },
		Log:      log.With("peer", s.peer.Fingerprint()),
	}
	return x.Serve(ctx, streamConn{s}, s.negotiated, s.remoteAddr)
}

// streamConn is a stream as an execproto.Conn.
type streamConn struct{ s *stream }

func (c streamConn) Read(p []byte) (int, error)  { return c.s.conn.Read(p) }
func (c streamConn) Write(p []byte) (int, error) { return c.s.Write(p) }
func (c streamConn) CloseWrite() error           { return c.s.closeWrite() }
func (c streamConn) Close() error                { c.s.close(); return nil }
func (c streamConn) Abort()                      { c.s.abort() }

// exitStatusError is the status of the peer's -exec command, which connect
// exits with, saying nothing, as ssh does.
type exitStatusError struct{ code int }

func (e *exitStatusError) Error() string {
	return fmt.Sprintf("the peer's command exited with status %d", e.code)
}

// connectExec1 joins s, which negotiated securepeer-exec/1, to stdin and
// stdout, and returns the command's exit status as an *exitStatusError
// unless it is 0.
func connectExec1(ctx context.Context, e *env, s *stream, m *meter) error {
	r := execproto.NewV1Reader(s.conn)
	if err := joinStdio(ctx, s, r, e.stdin, e.stdinIsTerminal(), e.stdout, m, nil); err != nil {
		return err
	}
	if st := r.Status(); st != 0 {
		return &exitStatusError{st}
	}
	return nil
}

// connectExec2 runs connect's side of a securepeer-exec/2 session over s,
// on a terminal if t is set, and returns the command's exit status as an
// *exitStatusError unless it is 0. A signal or a command that did not run
// is said first, in one line.
func connectExec2(ctx context.Context, e *env, s *stream, t *ttySession, m *meter) error {
	x := &execproto.Client{
		Stdin:  m.countSent(e.stdin),
		Stdout: countingWriter{e.stdout, &m.received},
		Stderr: countingWriter{e.stderr, &m.received},
	}
	if t != nil {
		x.TTY = t.request()
	}
	st, err := x.Run(ctx, streamConn{s})
	if t != nil {
		t.restore() // before anything is said
	}
	if t != nil && errors.As(err, new(*execproto.StdinError)) && errors.Is(err, syscall.EIO) && ctx.Err() == nil {
		// The terminal has hung up (its SIGHUP may be on its way): the
		// same outcome as the signal's, whichever comes first.
		return &codeError{exitHangup, pkgerr.Plainf("the terminal hung up; aborted the stream, so the peer at %s knows that its command's input may be incomplete", s.remoteAddr)}
	}
	if err != nil {
		return execClientError(ctx, s, err)
	}
	switch st.Kind {
	case execproto.Signaled:
		e.notef("the peer's command was killed by signal %s", st.Detail)
	case execproto.NotRun:
		e.notef("the peer's command did not run: %s", sanitize.Text(st.Detail))
	}
	if st.Code != 0 {
		return &exitStatusError{int(st.Code)}
	}
	return nil
}

// execClientError says what ended a securepeer-exec/2 session before its
// status.
func execClientError(ctx context.Context, s *stream, err error) error {
	var ie *idle.Error
	switch {
	case ctx.Err() != nil && errors.As(context.Cause(ctx), &ie):
		return pkgerr.Plainf("%v with %s", ie, s.remoteAddr)
	case ctx.Err() != nil:
		ierr := interruption(ctx)
		return &codeError{errorCode(ierr), pkgerr.Plainf("%v; aborted the stream, so the peer at %s knows that its command's input may be incomplete", ierr, s.remoteAddr)}
	case errors.Is(err, execproto.ErrMalformed):
		return pkgerr.Plainf("the peer at %s broke %s: %v", s.remoteAddr, execproto.Protocol2, err)
	case errors.Is(err, execproto.ErrNoExitStatus):
		return pkgerr.Plainf("the peer at %s: %w", s.remoteAddr, err)
	case errors.As(err, new(*execproto.StdinError)), errors.As(err, new(*execproto.OutputError)):
		return pkgerr.Plainf("%v; aborted the stream, so the peer at %s knows that its command's input may be incomplete", err, s.remoteAddr)
	}
	return streamError(s, err)
}

// countingWriter counts what is written to w.
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// execProtos is what a stdio connect and listen -exec offer.
func execProtos() []string {
	if testOnlyExecProtos != nil {
		return testOnlyExecProtos
	}
	return []string{execproto.Protocol2, execproto.Protocol1, streamProtocol}
}

// testOnlyExecProtos, if set, replaces execProtos, so that tests can play
// a peer that speaks only securepeer-exec/1.
var testOnlyExecProtos []string
