// Package ratelog passes on, at a bounded rate, the notices that a peer can
// cause as fast as it likes.
package ratelog

import (
	"sync"
	"time"
)

// A Log passes on, at a bounded rate, the notices that a peer can
// cause as fast as it likes (a refused handshake, a refused stream): of
// each kind, at most Burst in a Window. The others are counted,
// and when that window is over one line says how many were not shown, so
// a flood costs a few lines, not one each, and is still seen.
type Log struct {
	notef func(format string, args ...any)
	// Window and Burst are the window and how many of a kind it shows:
	// Window and Burst by default. They may be changed before first use.
	Window time.Duration
	Burst  int
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

// The defaults: at most Burst notices of a kind every Window.
const (
	Window = 10 * time.Second
	Burst  = 10
)

// New returns a Log that passes its notices on to notef.
func New(notef func(format string, args ...any)) *Log {
	return &Log{
		notef: notef, Window: Window, Burst: Burst,
		now:   time.Now,
		after: func(d time.Duration, f func()) { time.AfterFunc(d, f) },
		kinds: map[string]*rateKind{},
	}
}

// Printf passes a notice of kind on, unless Burst of that kind have
// been in the current window. kind is a plural noun phrase, as "refused
// peers", for the summary.
func (l *Log) Printf(kind, format string, args ...any) {
	l.mu.Lock()
	k := l.kinds[kind]
	if k == nil {
		k = &rateKind{}
		l.kinds[kind] = k
	}
	now := l.now()
	if !k.pending && now.Sub(k.start) >= l.Window {
		k.start, k.shown = now, 0
	}
	if k.shown < l.Burst {
		k.shown++
		l.mu.Unlock()
		l.notef(format, args...)
		return
	}
	k.dropped++
	if !k.pending {
		k.pending = true
		l.after(k.start.Add(l.Window).Sub(now), func() { l.summarize(kind) })
	}
	l.mu.Unlock()
}

// Kind is Printf for one kind of notice, as a notef.
func (l *Log) Kind(kind string) func(format string, args ...any) {
	return func(format string, args ...any) { l.Printf(kind, format, args...) }
}

// summarize ends kind's window: it says how many notices were not shown,
// and starts the next window, in which Burst are shown again.
func (l *Log) summarize(kind string) {
	l.mu.Lock()
	k := l.kinds[kind]
	n := k.dropped
	k.dropped, k.pending = 0, false
	k.start, k.shown = l.now(), 0
	l.mu.Unlock()
	l.notef("%d more %s in the last %v were not shown (at most %d of them are, every %v)", n, kind, l.Window, l.Burst, l.Window)
}
