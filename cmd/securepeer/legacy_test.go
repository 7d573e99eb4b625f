package main

// -legacy behaviour that testscript cannot set up: a peer whose key file
// says more than its key, and an allow file edited without changing its
// size or modification time.

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/securepeer/securepeer/legacy"
)

// legacyConnect runs connect -legacy with key file keys against the legacy
// listener at addr, whose key is a.json, and returns its stdout, stderr and
// exit code.
func (te *testEnv) legacyConnect(keys, addr string) (stdout, stderr string, code int) {
	te.t.Helper()
	cmd := te.command("connect", "-legacy", "-i", keys, "-expect", "a.json", addr)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		te.t.Fatal(err)
	}
	code = exitStatus(te.t, waitCmd(te.t, cmd))
	return out.String(), errOut.String(), code
}

// copyLegacyKeys copies the legacy package's test keys a.json and b.json
// into the test's directory.
func (te *testEnv) copyLegacyKeys() {
	te.t.Helper()
	for _, name := range []string{"a.json", "b.json"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "legacy", "testdata", "keys", name))
		if err != nil {
			te.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(te.dir, name), data, 0o600); err != nil {
			te.t.Fatal(err)
		}
	}
}

// TestLegacyExecPeerKey checks that -exec gets SECUREPEER_PEER_KEY made
// from the peer's parsed key, whatever text the peer sent around it: a
// peer must not be able to hand the command terminal escapes, shell
// syntax, a decoy key or a byte that stops the command from starting.
func TestLegacyExecPeerKey(t *testing.T) {
	te := newTestEnv(t)
	te.copyLegacyKeys()
	var file struct{ Private, Public string }
	data, err := os.ReadFile(filepath.Join(te.dir, "b.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	pub, err := legacy.ParsePublicKey([]byte(file.Public))
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := legacy.MarshalPublicKey(pub)
	spkiDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	spki := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spkiDER}))

	server, addr := te.start("server", "listen", "-legacy", "-i", "a.json", "-insecure-exec-any-key",
		"-exec", `printf '%s\n' "$SECUREPEER_PEER_KEY"`, "127.0.0.1:0")
	for _, tc := range []struct {
		name   string
		public string // the "public" value of the peer's key file, sent as is
	}{
		{"PKCS #1, as keygen writes it", pkcs1},
		{"SPKI", spki},
		{"escapes and shell syntax before the key", "\x1b]0;owned\x07\x1b[2J$(touch pwned) `id`\n" + pkcs1},
		{"a decoy key before the key", "-----BEGIN RSA PUBLIC KEY-----\nMIIBCgKCAQEAdecoy\n" + pkcs1},
		{"a NUL byte before the key", "\x00\n" + pkcs1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := json.Marshal(map[string]string{"private": file.Private, "public": tc.public})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := legacy.ParseKeys(keys); err != nil {
				t.Fatalf("the legacy package does not load the peer's key file: %v", err)
			}
			name := strings.NewReplacer(" ", "-", "#", "").Replace(tc.name) + ".json"
			if err := os.WriteFile(filepath.Join(te.dir, name), keys, 0o600); err != nil {
				t.Fatal(err)
			}
			out, stderr, code := te.legacyConnect(name, addr)
			if code != 0 {
				t.Fatalf("connect exited %d:\n%s\nlisten:\n%s", code, stderr, server.stderr)
			}
			if out != pkcs1 {
				t.Errorf("SECUREPEER_PEER_KEY is\n%q\nwant the parsed key as PKCS #1 PEM\n%q", out, pkcs1)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(te.dir, "pwned")); err == nil {
		t.Error("a command substitution in the peer's key ran")
	}
	server.interrupt()
}

// TestLegacyAllowReload edits a listen -legacy -allow file so that its size
// and modification time stay the same, as cp -p, touch -r or a quick
// same-length edit do: the next peer must be judged by the new contents.
func TestLegacyAllowReload(t *testing.T) {
	te := newTestEnv(t)
	te.copyLegacyKeys()
	fingerprint := func(keys string) string {
		out := te.run("id", "-legacy", "-i", keys)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		return lines[len(lines)-1]
	}
	c1 := "b.json"
	te.run("keygen", "-legacy", "-f", "c2.json")
	fp1, fp2 := fingerprint(c1), fingerprint("c2.json")

	for _, tc := range []struct {
		name       string
		edited     string // the new contents, as long as "fp1\n"
		c1, c2     int    // the exit codes of connect with each key
		listenLogs string
	}{
		{"another key", fp2 + "\n", exitRejected, 0, "is not listed in allow.txt"},
		{"the key commented out", "#" + fp1[1:] + "\n", exitRejected, exitRejected, "is not listed in allow.txt"},
		{"the same key", fp1 + "\n", 0, exitRejected, "is not listed in allow.txt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			allow := filepath.Join(te.dir, "allow.txt")
			if err := os.WriteFile(allow, []byte(fp1+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			server, addr := te.start("server-"+strings.ReplaceAll(tc.name, " ", "-"), "listen", "-legacy", "-i", "a.json",
				"-allow", "allow.txt", "-exec", "echo ok", "127.0.0.1:0")
			if out, stderr, code := te.legacyConnect(c1, addr); code != 0 || out != "ok\n" {
				t.Fatalf("before the edit, connect with the allowed key exited %d with %q:\n%s", code, out, stderr)
			}

			before, err := os.Stat(allow)
			if err != nil {
				t.Fatal(err)
			}
			if len(tc.edited) != int(before.Size()) {
				t.Fatalf("the edit changes the size from %d to %d bytes", before.Size(), len(tc.edited))
			}
			if err := os.WriteFile(allow, []byte(tc.edited), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(allow, time.Time{}, before.ModTime()); err != nil {
				t.Fatal(err)
			}
			after, err := os.Stat(allow)
			if err != nil {
				t.Fatal(err)
			}
			if after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()) {
				t.Fatalf("size and mtime went from %d, %v to %d, %v", before.Size(), before.ModTime(), after.Size(), after.ModTime())
			}

			for _, c := range []struct {
				keys string
				want int
			}{{c1, tc.c1}, {"c2.json", tc.c2}} {
				if _, stderr, code := te.legacyConnect(c.keys, addr); code != c.want {
					t.Errorf("after the edit, connect -i %s exited %d, want %d:\n%s", c.keys, code, c.want, stderr)
				}
			}
			server.interrupt()
			if s := server.stderr.String(); !strings.Contains(s, tc.listenLogs) {
				t.Errorf("listen did not report the refusal:\n%s", s)
			}
		})
	}
}
