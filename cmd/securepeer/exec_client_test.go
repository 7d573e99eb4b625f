package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/frame"

	"github.com/securepeer/securepeer"
)

// TestExecClient runs the client against servers that end their stream in
// every way: only an exit message followed by the server's clean end is a
// status; every other end is an error that says what happened, never a
// status the server did not send.
func TestExecClient(t *testing.T) {
	t.Parallel()
	out := msgFrame(execMsg{typ: execMsgStdout, data: []byte("out")})
	errOut := msgFrame(execMsg{typ: execMsgStderr, data: []byte("err")})
	exit5 := msgFrame(execMsg{typ: execMsgExit, status: execStatus{kind: execExited, code: 5}})
	notRun := execStatus{kind: execNotRun, code: 127, detail: "cannot start"}
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
		status execStatus
		err    error // nil for a status
	}{
		{"status", bytes.Join([][]byte{out, errOut, exit5}, nil), cleanEnd, execStatus{kind: execExited, code: 5}, nil},
		{"not run", msgFrame(execMsg{typ: execMsgExit, status: notRun}), cleanEnd, notRun, nil},
		{"no status", out, cleanEnd, execStatus{}, errNoExitStatus},
		{"aborted", out, abort, execStatus{}, securepeer.ErrAborted},
		{"aborted after the status", exit5, abort, execStatus{}, securepeer.ErrAborted},
		{"cut", out, cut, execStatus{}, io.ErrUnexpectedEOF},
		{"cut after the status", exit5, cut, execStatus{}, io.ErrUnexpectedEOF},
		{"cut in a frame", out[:len(out)-1], cleanEnd, execStatus{}, frame.ErrCut},
		{"message after the status", append(exit5, out...), cleanEnd, execStatus{}, errExecMalformed},
		{"client's message", msgFrame(execMsg{typ: execMsgStart}), cleanEnd, execStatus{}, errExecMalformed},
		{"frame too long", []byte{0xff, 0xff, 0xff, 0xff}, cleanEnd, execStatus{}, errExecMalformed},
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
			x := &execClient{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr}
			st, err := x.run(context.Background(), cc)
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
		tty   *ttyRequest
		start execMsg
	}{
		{"no terminal", nil, execMsg{typ: execMsgStart}},
		{"terminal", &ttyRequest{term: "vt100", size: winSize{cols: 80, rows: 24}}, execMsg{typ: execMsgStartTTY, term: "vt100", size: winSize{cols: 80, rows: 24}}},
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
			x := &execClient{stdin: strings.NewReader("hello"), stdout: io.Discard, stderr: io.Discard, tty: tc.tty}
			if _, err := x.run(context.Background(), cc); err != nil {
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
	x := &execClient{stdin: iotest.ErrReader(broken), stdout: io.Discard, stderr: io.Discard}
	_, err := x.run(context.Background(), cc)
	if !errors.Is(err, broken) || !errors.As(err, new(*stdinError)) {
		t.Errorf("error %v, want a *stdinError for %v", err, broken)
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
