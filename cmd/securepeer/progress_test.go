package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/testutil"
	"github.com/securepeer/securepeer/internal/testenv"
)

// TestMeterSummary checks that a -progress meter (shown at once) ends with
// one summary line, bytes, time and rate, even when the transfer is over
// before the first redraw; and that a meter shown only for long transfers
// (-v) prints nothing for a short one.
func TestMeterSummary(t *testing.T) {
	var out testenv.SyncBuffer
	m := newMeter(&out, 0, 0)
	io.Copy(io.Discard, m.countSent(bytes.NewReader(make([]byte, 3000))))
	m.received.Add(10)
	m.finish()
	re := regexp.MustCompile(`^\rsent 2\.9 KiB, received 10 B in \d+(\.\d+)?(µs|ms|s), \d+(\.\d)? ([KMG]i)?B/s\x1b\[K\n$`)
	if s := out.String(); !re.MatchString(s) {
		t.Errorf("-progress meter of a short transfer printed %q, want one summary line", s)
	}

	var quiet testenv.SyncBuffer
	m = newMeter(&quiet, 2*time.Second, 0)
	m.sent.Add(10)
	m.finish()
	if s := quiet.String(); s != "" {
		t.Errorf("-v meter of a short transfer printed %q, want nothing", s)
	}

	if got, want := (&meter{}).summary(1500*time.Millisecond), "sent 0 B, received 0 B in 1.5s, 0 B/s"; got != want {
		t.Errorf("summary = %q, want %q", got, want)
	}
	sized := &meter{}
	sized.sent.Store(3 << 20)
	sized.received.Store(1 << 20)
	if got, want := sized.summary(2*time.Second), "sent 3.0 MiB, received 1.0 MiB in 2s, 2.0 MiB/s"; got != want {
		t.Errorf("summary = %q, want %q", got, want)
	}
}

// TestProgressSummaryTmux runs connect -progress with stderr on a real
// terminal (tmux) for a transfer too short for the meter's first redraw:
// the summary line must be on the screen when it ends.
func TestProgressSummaryTmux(t *testing.T) {
	te := newKeys(t)
	server, addr := te.start("server", "listen", "-i", "server", "-insecure-exec-any-key", "-exec", "cat", "127.0.0.1:0")
	if err := os.WriteFile(filepath.Join(te.dir, "msg"), []byte("beep boop\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	shell := fmt.Sprintf("cd %q && securepeer connect -progress -i client -expect server.pub %s < msg > out; echo $? > rc; sleep 600", te.dir, addr)
	_, screen := tmuxSession(t, te, shell)
	testutil.WaitFor(t, func() bool { return len(te.readFileIfAny("rc")) > 0 }, testutil.Stringer(screen))
	if rc := strings.TrimSpace(te.readFile("rc")); rc != "0" || te.readFile("out") != "beep boop\n" {
		t.Fatalf("connect exited %s, wrote %q\n%s", rc, te.readFile("out"), screen())
	}
	re := regexp.MustCompile(`(?m)^sent 10 B, received 10 B in \d+(\.\d+)?(µs|ms|s), \d+(\.\d)? ([KMG]i)?B/s\s*$`)
	if s := screen(); !re.MatchString(s) {
		t.Errorf("no summary line on the terminal:\n%s", s)
	}
	server.interrupt()
}
