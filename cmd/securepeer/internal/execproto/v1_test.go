package execproto

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"
	"testing"
)

// oneFrame is one frame: a 4-byte length, then s.
func oneFrame(s string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(s)))
	return append(b, s...)
}

func frames(parts ...string) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, oneFrame(p)...)
	}
	return b
}

// TestExec1Reader checks connect's reading of a securepeer-exec/1 stream:
// the output, then the status, and nothing but a clean end after it;
// anything else is an error, never a status or a panic.
func TestExec1Reader(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     []byte
		out    string
		status int
		err    string // "" for success
	}{
		{"status 0", frames("hello ", "world", "", "exit 0"), "hello world", 0, ""},
		{"status 7", frames("x", "", "exit 7"), "x", 7, ""},
		{"no output", frames("", "exit 127"), "", 127, ""},
		{"no status", frames("x", ""), "x", 0, "without the command's exit status"},
		{"cut in a frame", frames("hello")[:6], "he", 0, "without the command's exit status"},
		{"nothing", nil, "", 0, "without the command's exit status"},
		{"status out of range", frames("", "exit 256"), "", 0, "does not allow"},
		{"status not a number", frames("", "exit -1"), "", 0, "does not allow"},
		{"status with a sign", frames("", "exit +1"), "", 0, "does not allow"},
		{"not a status", frames("", "signal 9"), "", 0, "does not allow"},
		{"empty status", frames("", ""), "", 0, "does not allow"},
		{"status too long", frames("", "exit "+strings.Repeat("0", 100)), "", 0, "does not allow"},
		{"status length huge", append(frames("x", ""), 0xff, 0xff, 0xff, 0xff), "x", 0, "exit status of 4294967295 bytes"},
		{"data after the status", append(frames("", "exit 0"), 'x'), "", 0, "data after the exit status"},
		{"terminal escape in status", frames("", "\x1b[2Jexit 1"), "", 0, `"?[2Jexit 1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewV1Reader(bytes.NewReader(tc.in))
			out, err := io.ReadAll(r)
			if string(out) != tc.out {
				t.Errorf("output %q, want %q", out, tc.out)
			}
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("error %v, want none", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("error %v, want one containing %q", err, tc.err)
			case tc.err == "" && r.status != tc.status:
				t.Errorf("status %d, want %d", r.status, tc.status)
			}
		})
	}
}
