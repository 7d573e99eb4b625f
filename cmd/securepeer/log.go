package main

// stderr has one format at a time. By default it is prose for a person:
// "securepeer: " and one sentence a line (notices, the final error). With
// -v it is structured, slog's key=value lines, for a log collector: the
// handshake and connection events, and the same notices and final error
// as records of their own (msg="...").

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// testOnlyAddrFile, if set, receives the addresses listen and connect
// listen on, one a line (listen's own first, then its -from addresses in
// order), so tests can use port 0.
var testOnlyAddrFile = ""

// announceAddrs logs the addresses of ls, on which the command now
// accepts what, and gives them to tests.
func announceAddrs(log *slog.Logger, what string, ls []net.Listener) error {
	var addrs []string
	for _, l := range ls {
		log.Info("listening", "what", what, "addr", l.Addr().String())
		addrs = append(addrs, l.Addr().String())
	}
	return writeAddrFile(addrs)
}

func writeAddrFile(addrs []string) error {
	if testOnlyAddrFile == "" || len(addrs) == 0 {
		return nil
	}
	tmp := testOnlyAddrFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(addrs, "\n")), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, testOnlyAddrFile)
}

// logger returns the -v logger: handshakes and connection events, on
// stderr; with -v, it also becomes e's format for notices and errors.
func (c *commonFlags) logger(e *env) *slog.Logger {
	level := slog.Level(100) // nothing
	if c.verbose {
		level = slog.LevelDebug
	}
	l := slog.New(slog.NewTextHandler(prefixWriter{e.stderr}, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	if c.verbose {
		e.vlog = l
	}
	return l
}

// prefixWriter puts "securepeer: " before each log line; slog writes one
// record per Write.
type prefixWriter struct{ w io.Writer }

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := p.w.Write(append([]byte("securepeer: "), b...)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// notef prints a notice for the user on stderr.
func (e *env) notef(format string, args ...any) {
	if e.vlog != nil {
		e.vlog.Warn(fmt.Sprintf(format, args...))
		return
	}
	fmt.Fprintf(e.stderr, "securepeer: "+format+"\n", args...)
}

// A rateLog passes on, at a bounded rate, the notices that a peer can
// cause as fast as it likes (a refused handshake, a refused stream): of
// each kind, at most rateBurst in a rateWindow. The others are counted,
// and when that window is over one line says how many were not shown, so
// a flood costs a few lines, not one each, and is still seen.
type rateLog struct {
	notef  func(format string, args ...any)
	window time.Duration
	burst  int
	// now and after are time.Now and time.AfterFunc, but for tests.
	now   func() time.Time
	after func(time.Duration, func())

	mu    sync.Mutex
	kinds map[string]*rateKind
}

// rateKind is one kind of notice's current window.
type rateKind struct {
	start   time.Time // when the window began
	shown   int
	dropped int  // not shown in this window
	pending bool // a summary is due at the window's end
}

const (
	rateWindow = 10 * time.Second
	rateBurst  = 10
)

func newRateLog(notef func(format string, args ...any)) *rateLog {
	return &rateLog{
		notef: notef, window: rateWindow, burst: rateBurst,
		now:   time.Now,
		after: func(d time.Duration, f func()) { time.AfterFunc(d, f) },
		kinds: map[string]*rateKind{},
	}
}

// printf passes a notice of kind on, unless rateBurst of that kind have
// been in the current window. kind is a plural noun phrase, as "refused
// peers", for the summary.
func (l *rateLog) printf(kind, format string, args ...any) {
	l.mu.Lock()
	k := l.kinds[kind]
	if k == nil {
		k = &rateKind{}
		l.kinds[kind] = k
	}
	now := l.now()
	if !k.pending && now.Sub(k.start) >= l.window {
		k.start, k.shown = now, 0
	}
	if k.shown < l.burst {
		k.shown++
		l.mu.Unlock()
		l.notef(format, args...)
		return
	}
	k.dropped++
	if !k.pending {
		k.pending = true
		l.after(k.start.Add(l.window).Sub(now), func() { l.summarize(kind) })
	}
	l.mu.Unlock()
}

// kindf is printf for one kind of notice, as a notef.
func (l *rateLog) kindf(kind string) func(format string, args ...any) {
	return func(format string, args ...any) { l.printf(kind, format, args...) }
}

// summarize ends kind's window: it says how many notices were not shown,
// and starts the next window, in which rateBurst are shown again.
func (l *rateLog) summarize(kind string) {
	l.mu.Lock()
	k := l.kinds[kind]
	n := k.dropped
	k.dropped, k.pending = 0, false
	k.start, k.shown = l.now(), 0
	l.mu.Unlock()
	l.notef("%d more %s in the last %v were not shown (at most %d of them are, every %v)", n, kind, l.window, l.burst, l.window)
}

// yamuxLogger passes yamux's own messages to the -v log, at a bounded
// rate: yamux logs some for each frame a peer sends on a stream it reset.
type yamuxLogger struct{ l *rateLog }

const yamuxKind = "yamux messages"

func (l yamuxLogger) Print(v ...any) { l.l.printf(yamuxKind, "%s", fmt.Sprint(v...)) }

func (l yamuxLogger) Printf(format string, v ...any) { l.l.printf(yamuxKind, format, v...) }

func (l yamuxLogger) Println(v ...any) { l.l.printf(yamuxKind, "%s", fmt.Sprintln(v...)) }
