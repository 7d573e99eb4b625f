package main

// Flag parsing shared by the subcommands, and the checks of address
// arguments, with hints for the likely mistakes.

import (
	"errors"
	"flag"
	"io"
	"net"
	"strconv"
	"strings"
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
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.identity, "i", "", "")
	fs.BoolVar(&c.verbose, "v", false, "")
	fs.BoolVar(&c.progress, "progress", false, "")
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
