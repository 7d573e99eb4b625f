package execproto

// The server's side of -exec: one session runs one command for one peer,
// over securepeer-exec/2, securepeer-exec/1 or a plain stream, from the
// start to the exit status. It takes the stream, the command and a logger,
// nothing of the command line.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/frame"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/idle"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/netutil"
	"github.com/securepeer/securepeer/internal/pkgerr"
)

// A Conn is the stream an exec session runs over: a secure stream
// whose end says that everything was sent, and which can be aborted
// instead, so that the peer knows that data may be missing.
type Conn interface {
	io.Reader
	io.Writer
	// CloseWrite sends the authenticated end of stream.
	CloseWrite() error
	// Close ends the stream (unless CloseWrite did) and the connection.
	Close() error
	// Abort ends the connection without an end of stream.
	Abort()
}

// Bounds of a server session.
const (
	// execStartTimeout bounds the wait for a securepeer-exec/2 client's
	// start message, which it sends as soon as its handshake is done:
	// a peer that sends nothing holds a session for at most that long.
	execStartTimeout = 10 * time.Second
	// killDelay is how long a command gets to exit after SIGTERM (or
	// SIGHUP) before it is killed.
	killDelay = 3 * time.Second
	// ttyQuiet ends the output of a command on a terminal once the
	// Command has exited and its terminal has had nothing more to say
	// for that long: a process it left in the background may keep the
	// terminal open indefinitely, and the session must still end.
	ttyQuiet = 250 * time.Millisecond
	// execDrainTimeout bounds how long a securepeer-exec/2 server reads
	// the client's stream after sending the exit status, so that the
	// client reads the status before the connection closes.
	execDrainTimeout = closeTimeout
)

// closeTimeout bounds how long a side waits for the peer's last words
// (its end of stream, its exit status) before it ends the connection.
const closeTimeout = 5 * time.Second

// bufSize is the copy buffer of a plain stream: one full securepeer
// record.
const bufSize = 64 << 10

// errStartTimeout is a securepeer-exec/2 client that sent no start message
// in time.
var errStartTimeout = pkgerr.Plainf("the peer sent no start message within %v (securepeer-exec/2)", execStartTimeout)

// A Server runs a command for each peer of listen -exec.
type Server struct {
	// Command returns the command to run, not started, with its
	// environment; each call a new one.
	Command func() *exec.Cmd
	// Name is the command as the user wrote it, for messages.
	Name string
	// Stderr receives the command's error output in sessions whose
	// protocol cannot carry it (securepeer-exec/1, a plain stream).
	Stderr io.Writer
	// Idle ends a session with no data either way for that long (0:
	// never).
	Idle time.Duration
	// startTimeout replaces execStartTimeout if set (tests).
	startTimeout time.Duration
	// Describe says what an error of the peer's stream means (nil:
	// peerStreamError).
	Describe func(error) error
	// afterFunc replaces time.AfterFunc for the start timeout (tests),
	// returning the timer's Stop.
	afterFunc func(time.Duration, func()) (stop func() bool)
	Log       *slog.Logger // what happens, at level Info
}

// serverStderr is where the command's stderr goes when the protocol
// cannot carry it.
func (x *Server) serverStderr() io.Writer {
	if x.Stderr == nil {
		return io.Discard
	}
	return x.Stderr
}

// A session is one command run for one peer.
type execSession struct {
	x     *Server
	c     Conn
	proto string // Protocol2, Protocol1 or "" for a plain stream
	peer  string // the peer's address, for messages
	p     *execProc

	msgs *execMsgWriter // securepeer-exec/2
	in   *execMsgReader // securepeer-exec/2
	out1 *exec1Writer   // securepeer-exec/1

	activity atomic.Int64 // bytes both ways, for idle
	exited   atomic.Bool  // the command has exited (a terminal then drains)
}

