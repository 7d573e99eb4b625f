package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testRelay is a relay address as securepeer relay prints it.
const testRelay = "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWMdqpaP35hL5pyPTjStvPcEby59Bgs4n5na8ogGAQcmLQ"

// TestRelayAddr checks what -relay and the relays file take.
func TestRelayAddr(t *testing.T) {
	for _, tc := range []struct {
		addr, err string
	}{
		{testRelay, ""},
		{"/ip6/2001:db8::1/tcp/4001/p2p/12D3KooWMdqpaP35hL5pyPTjStvPcEby59Bgs4n5na8ogGAQcmLQ", ""},
		{"/dns/relay.example/tcp/4001/p2p/12D3KooWMdqpaP35hL5pyPTjStvPcEby59Bgs4n5na8ogGAQcmLQ", ""},
		{"/ip4/203.0.113.7/tcp/4001", "does not end with /p2p/ and the relay's ID"},
		{"203.0.113.7:4001", "relay address \"203.0.113.7:4001\""},
		{"/ip4/203.0.113.7/udp/4001/quic-v1/p2p/12D3KooWMdqpaP35hL5pyPTjStvPcEby59Bgs4n5na8ogGAQcmLQ", "is not a host and a TCP port"},
	} {
		err := checkRelayAddr(tc.addr)
		if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("checkRelayAddr(%q) = %v, want %q", tc.addr, err, tc.err)
		}
	}
}

// TestRelaysFile checks the relays file: its lines, its comments, a bad
// line named by its number, no file, the -relay flags that replace it,
// and the modes and owner that known_hosts must have too.
func TestRelaysFile(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	e := &env{getenv: func(k string) string {
		if k == "SECUREPEER_HOME" {
			return home
		}
		return ""
	}}
	file := filepath.Join(home, relaysFileName)
	write := func(data string, mode os.FileMode) {
		t.Helper()
		if err := os.WriteFile(file, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(file, mode); err != nil {
			t.Fatal(err)
		}
	}

	list, from, err := e.relays(nil)
	if err != nil || len(list) != 0 || from != file {
		t.Errorf("no file: %q from %s, %v; want none from %s", list, from, err, file)
	}
	write("# our relay\n"+testRelay+"\n\n  "+testRelay+"  \n", 0o644)
	if list, _, err := e.relays(nil); err != nil || len(list) != 2 || list[1] != testRelay {
		t.Errorf("the file's relays: %q, %v", list, err)
	}
	if list, from, err := e.relays(relayList{"/ip4/198.51.100.1/tcp/4001/p2p/x"}); err != nil || len(list) != 1 || from != "-relay" {
		t.Errorf("-relay: %q from %s, %v; want the flag's alone", list, from, err)
	}
	write(testRelay+"\n203.0.113.7:4001\n", 0o644)
	if _, _, err := e.relays(nil); err == nil || !strings.Contains(err.Error(), file+" line 2: relay address") {
		t.Errorf("a bad line: %v", err)
	}
	write(testRelay+"\n", 0o666)
	if _, _, err := e.relays(nil); err == nil || !strings.Contains(err.Error(), "(mode 0666), so others could choose your relays; run chmod go-w") {
		t.Errorf("a file others can write: %v", err)
	}
	if os.Geteuid() == 0 {
		write(testRelay+"\n", 0o644)
		if err := os.Chown(file, 12345, 12345); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.relays(nil); err == nil || !strings.Contains(err.Error(), "belongs to uid 12345, so another user could choose your relays") {
			t.Errorf("a file of another user: %v", err)
		}
	}
}
