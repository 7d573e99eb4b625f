// Package frame is the framing under the command's own protocols,
// securepeer-exec and securepeer-tunnel/1: a frame is a 4-byte big-endian
// length n, then n bytes (PROTOCOL.md, "The command's protocols").
//
// A [Reader] bounds n by the maximum its caller allows before it reads or
// allocates anything for the frame, so a peer's length field never makes
// this side hold more than that. Nothing here knows about the command: a
// Reader takes an io.Reader and a [Writer] an io.Writer.
package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/securepeer/securepeer/internal/pkgerr"
)

// HeaderLen is the size of a frame's length field.
const HeaderLen = 4

// ErrCut is what a [Reader] returns when the stream ends cleanly (io.EOF)
// inside a frame: the peer ended its stream in the middle of something it
// was saying, which a well-formed stream never does.
var ErrCut = errors.New("the peer's stream ended in the middle of a frame")

// A TooLongError is a frame length over the reader's maximum. Nothing of
// the frame has been read when it is returned.
type TooLongError struct{ N, Max uint32 }

func (e *TooLongError) Error() string {
	return fmt.Sprintf("the peer sent a frame of %d bytes; at most %d are allowed", e.N, e.Max)
}

// A Reader reads frames from a stream. Errors of the stream pass through
// unchanged, so that callers can tell an aborted or cut stream from a
// malformed one.
type Reader struct {
	r   io.Reader
	hdr [HeaderLen]byte
	buf []byte // the body of the last frame ReadFrame returned
}

// NewReader returns a Reader of the frames of r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// ReadHeader reads the next frame's length and returns it, or a
// *[TooLongError] if it exceeds max. It returns io.EOF if the stream ended
// cleanly before the frame began, and [ErrCut] if it ended inside the
// length field.
func (f *Reader) ReadHeader(max uint32) (uint32, error) {
	if _, err := io.ReadFull(f.r, f.hdr[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			// io.ReadFull's own (compared as a value, not with
			// errors.Is: a stream's error may wrap it and mean a cut
			// connection): the stream ended cleanly mid-header.
			return 0, ErrCut
		}
		return 0, err
	}
	n := binary.BigEndian.Uint32(f.hdr[:])
	if n > max {
		return 0, &TooLongError{n, max}
	}
	return n, nil
}

// ReadBody reads exactly len(p) bytes of the frame being read into p.
func (f *Reader) ReadBody(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	if _, err := io.ReadFull(f.r, p); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF { // a clean end, as above
			return ErrCut
		}
		return err
	}
	return nil
}

// ReadSome reads at most len(p) bytes of the frame being read, as they
// arrive, for a caller that passes a frame's body on without holding it
// whole. A clean end of the stream is [ErrCut]: the caller reads only
// what the frame's length says is still to come.
func (f *Reader) ReadSome(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, err := f.r.Read(p)
	if n > 0 {
		return n, nil
	}
	if err == io.EOF {
		return 0, ErrCut
	}
	return 0, err
}

// ReadFrame reads the next frame whole, of at most max bytes, and returns
// its body, which is valid until the next call. Its buffer grows to the
// largest frame read so far and no further, so a peer that sends only
// small frames makes the reader hold only a small buffer.
func (f *Reader) ReadFrame(max uint32) ([]byte, error) {
	n, err := f.ReadHeader(max)
	if err != nil {
		return nil, err
	}
	f.buf = slices.Grow(f.buf[:0], int(n))[:n]
	if err := f.ReadBody(f.buf); err != nil {
		return nil, err
	}
	return f.buf, nil
}

// A Writer writes frames to a stream, each in one Write, so that frames
// from several goroutines never interleave and a frame of at most one
// record's payload goes out in one record.
type Writer struct {
	w io.Writer

	mu  sync.Mutex
	buf []byte // guarded by mu
}

// NewWriter returns a Writer of frames to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// WriteFrame writes one frame whose body is head followed by body.
func (f *Writer) WriteFrame(head, body []byte) error {
	n := len(head) + len(body)
	if uint64(n) > 1<<32-1 {
		return pkgerr.Plainf("a frame of %d bytes does not fit its length field", n)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.buf = binary.BigEndian.AppendUint32(f.buf[:0], uint32(n))
	f.buf = append(append(f.buf, head...), body...)
	_, err := f.w.Write(f.buf)
	return err
}

// WriteFramed writes b as one frame whose first HeaderLen bytes are room
// for its length, which it fills in: for a caller that reads a frame's
// body straight into b[HeaderLen:], saving WriteFrame's copy.
func (f *Writer) WriteFramed(b []byte) error {
	binary.BigEndian.PutUint32(b, uint32(len(b)-HeaderLen))
	f.mu.Lock()
	defer f.mu.Unlock()
	_, err := f.w.Write(b)
	return err
}

// WriteHeader writes a length field with no body after it: for a protocol
// that gives a length value a meaning of its own (securepeer-tunnel/1's
// done mark, FF FF FF FF).
func (f *Writer) WriteHeader(n uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.buf = binary.BigEndian.AppendUint32(f.buf[:0], n)
	_, err := f.w.Write(f.buf)
	return err
}