// serve runs the command for the peer at addr over c, which negotiated
// proto, and waits for it. It returns nil once the command has run and its
// exit status (0) has reached the peer, and otherwise an error that says
// what happened: a status other than 0, a peer that went away or broke the
// protocol (the command is then terminated, so that it does not act on
// input that may be incomplete), or ctx ending (the command is terminated
// and the stream aborted, so that the peer knows its output may be
// incomplete).
func (x *Server) Serve(ctx context.Context, c Conn, proto, addr string) error {
	s := &execSession{x: x, c: c, proto: proto, peer: addr}
	var err error
	switch proto {
	case Protocol2:
		s.msgs, s.in = newExecMsgWriter(c), newExecMsgReader(c)
		var start execMsg
		if start, err = s.readStart(); err != nil {
			c.Abort()
			return pkgerr.Plainf("-exec: %s: %w", addr, err)
		}
		s.p, err = startExecProc(x.Command(), &start, nil)
	case Protocol1:
		s.out1 = &exec1Writer{frame.NewWriter(c)}
		s.p, err = startExecProc(x.Command(), nil, x.serverStderr())
	default:
		s.p, err = startExecProc(x.Command(), nil, x.serverStderr())
	}
	if err != nil {
		s.notRun(err)
		return pkgerr.Plainf("-exec: cannot start %q: %w", x.Name, err)
	}
	x.Log.Info("command started", "pid", s.p.cmd.Process.Pid, "addr", addr, "protocol", proto, "terminal", s.p.tty != nil)
	return s.run(ctx)
}

// readStart reads a securepeer-exec/2 client's start message, which must
// come first and within the start timeout.
func (s *execSession) readStart() (execMsg, error) {
	timeout := execStartTimeout
	if s.x.startTimeout > 0 {
		timeout = s.x.startTimeout
	}
	stop := func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
	if s.x.afterFunc != nil {
		stop = s.x.afterFunc
	}
	timerStop := stop(timeout, s.c.Abort)
	m, err := s.in.read()
	if !timerStop() {
		// The timer fired: the stream is aborted, whatever the read got.
		return m, errStartTimeout
	}
	switch {
	case errors.Is(err, io.EOF):
		return m, errors.New("the peer ended its stream without a start message (securepeer-exec/2)")
	case err != nil:
		return m, err
	case m.typ != execMsgStart && m.typ != execMsgStartTTY:
		return m, pkgerr.Plainf("%w: the first message has type 0x%02x, not a start", ErrMalformed, m.typ)
	}
	return m, nil
}

// notRun tells the peer that the command could not be started: in
// securepeer-exec/2 an exit message saying why, with status 127 as sh gives
// a command it cannot run (1 if only the terminal failed); in /1 status
// 127 alone; a plain stream can only be aborted.
func (s *execSession) notRun(err error) {
	var sent error
	switch s.proto {
	case Protocol2:
		reason := fmt.Sprintf("cannot start %q: %v", s.x.Name, err)
		if len(reason) > execMaxReason {
			reason = reason[:execMaxReason]
		}
		code := uint8(127)
		if errors.As(err, new(*ttyError)) {
			code = 1 // the command exists; the terminal failed
		}
		sent = s.msgs.write(&execMsg{typ: execMsgExit, status: Status{Kind: NotRun, Code: code, Detail: reason}})
	case Protocol1:
		sent = s.out1.finish(127)
	default:
		sent = errors.New("no status on a plain stream")
	}
	if sent == nil {
		s.c.Close()
	} else {
		s.c.Abort()
	}
}

