package tunnel

// The frames of one direction of a stream, as the package's doc says,
// read from any io.Reader: the checks of securepeer-tunnel/1, apart from
// yamux, so that they can be fuzzed and checked against the vectors.

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/frame"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/sanitize"
)

// doneMark is the frame header a side sends after its end frame once it
// has the peer's end frame too: see the package's doc.
const doneMark = 0xFFFF_FFFF

// A malformedError is a peer that broke securepeer-tunnel/1.
type malformedError struct{ msg string }

func (e *malformedError) Error() string { return e.msg }

func malformed(format string, args ...any) error {
	return &malformedError{fmt.Sprintf(format, args...)}
}

// errEarlyDone is a done mark before its sender's end frame.
var errEarlyDone = malformed("the peer sent its done mark before the end of its data, which securepeer-tunnel/1 does not allow; data may be missing")

// errAfterEnd is a peer that sent a frame after its end frame other than
// the done mark.
var errAfterEnd = malformed("the peer sent data after the end of its side of the tunnel stream, which securepeer-tunnel/1 does not allow; data may be missing")

// A RefusedError is the peer's refusal of a stream, with its reason.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string {
	return "the peer refused the stream: " + sanitize.Text(e.Reason)
}

// A reader reads one direction of a stream: the opener's header or the
// accepting side's status, then data frames up to the end frame, then the
// done mark. Errors of the stream under it pass through unchanged, except
// that a clean end before the end frame is never io.EOF; a peer that broke
// the protocol is a *malformedError.
type reader struct {
	f     *frame.Reader
	left  uint32 // bytes left in the data frame being read
	ended bool   // the end frame has come
	began bool   // a status's length has come
}

// header reads the opener's header: the forward's name.
func (r *reader) header() (string, error) {
	n, err := r.f.ReadHeader(MaxNameLen)
	var tl *frame.TooLongError
	switch {
	case errors.As(err, &tl):
		return "", malformed("the peer began a tunnel stream with a name of %d bytes, more than securepeer-tunnel/1 allows", tl.N)
	case err != nil:
		return "", err
	}
	name := make([]byte, n)
	if err := r.f.ReadBody(name); err != nil {
		return "", err
	}
	return string(name), nil
}

// status reads the accepting side's status, and returns a *RefusedError
// unless it is "ok".
func (r *reader) status() error {
	status, err := r.text("the peer began the tunnel stream with a status of %d bytes, which securepeer-tunnel/1 does not allow")
	switch {
	case err != nil:
		return err
	case status == "ok":
		return nil
	}
	return &RefusedError{Reason: status}
}

// text reads a frame of 1 to maxStatusLen bytes of text, a status or the
// reason of a refusal, with any invalid UTF-8 replaced; a length outside
// that is malformed, as bad says with the length.
func (r *reader) text(bad string) (string, error) {
	n, err := r.f.ReadHeader(maxStatusLen)
	var tl *frame.TooLongError
	switch {
	case errors.As(err, &tl):
		n = tl.N
	case err != nil:
		return "", err
	}
	r.began = true
	if n == 0 || tl != nil {
		return "", malformed(bad, n)
	}
	b := make([]byte, n)
	if err := r.f.ReadBody(b); err != nil {
		return "", err
	}
	return strings.ToValidUTF8(string(b), "?"), nil
}

// Read returns the data of the peer's frames, and io.EOF at its end frame.
func (r *reader) Read(p []byte) (int, error) {
	if r.ended {
		return 0, io.EOF
	}
	for r.left == 0 {
		// A data frame is read as it arrives, whatever its length
		// field says: nothing is allocated for it.
		n, err := r.f.ReadHeader(doneMark)
		switch {
		case err == io.EOF:
			return 0, io.ErrUnexpectedEOF // without the end frame
		case err != nil:
			return 0, err
		case n == 0:
			r.ended = true
			return 0, io.EOF
		case n == doneMark:
			return 0, errEarlyDone
		}
		r.left = n
	}
	if uint32(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.f.ReadSome(p)
	r.left -= uint32(n)
	return n, err
}

// done reads what follows the end frame: the done mark.
func (r *reader) done() error {
	n, err := r.f.ReadHeader(doneMark)
	switch {
	case err != nil:
		return err
	case n != doneMark:
		return errAfterEnd
	}
	return nil
}
