package knownhosts

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/securepeer/securepeer"
)

func newKey(t testing.TB) securepeer.PublicKey {
	t.Helper()
	id, err := securepeer.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id.PublicKey()
}

func parseDB(t *testing.T, text string) *DB {
	t.Helper()
	db, err := Parse(strings.NewReader(text))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, text)
	}
	return db
}

func TestNormalize(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "127.0.0.1:5000", want: "[127.0.0.1]:5000"},
		{in: "Example.COM:5000", want: "[example.com]:5000"},
		{in: "example.com:22", want: "example.com"},
		{in: "[::1]:5000", want: "[::1]:5000"},
		{in: "example.com", err: "want host:port"},
		{in: ":5000", err: "no host"},
		{in: "host:http", err: "port must be a number"},
		{in: "host:0", err: "port must be a number"},
		{in: "host:70000", err: "port must be a number"},
		{in: "a*b:5000", err: "invalid host name"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Normalize(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Normalize(%q) = %q, %v; want error containing %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Normalize(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestWildcardMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		{"abc", "abc", true},
		{"abc", "abd", false},
		{"*", "", true},
		{"*", "anything", true},
		{"a*c", "abbbc", true},
		{"a*c", "abbbd", false},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"[10.0.0.*]:5000", "[10.0.0.7]:5000", true},
		{"[10.0.0.*]:5000", "[10.0.0.7]:5001", false},
		{"*.example.com", "example.com", false},
		{"**a**a**a**a**b", strings.Repeat("a", 40), false},
	} {
		if got := wildcardMatch(tc.pattern, tc.name); got != tc.want {
			t.Errorf("wildcardMatch(%q, %q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
}

func TestCheck(t *testing.T) {
	k1, k2, k3 := newKey(t), newKey(t), newKey(t)
	db := parseDB(t, fmt.Sprintf(`# comment line
[10.0.0.2]:5000 %[1]s first peer

[peer.example]:5000,[10.0.0.3]:5000 %[2]s
[10.0.0.4]:5000 %[1]s
[10.0.0.4]:5000 %[3]s
[10.0.1.*]:5000,![10.0.1.9]:5000 %[3]s
ssh.example ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDx a comment
@cert-authority * %[2]s
@revoked [10.0.0.5]:5000 %[2]s
[10.0.0.5]:5000 %[2]s
`, k1, k2, k3))

	for _, tc := range []struct {
		name string
		addr string
		key  securepeer.PublicKey
		want any // nil, or a pointer to the error type expected
		// lines are the line numbers the error must carry.
		lines []int
	}{
		{name: "known", addr: "10.0.0.2:5000", key: k1},
		{name: "known second pattern", addr: "10.0.0.3:5000", key: k2},
		{name: "known upper case", addr: "PEER.example:5000", key: k2},
		{name: "one of two keys", addr: "10.0.0.4:5000", key: k3},
		{name: "wildcard", addr: "10.0.1.8:5000", key: k3},
		{name: "unknown port", addr: "10.0.0.2:5001", key: k1, want: new(*UnknownHostError), lines: []int{2, 5}},
		{name: "unknown negated", addr: "10.0.1.9:5000", key: k3, want: new(*UnknownHostError), lines: []int{6, 7}},
		{name: "unknown with other key type", addr: "ssh.example:22", key: k1, want: new(*UnknownHostError), lines: []int{2, 5}},
		{name: "cert authority ignored", addr: "anything:5000", key: k2, want: new(*UnknownHostError), lines: []int{4, 11}},
		{name: "changed", addr: "10.0.0.2:5000", key: k2, want: new(*KeyChangedError), lines: []int{2}},
		{name: "changed two lines", addr: "10.0.0.4:5000", key: k2, want: new(*KeyChangedError), lines: []int{5, 6}},
		{name: "revoked", addr: "10.0.0.5:5000", key: k2, want: new(*RevokedError), lines: []int{10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := db.Check(tc.addr, tc.key)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			var lines []int
			switch target := tc.want.(type) {
			case **UnknownHostError:
				if !errors.As(err, target) {
					t.Fatalf("Check: got %v, want *UnknownHostError", err)
				}
				for _, e := range (*target).KnownAs {
					lines = append(lines, e.Line)
				}
			case **KeyChangedError:
				if !errors.As(err, target) {
					t.Fatalf("Check: got %v, want *KeyChangedError", err)
				}
				for _, e := range (*target).Want {
					lines = append(lines, e.Line)
				}
			case **RevokedError:
				if !errors.As(err, target) {
					t.Fatalf("Check: got %v, want *RevokedError", err)
				}
				lines = []int{(*target).Entry.Line}
			}
			if fmt.Sprint(lines) != fmt.Sprint(tc.lines) {
				t.Errorf("error %q carries lines %v, want %v", err, lines, tc.lines)
			}
		})
	}

	if err := db.Check("10.0.0.2:5000", securepeer.PublicKey{}); err == nil {
		t.Error("Check accepted the zero key")
	}
	if err := db.Check("10.0.0.2", k1); err == nil {
		t.Error("Check accepted an address without a port")
	}
}

func TestEntries(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	db := parseDB(t, fmt.Sprintf(`# comment
[10.0.0.2]:5000 %[1]s first
ssh.example ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDx skipped: another type
bad ssh-ed25519 AAAA skipped: malformed
@revoked bob %[2]s
`, k1, k2))
	got := db.Entries()
	want := []Entry{
		{Line: 2, Hosts: "[10.0.0.2]:5000", Key: k1, Comment: "first"},
		{Line: 5, Hosts: "bob", Key: k2, Revoked: true},
	}
	if len(got) != len(want) {
		t.Fatalf("Entries() = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestKeyChangedErrorMessage(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	db := parseDB(t, "\n\n[10.0.0.2]:5000 "+k1.String()+"\n")
	err := db.Check("10.0.0.2:5000", k2)
	for _, want := range []string{k2.Fingerprint(), "[10.0.0.2]:5000", "line 3"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// TestParseSkipsBadLines checks that a malformed line is skipped and
// reported with its number and a short reason, as OpenSSH skips it, and
// that the lines around it still count. Only a line too long to read is an
// error.
func TestParseSkipsBadLines(t *testing.T) {
	k := newKey(t)
	good := "[ok]:1 " + k.String() + "\n"
	for _, tc := range []struct {
		name, line, reason string
	}{
		{"too few fields", "[h]:1 ssh-ed25519", `want "host:port ssh-ed25519 AAAA...", got 2 fields`},
		{"truncated key", "[127.0.0.1]:5012 ssh-ed25519 AAAAtruncated", "the ssh-ed25519 key cannot be read (cut short or mistyped?)"},
		{"bad base64", "[h]:1 ssh-ed25519 !!!!", "the ssh-ed25519 key cannot be read (cut short or mistyped?)"},
		{"unknown marker", "@trusted [h]:1 " + k.String(), `unknown marker "@trusted" (want @revoked or @cert-authority)`},
		{"empty pattern", "[h]:1,, " + k.String(), `empty host pattern in "[h]:1,,"`},
		{"bad hash", "|1|c2FsdA==|aGFzaA== " + k.String(), "malformed salt in hashed host name"},
		{"hash version", "|2|c2FsdA==|aGFzaA== " + k.String(), "malformed hashed host name (want |1|salt|hash)"},
		{"host alone", "[h]:1", `want "host:port ssh-ed25519 AAAA...", got 1 fields`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := parseDB(t, good+"# comment\n"+tc.line+"\n"+good)
			want := []SkippedLine{{Line: 3, Reason: tc.reason}}
			if got := db.SkippedLines(); len(got) != 1 || got[0] != want[0] {
				t.Errorf("SkippedLines() = %+v, want %+v", got, want)
			}
			if len(db.entries) != 2 {
				t.Errorf("%d entries, want the 2 good lines", len(db.entries))
			}
			if err := db.Check("ok:1", k); err != nil {
				t.Errorf("a good line next to a bad one: Check = %v", err)
			}
		})
	}
	// Lines that are fine but of no use are not bad.
	db := parseDB(t, "h ssh-rsa AAAA\n@cert-authority * "+k.String()+"\n")
	if got := db.SkippedLines(); len(got) != 0 {
		t.Errorf("SkippedLines() = %+v for lines of other key types and @cert-authority", got)
	}
	_, err := Parse(strings.NewReader("# ok\n" + strings.Repeat("x", maxLineLength+1) + "\n"))
	if err == nil || !strings.Contains(err.Error(), "line 2 is longer") {
		t.Errorf("Parse of a long line: %v", err)
	}
}

// TestCheckBadLines checks that a malformed line never lets a key in: a
// host it lists is neither known nor unknown (no trust on first use over
// a record that cannot be read), a key that an unreadable @revoked line
// may revoke is refused, and every other host is unaffected.
func TestCheckBadLines(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	for _, tc := range []struct {
		name string
		text string
		addr string
		key  securepeer.PublicKey
		want string // "", "unknown", "changed", "bad", "bad revoked"
	}{
		{"another host is known", "[a]:1 " + k1.String() + "\n[b]:1 ssh-ed25519 AAAAtruncated\n", "a:1", k1, ""},
		{"another host is unknown", "[b]:1 ssh-ed25519 AAAAtruncated\n", "c:1", k1, "unknown"},
		{"the host of the bad line", "[b]:1 ssh-ed25519 AAAAtruncated\n", "b:1", k1, "bad"},
		{"the host of a bad line by pattern", "[b]:* ssh-ed25519\n", "b:7", k1, "bad"},
		{"a good line for the same host", "[b]:1 ssh-ed25519 AAAAtruncated\n[b]:1 " + k1.String() + "\n", "b:1", k1, ""},
		{"a good line for the same host, another key", "[b]:1 ssh-ed25519 AAAAtruncated\n[b]:1 " + k1.String() + "\n", "b:1", k2, "changed"},
		{"unreadable hosts cannot vouch or doubt", "|1|c2FsdA==|aGFzaA== " + k1.String() + "\n", "b:1", k1, "unknown"},
		{"revoked, key unreadable, hosts match", "[a]:1 " + k1.String() + "\n@revoked [a]:1 ssh-ed25519 AAAAtruncated\n", "a:1", k1, "bad revoked"},
		{"revoked, key unreadable, all hosts", "[a]:1 " + k1.String() + "\n@revoked * ssh-ed25519 AAAAtruncated\n", "a:1", k1, "bad revoked"},
		{"revoked, key unreadable, other host", "[a]:1 " + k1.String() + "\n@revoked [z]:1 ssh-ed25519 AAAAtruncated\n", "a:1", k1, ""},
		{"revoked, hosts unreadable, this key", "[a]:1 " + k1.String() + "\n@revoked |1|c2FsdA==|aGFzaA== " + k1.String() + "\n", "a:1", k1, "bad revoked"},
		{"revoked, hosts unreadable, another key", "[a]:1 " + k1.String() + "\n@revoked |1|c2FsdA==|aGFzaA== " + k2.String() + "\n", "a:1", k1, ""},
		{"revoked, nothing readable", "[a]:1 " + k1.String() + "\n@revoked\n", "a:1", k1, "bad revoked"},
		{"unknown marker vouches for nothing", "@trusted [b]:1 " + k1.String() + "\n", "b:1", k1, "unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := parseDB(t, tc.text).Check(tc.addr, tc.key)
			var (
				unknown *UnknownHostError
				changed *KeyChangedError
				bad     *BadLineError
			)
			got := "other: "
			switch {
			case err == nil:
				got = ""
			case errors.As(err, &unknown):
				got = "unknown"
			case errors.As(err, &changed):
				got = "changed"
			case errors.As(err, &bad) && bad.Revoked:
				got = "bad revoked"
			case errors.As(err, &bad):
				got = "bad"
			}
			if got != tc.want {
				t.Errorf("Check(%s) = %v (%q), want %q", tc.addr, err, got, tc.want)
			}
		})
	}
}

func TestBadLineErrorMessage(t *testing.T) {
	db, err := Parse(strings.NewReader("\n[127.0.0.1]:5012 ssh-ed25519 AAAAtruncated\n"))
	if err != nil {
		t.Fatal(err)
	}
	db.file = "/home/u/.securepeer/known_hosts"
	err = db.Check("127.0.0.1:5012", newKey(t))
	want := "knownhosts: /home/u/.securepeer/known_hosts line 2, which lists [127.0.0.1]:5012, cannot be read (the ssh-ed25519 key cannot be read (cut short or mistyped?))"
	if err == nil || err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

func TestHashedLine(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	line, err := HashedLine("Peer.Example:5000", k1)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.ToLower(line), "peer.example") {
		t.Fatalf("hashed line %q reveals the host", line)
	}
	db := parseDB(t, line+"\n")
	if err := db.Check("peer.example:5000", k1); err != nil {
		t.Errorf("Check known: %v", err)
	}
	var changed *KeyChangedError
	if err := db.Check("peer.example:5000", k2); !errors.As(err, &changed) {
		t.Errorf("Check changed: got %v, want *KeyChangedError", err)
	}
	var unknown *UnknownHostError
	if err := db.Check("peer.example:5001", k1); !errors.As(err, &unknown) {
		t.Errorf("Check other port: got %v, want *UnknownHostError", err)
	}
}

func TestAdd(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "known_hosts")
	k1, k2 := newKey(t), newKey(t)

	db, err := Load(path)
	if err != nil {
		t.Fatalf("Load of a missing file: %v", err)
	}
	var unknown *UnknownHostError
	if err := db.Check("127.0.0.1:5000", k1); !errors.As(err, &unknown) {
		t.Fatalf("Check on an empty DB: got %v, want *UnknownHostError", err)
	}

	line, err := Line([]string{"127.0.0.1:5000", "localhost:5000"}, k1)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := Add(path, line); err != nil || n != 1 {
		t.Fatalf("Add = %d, %v; want line 1", n, err)
	}
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", p, fi.Mode().Perm(), want)
		}
	}

	// A hand-edited file without its final newline.
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("# edited by hand")
	f.Close()
	line2, _ := Line([]string{"127.0.0.1:5001"}, k2)
	if n, err := Add(path, line2); err != nil || n != 3 {
		t.Fatalf("Add = %d, %v; want line 3", n, err)
	}

	db, err = Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if db.File() != path {
		t.Errorf("File() = %q, want %q", db.File(), path)
	}
	for addr, key := range map[string]securepeer.PublicKey{"localhost:5000": k1, "127.0.0.1:5000": k1, "127.0.0.1:5001": k2} {
		if err := db.Check(addr, key); err != nil {
			t.Errorf("Check(%s): %v", addr, err)
		}
	}
	var changed *KeyChangedError
	if err := db.Check("127.0.0.1:5001", k1); !errors.As(err, &changed) || changed.Want[0].Line != 3 || changed.File != path {
		t.Errorf("Check changed: got %v, want *KeyChangedError for %s line 3", err, path)
	}

	if _, err := Add(path, "not a line"); err == nil {
		t.Error("Add accepted a malformed line")
	}
	if _, err := Add(path, line+"\n"+line2); err == nil {
		t.Error("Add accepted two lines")
	}
}

func TestAuthorizedKeys(t *testing.T) {
	k1, k2, k3 := newKey(t), newKey(t), newKey(t)
	a, err := ParseAuthorizedKeys(strings.NewReader(fmt.Sprintf(`# keys allowed in
%s alice@laptop
ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDx bob

%s carol
%s carol again
`, k1, k2, k2)))
	if err != nil {
		t.Fatal(err)
	}
	if a.Len() != 3 || a.Skipped() != 1 {
		t.Errorf("Len, Skipped = %d, %d; want 3, 1", a.Len(), a.Skipped())
	}
	if e, ok := a.Lookup(k1); !ok || e.Line != 2 || e.Comment != "alice@laptop" {
		t.Errorf("Lookup(k1) = %+v, %v", e, ok)
	}
	if e, ok := a.Lookup(k2); !ok || e.Line != 5 || e.Comment != "carol" {
		t.Errorf("Lookup(k2) = %+v, %v; want the first of its lines", e, ok)
	}
	if _, ok := a.Lookup(k3); ok {
		t.Error("Lookup found an unlisted key")
	}
	if _, ok := a.Lookup(securepeer.PublicKey{}); ok {
		t.Error("Lookup found the zero key")
	}

	// Lines that cannot be used are skipped, as sshd skips them, and say
	// why; the others still count.
	for _, tc := range []struct {
		name, text string
		line       int
		want       string
	}{
		{"options", `from="10.0.0.1" ` + k1.String() + "\n", 1, `options such as "from"`},
		{"restrict", "restrict,no-pty " + k1.String() + "\n", 1, `"restrict"`},
		{"one field", "\n\nssh-ed25519\n", 3, "want"},
		{"bad key", "ssh-ed25519 AAAA\n", 1, "malformed"},
		{"rsa", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDx bob\n", 1, "ssh-rsa keys are not securepeer identities"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := ParseAuthorizedKeys(strings.NewReader(tc.text + k3.String() + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			sk := a.SkippedLines()
			if len(sk) != 1 || sk[0].Line != tc.line || !strings.Contains(sk[0].Reason, tc.want) {
				t.Fatalf("skipped %+v, want line %d saying %q", sk, tc.line, tc.want)
			}
			if _, ok := a.Lookup(k1); ok {
				t.Error("a skipped line admits its key")
			}
			if _, ok := a.Lookup(k3); !ok || a.Len() != 1 {
				t.Error("the good line after a skipped one does not count")
			}
		})
	}
}

func TestAuthorizedKeysFileReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "allow")
	k1, k2 := newKey(t), newKey(t)
	ctx := context.Background()

	if _, err := OpenAuthorizedKeys(path); err == nil {
		t.Fatal("OpenAuthorizedKeys accepted a missing file")
	}
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(k1.String() + "\n")
	f, err := OpenAuthorizedKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Verify(ctx, k1); err != nil {
		t.Errorf("Verify(k1): %v", err)
	}
	var notAuth *NotAuthorizedError
	if err := f.Verify(ctx, k2); !errors.As(err, &notAuth) || !notAuth.Key.Equal(k2) {
		t.Errorf("Verify(k2): got %v, want *NotAuthorizedError", err)
	}
	if _, changed, _ := f.Current(); changed {
		t.Error("Current reports a change for an unchanged file")
	}

	// Same size, new key, written at once: the contents decide, not mtime.
	write(k2.String() + "\n")
	if _, changed, err := f.Current(); err != nil || !changed {
		t.Errorf("Current after a rewrite = changed %v, %v", changed, err)
	}
	if err := f.Verify(ctx, k2); err != nil {
		t.Errorf("Verify(k2) after reload: %v", err)
	}
	if err := f.Verify(ctx, k1); err == nil {
		t.Error("Verify(k1) accepted a key removed from the file")
	}

	// A broken file fails closed, and recovers when fixed.
	write("garbage line\n")
	if err := f.Verify(ctx, k2); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("Verify with a malformed file: got %v, want an error naming the file", err)
	}
	os.Remove(path)
	if err := f.Verify(ctx, k2); err == nil {
		t.Error("Verify with a removed file accepted a key")
	}
	write(k1.String() + "\n" + k2.String() + "\n")
	if err := f.Verify(ctx, k2); err != nil {
		t.Errorf("Verify after the file came back: %v", err)
	}
}