// run relays between the peer and the running command until the command
// has exited and its output has been sent, then ends the stream as the
// protocol says.
func (s *execSession) run(ctx context.Context) error {
	p := s.p
	ctx, stopIdle := idle.Watch(ctx, s.x.Idle, s.activity.Load)
	defer stopIdle()
	inDone := make(chan error, 1)
	go func(ch chan<- error) { ch <- s.input() }(inDone)
	outs := s.outputs()
	outDone := make(chan error, len(outs))
	for _, o := range outs {
		go func() { outDone <- o() }()
	}
	waitDone := make(chan error, 1)
	go func() { waitDone <- p.cmd.Wait() }()

	var (
		peerErr, outErr, waitErr error
		interrupted              bool
		killTimer                *time.Timer
	)
	terminate := func() {
		if killTimer == nil {
			p.terminate()
			killTimer = time.AfterFunc(killDelay, p.kill)
		}
	}
	done := ctx.Done()
	pending, running := len(outs), true
	for pending > 0 || running {
		select {
		case err := <-outDone:
			pending--
			if err != nil && outErr == nil {
				outErr = err
				terminate()
			}
			if pending == 0 && s.proto == "" && outErr == nil && peerErr == nil && !interrupted {
				// A plain stream ends with the output: its end says that
				// the output is complete.
				s.c.CloseWrite()
			}
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
		case waitErr = <-waitDone:
			running = false
			s.exited.Store(true)
			if p.tty != nil {
				// Wake a read blocked on the terminal: it now ends once
				// the terminal is quiet.
				p.tty.SetReadDeadline(time.Now().Add(ttyQuiet))
			}
		}
	}
	if killTimer != nil {
		killTimer.Stop()
	}
	return s.wrapUp(ctx, inDone, peerErr, outErr, interrupted, waitErr)
}

// wrapUp ends the session once the command has exited and its output has
// been sent, or failed: the exit status and the end of stream if all went
// well, else an abort. inDone, if not nil, is the input's copy, still
// running. It returns what serve does.
func (s *execSession) wrapUp(ctx context.Context, inDone chan error, peerErr, outErr error, interrupted bool, waitErr error) error {
	p := s.p
	p.closeIO()
	clean := outErr == nil && peerErr == nil && !interrupted
	switch {
	case !clean:
		s.c.Abort()
	default:
		var err error
		if inDone, err = s.finish(inDone); err != nil {
			outErr = err
		}
	}
	if inDone != nil {
		if err := <-inDone; err != nil && clean {
			s.x.Log.Info("peer stream after the command ended", "addr", s.peer, "err", err)
		}
	}
	s.x.Log.Info("command finished", "pid", p.cmd.Process.Pid, "status", p.cmd.ProcessState.String())
	return s.outcome(ctx, peerErr, outErr, interrupted, waitErr)
}

// finish ends a session whose command ran to its end and whose output was
// all sent: the exit status goes to the peer, then the end of stream. A
// securepeer-exec/2 server then reads what the client still sends until
// its end of stream (for at most execDrainTimeout), so that closing does
// not reset a connection whose status the client has yet to read. It
// returns inDone, or nil once it has received from it.
func (s *execSession) finish(inDone chan error) (chan error, error) {
	status := commandStatus(s.p.cmd.ProcessState)
	var err error
	switch s.proto {
	case Protocol2:
		if err = s.msgs.write(&execMsg{typ: execMsgExit, status: status}); err == nil {
			err = s.c.CloseWrite()
		}
		if err == nil && inDone != nil {
			t := time.NewTimer(execDrainTimeout)
			select {
			case ierr := <-inDone:
				if ierr != nil {
					s.x.Log.Info("peer stream after the command ended", "addr", s.peer, "err", ierr)
				}
				inDone = nil
			case <-t.C:
			}
			t.Stop()
		}
	case Protocol1:
		err = s.out1.finish(int(status.Code))
	}
	if err != nil {
		s.c.Abort()
		return inDone, err
	}
	s.c.Close()
	return inDone, nil
}

