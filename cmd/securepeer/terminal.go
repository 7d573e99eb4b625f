package main

// The controlling terminal: questions, and whether stdin is one.

import (
	"bufio"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/securepeer/securepeer/internal/pkgerr"
)

// Questions go to the controlling terminal, never to stdin and stdout, which
// carry the stream (echo hi | securepeer connect host:port must still be
// able to ask). A process without a terminal gets errNoTerminal and refuses.

var errNoTerminal = errors.New("no terminal to ask")

// testOnlyNoTerminal makes the command behave as if it had no controlling
// terminal, so that tests do not depend on how they were started.
var testOnlyNoTerminal = false

// haveTerminal reports whether questions can be asked.
func haveTerminal() bool {
	if testOnlyNoTerminal {
		return false
	}
	t, err := openTTY()
	if err != nil {
		return false
	}
	t.Close()
	return true
}

// askYesNo asks question on the terminal until the answer is yes or no, or
// the fingerprint fp, which counts as yes, as in ssh. It gives up with
// ctx's error when ctx ends.
func askYesNo(ctx context.Context, question, fp string) (bool, error) {
	if testOnlyNoTerminal {
		return false, errNoTerminal
	}
	tty, err := openTTY()
	if err != nil {
		return false, errNoTerminal
	}
	defer tty.Close()
	// A Unix terminal is pollable, so a past deadline wakes up a blocked
	// read. (A Windows console is not: there the handshake's own timeout
	// ends the wait, and the read is left behind as the program exits.)
	stop := context.AfterFunc(ctx, func() { tty.in.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	fmt.Fprint(tty, question)
	r := bufio.NewReader(tty.in)
	for {
		line, err := r.ReadString('\n')
		if err == io.EOF && ctx.Err() == nil {
			// Ctrl-D: no answer is no, as in ssh.
			fmt.Fprintln(tty)
			return false, nil
		}
		if err != nil {
			fmt.Fprintln(tty)
			if ctx.Err() != nil {
				return false, pkgerr.Plainf("no answer before the handshake timed out: %w", ctx.Err())
			}
			return false, pkgerr.Plainf("reading the answer from the terminal: %w", err)
		}
		answer := strings.TrimSpace(line)
		switch {
		case strings.EqualFold(answer, "yes"):
			return true, nil
		case strings.EqualFold(answer, "no"):
			return false, nil
		case subtle.ConstantTimeCompare([]byte(answer), []byte(fp)) == 1:
			return true, nil
		case strings.HasPrefix(answer, "SHA256:"):
			fmt.Fprint(tty, "That fingerprint does not match. Please type 'yes', 'no' or the fingerprint: ")
		default:
			fmt.Fprint(tty, "Please type 'yes', 'no' or the fingerprint: ")
		}
	}
}

// stdinIsTerminal reports whether stdin is a terminal.
func (e *env) stdinIsTerminal() bool {
	f, ok := e.stdin.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// stdioEnds says what ends a plain stdio stream (see joinStdio): a
// terminal's stdin whose stdout goes to a file or a pipe is a transfer that
// the peer's end ends, as nobody is going to type an end of file to it;
// with stdout a terminal too it is a conversation, which half-closes as
// pipes do, and note tells the user when the peer has ended its side.
func (e *env) stdioEnds() (peerEnds bool, note func(format string, args ...any)) {
	if !e.stdinIsTerminal() {
		return false, nil
	}
	f, ok := e.stdout.(*os.File)
	if ok && term.IsTerminal(int(f.Fd())) {
		return false, e.notef
	}
	return true, nil
}

// openTerminal opens the controlling terminal, for questions.
func openTerminal() (*terminal, error) {
	if testOnlyNoTerminal {
		return nil, errNoTerminal
	}
	tty, err := openTTY()
	if err != nil {
		return nil, errNoTerminal
	}
	return tty, nil
}

// A terminal is the controlling terminal: in to read answers (and
// passphrases, without echo), out to ask. On Unix both are /dev/tty; on
// Windows, the console's CONIN$ and CONOUT$ (terminal_windows.go).
type terminal struct{ in, out *os.File }

func (t *terminal) Write(p []byte) (int, error) { return t.out.Write(p) }

// fd is the input's descriptor, for term.ReadPassword.
func (t *terminal) fd() int { return int(t.in.Fd()) }

func (t *terminal) Close() error {
	if t.out != t.in {
		t.out.Close()
	}
	return t.in.Close()
}
