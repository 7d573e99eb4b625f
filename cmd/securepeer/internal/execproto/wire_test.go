package execproto

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/frame"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite the securepeer-exec/2 vectors and fuzz seeds in testdata")

// execVectorsFile holds the known-answer frames of securepeer-exec/2.
var execVectorsFile = filepath.Join("testdata", "vectors", "exec2.txt")

// An execVector is one frame, length field included: a message, or bytes
// that a decoder must reject.
type execVector struct {
	name string
	msg  *execMsg // nil for a frame to reject
	raw  []byte   // the frame to reject
}

func (v execVector) oneFrame() []byte {
	if v.msg == nil {
		return v.raw
	}
	return oneFrame(string(v.msg.marshal(nil)))
}

func fixFrame(body string) []byte { return oneFrame(body) }

// execVectors are the vectors, in the file's order. The valid frames come
// first, then the ones a decoder must reject, named bad-.
func execVectors() []execVector {
	return []execVector{
		{name: "start", msg: &execMsg{typ: execMsgStart}},
		{name: "start-tty-80x24-xterm-256color", msg: &execMsg{typ: execMsgStartTTY, size: WinSize{80, 24}, term: "xterm-256color"}},
		{name: "start-tty-unknown-size-no-term", msg: &execMsg{typ: execMsgStartTTY}},
		{name: "stdin-ls", msg: &execMsg{typ: execMsgStdin, data: []byte("ls\r")}},
		{name: "window-132x43", msg: &execMsg{typ: execMsgWindow, size: WinSize{132, 43}}},
		{name: "stdout-hello", msg: &execMsg{typ: execMsgStdout, data: []byte("hello\n")}},
		{name: "stderr-not-found", msg: &execMsg{typ: execMsgStderr, data: []byte("sh: 1: no-such-cmd: not found\n")}},
		{name: "exit-0", msg: &execMsg{typ: execMsgExit, status: Status{Kind: Exited}}},
		{name: "exit-127", msg: &execMsg{typ: execMsgExit, status: Status{Kind: Exited, Code: 127}}},
		{name: "exit-signal-kill", msg: &execMsg{typ: execMsgExit, status: Status{Kind: Signaled, Code: 137, Detail: "KILL"}}},
		{name: "exit-not-run", msg: &execMsg{typ: execMsgExit, status: Status{Kind: NotRun, Code: 127, Detail: `cannot start "bash": fork/exec /bin/sh: no such file or directory`}}},
		{name: "bad-empty-frame", raw: fixFrame("")},
		{name: "bad-unknown-type", raw: fixFrame("\x7f")},
		{name: "bad-start-with-a-byte", raw: fixFrame("\x01\x00")},
		{name: "bad-start-tty-short", raw: fixFrame("\x02\x00\x50\x00\x18")},
		{name: "bad-start-tty-term-length", raw: fixFrame("\x02\x00\x50\x00\x18\x05xte")},
		{name: "bad-start-tty-term-characters", raw: fixFrame("\x02\x00\x50\x00\x18\x08xterm;rm")},
		{name: "bad-start-tty-term-too-long", raw: fixFrame("\x02\x00\x50\x00\x18\x41" + strings.Repeat("x", 65))},
		{name: "bad-window-short", raw: fixFrame("\x04\x00\x50\x00")},
		{name: "bad-window-long", raw: fixFrame("\x04\x00\x50\x00\x18\x00")},
		{name: "bad-stdin-empty", raw: fixFrame("\x03")},
		{name: "bad-stdout-empty", raw: fixFrame("\x11")},
		{name: "bad-exit-short", raw: fixFrame("\x13\x00")},
		{name: "bad-exit-detail-with-code", raw: fixFrame("\x13\x00\x00x")},
		{name: "bad-exit-signal-lowercase", raw: fixFrame("\x13\x01\x89kill")},
		{name: "bad-exit-signal-no-name", raw: fixFrame("\x13\x01\x89")},
		{name: "bad-exit-signal-name-too-long", raw: fixFrame("\x13\x01\x89" + strings.Repeat("K", 17))},
		{name: "bad-exit-not-run-no-reason", raw: fixFrame("\x13\x02\x7f")},
		{name: "bad-exit-not-run-reason-too-long", raw: fixFrame("\x13\x02\x7f" + strings.Repeat("r", 256))},
		{name: "bad-exit-kind", raw: fixFrame("\x13\x03\x00")},
		{name: "bad-frame-too-long", raw: []byte{0x00, 0x00, 0xff, 0xfd}},
	}
}

// execVectorsText is the vectors file's content.
func execVectorsText() []byte {
	var b bytes.Buffer
	b.WriteString(`# securepeer-exec/2 known-answer frames (PROTOCOL.md, "The command's
# protocols: securepeer-exec"). One frame a line: a name, then the frame in
# hex, its 4-byte big-endian length included. A decoder must read each
# frame whose name does not start with "bad-" as the message its name says
# and encode that message to the same bytes, and must reject every bad-
# frame. Regenerate with go test -run TestExecVectors -update.
`)
	for _, v := range execVectors() {
		fmt.Fprintf(&b, "%s: %x\n", v.name, v.oneFrame())
	}
	return b.Bytes()
}

