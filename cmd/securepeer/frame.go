package main

// Length-prefixed frames: the framing under the command's own protocols.
//
// A frame is a 4-byte big-endian length n, then n bytes. A reader bounds n
// by the maximum its caller allows before it reads or allocates anything
// for the frame, so a peer's length field never makes this side hold more
// than that. securepeer-exec (exec_wire.go) is built on it; the frames of
// securepeer-tunnel/1 (tunnel.go) have the same shape, and can move onto
// frameReader and frameWriter as they are. Nothing here knows about the
// command: it takes an io.Reader or an io.Writer, so it can become a
// package of its own.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
)

// frameHeaderLen is the size of a frame's length field.
const frameHeaderLen = 4

// errFrameCut is what a frameReader returns when the stream ends cleanly
// (io.EOF) inside a frame: the peer ended its stream in the middle of
// something it was saying, which a well-formed stream never does.
var errFrameCut = errors.New("the peer's stream ended in the middle of a frame")

// A frameTooLongError is a frame length over the reader's maximum. Nothing
// of the frame has been read when it is returned.
type frameTooLongError struct{ n, max uint32 }

func (e *frameTooLongError) Error() string {
	return fmt.Sprintf("the peer sent a frame of %d bytes; at most %d are allowed", e.n, e.max)
}

// A frameReader reads frames from r. Errors of r pass through unchanged,
// so that callers can tell an aborted or cut stream from a malformed one.
type frameReader struct {
	r   io.Reader
	hdr [frameHeaderLen]byte
	buf []byte // the body of the last frame readFrame returned
}

// readHeader reads the next frame's length and returns it, or a
// *frameTooLongError if it exceeds max. It returns io.EOF if the stream
// ended cleanly before the frame began, and errFrameCut if it ended inside
// the length field.
func (f *frameReader) readHeader(max uint32) (uint32, error) {
	if _, err := io.ReadFull(f.r, f.hdr[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			// io.ReadFull's own (compared as a value, not with
			// errors.Is: a stream's error may wrap it and mean a cut
			// connection): the stream ended cleanly mid-header.
			return 0, errFrameCut
		}
		return 0, err
	}
	n := binary.BigEndian.Uint32(f.hdr[:])
	if n > max {
		return 0, &frameTooLongError{n, max}
	}
	return n, nil
}

// readBody reads exactly len(p) bytes of the frame being read into p.
func (f *frameReader) readBody(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	if _, err := io.ReadFull(f.r, p); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF { // a clean end, as above
			return errFrameCut
		}
		return err
	}
	return nil
}

// readFrame reads the next frame whole, of at most max bytes, and returns
// its body, which is valid until the next call. Its buffer grows to the
// largest frame read so far and no further, so a peer that sends only
// small frames makes the reader hold only a small buffer.
func (f *frameReader) readFrame(max uint32) ([]byte, error) {
	n, err := f.readHeader(max)
	if err != nil {
		return nil, err
	}
	f.buf = slices.Grow(f.buf[:0], int(n))[:n]
	if err := f.readBody(f.buf); err != nil {
		return nil, err
	}
	return f.buf, nil
}

// A frameWriter writes frames to w, each in one Write, so that frames from
// several goroutines never interleave and a frame of at most one record's
// payload goes out in one record.
type frameWriter struct {
	w io.Writer

	mu  sync.Mutex
	buf []byte // guarded by mu
}

// writeFrame writes one frame whose body is head followed by body.
func (f *frameWriter) writeFrame(head, body []byte) error {
	n := len(head) + len(body)
	if uint64(n) > 1<<32-1 {
		return fmt.Errorf("a frame of %d bytes does not fit its length field", n)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.buf = binary.BigEndian.AppendUint32(f.buf[:0], uint32(n))
	f.buf = append(append(f.buf, head...), body...)
	_, err := f.w.Write(f.buf)
	return err
}

// writeFramed writes b as one frame whose first frameHeaderLen bytes are
// room for its length, which it fills in: for a caller that reads a
// frame's body straight into b[frameHeaderLen:], saving writeFrame's copy.
func (f *frameWriter) writeFramed(b []byte) error {
	binary.BigEndian.PutUint32(b, uint32(len(b)-frameHeaderLen))
	f.mu.Lock()
	defer f.mu.Unlock()
	_, err := f.w.Write(b)
	return err
}