// requireInterop skips the test when tool is missing, unless
// SECUREPEER_REQUIRE_INTEROP=1 says the environment must have it (as CI does).
func requireInterop(t *testing.T, tool string) string {
	t.Helper()
	path, err := exec.LookPath(tool)
	if err != nil {
		if os.Getenv("SECUREPEER_REQUIRE_INTEROP") == "1" {
			t.Fatalf("%s is required (SECUREPEER_REQUIRE_INTEROP=1): %v", tool, err)
		}
		t.Skipf("%s not installed: %v", tool, err)
	}
	return path
}

// TestOpenSSHInterop checks the file format against OpenSSH's own tool:
// ssh-keygen finds our lines with -F and hashes them with -H into lines we
// still match.
func TestOpenSSHInterop(t *testing.T) {
	sshKeygen := requireInterop(t, "ssh-keygen")
	k1, k2 := newKey(t), newKey(t)
	path := filepath.Join(t.TempDir(), "known_hosts")
	for _, l := range []struct {
		addr string
		key  securepeer.PublicKey
	}{{"127.0.0.1:5000", k1}, {"peer.example:6000", k2}} {
		line, err := Line([]string{l.addr}, l.key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Add(path, line); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(sshKeygen, "-F", "[127.0.0.1]:5000", "-f", path).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte(k1.String())) {
		t.Fatalf("ssh-keygen -F did not find our line: %v\n%s", err, out)
	}
	if out, err := exec.Command(sshKeygen, "-H", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -H: %v\n%s", err, out)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("peer.example")) || !bytes.Contains(data, []byte("|1|")) {
		t.Fatalf("ssh-keygen -H did not hash the file:\n%s", data)
	}
	db, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Check("127.0.0.1:5000", k1); err != nil {
		t.Errorf("Check after ssh-keygen -H: %v", err)
	}
	if err := db.Check("peer.example:6000", k2); err != nil {
		t.Errorf("Check after ssh-keygen -H: %v", err)
	}
	var changed *KeyChangedError
	if err := db.Check("peer.example:6000", k1); !errors.As(err, &changed) {
		t.Errorf("Check changed after ssh-keygen -H: got %v", err)
	}
}

func FuzzParse(f *testing.F) {
	k, err := securepeer.GenerateIdentity()
	if err != nil {
		f.Fatal(err)
	}
	key := k.PublicKey().String()
	for _, s := range []string{
		"[h]:5000 " + key + " c\n",
		"@revoked * " + key + "\n",
		"|1|AAAAAAAAAAAAAAAAAAAAAAAAAAA=|AAAAAAAAAAAAAAAAAAAAAAAAAAA= " + key + "\n",
		"a,!b,c* " + key + "\n# x\n\n",
		"h ssh-rsa AAAA\n",
		"[b]:1 ssh-ed25519 AAAAtruncated\n",
		"@revoked [b]:1 ssh-ed25519\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		db, err := Parse(strings.NewReader(text))
		if err != nil {
			return
		}
		// Every entry must round-trip through Check for an address its
		// pattern names literally.
		for _, e := range db.entries {
			if e.hashed != nil || len(e.patterns) != 1 || strings.ContainsAny(e.patterns[0], "*?!") {
				continue
			}
			host := e.patterns[0]
			addr := host + ":22"
			if h, p, ok := strings.Cut(strings.TrimPrefix(host, "["), "]:"); ok {
				addr = "[" + h + "]:" + p
			}
			if n, err := Normalize(addr); err != nil || n != host {
				continue
			}
			err := db.Check(addr, e.Key)
			var (
				revoked *RevokedError
				bad     *BadLineError
			)
			if err != nil && !errors.As(err, &revoked) && !(errors.As(err, &bad) && bad.Revoked) {
				t.Fatalf("line %d lists %s with its key, but Check says %v", e.Line, addr, err)
			}
		}
		// A host that a malformed line lists is never unknown: that line
		// may have been its record.
		for _, b := range db.bad {
			if !b.hostsKnown || b.entry.hashed != nil || len(b.entry.patterns) != 1 || strings.ContainsAny(b.entry.patterns[0], "*?!") {
				continue
			}
			host := b.entry.patterns[0]
			addr := host + ":22"
			if h, p, ok := strings.Cut(strings.TrimPrefix(host, "["), "]:"); ok {
				addr = "[" + h + "]:" + p
			}
			if n, err := Normalize(addr); err != nil || n != host {
				continue
			}
			var unknown *UnknownHostError
			if err := db.Check(addr, fuzzKey); errors.As(err, &unknown) {
				t.Fatalf("malformed line %d lists %s, but Check calls it unknown", b.entry.Line, addr)
			}
		}
	})
}

