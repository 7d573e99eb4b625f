package main

// connect -t: the terminal on stdin, lent to the peer's command for the
// session, as ssh -t lends it.

import (
	"context"
	"os"
	"sync"

	"golang.org/x/term"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/execproto"
	"github.com/securepeer/securepeer/cmd/securepeer/internal/sanitize"
)

// A ttySession is stdin's terminal in raw mode, so that every key (Ctrl-C,
// Ctrl-D, the arrows) goes to the command's terminal on the server, which
// does the echoing and the line editing; and its new sizes, as they come.
type ttySession struct {
	fd   int
	term string
	size execproto.WinSize

	old    *term.State
	once   sync.Once
	resize chan execproto.WinSize
	stop   func() // stops watching the size
	done   chan struct{}
}

// startTTYSession puts the terminal on stdin in raw mode until restore.
// Every way out restores it: restore (deferred by the caller, and called
// before the command's status is said), and a second signal, after which
// the program exits at once, as it would without a terminal, but only once
// the terminal is back as it was. The first signal ends the session, which
// then returns through restore.
func startTTYSession(ctx context.Context, e *env, f *os.File) (*ttySession, error) {
	fd := int(f.Fd())
	t := &ttySession{fd: fd, term: e.getenv("TERM"), resize: make(chan execproto.WinSize, 1), done: make(chan struct{})}
	if !execproto.ValidTerm(t.term) {
		e.notef("-t: TERM %q is not a terminal type name, so the command gets no TERM", sanitize.Text(t.term))
		t.term = ""
	}
	t.size = ttySize(fd)
	old, err := term.MakeRaw(fd)
	if err != nil {
		return nil, err
	}
	t.old = old
	sigs := make(chan os.Signal, 1)
	t.stop = watchWindow(sigs)
	go t.watch(sigs)
	e.cutsOnSecondSignal.Store(true)
	go func() {
		select {
		case <-e.cut:
			t.restore()
			os.Exit(errorCode(interruption(ctx)))
		case <-t.done:
		}
	}()
	return t, nil
}

// ttySize is the size of the terminal fd, or 0 by 0 (unknown).
func ttySize(fd int) execproto.WinSize {
	w, h, err := term.GetSize(fd)
	if err != nil || w < 0 || h < 0 || w > 0xffff || h > 0xffff {
		return execproto.WinSize{}
	}
	return execproto.WinSize{Cols: uint16(w), Rows: uint16(h)}
}

// watch passes each new size on, keeping only the latest if the sender
// has not taken the last one yet.
func (t *ttySession) watch(sigs <-chan os.Signal) {
	for {
		select {
		case <-sigs:
		case <-t.done:
			return
		}
		sz := ttySize(t.fd)
		select {
		case t.resize <- sz:
		default:
			select {
			case <-t.resize:
			default:
			}
			t.resize <- sz // only this goroutine sends
		}
	}
}

// request is the terminal the session asks the server for.
func (t *ttySession) request() *execproto.TTYRequest {
	return &execproto.TTYRequest{Term: t.term, Size: t.size, Resize: t.resize}
}

// restore puts the terminal back as it was; calling it again does nothing.
func (t *ttySession) restore() {
	t.once.Do(func() {
		close(t.done)
		t.stop()
		term.Restore(t.fd, t.old)
	})
}

// checkTTYFlag checks connect's -t against the other flags. Without a
// terminal on stdin it does nothing, as ssh's does: runConnect says so,
// and the session goes on without one, so that connect -t in a script
// behaves as connect.
func checkTTYFlag(tty bool, tf *tunnelFlags, cf *commonFlags, lf *legacyFlags) error {
	switch {
	case !tty:
		return nil
	case tf.tunnel():
		return usageErrorf("connect: -t is for a listen -exec peer's command, not tunnels")
	case lf.enabled:
		return usageErrorf("connect: -t needs securepeer-exec/2, which -legacy cannot negotiate")
	case cf.progress:
		return usageErrorf("connect: -t and -progress cannot be used together: the terminal is the command's")
	}
	return nil // without a terminal on stdin, connect says so and goes on
}

// noTTYPeer says that -t does nothing with this peer.
func noTTYPeer(e *env, s *stream) {
	switch s.negotiated {
	case execproto.Protocol1:
		e.notef("-t: the peer at %s speaks %s only (an older securepeer), which has no terminals; going on without one", s.remoteAddr, execproto.Protocol1)
	default:
		e.notef("-t: the peer at %s is not a listen -exec of this version, so there is no command to give a terminal; going on without one", s.remoteAddr)
	}
}
