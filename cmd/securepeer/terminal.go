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
	"unicode"
	"unicode/utf8"

	"golang.org/x/term"
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
				return false, fmt.Errorf("no answer before the handshake timed out: %w", ctx.Err())
			}
			return false, fmt.Errorf("reading the answer from the terminal: %w", err)
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

// sanitize makes text that a peer chose safe to print on a terminal: every
// character that is not visible becomes '?'. That covers the controls that
// make terminal escapes (C0, DEL, C1), the invisible formatting characters
// (Unicode category Cf: among them the bidi controls U+202A..U+202E,
// U+2066..U+2069, U+200E, U+200F and U+061C, which can make a line read
// differently from what it holds, and the zero-width ones), line and
// paragraph separators, spaces other than ASCII's, private-use, surrogate
// and unassigned code points, invalid UTF-8, and the letters that draw
// nothing (the Hangul fillers, the Khmer inherent vowels).
func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		// range yields utf8.RuneError for each invalid byte.
		if r == utf8.RuneError || r != ' ' && !unicode.IsPrint(r) || invisible(r) {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// invisible reports the printable characters (in Go's sense: letters and
// marks) that draw nothing, so could hide text from the reader.
func invisible(r rune) bool {
	switch r {
	case 0x115F, 0x1160, 0x3164, 0xFFA0, // Hangul fillers
		0x17B4, 0x17B5, // Khmer inherent vowels
		0x2800: // braille blank
		return true
	}
	return unicode.Is(unicode.Variation_Selector, r)
}
