package execproto

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/frame"
)

// TestExecClient runs the client against servers that end their stream in
// every way: only an exit message followed by the server's clean end is a
// status; every other end is an error that says what happened, never a
// status the server did not send.
func TestExecClient(t *testing.T) {
	t.Parallel()
	out := msgFrame(execMsg{typ: execMsgStdout, data: []byte("out")})
	errOut := msgFrame(execMsg{typ: execMsgStderr, data: []byte("err")})
	exit5 := msgFrame(execMsg{typ: execMsgExit, status: Status{Kind: Exited, Code: 5}})
	notRun := Status{Kind: NotRun, Code: 127, Detail: "cannot start"}
	type ending int
	const (
		cleanEnd ending = iota
		abort
		cut // the TCP connection closed under the stream
	)
	for _, tc := range []struct {
		name   string
		sent   []byte
		end    ending
		status Status
		err    error // nil for a status
	}{
		{"status", bytes.Join([][]byte{out, errOut, exit5}, nil), cleanEnd, Status{Kind: Exited, Code: 5}, nil},
		{"not run", msgFrame(execMsg{typ: execMsgExit, status: notRun}), cleanEnd, notRun, nil},
		{"no status", out, cleanEnd, Status{}, ErrNoExitStatus},
		{"aborted", out, abort, Status{}, securepeer.ErrAborted},
		{"aborted after the status", exit5, abort, Status{}, securepeer.ErrAborted},
		{"cut", out, cut, Status{}, io.ErrUnexpectedEOF},
		{"cut after the status", exit5, cut, Status{}, io.ErrUnexpectedEOF},
		{"cut in a frame", out[:len(out)-1], cleanEnd, Status{}, frame.ErrCut},
		{"message after the status", append(exit5, out...), cleanEnd, Status{}, ErrMalformed},
		{"client's message", msgFrame(execMsg{typ: execMsgStart}), cleanEnd, Status{}, ErrMalformed},
		{"frame too long", []byte{0xff, 0xff, 0xff, 0xff}, cleanEnd, Status{}, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cc, sc := securePair(t)
			go func() {
				sc.Write(tc.sent)
				switch tc.end {
				case cleanEnd:
					sc.CloseWrite()
					io.Copy(io.Discard, sc)
				case abort:
					sc.Abort()
				case cut:
					// After the client's end of stream, so that the close is
					// a FIN and not a reset for unread data.
					io.Copy(io.Discard, sc)
					sc.NetConn().Close()
				}
			}()
			var stdout, stderr bytes.Buffer
			x := &Client{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr}
			st, err := x.Run(context.Background(), cc)
			switch {
			case tc.err == nil && err != nil:
				t.Fatalf("error %v, want status %+v", err, tc.status)
			case tc.err != nil && !errors.Is(err, tc.err):
				t.Fatalf("status %+v, error %v; want an error wrapping %v", st, err, tc.err)
			case st != tc.status:
				t.Errorf("status %+v, want %+v", st, tc.status)
			}
			if tc.err == nil && (stdout.String() != strings.Repeat("out", bytes.Count(tc.sent, []byte("out"))) || stderr.String() != strings.Repeat("err", bytes.Count(tc.sent, []byte("err")))) {
				t.Errorf("stdout %q, stderr %q", stdout.String(), stderr.String())
			}
		})
	}
}

// TestExecClientSends checks what the client sends: the start message
// first (with the terminal asked for), then stdin, then its end.
func TestExecClientSends(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		tty   *TTYRequest
		start execMsg
	}{
		{"no terminal", nil, execMsg{typ: execMsgStart}},
		{"terminal", &TTYRequest{Term: "vt100", Size: WinSize{Cols: 80, Rows: 24}}, execMsg{typ: execMsgStartTTY, term: "vt100", size: WinSize{Cols: 80, Rows: 24}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cc, sc := securePair(t)
			received := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(sc)
				sc.Write(msgFrame(execMsg{typ: execMsgExit}))
				sc.CloseWrite()
				received <- b
			}()
			x := &Client{Stdin: strings.NewReader("hello"), Stdout: io.Discard, Stderr: io.Discard, TTY: tc.tty}
			if _, err := x.Run(context.Background(), cc); err != nil {
				t.Fatal(err)
			}
			want := append(msgFrame(tc.start), msgFrame(execMsg{typ: execMsgStdin, data: []byte("hello")})...)
			if got := <-received; !bytes.Equal(got, want) {
				t.Errorf("sent %x, want %x", got, want)
			}
		})
	}
}

// TestExecClientStdinError checks that a failure to read stdin aborts the
// stream, so that the command never takes partial input for whole.
func TestExecClientStdinError(t *testing.T) {
	t.Parallel()
	cc, sc := securePair(t)
	read := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(sc)
		read <- err
	}()
	broken := errors.New("disk on fire")
	x := &Client{Stdin: iotest.ErrReader(broken), Stdout: io.Discard, Stderr: io.Discard}
	_, err := x.Run(context.Background(), cc)
	if !errors.Is(err, broken) || !errors.As(err, new(*StdinError)) {
		t.Errorf("error %v, want a *StdinError for %v", err, broken)
	}
	select {
	case err := <-read:
		if !errors.Is(err, securepeer.ErrAborted) {
			t.Errorf("the server read %v, want the abort", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("the server's read did not end")
	}
}
