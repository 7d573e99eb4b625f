package main

import (
	"strings"
	"testing"
)

// TestConnectOptions checks that connect's command line parses into
// options and that validate refuses what does not go together, with the
// message that says so (a usage error, exit 2), and takes the rest.
func TestConnectOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		args string
		err  string // "" for valid
	}{
		{"stdio", "example.org:5000", ""},
		{"pinned", "-expect SHA256:x example.org:5000", ""},
		{"tunnel", "-from web=127.0.0.1:8080 -to ssh=127.0.0.1:22 -no-reconnect example.org:5000", ""},
		{"terminal", "-t example.org:5000", ""},
		{"legacy", "-legacy -expect SHA256:x example.org:5000", ""},
		{"timeout", "-w 10s example.org:5000", ""},
		{"no address", "-expect SHA256:x", "missing the peer's address"},
		{"nc's host and port", "example.org 5000", "did you mean example.org:5000"},
		{"two addresses", "example.org:5000 extra", "unexpected arguments"},
		{"no host", ":5000", "has no host"},
		{"no-reconnect without a tunnel", "-no-reconnect example.org:5000", "-no-reconnect is for tunnels"},
		{"idle with a tunnel", "-idle 5s -from 127.0.0.1:8080 example.org:5000", "-idle is for a stdio stream"},
		{"terminal and tunnel", "-t -from 127.0.0.1:8080 example.org:5000", "-t is for a listen -exec"},
		{"terminal and legacy", "-t -legacy example.org:5000", "-t needs securepeer-exec/2"},
		{"terminal and progress", "-t -progress example.org:5000", "-t and -progress"},
		{"negative timeout", "-w -1s example.org:5000", "cannot be negative"},
		{"legacy and known_hosts", "-legacy -accept-new example.org:5000", "-legacy does not use known_hosts"},
		{"ciphers without legacy", "-ciphers rc4 example.org:5000", "-ciphers is for -legacy mode only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConnect(strings.Fields(tc.args))
			checkUsage(t, err, tc.err)
		})
	}
}