// outcome is what serve returns, from what ended the session.
func (s *execSession) outcome(ctx context.Context, peerErr, outErr error, interrupted bool, waitErr error) error {
	name := s.x.Name
	switch {
	case peerErr != nil && s.p.tty != nil:
		return pkgerr.Plainf("-exec: hung up %q (SIGHUP to its terminal's processes): %v", name, s.peerError(peerErr))
	case peerErr != nil:
		return pkgerr.Plainf("-exec: terminated %q: %v", name, s.peerError(peerErr))
	case outErr != nil:
		return pkgerr.Plainf("-exec: sending the output of %q to %s: %v", name, s.peer, outErr)
	case interrupted && errors.As(context.Cause(ctx), new(*idle.Error)):
		return pkgerr.Plainf("-exec: ended %q for %s: %v", name, s.peer, context.Cause(ctx))
	case interrupted:
		return pkgerr.Plainf("-exec: cut the session of %s (%q) as listen stopped; the peer was told its output may be incomplete", s.peer, name)
	case waitErr != nil:
		var ee *exec.ExitError
		if errors.As(waitErr, &ee) {
			return pkgerr.Plainf("-exec: %q for %s %s", name, s.peer, describeStatus(commandStatus(ee.ProcessState)))
		}
		return pkgerr.Plainf("-exec: %q: %v", name, waitErr)
	}
	return nil
}

// peerError says what the peer's stream did.
func (s *execSession) peerError(err error) error {
	if errors.Is(err, ErrMalformed) {
		return pkgerr.Plainf("the peer at %s broke %s: %v", s.peer, s.proto, err)
	}
	if s.x.Describe != nil {
		return s.x.Describe(err)
	}
	return peerStreamError(s.peer, err)
}

// peerStreamError explains a failure of the peer's stream in the middle of
// a session.
func peerStreamError(addr string, err error) error {
	switch {
	case errors.Is(err, securepeer.ErrAborted):
		return pkgerr.Plainf("the peer at %s aborted the stream; data may be missing", addr)
	case errors.Is(err, syscall.ECONNRESET):
		return pkgerr.Plainf("the connection with %s was reset before the peer's end of stream; data may be missing", addr)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return pkgerr.Plainf("the connection with %s ended without the peer's end of stream, so data may be missing", addr)
	case errors.Is(err, frame.ErrCut):
		return pkgerr.Plainf("the peer at %s ended its stream in the middle of a message; data may be missing", addr)
	}
	return pkgerr.Plainf("stream with %s: %w", addr, err)
}

// describeStatus says how a command ended, as a verb phrase.
func describeStatus(st Status) string {
	switch st.Kind {
	case Signaled:
		return fmt.Sprintf("was killed by signal %s (status %d)", st.Detail, st.Code)
	case NotRun:
		return fmt.Sprintf("did not run: %s (status %d)", st.Detail, st.Code)
	}
	return fmt.Sprintf("exited with status %d", st.Code)
}

// input passes the peer's stream to the command until the peer's end of
// stream (nil) or an error. A command that stops reading is not an error:
// what it does not read is dropped.
func (s *execSession) input() error {
	if s.proto != Protocol2 {
		return feedCommand(s.p.stdin, &idle.CountingReader{R: s.c, N: &s.activity})
	}
	stdinOpen := true
	for {
		m, err := s.in.read()
		if errors.Is(err, io.EOF) {
			// The client's stdin has ended; on a terminal that means
			// the terminal is gone: hang up, as a terminal's close does.
			if s.p.tty != nil && !s.exited.Load() {
				s.p.hangUp()
			}
			s.p.closeStdin()
			return nil
		}
		if err != nil {
			return err
		}
		switch m.typ {
		case execMsgStdin:
			s.activity.Add(int64(len(m.data)))
			if stdinOpen {
				if _, err := s.p.stdin.Write(m.data); err != nil {
					stdinOpen = false
				}
			}
		case execMsgWindow:
			if s.p.tty == nil {
				return pkgerr.Plainf("%w: a window size for a session without a terminal", ErrMalformed)
			}
			if s.exited.Load() {
				break
			}
			if err := setTTYSize(s.p.tty, m.size); err != nil {
				s.x.Log.Info("cannot resize the terminal", "err", err)
			}
		default:
			return pkgerr.Plainf("%w: a message of type 0x%02x after the start", ErrMalformed, m.typ)
		}
	}
}

