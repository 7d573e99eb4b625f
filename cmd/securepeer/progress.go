package main

// The -progress meter of a stdio transfer.

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/term"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/idle"
)

// meter returns the progress meter for a stdio transfer: shown at once with
// -progress, and then ended with a summary line however short the
// transfer, after two seconds with -v, and never unless stderr is a
// terminal.
func (c *commonFlags) meter(e *env) *meter {
	f, ok := e.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) || !(c.progress || c.verbose) {
		return newMeter(nil, 0, 0)
	}
	delay := time.Duration(0)
	if !c.progress {
		delay = 2 * time.Second
	}
	var total int64
	if f, ok := e.stdin.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			total = fi.Size() // what is left of it is what will be sent
			if off, err := f.Seek(0, io.SeekCurrent); err == nil {
				total -= off
			}
		}
	}
	return newMeter(e.stderr, delay, total)
}

// A meter counts the bytes of a transfer and shows them on a terminal.
type meter struct {
	sent, received atomic.Int64
	start          time.Time

	out   io.Writer
	delay time.Duration // how long to wait before showing anything
	total int64         // bytes to send, if known (stdin is a regular file), else 0

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
	shown    bool // written only by the render goroutine, read after done
}

// newMeter returns a meter that renders to out every half second once delay
// has passed, or one that only counts if out is nil. total is the number of
// bytes to send, if known, for a percentage and the time left; else 0. A
// meter shown at once (delay 0: -progress was asked for) ends with a
// summary line (summary), even for a transfer over before the first
// redraw; one shown only for a long transfer (-v) ends with its last
// figures, if it was shown.
func newMeter(out io.Writer, delay time.Duration, total int64) *meter {
	m := &meter{start: time.Now(), out: out, delay: delay, total: total}
	if out == nil {
		return m
	}
	m.stop = make(chan struct{})
	m.done = make(chan struct{})
	go m.render()
	return m
}

func (m *meter) render() {
	defer close(m.done)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			switch d := time.Since(m.start); {
			case m.delay == 0:
				fmt.Fprintf(m.out, "\r%s\x1b[K\n", m.summary(d))
			case m.shown:
				fmt.Fprintf(m.out, "\r%s\x1b[K\n", m.line(d))
			}
			return
		case <-t.C:
			if d := time.Since(m.start); d >= m.delay {
				m.shown = true
				fmt.Fprintf(m.out, "\r%s\x1b[K", m.line(d))
			}
		}
	}
}

// finish stops rendering, leaving the final figures on their own line.
func (m *meter) finish() {
	if m.stop == nil {
		return
	}
	m.stopOnce.Do(func() { close(m.stop) })
	<-m.done
}

func (m *meter) line(elapsed time.Duration) string {
	sent, recv := m.sent.Load(), m.received.Load()
	secs := elapsed.Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(sent+recv) / secs
	}
	e := elapsed.Round(time.Second)
	progress := ""
	if m.total > 0 {
		progress = fmt.Sprintf(" of %s (%d%%)", formatBytes(float64(m.total)), min(100, sent*100/m.total))
		if left := m.total - sent; left > 0 && secs > 0 && sent > 0 {
			eta := time.Duration(float64(left) / (float64(sent) / secs) * float64(time.Second)).Round(time.Second)
			progress += fmt.Sprintf(", %d:%02d left", int(eta.Minutes()), int(eta.Seconds())%60)
		}
	}
	return fmt.Sprintf("sent %s%s, received %s, %s/s, %d:%02d",
		formatBytes(float64(sent)), progress, formatBytes(float64(recv)), formatBytes(rate), int(e.Minutes()), int(e.Seconds())%60)
}

// summary is the line that ends a -progress meter: the bytes each way, the
// time the transfer took, and its rate both ways together.
func (m *meter) summary(elapsed time.Duration) string {
	sent, recv := m.sent.Load(), m.received.Load()
	rate := 0.0
	if secs := elapsed.Seconds(); secs > 0 {
		rate = float64(sent+recv) / secs
	}
	took := elapsed.Round(time.Millisecond)
	if elapsed >= 10*time.Second {
		took = elapsed.Round(time.Second)
	}
	return fmt.Sprintf("sent %s, received %s in %v, %s/s", formatBytes(float64(sent)), formatBytes(float64(recv)), took, formatBytes(rate))
}

// formatBytes formats n bytes with binary units, as "12.3 MiB".
func formatBytes(n float64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", int64(n))
	}
	i := -1
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", n, units[i])
}

func (m *meter) countSent(r io.Reader) io.Reader { return &idle.CountingReader{R: r, N: &m.sent} }

func (m *meter) countReceived(r io.Reader) io.Reader {
	return &idle.CountingReader{R: r, N: &m.received}
}

// activity is the bytes counted so far, both ways: -idle's clock.
func (m *meter) activity() int64 { return m.sent.Load() + m.received.Load() }