// TestExecVectors checks the vectors file byte for byte against the
// encoder, then decodes every frame in it: the valid ones to the same
// message, the bad- ones to an error wrapping ErrMalformed.
func TestExecVectors(t *testing.T) {
	want := execVectorsText()
	if *update {
		if err := os.WriteFile(execVectorsFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(execVectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from what the encoder writes (go test -run TestExecVectors -update rewrites it):\n%s", execVectorsFile, got)
	}
	byName := map[string]execVector{}
	for _, v := range execVectors() {
		byName[v.name] = v
	}
	sc := bufio.NewScanner(bytes.NewReader(got))
	n := 0
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, hexFrame, ok := strings.Cut(line, ": ")
		fr, err := hex.DecodeString(hexFrame)
		if !ok || err != nil {
			t.Fatalf("line %q", line)
		}
		n++
		v := byName[name]
		m, err := newExecMsgReader(bytes.NewReader(fr)).read()
		switch {
		case v.msg == nil && !errors.Is(err, ErrMalformed):
			t.Errorf("%s: decoded to %+v, %v; want an error wrapping ErrMalformed", name, m, err)
		case v.msg != nil && err != nil:
			t.Errorf("%s: %v", name, err)
		case v.msg != nil && !reflect.DeepEqual(normalize(m), normalize(*v.msg)):
			t.Errorf("%s: decoded to %+v, want %+v", name, m, *v.msg)
		}
	}
	if n != len(byName) {
		t.Errorf("%d vectors in the file, %d in the table", n, len(byName))
	}
}

// normalize makes empty and nil data compare equal.
func normalize(m execMsg) execMsg {
	if len(m.data) == 0 {
		m.data = nil
	}
	return m
}

// TestExecMsgStrictPrefixes checks that no strict prefix of a valid frame
// reads as a message: the reader gets a clean end (io.EOF) before the
// frame begins, frame.ErrCut after.
func TestExecMsgStrictPrefixes(t *testing.T) {
	for _, v := range execVectors() {
		if v.msg == nil {
			continue
		}
		fr := v.oneFrame()
		for j := range len(fr) {
			m, err := newExecMsgReader(bytes.NewReader(fr[:j])).read()
			want := frame.ErrCut
			if j == 0 {
				want = io.EOF
			}
			if err != want {
				t.Errorf("%s: the %d-byte prefix read as %+v, %v; want %v", v.name, j, m, err, want)
			}
		}
	}
}

// FuzzExecMessages reads a stream of securepeer-exec/2 frames: nothing
// panics, every message decoded encodes to its frame's exact bytes, and
// every error is a clean end, a cut or a malformed message.
func FuzzExecMessages(f *testing.F) {
	testutil.RequireFuzzSeeds(f, "TestExecFuzzSeeds")
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := frame.NewReader(bytes.NewReader(data))
		for {
			body, err := fr.ReadFrame(execMaxFrame)
			if err != nil {
				if err != io.EOF && err != frame.ErrCut && !errors.As(err, new(*frame.TooLongError)) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			m, err := parseExecMsg(body)
			if err != nil {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("error %v does not wrap ErrMalformed", err)
				}
				continue
			}
			if enc := m.marshal(nil); !bytes.Equal(enc, body) {
				t.Fatalf("%x decodes to %+v, which encodes to %x", body, m, enc)
			}
		}
	})
}

// FuzzExecClientReceive feeds a client the bytes of a server's stream:
// nothing panics, and a session ends with a status only if the stream held
// a valid exit message as its last frame.
func FuzzExecClientReceive(f *testing.F) {
	testutil.RequireFuzzSeeds(f, "TestExecFuzzSeeds")
	f.Fuzz(func(t *testing.T, data []byte) {
		x := &Client{Stdout: io.Discard, Stderr: io.Discard}
		st, err := x.receive(&readOnlyConn{bytes.NewReader(data)})
		if err != nil {
			return
		}
		if err := st.check(); err != nil {
			t.Fatalf("status %+v: %v", st, err)
		}
		last := oneFrame(string((&execMsg{typ: execMsgExit, status: st}).marshal(nil)))
		if !bytes.HasSuffix(data, last) {
			t.Fatalf("status %+v from a stream that does not end with it: %x", st, data)
		}
	})
}

// readOnlyConn is an Conn that only reads.
type readOnlyConn struct{ io.Reader }

func (readOnlyConn) Write(p []byte) (int, error) { return len(p), nil }
func (readOnlyConn) CloseWrite() error           { return nil }
func (readOnlyConn) Close() error                { return nil }
func (readOnlyConn) Abort()                      {}

// TestExecFuzzSeeds writes the fuzz targets' seed corpora from the vectors
// with -update; without it, checks that they are what it would write.
func TestExecFuzzSeeds(t *testing.T) {
	var client, server [][]byte
	for _, v := range execVectors() {
		if v.msg != nil && v.msg.typ < 0x10 {
			client = append(client, v.oneFrame())
		} else {
			server = append(server, v.oneFrame())
		}
	}
	exit := execVectors()[7].oneFrame()
	sessions := map[string][]byte{
		"session":          bytes.Join([][]byte{server[0], server[1], exit}, nil),
		"signal":           bytes.Join([][]byte{server[1], execVectors()[9].oneFrame()}, nil),
		"after-exit":       bytes.Join([][]byte{exit, server[0]}, nil),
		"client-message":   bytes.Join([][]byte{client[0], exit}, nil),
		"cut-before-exit":  server[0],
		"cut-in-the-exit":  exit[:len(exit)-1],
		"two-exits":        bytes.Join([][]byte{exit, exit}, nil),
		"not-run":          execVectors()[10].oneFrame(),
		"huge-length-then": append([]byte{0x7f, 0xff, 0xff, 0xff}, exit...),
	}
	corpora := map[string]map[string][]byte{"FuzzExecMessages": {}, "FuzzExecClientReceive": sessions}
	for i, v := range execVectors() {
		corpora["FuzzExecMessages"][fmt.Sprintf("%02d-%s", i, v.name)] = v.oneFrame()
	}
	corpora["FuzzExecMessages"]["client-session"] = bytes.Join(client, nil)
	for target, seeds := range corpora {
		testutil.UpdateFuzzSeeds(t, target, seeds, *update, "TestExecFuzzSeeds")
	}
}
