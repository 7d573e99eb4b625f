package main

import (
	"errors"
	"flag"
	"strings"
	"testing"
)

// TestListenOptions checks that listen's command line parses into options
// and that validate refuses what does not go together, with the message
// that says so (a usage error, exit 2), and takes the rest.
func TestListenOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		args string
		err  string // "" for valid
	}{
		{"stdio", ":5000", ""},
		{"exec with allow", "-allow a.pub -exec cat :5000", ""},
		{"exec for any key", "-exec cat -insecure-exec-any-key :5000", ""},
		{"tunnel", "-to web=127.0.0.1:80 -from 127.0.0.1:8080 :5000", ""},
		{"limits", "-to 127.0.0.1:80 -max-sessions 10 -max-sessions-per-key 10 :5000", ""},
		{"legacy ciphers", "-legacy -ciphers aes256 :5000", ""},
		{"no address", "-exec cat -allow a.pub", "missing the address"},
		{"two addresses", "-exec tr a-z A-Z :5000", "unexpected arguments"},
		{"bad address", "5000", "did you mean :5000"},
		{"exec and to", "-allow a.pub -exec cat -to 127.0.0.1:80 :5000", "cannot be used together"},
		{"two unnamed to", "-to 127.0.0.1:80 -to 127.0.0.1:81 :5000", "two -to without a name"},
		{"keep-open with exec", "-k -allow a.pub -exec cat :5000", "-keep-open is for stdio"},
		{"idle with a tunnel", "-idle 5s -to 127.0.0.1:80 :5000", "-idle is for stdio and -exec"},
		{"exec without allow", "-exec sh :5000", "-exec without -allow"},
		{"any key without exec", "-insecure-exec-any-key :5000", "is for -exec"},
		{"limits with stdio", "-max-sessions 4 :5000", "are for -exec, -to and -from"},
		{"no sessions", "-to 127.0.0.1:80 -max-sessions 0 :5000", "at least 1"},
		{"more per key than in all", "-to 127.0.0.1:80 -max-sessions 4 -max-sessions-per-key 5 :5000", "more than -max-sessions 4"},
		{"ciphers without legacy", "-ciphers aes256 :5000", "-ciphers is for -legacy mode only"},
		{"through relays", "-p2p -allow a.pub -exec cat", ""},
		{"through a relay given", "-relay " + testRelay + " -to 127.0.0.1:80", ""},
		{"through relays on a port", "-p2p :4001", ""},
		{"through relays, a bad relay", "-relay 203.0.113.7:4001", "relay address"},
		{"through relays, a DNS name", "-p2p example.org:4001", "takes an IP address"},
		{"through relays, legacy", "-p2p -legacy", "in the native protocol only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseListen(strings.Fields(tc.args))
			checkUsage(t, err, tc.err)
		})
	}
	if _, err := parseListen([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
}

// checkUsage checks that err is a usage error containing want, or nil if
// want is "".
func checkUsage(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("error %v, want none", err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Errorf("error %v, want one containing %q", err, want)
	case want != "" && errorCode(err) != exitUsage:
		t.Errorf("exit code %d for %v, want %d", errorCode(err), err, exitUsage)
	}
}
