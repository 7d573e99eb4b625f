package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestResolvePeer checks each way connect's PEER names a peer: an
// address, or a key by its file, its line, its fingerprint or its name in
// known_hosts; and what it says when PEER is none of them.
func TestResolvePeer(t *testing.T) {
	dir := t.TempDir()
	bob, carol, dave := newTestKey(t), newTestKey(t), newTestKey(t)
	write := func(name, data string) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	bobPub := write("bob.pub", bob.String()+" bob@laptop\n")
	notKey := write("notes.pub", "hello\n")
	kh := write("known_hosts", fmt.Sprintf(`bob %s
[example.org]:5000 %s
twice %s
twice %s
@revoked gone %s
gone %s
`, bob, carol, bob, carol, dave, dave))
	knownHosts := func() (string, error) { return kh, nil }

	for _, tc := range []struct {
		name, arg string
		addr      string // the address it names, or
		key       string // the key's fingerprint
		err       string // or the error
	}{
		{name: "address", arg: "example.org:5000", addr: "example.org:5000"},
		{name: "IPv6 address", arg: "[::1]:5000", addr: "[::1]:5000"},
		{name: "key file", arg: bobPub, key: bob.Fingerprint()},
		{name: "key line", arg: bob.String(), key: bob.Fingerprint()},
		{name: "fingerprint in known_hosts", arg: carol.Fingerprint(), key: carol.Fingerprint()},
		{name: "name in known_hosts", arg: "bob", key: bob.Fingerprint()},
		{name: "unknown fingerprint", arg: newTestKey(t).Fingerprint(), err: "is not a key you know: a fingerprint names a key but does not hold it"},
		{name: "short fingerprint", arg: "SHA256:abc", err: "43 characters"},
		{name: "revoked fingerprint", arg: dave.Fingerprint(), err: "is not a key you know"},
		{name: "revoked name", arg: "gone", err: "is revoked there"},
		{name: "name with two keys", arg: "twice", err: "lists twice with several keys (lines 3 and 4)"},
		{name: "missing .pub", arg: filepath.Join(dir, "alice.pub"), err: "no such file"},
		{name: "file without a key", arg: notKey, err: "does not hold a peer key"},
		{name: "unknown name", arg: "alice", err: `"alice" is neither HOST:PORT nor a peer known by key`},
		{name: "host without a port", arg: "example.org", err: `has no port; did you mean example.org:5000?`},
		{name: "IP without a port", arg: "127.0.0.1", err: `has no port; did you mean 127.0.0.1:5000?`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolvePeer(tc.arg, knownHosts)
			switch {
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("error %v, want one containing %q", err, tc.err)
				}
			case err != nil:
				t.Errorf("error %v", err)
			case tc.addr != "" && (got.addr != tc.addr || got.byKey()):
				t.Errorf("got %+v, want the address %s", got, tc.addr)
			case tc.key != "" && (!got.byKey() || got.key.Fingerprint() != tc.key):
				t.Errorf("got %+v, want the key %s", got, tc.key)
			}
		})
	}
}

// TestResolvePeerReadsKnownHostsOnlyForKeys: an address, a key file or a
// key line does not read known_hosts (connect -expect HOST:PORT reads
// none), a fingerprint or a name does.
func TestResolvePeerReadsKnownHostsOnlyForKeys(t *testing.T) {
	k := newTestKey(t)
	path := filepath.Join(t.TempDir(), "k.pub")
	if err := os.WriteFile(path, []byte(k.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, arg := range []string{"example.org:5000", path, k.String()} {
		read := false
		if _, err := resolvePeer(arg, func() (string, error) { read = true; return "", nil }); err != nil || read {
			t.Errorf("resolvePeer(%q): %v, known_hosts read: %v", arg, err, read)
		}
	}
}