// outputs returns the copies of the command's output to the peer, each
// returning nil at the end of what it copies and an error if sending
// failed.
func (s *execSession) outputs() []func() error {
	p := s.p
	switch s.proto {
	case Protocol2:
		outs := []func() error{func() error { return s.copyOut(execMsgStdout, p.stdout) }}
		if p.stderr != nil {
			outs = append(outs, func() error { return s.copyOut(execMsgStderr, p.stderr) })
		}
		return outs
	case Protocol1:
		return []func() error{func() error { return s.copyRaw(s.out1, p.stdout) }}
	}
	return []func() error{func() error { return s.copyRaw(s.c, p.stdout) }}
}

// copyRaw copies the command's output to w unframed (a plain stream) or
// framed as securepeer-exec/1.
func (s *execSession) copyRaw(w io.Writer, r io.Reader) error {
	_, err := copyStream(w, &idle.CountingReader{R: r, N: &s.activity})
	return err
}

// copyOut sends what r (the command's stdout, stderr or terminal) says to
// the peer as messages of type typ. On a terminal, the end of output is
// the terminal's hangup (EIO, once no process has it open) or, after the
// command has exited, ttyQuiet without output.
func (s *execSession) copyOut(typ byte, r io.Reader) error {
	buf := newDataBuf(typ)
	tty := s.p.tty != nil // then r is the terminal, the only output
	for {
		if tty && s.exited.Load() {
			s.p.tty.SetReadDeadline(time.Now().Add(ttyQuiet))
		}
		n, err := r.Read(buf.room())
		if n > 0 {
			s.activity.Add(int64(n))
			if werr := s.msgs.writeBuf(buf, n); werr != nil {
				return werr
			}
		}
		switch {
		case err == nil:
		case err == io.EOF, tty && (ttyEnded(err) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, os.ErrClosed)):
			return nil
		default:
			return pkgerr.Plainf("reading the command's output: %w", err)
		}
	}
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

// An execProc is a started command and this side's ends of its input and
// output: pipes, or the master side of its terminal.
type execProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout io.ReadCloser
	stderr io.ReadCloser // nil on a terminal, or when it goes elsewhere
	tty    *os.File      // the terminal's master side, or nil

	stdinClosed atomic.Bool
}

// startExecProc starts cmd: on a new terminal if start asks for one, else
// with pipes for its stdin, stdout and stderr, unless stderr is given, for
// protocols that cannot carry it. The pipes are this process's own, not
// exec.Cmd's, so that waiting for the command and reading its output are
// independent. The command's session signals are default, whatever this
// process ignores (defaultChildSignals).
func startExecProc(cmd *exec.Cmd, start *execMsg, stderr io.Writer) (*execProc, error) {
	defaultChildSignals()
	if start != nil && start.typ == execMsgStartTTY {
		cmd.Env = withTerm(cmd.Env, start.term)
		tty, err := startTTY(cmd, start.size)
		if err != nil {
			return nil, &ttyError{err}
		}
		return &execProc{cmd: cmd, stdin: tty, stdout: tty, tty: tty}, nil
	}
	var files []*os.File // the command's ends, closed here once it has them
	pipe := func() (r, w *os.File, err error) {
		if r, w, err = os.Pipe(); err == nil {
			files = append(files, r, w)
		}
		return
	}
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	inR, inW, err := pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := pipe()
	if err != nil {
		closeAll()
		return nil, err
	}
	p := &execProc{cmd: cmd, stdin: inW, stdout: outR}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, stderr
	if stderr == nil {
		errR, errW, err := pipe()
		if err != nil {
			closeAll()
			return nil, err
		}
		p.stderr, cmd.Stderr = errR, errW
	}
	if err := cmd.Start(); err != nil {
		closeAll()
		return nil, err
	}
	inR.Close()
	outW.Close()
	if f, ok := cmd.Stderr.(*os.File); ok && p.stderr != nil {
		f.Close()
	}
	return p, nil
}

