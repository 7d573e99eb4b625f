// Package execproto is the command's -exec: its application protocols
// securepeer-exec/2 and securepeer-exec/1 (PROTOCOL.md, "The command's
// protocols: securepeer-exec"), the server's session that runs a command
// for a peer ([Server]) and the client's that shows its output and returns
// its status ([Client]).
//
// It knows nothing of the command line: a session takes a [Conn] (a
// secure stream that can end cleanly or be aborted), the command or the
// client's own stdin and stdout, and a logger.
package execproto

// This file is the wire formats: encoders and bounded decoders, nothing
// else. server.go and client.go run the sessions.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/frame"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/sanitize"
	"github.com/securepeer/securepeer/internal/pkgerr"
	"github.com/securepeer/securepeer/internal/wire"
)

// The application protocol names, in the order listen -exec and a stdio
// connect offer them: the responder's order decides, so two peers that
// both speak /2 use it, and a peer that speaks only /1 still gets /1.
const (
	Protocol2 = "securepeer-exec/2"
	Protocol1 = "securepeer-exec/1"
)

// The securepeer-exec/2 message types. A frame's body is a type byte and
// the message; the client sends types below 0x10, the server the others.
const (
	execMsgStart    byte = 0x01 // client: run the command without a terminal
	execMsgStartTTY byte = 0x02 // client: run it on a terminal of this size and TERM
	execMsgStdin    byte = 0x03 // client: bytes for the command's input
	execMsgWindow   byte = 0x04 // client: the terminal's new size
	execMsgStdout   byte = 0x11 // server: the command's output
	execMsgStderr   byte = 0x12 // server: the command's error output
	execMsgExit     byte = 0x13 // server: how the command ended; the last message
)

// Bounds of securepeer-exec/2.
const (
	// execMaxFrame is the largest frame body: with its length field, one
	// full securepeer record.
	execMaxFrame = wire.MaxRecordPayload - frame.HeaderLen
	// execMaxData is the most data one stdin, stdout or stderr message
	// carries.
	execMaxData = execMaxFrame - 1
	// execMaxTerm bounds the TERM a client sends.
	execMaxTerm = 64
	// execMaxSignal bounds a signal's name in an exit message.
	execMaxSignal = 16
	// execMaxReason bounds the reason of an exit message for a command
	// that did not run.
	execMaxReason = 255
)

// How the command ended, in an exit message.
const (
	Exited   byte = 0 // it exited with code
	Signaled byte = 1 // a signal killed it; code is 128 plus its number
	NotRun   byte = 2 // it could not be run, for reason
)

// ErrMalformed is wrapped by every error of a malformed
// securepeer-exec/2 message.
var ErrMalformed = errors.New("malformed securepeer-exec/2 message")

// A WinSize is a terminal's size in character cells; 0 is unknown.
type WinSize struct{ Cols, Rows uint16 }

// A Status is how the command ended.
type Status struct {
	Kind byte  // Exited, Signaled or NotRun
	Code uint8 // the exit status the client exits with
	// Detail is the signal's name without "SIG" for Signaled, the
	// reason for NotRun, and empty for Exited.
	Detail string
}

// An execMsg is one securepeer-exec/2 message. Which fields mean anything
// depends on typ.
type execMsg struct {
	typ    byte
	data   []byte  // stdin, stdout, stderr: 1..execMaxData bytes
	size   WinSize // start-tty, window
	term   string  // start-tty: TERM, 0..execMaxTerm of [A-Za-z0-9._+-]
	status Status  // exit
}

// marshal appends the message's frame body (its type and fields) to b.
func (m *execMsg) marshal(b []byte) []byte {
	b = append(b, m.typ)
	switch m.typ {
	case execMsgStartTTY:
		b = binary.BigEndian.AppendUint16(b, m.size.Cols)
		b = binary.BigEndian.AppendUint16(b, m.size.Rows)
		b = append(b, byte(len(m.term)))
		b = append(b, m.term...)
	case execMsgWindow:
		b = binary.BigEndian.AppendUint16(b, m.size.Cols)
		b = binary.BigEndian.AppendUint16(b, m.size.Rows)
	case execMsgStdin, execMsgStdout, execMsgStderr:
		b = append(b, m.data...)
	case execMsgExit:
		b = append(b, m.status.Kind, m.status.Code)
		b = append(b, m.status.Detail...)
	}
	return b
}

