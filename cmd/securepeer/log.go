package main

// stderr: notices for the user (prose, "securepeer: ...") and the -v log.

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
)

// testOnlyAddrFile, if set, receives the address listen (or connect -from)
// listens on, so tests can use port 0.
var testOnlyAddrFile = ""

func announceAddr(log *slog.Logger, what string, a net.Addr) error {
	log.Info("listening", "what", what, "addr", a.String())
	if testOnlyAddrFile == "" {
		return nil
	}
	tmp := testOnlyAddrFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(a.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, testOnlyAddrFile)
}

// logger returns the -v logger: handshakes and connection events, on stderr.
func (c *commonFlags) logger(e *env) *slog.Logger {
	level := slog.Level(100) // nothing
	if c.verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(prefixWriter{e.stderr}, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
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
	fmt.Fprintf(e.stderr, "securepeer: "+format+"\n", args...)
}

// yamuxLogger passes yamux's own messages to the -v log.
type yamuxLogger struct{ log *slog.Logger }

func (l yamuxLogger) Print(v ...any) { l.log.Debug(strings.TrimSpace(fmt.Sprint(v...))) }

func (l yamuxLogger) Printf(format string, v ...any) {
	l.log.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (l yamuxLogger) Println(v ...any) { l.log.Debug(strings.TrimSpace(fmt.Sprintln(v...))) }