// fuzzKey is a key that no fuzzed text lists, for Check.
var fuzzKey = func() securepeer.PublicKey {
	id, err := securepeer.GenerateIdentity()
	if err != nil {
		panic(err)
	}
	return id.PublicKey()
}()

// TestFileChecks checks that known_hosts and authorized_keys files that
// others than their owner may write, or that another user owns, are
// refused by every function that reads them, as sshd's StrictModes refuses
// them, and that an AuthorizedKeysFile whose mode changes fails closed.
func TestFileChecks(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("modes are not checked on Windows")
	}
	k := newKey(t)
	readers := map[string]func(path string) error{
		"Load":               func(p string) error { _, err := Load(p); return err },
		"Add":                func(p string) error { _, err := Add(p, "[h]:1 "+k.String()); return err },
		"LoadAuthorizedKeys": func(p string) error { _, err := LoadAuthorizedKeys(p); return err },
		"OpenAuthorizedKeys": func(p string) error { _, err := OpenAuthorizedKeys(p); return err },
	}
	for _, tc := range []struct {
		name  string
		mode  os.FileMode
		owner int // -1: this process's
		want  error
	}{
		{"mode 0600", 0o600, -1, nil},
		{"mode 0644", 0o644, -1, nil},
		{"writable by its group", 0o664, -1, ErrFileWritable},
		{"writable by others", 0o606, -1, ErrFileWritable},
		{"owned by root", 0o644, 0, nil},
		{"owned by another user", 0o644, 65534, ErrFileOwner},
	} {
		for name, read := range readers {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				if tc.owner >= 0 && os.Geteuid() != 0 {
					t.Skip("giving a file to another user needs root")
				}
				path := filepath.Join(t.TempDir(), "file")
				if err := os.WriteFile(path, []byte(k.String()+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, tc.mode); err != nil {
					t.Fatal(err)
				}
				if tc.owner >= 0 {
					if err := os.Chown(path, tc.owner, -1); err != nil {
						t.Fatal(err)
					}
				}
				if err := read(path); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
					t.Errorf("%s: %v, want %v", name, err, tc.want)
				}
			})
		}
	}
	t.Run("not a regular file", func(t *testing.T) {
		if _, err := Load(os.DevNull); err != nil {
			t.Errorf("Load(%s): %v", os.DevNull, err)
		}
	})
	t.Run("AuthorizedKeysFile made writable later", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "authorized_keys")
		if err := os.WriteFile(path, []byte(k.String()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := OpenAuthorizedKeys(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, 0o666); err != nil {
			t.Fatal(err)
		}
		if err := f.Verify(context.Background(), k); !errors.Is(err, ErrFileWritable) {
			t.Errorf("Verify after chmod 0666: %v, want ErrFileWritable", err)
		}
	})
}