func malformed(format string, args ...any) error {
	return pkgerr.Plainf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// parseExecMsg decodes a frame body. data aliases body. It accepts
// exactly what marshal produces, field by field, and nothing else.
func parseExecMsg(body []byte) (execMsg, error) {
	if len(body) == 0 {
		return execMsg{}, malformed("an empty frame")
	}
	m := execMsg{typ: body[0]}
	p := body[1:]
	switch m.typ {
	case execMsgStart:
		if len(p) != 0 {
			return m, malformed("%d bytes after a start message", len(p))
		}
	case execMsgStartTTY:
		if len(p) < 5 || len(p) != 5+int(p[4]) {
			return m, malformed("a start-tty message of %d bytes", len(p))
		}
		m.size = parseWinSize(p)
		m.term = string(p[5:])
		if !ValidTerm(m.term) {
			return m, malformed("TERM %q", sanitize.Text(m.term))
		}
	case execMsgWindow:
		if len(p) != 4 {
			return m, malformed("a window message of %d bytes", len(p))
		}
		m.size = parseWinSize(p)
	case execMsgStdin, execMsgStdout, execMsgStderr:
		if len(p) == 0 {
			return m, malformed("a data message without data")
		}
		m.data = p
	case execMsgExit:
		if len(p) < 2 {
			return m, malformed("an exit message of %d bytes", len(p))
		}
		m.status = Status{Kind: p[0], Code: p[1], Detail: string(p[2:])}
		if err := m.status.check(); err != nil {
			return m, err
		}
	default:
		return m, malformed("unknown message type 0x%02x", m.typ)
	}
	return m, nil
}

func parseWinSize(p []byte) WinSize {
	return WinSize{binary.BigEndian.Uint16(p), binary.BigEndian.Uint16(p[2:])}
}

// check reports whether s is an exit status a server may send.
func (s Status) check() error {
	switch s.Kind {
	case Exited:
		if s.Detail != "" {
			return malformed("an exit status with %d bytes of detail", len(s.Detail))
		}
	case Signaled:
		if !validSignalName(s.Detail) {
			return malformed("signal name %q", sanitize.Text(s.Detail))
		}
	case NotRun:
		if s.Detail == "" || len(s.Detail) > execMaxReason {
			return malformed("a reason of %d bytes", len(s.Detail))
		}
	default:
		return malformed("exit kind %d", s.Kind)
	}
	return nil
}

// ValidTerm reports whether t may be a terminal type: it becomes the
// command's TERM, so only the characters terminfo names use.
func ValidTerm(t string) bool {
	if len(t) > execMaxTerm {
		return false
	}
	for _, c := range []byte(t) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '+' || c == '-') {
			return false
		}
	}
	return true
}

// validSignalName reports whether n is a signal's name as exit messages
// carry it: "KILL", or the number when the server has no name for it.
func validSignalName(n string) bool {
	if n == "" || len(n) > execMaxSignal {
		return false
	}
	for _, c := range []byte(n) {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '-') {
			return false
		}
	}
	return true
}

// An execMsgReader reads securepeer-exec/2 messages.
type execMsgReader struct{ f *frame.Reader }

func newExecMsgReader(r io.Reader) *execMsgReader { return &execMsgReader{frame.NewReader(r)} }

// read returns the next message. Its data is valid until the next call.
// io.EOF is the peer's clean end of stream between messages.
func (r *execMsgReader) read() (execMsg, error) {
	body, err := r.f.ReadFrame(execMaxFrame)
	var tl *frame.TooLongError
	if errors.As(err, &tl) {
		return execMsg{}, pkgerr.Plainf("%w: %v", ErrMalformed, err)
	}
	if err != nil {
		return execMsg{}, err
	}
	return parseExecMsg(body)
}

// An execMsgWriter writes securepeer-exec/2 messages; it is safe for
// concurrent use, each message one Write.
type execMsgWriter struct{ f *frame.Writer }

func newExecMsgWriter(w io.Writer) *execMsgWriter { return &execMsgWriter{frame.NewWriter(w)} }

// write sends m.
func (w *execMsgWriter) write(m *execMsg) error {
	body := m.marshal(make([]byte, 0, 8+len(m.term)+len(m.status.Detail)))
	return w.f.WriteFrame(body, nil)
}

