package main

// The client's side of securepeer-exec/2: what connect does with a listen
// -exec peer, from the start message to the exit status. It takes the
// stream and its own stdin, stdout and stderr, nothing of the command
// line, so it can become a package of its own.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// An execClient runs the client's side of a securepeer-exec/2 session.
type execClient struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// tty, if set, asks for a terminal for the command.
	tty *ttyRequest
}

// A ttyRequest asks the server to run the command on a terminal.
type ttyRequest struct {
	term string  // TERM for the command; "" for none
	size winSize // the terminal's size when the session starts
	// resize carries the terminal's new sizes, each sent to the server as
	// it comes; nil for none.
	resize <-chan winSize
}

// A stdinError is a failure to read this side's stdin, as opposed to one of
// the stream.
type stdinError struct{ err error }

func (e *stdinError) Error() string { return "reading stdin: " + e.err.Error() }

func (e *stdinError) Unwrap() error { return e.err }

// An outputError is a failure to write the command's output to this
// side's stdout.
type outputError struct{ err error }

func (e *outputError) Error() string { return "writing the command's output: " + e.err.Error() }

func (e *outputError) Unwrap() error { return e.err }

// errNoExitStatus is a server that ended its stream cleanly without
// saying how the command ended.
var errNoExitStatus = errors.New("the peer's stream ended without the command's exit status (securepeer-exec/2)")

// run runs the session over c: it asks for the command to start, sends
// stdin as the command's input (its end as the end of stream) and the
// terminal's new sizes, and writes the command's output to stdout and its
// error output to stderr, until the exit status and the server's end of
// stream have come. It returns the status. Whatever of stdin has not been
// sent by then is not: the command has ended, as with ssh.
//
// If ctx ends first, c is aborted, so that the server knows that the input
// may be incomplete, and ctx's cause is returned. Any other failure also
// aborts c and is returned: a *stdinError, an *outputError, an error of the
// stream, or one wrapping errExecMalformed for a server that broke the
// protocol. A session never ends with a status that the server did not
// send.
func (x *execClient) run(ctx context.Context, c execConn) (execStatus, error) {
	w := newExecMsgWriter(c)
	start := &execMsg{typ: execMsgStart}
	if x.tty != nil {
		start = &execMsg{typ: execMsgStartTTY, size: x.tty.size, term: x.tty.term}
	}
	// The start message is sent now, with the handshake's last flight
	// still on its way: the server waits for nothing else.
	startErr := w.write(start)

	type result struct {
		status execStatus
		err    error
	}
	recvDone := make(chan result, 1)
	go func() {
		st, err := x.receive(c)
		recvDone <- result{st, err}
	}()
	stop := make(chan struct{})
	defer close(stop)
	sendDone := make(chan error, 1)
	if startErr == nil {
		go func() { sendDone <- x.send(w, c, stop) }()
	} else {
		sendDone <- startErr
	}

	done := ctx.Done()
	for {
		select {
		case r := <-recvDone:
			if r.err != nil {
				c.Abort()
				return execStatus{}, r.err
			}
			c.Close()
			return r.status, nil
		case err := <-sendDone:
			sendDone = nil
			if err == nil {
				continue // stdin has ended; the output goes on
			}
			if errors.As(err, new(*stdinError)) {
				// The command must not take partial input for whole.
				c.Abort()
				return execStatus{}, err
			}
			// Writing to the server failed. The command may have ended
			// without reading everything, and its status be on its way;
			// if not, what the receiving side reads says better why. It
			// ends at once on a dead connection; the timer is a bound.
			t := time.AfterFunc(closeTimeout, c.Abort)
			r := <-recvDone
			t.Stop()
			if r.err == nil {
				c.Close()
				return r.status, nil
			}
			c.Abort()
			return execStatus{}, r.err
		case <-done:
			c.Abort()
			return execStatus{}, context.Cause(ctx)
		}
	}
}

// send sends stdin and, with a terminal, its new sizes, until stdin ends
// (then the end of stream) or stop closes.
func (x *execClient) send(w *execMsgWriter, c execConn, stop <-chan struct{}) error {
	if x.tty != nil && x.tty.resize != nil {
		go func() {
			for {
				select {
				case sz := <-x.tty.resize:
					if w.write(&execMsg{typ: execMsgWindow, size: sz}) != nil {
						return
					}
				case <-stop:
					return
				}
			}
		}()
	}
	buf := newDataBuf(execMsgStdin)
	for {
		n, err := x.stdin.Read(buf.room())
		if n > 0 {
			if werr := w.writeBuf(buf, n); werr != nil {
				return werr
			}
		}
		switch {
		case err == io.EOF:
			return c.CloseWrite()
		case err != nil:
			return &stdinError{err}
		}
	}
}

// receive writes the command's output and error output until the exit
// status, and returns it once the server's clean end of stream follows.
func (x *execClient) receive(c execConn) (execStatus, error) {
	r := newExecMsgReader(c)
	for {
		m, err := r.read()
		switch {
		case errors.Is(err, io.EOF):
			return execStatus{}, errNoExitStatus
		case err != nil:
			return execStatus{}, err
		}
		switch m.typ {
		case execMsgStdout:
			if _, err := x.stdout.Write(m.data); err != nil {
				return execStatus{}, &outputError{err}
			}
		case execMsgStderr:
			// Best effort, as any program's own messages.
			x.stderr.Write(m.data)
		case execMsgExit:
			if _, err := r.read(); !errors.Is(err, io.EOF) {
				if err == nil {
					err = fmt.Errorf("%w: a message after the exit status", errExecMalformed)
				}
				return execStatus{}, err
			}
			return m.status, nil
		default:
			return execStatus{}, fmt.Errorf("%w: a message of type 0x%02x, which only a client sends", errExecMalformed, m.typ)
		}
	}
}
