package main

// Flag parsing shared by the subcommands, and the checks of address
// arguments, with hints for the likely mistakes.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/tunnel"
	"github.com/securepeer/securepeer/internal/pkgerr"
)

// parseFlags parses args with fs, allowing flags after positional arguments
// (securepeer listen :5000 -exec cat), as users of nc and ssh expect. It
// returns the positional arguments. Errors are usage errors naming the
// subcommand; -h returns flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageErrorf("%s: %v; see securepeer help %s", fs.Name(), err, fs.Name())
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// commonFlags are the flags of listen and connect.
type commonFlags struct {
	identity string
	verbose  bool
	progress bool
	idle     time.Duration // -idle: 0 for none
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.identity, "i", "", "")
	fs.BoolVar(&c.verbose, "v", false, "")
	fs.BoolVar(&c.progress, "progress", false, "")
	fs.DurationVar(&c.idle, "idle", 0, "")
}

// checkAddr validates a HOST:PORT argument, with a hint for the likely
// mistakes.
func checkAddr(what, addr string, needHost bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		switch {
		case isDigits(addr):
			if needHost {
				return usageErrorf("%s %q has no host; did you mean HOST:%s, as in 127.0.0.1:%s?", what, addr, addr, addr)
			}
			return usageErrorf("%s %q has no colon; did you mean :%s?", what, addr, addr)
		case !strings.Contains(addr, ":"):
			return usageErrorf("%s %q has no port; did you mean %s:5000?", what, addr, addr)
		}
		return usageErrorf("%s %q: want HOST:PORT (brackets around IPv6 hosts, as in [::1]:5000)", what, addr)
	}
	if needHost && host == "" {
		return usageErrorf("%s %q has no host; did you mean 127.0.0.1%s?", what, addr, addr)
	}
	if port == "" {
		return usageErrorf("%s %q has no port", what, addr)
	}
	if isDigits(port) {
		n, err := strconv.Atoi(port)
		switch {
		case err != nil || n > 65535:
			return usageErrorf("%s %q: port %s is out of range; ports go up to 65535", what, addr, port)
		case n == 0 && needHost:
			return usageErrorf("%s %q: port 0 is not a port to connect to", what, addr)
		}
	}
	return nil
}

func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// isFlagSet reports whether the flag name was given on the command line.
func isFlagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// checkForwardAddr validates a -from or -to address: HOST:PORT as
// checkAddr does, or unix:PATH.
func checkForwardAddr(what, addr string, needHost bool) error {
	path, ok := strings.CutPrefix(addr, unixPrefix)
	if !ok {
		return checkAddr(what, addr, needHost)
	}
	if path == "" {
		return usageErrorf("%s %q has no path; a Unix socket is unix:PATH, as in unix:/run/app.sock", what, addr)
	}
	return nil
}

// forwardList is a repeatable -from or -to flag: [NAME=]ADDR, where ADDR
// is HOST:PORT or unix:PATH.
type forwardList []forwardSpec

func (l *forwardList) String() string { return fmt.Sprint(*l) }

func (l *forwardList) Set(v string) error {
	f := forwardSpec{addr: v}
	// unix:PATH has no name, whatever its path holds.
	if name, addr, ok := strings.Cut(v, "="); ok && !strings.HasPrefix(v, unixPrefix) {
		if !validName(name) {
			return pkgerr.Plainf("forward name %q: a name is 1 to %d letters, digits, '.', '_' or '-', as in web=127.0.0.1:8080", name, tunnel.MaxNameLen)
		}
		f = forwardSpec{name: name, addr: addr}
	}
	*l = append(*l, f)
	return nil
}

func validName(name string) bool {
	if name == "" || len(name) > tunnel.MaxNameLen {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// checkForwards checks the -from and -to flags of cmd: their addresses,
// no two -to of one name (which would the peer reach?) and no local
// address twice.
func checkForwards(cmd string, from, to forwardList) error {
	seen := map[string]bool{}
	for _, f := range from {
		if err := checkForwardAddr("-from address", f.addr, false); err != nil {
			return err
		}
		if _, port, _ := net.SplitHostPort(f.addr); port != "0" && seen[f.addr] {
			return usageErrorf("%s: -from %s is given twice", cmd, f.addr)
		}
		seen[f.addr] = true
	}
	names := map[string]bool{}
	for _, f := range to {
		if err := checkForwardAddr("-to address", f.addr, true); err != nil {
			return err
		}
		if names[f.name] {
			if f.name == "" {
				return usageErrorf("%s: two -to without a name; name them, as in -to web=%s, and the peer's -from with the same names", cmd, f.addr)
			}
			return usageErrorf("%s: two -to named %q; each name must lead to one target", cmd, f.name)
		}
		names[f.name] = true
	}
	return nil
}