// A dataBuf holds one data message as it is read: the frame's length and
// type, then the data, read in place.
type dataBuf []byte

func newDataBuf(typ byte) dataBuf {
	b := make(dataBuf, frame.HeaderLen+1+execMaxData)
	b[frame.HeaderLen] = typ
	return b
}

// room is where the data goes: at most execMaxData bytes.
func (b dataBuf) room() []byte { return b[frame.HeaderLen+1:] }

// writeBuf sends the first n bytes of b's room as one message.
func (w *execMsgWriter) writeBuf(b dataBuf, n int) error {
	return w.f.WriteFramed(b[:frame.HeaderLen+1+n])
}

// securepeer-exec/1 (the first version, still spoken to peers that offer
// nothing newer): the stream from the server to the client is framed, each
// frame a 4-byte big-endian length n, then n bytes of the command's
// output; a frame with n = 0 ends the output, and one last frame of at
// most maxExecStatusLen bytes holds "exit N", N from 0 to 255, before the
// end of stream. The client's stream is a plain one, and the command's
// stderr stays on the server.

// maxExecStatusLen bounds the status frame of securepeer-exec/1.
const maxExecStatusLen = 64

// exec1Writer frames the command's output for securepeer-exec/1.
type exec1Writer struct{ f *frame.Writer }

func (w *exec1Writer) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil // an empty frame would end the output
	}
	if err := w.f.WriteFrame(p, nil); err != nil {
		return 0, err
	}
	return len(p), nil
}

// finish sends the end of the output and the exit status.
func (w *exec1Writer) finish(code int) error {
	if err := w.f.WriteFrame(nil, nil); err != nil {
		return err
	}
	return w.f.WriteFrame([]byte(fmt.Sprintf("exit %d", code)), nil)
}

// V1Reader reads the command's output from a securepeer-exec/1 stream,
// and then its status: io.EOF comes only after a valid status and the
// peer's clean end of stream.
type V1Reader struct {
	f      *frame.Reader
	left   uint32
	done   bool
	status int
}

func NewV1Reader(r io.Reader) *V1Reader { return &V1Reader{f: frame.NewReader(r)} }

// Status is the command's exit status, once Read has returned io.EOF.
func (r *V1Reader) Status() int { return r.status }

func (r *V1Reader) Read(p []byte) (int, error) {
	if r.done {
		return 0, io.EOF
	}
	for r.left == 0 {
		// A data frame is read as it arrives, into p, whatever its
		// length field says: nothing is allocated for it.
		n, err := r.f.ReadHeader(1<<32 - 1)
		if err != nil {
			return 0, r.cut(err)
		}
		if r.left = n; n == 0 {
			return 0, r.readStatus()
		}
	}
	if uint32(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.f.ReadSome(p)
	r.left -= uint32(n)
	if err != nil {
		return n, r.cut(err)
	}
	return n, nil
}

// cut turns a clean end of stream before the status into an error.
func (r *V1Reader) cut(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, frame.ErrCut) {
		return errors.New("the peer's stream ended without the command's exit status (securepeer-exec/1)")
	}
	return err
}

func (r *V1Reader) readStatus() error {
	buf, err := r.f.ReadFrame(maxExecStatusLen)
	var tl *frame.TooLongError
	switch {
	case errors.As(err, &tl):
		return pkgerr.Plainf("the peer sent an exit status of %d bytes, which securepeer-exec/1 does not allow", tl.N)
	case err != nil:
		return r.cut(err)
	case len(buf) == 0:
		return errors.New("the peer sent an exit status of 0 bytes, which securepeer-exec/1 does not allow")
	}
	code, ok := strings.CutPrefix(string(buf), "exit ")
	c, err := strconv.Atoi(code)
	if !ok || err != nil || c < 0 || c > 255 || strings.Trim(code, "0123456789") != "" {
		return pkgerr.Plainf("the peer sent an exit status %q, which securepeer-exec/1 does not allow", sanitize.Text(string(buf)))
	}
	// Nothing may follow but the end of stream, which ReadSome, reading
	// as if within a frame, reports as frame.ErrCut.
	if n, err := r.f.ReadSome(make([]byte, 1)); n > 0 || err != frame.ErrCut {
		if err == nil {
			err = errors.New("data after the exit status")
		}
		return err
	}
	r.status, r.done = c, true
	return io.EOF
}
