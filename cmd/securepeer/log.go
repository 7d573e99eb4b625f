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

	"github.com/securepeer/securepeer/internal/pkgerr"
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
	args = pkgerr.Args(args) // the line names securepeer once, first
	if e.vlog != nil {
		e.vlog.Warn(fmt.Sprintf(format, args...))
		return
	}
	fmt.Fprintf(e.stderr, "securepeer: "+format+"\n", args...)
}
