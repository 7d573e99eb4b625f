package frame

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// TestFrameReader checks the frame reader's bounds and ends: a length over
// the maximum is refused before its body is read, a clean end between
// frames is io.EOF, one inside a frame is ErrCut, and other errors of
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
		{"over the maximum", bytes.NewReader([]byte("\x00\x00\x00\x04abcd")), 3, nil, &TooLongError{4, 3}},
		{"huge length, no body", bytes.NewReader([]byte("\xff\xff\xff\xff")), 1 << 16, nil, &TooLongError{1<<32 - 1, 1 << 16}},
		{"nothing", bytes.NewReader(nil), 3, nil, io.EOF},
		{"cut in the length", bytes.NewReader([]byte("\x00\x00")), 3, nil, ErrCut},
		{"cut in the body", bytes.NewReader([]byte("\x00\x00\x00\x03ab")), 3, nil, ErrCut},
		{"cut before the body", bytes.NewReader([]byte("\x00\x00\x00\x03")), 3, nil, ErrCut},
		{"one byte at a time", iotest.OneByteReader(bytes.NewReader([]byte("\x00\x00\x00\x02hi"))), 3, []string{"hi"}, io.EOF},
		{"stream error", io.MultiReader(bytes.NewReader([]byte("\x00\x00\x00\x02h")), iotest.ErrReader(errBroken)), 3, nil, errBroken},
		{"stream error wrapping ErrUnexpectedEOF", iotest.ErrReader(wrappedUnexpectedEOF), 3, nil, wrappedUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := Reader{r: tc.r}
			var got []string
			var err error
			for {
				var b []byte
				if b, err = f.ReadFrame(tc.max); err != nil {
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
			var tl, wantTL *TooLongError
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
	w := Writer{w: &in}
	w.WriteFrame([]byte("a"), nil)
	in.Write([]byte("\x00\x01\x00\x00")) // promises 64 KiB, sends nothing
	f := Reader{r: &in}
	if _, err := f.ReadFrame(1 << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadFrame(1 << 20); err != ErrCut {
		t.Fatalf("error %v, want ErrCut", err)
	}
	if cap(f.buf) > 1<<16 {
		t.Errorf("the buffer grew to %d bytes", cap(f.buf))
	}
}

// TestFrameWriter checks that each frame is one Write: its length, head
// and body together, or its length filled in before a body read in place.
func TestFrameWriter(t *testing.T) {
	var writes [][]byte
	w := Writer{w: writerFunc(func(p []byte) (int, error) {
		writes = append(writes, bytes.Clone(p))
		return len(p), nil
	})}
	w.WriteFrame([]byte{0x11}, []byte("out"))
	w.WriteFrame(nil, nil)
	w.WriteFramed([]byte("....in place"))
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

// TestReadSome checks reading a frame's body as it arrives: what the
// stream has, never more than asked, and a clean end inside the body as
// ErrCut.
func TestReadSome(t *testing.T) {
	f := NewReader(iotest.OneByteReader(bytes.NewReader([]byte("\x00\x00\x00\x05abc"))))
	n, err := f.ReadHeader(1<<32 - 1)
	if n != 5 || err != nil {
		t.Fatalf("header %d, %v; want 5", n, err)
	}
	var got []byte
	p := make([]byte, 2)
	for {
		m, err := f.ReadSome(p)
		got = append(got, p[:m]...)
		if err != nil {
			if err != ErrCut {
				t.Errorf("error %v, want ErrCut", err)
			}
			break
		}
		if m != 1 {
			t.Errorf("read %d bytes of a one-byte reader", m)
		}
	}
	if string(got) != "abc" {
		t.Errorf("body %q, want abc", got)
	}
}

// TestWriteHeader checks a bare length field, as a done mark is sent.
func TestWriteHeader(t *testing.T) {
	var b bytes.Buffer
	NewWriter(&b).WriteHeader(0xFFFF_FFFF)
	if got := b.String(); got != "\xff\xff\xff\xff" {
		t.Errorf("wrote %x, want ffffffff", got)
	}
}

// FuzzReader reads whatever a peer may send as frames of at most 64
// bytes: every frame read must write back as the exact bytes it came
// from, and the reader must end with io.EOF, ErrCut or a *TooLongError,
// never a panic.
func FuzzReader(f *testing.F) {
	for _, seed := range []string{"", "\x00\x00\x00\x02hi\x00\x00\x00\x00", "\x00\x00\x00\x41", "\xff\xff\xff\xff", "\x00\x00", "\x00\x00\x00\x03ab"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		var out bytes.Buffer
		w := NewWriter(&out)
		for {
			body, err := r.ReadFrame(64)
			if err != nil {
				var tl *TooLongError
				if err != io.EOF && err != ErrCut && !errors.As(err, &tl) {
					t.Fatalf("error %v", err)
				}
				if err == io.EOF && !bytes.Equal(out.Bytes(), data) {
					t.Fatalf("frames wrote back as %x, from %x", out.Bytes(), data)
				}
				return
			}
			w.WriteFrame(body, nil)
			if !bytes.HasPrefix(data, out.Bytes()) {
				t.Fatalf("frames wrote back as %x, not a prefix of %x", out.Bytes(), data)
			}
		}
	})
}