// A ttyError is a command that could not be started on a terminal.
type ttyError struct{ err error }

func (e *ttyError) Error() string { return "no terminal for it: " + e.err.Error() }

func (e *ttyError) Unwrap() error { return e.err }

// withTerm returns env with TERM set to term, or without TERM if term is
// empty: never the server's own.
func withTerm(env []string, term string) []string {
	if env == nil {
		env = os.Environ() // what exec.Cmd gives a nil Env
	}
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, "TERM=") {
			out = append(out, kv)
		}
	}
	if term != "" {
		out = append(out, "TERM="+term)
	}
	return out
}

// terminate asks the command to end: SIGHUP for one on a terminal, as a
// terminal that goes away sends, else SIGTERM; to its process group.
func (p *execProc) terminate() {
	if p.tty != nil {
		p.hangUp()
		return
	}
	terminateCommand(p.cmd)
}

// hangUp hangs up the command's terminal as a terminal that goes away
// does: it sends SIGHUP to the command's process group, then closes the
// master side, so that a read of the terminal returns EIO. The signal
// alone is not enough: a shell that takes it just before it blocks in a
// read of the terminal (dash between two commands of `trap ... HUP;
// read x`) runs its trap only once that read returns, which, with the
// master open, would be never. The signal comes first: a shell whose read
// ended with EIO before the signal was sent could exit without running
// its trap.
func (p *execProc) hangUp() {
	hangUpCommand(p.cmd)
	p.tty.Close()
}

func (p *execProc) kill() { killCommand(p.cmd) }

// closeStdin ends the command's input (on a terminal, nothing: the
// terminal stays open for its output).
func (p *execProc) closeStdin() {
	if p.tty == nil && !p.stdinClosed.Swap(true) {
		p.stdin.Close()
	}
}

// closeIO closes this side's ends once the command has exited and its
// output has been read; a write to its stdin still blocked then returns.
func (p *execProc) closeIO() {
	if p.tty != nil {
		p.tty.Close()
		return
	}
	p.closeStdin()
	p.stdout.Close()
	if p.stderr != nil {
		p.stderr.Close()
	}
}

// copyStream copies src to dst in record-sized chunks. It hides ReadFrom and
// WriteTo, whose fallbacks copy in 32 KiB pieces.
func copyStream(dst io.Writer, src io.Reader) (int64, error) {
	buf := make([]byte, bufSize)
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf)
}

// Refuse tells a securepeer-exec/2 client on c that its command will not
// run, and why: once its start message has come, an exit message of kind
// NotRun with status 1 and reason (cut to what the message holds), then
// the end of stream; then, as after any exit message, it reads what the
// client still sends until its end of stream, for at most
// execDrainTimeout, and closes. It starts no process. Any failure aborts
// c, and is returned.
func (x *Server) Refuse(c Conn, reason string) error {
	s := &execSession{x: x, c: c, proto: Protocol2, msgs: newExecMsgWriter(c), in: newExecMsgReader(c)}
	_, err := s.readStart()
	if len(reason) > execMaxReason {
		reason = reason[:execMaxReason]
	}
	if err == nil {
		err = s.msgs.write(&execMsg{typ: execMsgExit, status: Status{Kind: NotRun, Code: 1, Detail: reason}})
	}
	if err == nil {
		err = c.CloseWrite()
	}
	if err != nil {
		c.Abort()
		return err
	}
	drained := netutil.Drain(c)
	t := time.NewTimer(execDrainTimeout)
	defer t.Stop()
	select {
	case <-drained:
		c.Close()
	case <-t.C:
		c.Abort()
		<-drained
	}
	return nil
}
