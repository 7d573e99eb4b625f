package main

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// TestFrameReader checks the frame reader's bounds and ends: a length over
// the maximum is refused before its body is read, a clean end between
// frames is io.EOF, one inside a frame is errFrameCut, and other errors of
// the stream pass through unchanged.
func TestFrameReader(t *testing.T) {
	errBroken := errors.New("broken stream")
	for _, tc := range []struct {
		name   string
		r      io.Reader
		max    uint32
		frames []string
		err    error
	}{
		{"two frames", bytes.NewReader([]byte("\x00\x00\x00\x02hi\x00\x00\x00\x00\x00\x00\x00\x01!")), 10, []string{"hi", "", "!"}, io.EOF},
		{"at the maximum", bytes.NewReader([]byte("\x00\x00\x00\x03abc")), 3, []string{"abc"}, io.EOF},
		{"over the maximum", bytes.NewReader([]byte("\x00\x00\x00\x04abcd")), 3, nil, &frameTooLongError{4, 3}},
		{"huge length, no body", bytes.NewReader([]byte("\xff\xff\xff\xff")), 1 << 16, nil, &frameTooLongError{1<<32 - 1, 1 << 16}},
		{"nothing", bytes.NewReader(nil), 3, nil, io.EOF},
		{"cut in the length", bytes.NewReader([]byte("\x00\x00")), 3, nil, errFrameCut},
		{"cut in the body", bytes.NewReader([]byte("\x00\x00\x00\x03ab")), 3, nil, errFrameCut},
		{"cut before the body", bytes.NewReader([]byte("\x00\x00\x00\x03")), 3, nil, errFrameCut},
		{"one byte at a time", iotest.OneByteReader(bytes.NewReader([]byte("\x00\x00\x00\x02hi"))), 3, []string{"hi"}, io.EOF},
		{"stream error", io.MultiReader(bytes.NewReader([]byte("\x00\x00\x00\x02h")), iotest.ErrReader(errBroken)), 3, nil, errBroken},
		{"stream error wrapping ErrUnexpectedEOF", iotest.ErrReader(wrappedUnexpectedEOF), 3, nil, wrappedUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := frameReader{r: tc.r}
			var got []string
			var err error
			for {
				var b []byte
				if b, err = f.readFrame(tc.max); err != nil {
					break
				}
				got = append(got, string(b))
			}
			if len(got) != len(tc.frames) {
				t.Fatalf("frames %q, want %q", got, tc.frames)
			}
			for i := range got {
				if got[i] != tc.frames[i] {
					t.Errorf("frame %d = %q, want %q", i, got[i], tc.frames[i])
				}
			}
			var tl, wantTL *frameTooLongError
			switch {
			case errors.As(tc.err, &wantTL):
				if !errors.As(err, &tl) || *tl != *wantTL {
					t.Errorf("error %v, want %v", err, tc.err)
				}
			case err != tc.err:
				t.Errorf("error %v, want %v", err, tc.err)
			}
		})
	}
}

var wrappedUnexpectedEOF = wrapErr{io.ErrUnexpectedEOF}

type wrapErr struct{ err error }

func (e wrapErr) Error() string { return "the connection ended: " + e.err.Error() }
func (e wrapErr) Unwrap() error { return e.err }

// TestFrameReaderBuffer checks that the reader's buffer grows only to the
// largest frame actually read, never to what a length field promises.
func TestFrameReaderBuffer(t *testing.T) {
	var in bytes.Buffer
	w := frameWriter{w: &in}
	w.writeFrame([]byte("a"), nil)
	in.Write([]byte("\x00\x01\x00\x00")) // promises 64 KiB, sends nothing
	f := frameReader{r: &in}
	if _, err := f.readFrame(1 << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.readFrame(1 << 20); err != errFrameCut {
		t.Fatalf("error %v, want errFrameCut", err)
	}
	if cap(f.buf) > 1<<16 {
		t.Errorf("the buffer grew to %d bytes", cap(f.buf))
	}
}

// TestFrameWriter checks that each frame is one Write: its length, head
// and body together, or its length filled in before a body read in place.
func TestFrameWriter(t *testing.T) {
	var writes [][]byte
	w := frameWriter{w: writerFunc(func(p []byte) (int, error) {
		writes = append(writes, bytes.Clone(p))
		return len(p), nil
	})}
	w.writeFrame([]byte{0x11}, []byte("out"))
	w.writeFrame(nil, nil)
	w.writeFramed([]byte("....in place"))
	want := [][]byte{[]byte("\x00\x00\x00\x04\x11out"), []byte("\x00\x00\x00\x00"), []byte("\x00\x00\x00\x08in place")}
	if len(writes) != len(want) {
		t.Fatalf("%d writes, want %d", len(writes), len(want))
	}
	for i := range want {
		if !bytes.Equal(writes[i], want[i]) {
			t.Errorf("write %d = %x, want %x", i, writes[i], want[i])
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
