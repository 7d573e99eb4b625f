package execproto

// The client's side of securepeer-exec/2: what connect does with a listen
// -exec peer, from the start message to the exit status. It takes the
// stream and its own stdin, stdout and stderr, nothing of the command
// line.

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/securepeer/securepeer/internal/pkgerr"
)

// A Client runs the client's side of a securepeer-exec/2 session.
type Client struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// TTY, if set, asks for a terminal for the command.
	TTY *TTYRequest
}

// A TTYRequest asks the server to run the command on a terminal.
type TTYRequest struct {
	Term string  // TERM for the command; "" for none
	Size WinSize // the terminal's size when the session starts
	// Resize carries the terminal's new sizes, each sent to the server as
	// it comes; nil for none.
	Resize <-chan WinSize
}

// A StdinError is a failure to read this side's stdin, as opposed to one of
// the stream.
type StdinError struct{ err error }

func (e *StdinError) Error() string { return "reading stdin: " + e.err.Error() }

func (e *StdinError) Unwrap() error { return e.err }

// An OutputError is a failure to write the command's output to this
// side's stdout.
type OutputError struct{ err error }

func (e *OutputError) Error() string { return "writing the command's output: " + e.err.Error() }

func (e *OutputError) Unwrap() error { return e.err }

// ErrNoExitStatus is a server that ended its stream cleanly without
// saying how the command ended.
var ErrNoExitStatus = errors.New("the peer's stream ended without the command's exit status (securepeer-exec/2)")

// run runs the session over c: it asks for the command to start, sends
// stdin as the command's input (its end as the end of stream) and the
// terminal's new sizes, and writes the command's output to stdout and its
// error output to stderr, until the exit status and the server's end of
// stream have come. It returns the status. Whatever of stdin has not been
// sent by then is not: the command has ended, as with ssh.
//
// If ctx ends first, c is aborted, so that the server knows that the input
// may be incomplete, and ctx's cause is returned. Any other failure also
// aborts c and is returned: a *StdinError, an *OutputError, an error of the
// stream, or one wrapping ErrMalformed for a server that broke the
// protocol. A session never ends with a status that the server did not
// send.
func (x *Client) Run(ctx context.Context, c Conn) (Status, error) {
	w := newExecMsgWriter(c)
	start := &execMsg{typ: execMsgStart}
	if x.TTY != nil {
		start = &execMsg{typ: execMsgStartTTY, size: x.TTY.Size, term: x.TTY.Term}
	}
	// The start message is sent now, with the handshake's last flight
	// still on its way: the server waits for nothing else.
	startErr := w.write(start)

	type result struct {
		status Status
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
				return Status{}, r.err
			}
			c.Close()
			return r.status, nil
		case err := <-sendDone:
			sendDone = nil
			if err == nil {
				continue // stdin has ended; the output goes on
			}
			if errors.As(err, new(*StdinError)) {
				// The command must not take partial input for whole.
				c.Abort()
				return Status{}, err
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
			return Status{}, r.err
		case <-done:
			c.Abort()
			return Status{}, context.Cause(ctx)
		}
	}
}

// send sends stdin and, with a terminal, its new sizes, until stdin ends
// (then the end of stream) or stop closes.
func (x *Client) send(w *execMsgWriter, c Conn, stop <-chan struct{}) error {
	if x.TTY != nil && x.TTY.Resize != nil {
		go func() {
			for {
				select {
				case sz := <-x.TTY.Resize:
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
		n, err := x.Stdin.Read(buf.room())
		if n > 0 {
			if werr := w.writeBuf(buf, n); werr != nil {
				return werr
			}
		}
		switch {
		case err == io.EOF:
			return c.CloseWrite()
		case err != nil:
			return &StdinError{err}
		}
	}
}

// receive writes the command's output and error output until the exit
// status, and returns it once the server's clean end of stream follows.
func (x *Client) receive(c Conn) (Status, error) {
	r := newExecMsgReader(c)
	for {
		m, err := r.read()
		switch {
		case errors.Is(err, io.EOF):
			return Status{}, ErrNoExitStatus
		case err != nil:
			return Status{}, err
		}
		switch m.typ {
		case execMsgStdout:
			if _, err := x.Stdout.Write(m.data); err != nil {
				return Status{}, &OutputError{err}
			}
		case execMsgStderr:
			// Best effort, as any program's own messages.
			x.Stderr.Write(m.data)
		case execMsgExit:
			if _, err := r.read(); !errors.Is(err, io.EOF) {
				if err == nil {
					err = pkgerr.Plainf("%w: a message after the exit status", ErrMalformed)
				}
				return Status{}, err
			}
			return m.status, nil
		default:
			return Status{}, pkgerr.Plainf("%w: a message of type 0x%02x, which only a client sends", ErrMalformed, m.typ)
		}
	}
}
