package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/securepeer/securepeer/internal/testenv"
)

// mkdir makes the directory rel in the test's directory, with exactly mode
// (umask aside).
func (te *testEnv) mkdir(rel string, mode os.FileMode) {
	te.t.Helper()
	p := filepath.Join(te.dir, rel)
	if err := os.MkdirAll(p, 0o700); err != nil {
		te.t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		te.t.Fatal(err)
	}
}

// writeFile writes the file rel in the test's directory, with exactly mode
// (umask aside).
func (te *testEnv) writeFile(rel, data string, mode os.FileMode) {
	te.t.Helper()
	p := filepath.Join(te.dir, rel)
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		te.t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		te.t.Fatal(err)
	}
}

// chownOther gives the file rel to uid 65534 (nobody), which only root
// can do; other users skip the test.
func (te *testEnv) chownOther(rel string) {
	te.t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(te.t, "giving a file to another user needs root")
	}
	if err := os.Chown(filepath.Join(te.dir, rel), 65534, -1); err != nil {
		te.t.Fatal(err)
	}
}

// TestStrictModes checks that the command refuses a securepeer home, a
// directory above it, or the directory of a key or known_hosts file named
// on the command line, that others can write, as sshd's StrictModes does,
// with a message that says what to run; and that what may be written (a
// mode 0755 home, a key in a sticky directory such as /tmp) is used.
func TestStrictModes(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the command does not check modes on Windows")
	}
	const home = "home/.securepeer" // SECUREPEER_HOME, as newTestEnv sets it
	for _, tc := range []struct {
		name  string
		setup func(te *testEnv)
		args  []string
		// stderr is the whole of stderr for a refusal ($DIR is the test's
		// directory); "" expects success.
		stderr string
		absent string // a file that must not have been written
		made   string // a directory that must have been made, mode 0700
	}{
		{
			name:   "home writable by others",
			setup:  func(te *testEnv) { te.mkdir(home, 0o777) },
			args:   []string{"id"},
			stderr: "$SECUREPEER_HOME $DIR/home/.securepeer is writable by others (mode 0777); run chmod 700 $DIR/home/.securepeer",
			absent: home + "/id_ed25519",
		},
		{
			name:   "home writable by its group",
			setup:  func(te *testEnv) { te.mkdir(home, 0o770) },
			args:   []string{"id"},
			stderr: "$SECUREPEER_HOME $DIR/home/.securepeer is writable by its group (mode 0770); run chmod 700 $DIR/home/.securepeer",
			absent: home + "/id_ed25519",
		},
		{
			name:   "home writable by others only",
			setup:  func(te *testEnv) { te.mkdir(home, 0o702) },
			args:   []string{"id"},
			stderr: "$SECUREPEER_HOME $DIR/home/.securepeer is writable by others (mode 0702); run chmod 700 $DIR/home/.securepeer",
		},
		{
			name:  "home readable by others",
			setup: func(te *testEnv) { te.mkdir(home, 0o755) },
			args:  []string{"id"},
		},
		{
			name:  "home made on first use",
			setup: func(te *testEnv) {},
			args:  []string{"id"},
			made:  home,
		},
		{
			name:   "home is a sticky world-writable directory, as /tmp",
			setup:  func(te *testEnv) { te.mkdir(home, os.ModeSticky|0o777) },
			args:   []string{"id"},
			stderr: "$SECUREPEER_HOME $DIR/home/.securepeer is writable by others (mode 1777), who can create its files before securepeer does; set SECUREPEER_HOME to a directory of your own, such as one made with mkdir -m 700",
			absent: home + "/id_ed25519",
		},
		{
			name: "~/.securepeer writable by others",
			setup: func(te *testEnv) {
				te.env = append(te.env, "SECUREPEER_HOME=")
				te.mkdir(home, 0o777)
			},
			args:   []string{"id"},
			stderr: "~/.securepeer ($DIR/home/.securepeer) is writable by others (mode 0777); run chmod 700 $DIR/home/.securepeer",
		},
		{
			name:   "home not made yet, in a directory others can write",
			setup:  func(te *testEnv) { te.mkdir("home", 0o777) },
			args:   []string{"id"},
			stderr: "$DIR/home, which holds $DIR/home/.securepeer, is writable by others (mode 0777), who could replace what it holds; run chmod go-w $DIR/home, or use a directory elsewhere",
			absent: home,
		},
		{
			name:  "home not made yet, in a sticky directory others can write",
			setup: func(te *testEnv) { te.mkdir("home", os.ModeSticky|0o777) },
			args:  []string{"id"},
			made:  home,
		},
		{
			name:   "home a level below a directory its group can write",
			setup:  func(te *testEnv) { te.mkdir("home", 0o775); te.mkdir(home, 0o700) },
			args:   []string{"id"},
			stderr: "$DIR/home, which holds $DIR/home/.securepeer, is writable by its group (mode 0775), who could replace what it holds; run chmod go-w $DIR/home, or use a directory elsewhere",
		},
		{
			name: "home a symbolic link to a directory others can write",
			setup: func(te *testEnv) {
				te.mkdir("real", 0o777)
				te.mkdir("home", 0o700)
				if err := os.Symlink(filepath.Join(te.dir, "real"), filepath.Join(te.dir, home)); err != nil {
					te.t.Fatal(err)
				}
			},
			args:   []string{"id"},
			stderr: "$SECUREPEER_HOME $DIR/home/.securepeer is writable by others (mode 0777); run chmod 700 $DIR/home/.securepeer",
			absent: "real/id_ed25519",
		},
		{
			name:   "keygen into a home others can write",
			setup:  func(te *testEnv) { te.mkdir(home, 0o777) },
			args:   []string{"keygen"},
			stderr: "$SECUREPEER_HOME $DIR/home/.securepeer is writable by others (mode 0777); run chmod 700 $DIR/home/.securepeer",
			absent: home + "/id_ed25519",
		},
		{
			name: "connect's known_hosts in a home others can write",
			setup: func(te *testEnv) {
				te.run("keygen", "-f", "key")
				te.mkdir(home, 0o777)
			},
			args:   []string{"connect", "-i", "key", "-accept-new", "127.0.0.1:1"},
			stderr: "$SECUREPEER_HOME $DIR/home/.securepeer is writable by others (mode 0777); run chmod 700 $DIR/home/.securepeer",
		},
		{
			name: "-known-hosts in a directory others can write",
			setup: func(te *testEnv) {
				te.run("keygen", "-f", "key")
				te.mkdir("shared", 0o777)
			},
			args:   []string{"connect", "-i", "key", "-known-hosts", "shared/known_hosts", "127.0.0.1:1"},
			stderr: "shared, the directory of shared/known_hosts, is writable by others (mode 0777), who could replace the file; run chmod go-w shared",
		},
		{
			name: "-i in a directory others can write",
			setup: func(te *testEnv) {
				te.mkdir("shared", 0o700)
				te.run("keygen", "-f", "shared/key")
				te.mkdir("shared", 0o777)
			},
			args:   []string{"id", "-i", "shared/key"},
			stderr: "shared, the directory of shared/key, is writable by others (mode 0777), who could replace the file; run chmod go-w shared",
		},
		{
			name: "-i in a current directory others can write",
			setup: func(te *testEnv) {
				te.run("keygen", "-f", "key")
				te.mkdir(".", 0o777)
			},
			args:   []string{"id", "-i", "key"},
			stderr: "the current directory, which holds key, is writable by others (mode 0777), who could replace the file; run chmod go-w .",
		},
		{
			name: "-i in a sticky directory others can write, as /tmp",
			setup: func(te *testEnv) {
				te.mkdir("shared", 0o700)
				te.run("keygen", "-f", "shared/key")
				te.mkdir("shared", os.ModeSticky|0o777)
			},
			args: []string{"id", "-i", "shared/key"},
		},
		{
			name:   "keygen -f into a directory its group can write",
			setup:  func(te *testEnv) { te.mkdir("shared", 0o770) },
			args:   []string{"keygen", "-f", "shared/key"},
			stderr: "shared, the directory of shared/key, is writable by its group (mode 0770), who could replace the file; run chmod go-w shared",
			absent: "shared/key",
		},
		{
			name: "-legacy -i in a directory its group can write",
			setup: func(te *testEnv) {
				te.copyLegacyKeys()
				te.mkdir("shared", 0o770)
				if err := os.Rename(filepath.Join(te.dir, "a.json"), filepath.Join(te.dir, "shared", "a.json")); err != nil {
					te.t.Fatal(err)
				}
			},
			args:   []string{"id", "-legacy", "-i", "shared/a.json"},
			stderr: "shared, the directory of shared/a.json, is writable by its group (mode 0770), who could replace the file; run chmod go-w shared",
		},
		{
			name: "-allow in a directory others can write",
			setup: func(te *testEnv) {
				te.run("keygen", "-f", "key")
				te.mkdir("shared", 0o777)
				te.writeFile("shared/allow", te.readFile("key.pub"), 0o644)
			},
			args:   []string{"listen", "-i", "key", "-allow", "shared/allow", "127.0.0.1:0"},
			stderr: "shared, the directory of shared/allow, is writable by others (mode 0777), who could replace the file; run chmod go-w shared",
		},
		{
			name: "-allow file writable by its group",
			setup: func(te *testEnv) {
				te.run("keygen", "-f", "key")
				te.writeFile("allow", te.readFile("key.pub"), 0o664)
			},
			args:   []string{"listen", "-i", "key", "-allow", "allow", "127.0.0.1:0"},
			stderr: "-allow: file is writable by others than its owner: allow (mode 0664); run chmod go-w allow",
		},
		{
			name: "known_hosts writable by others",
			setup: func(te *testEnv) {
				te.run("keygen", "-f", "key")
				te.mkdir(home, 0o700)
				te.writeFile(home+"/known_hosts", "", 0o666)
			},
			args:   []string{"connect", "-i", "key", "127.0.0.1:1"},
			stderr: "file is writable by others than its owner: $DIR/home/.securepeer/known_hosts (mode 0666); run chmod go-w $DIR/home/.securepeer/known_hosts",
		},
		{
			name: "-known-hosts writable by its group",
			setup: func(te *testEnv) {
				te.run("keygen", "-f", "key")
				te.writeFile("kh", "", 0o660)
			},
			args:   []string{"connect", "-i", "key", "-known-hosts", "kh", "127.0.0.1:1"},
			stderr: "file is writable by others than its owner: kh (mode 0660); run chmod go-w kh",
		},
		{
			name: "known_hosts owned by another user",
			setup: func(te *testEnv) {
				te.run("keygen", "-f", "key")
				te.writeFile("kh", "", 0o644)
				te.chownOther("kh")
			},
			args:   []string{"connect", "-i", "key", "-known-hosts", "kh", "127.0.0.1:1"},
			stderr: "file is owned by another user: kh belongs to uid 65534; use a file of your own",
		},
		{
			name: "-allow owned by another user",
			setup: func(te *testEnv) {
				te.run("keygen", "-f", "key")
				te.writeFile("allow", te.readFile("key.pub"), 0o644)
				te.chownOther("allow")
			},
			args:   []string{"listen", "-i", "key", "-allow", "allow", "127.0.0.1:0"},
			stderr: "-allow: file is owned by another user: allow belongs to uid 65534; use a file of your own",
		},
		{
			name:   "keygen -legacy -f into a directory others can write",
			setup:  func(te *testEnv) { te.mkdir("shared", 0o777) },
			args:   []string{"keygen", "-legacy", "-f", "shared/keys.json"},
			stderr: "shared, the directory of shared/keys.json, is writable by others (mode 0777), who could replace the file; run chmod go-w shared",
			absent: "shared/keys.json",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			te := newTestEnv(t)
			tc.setup(te)
			cmd := te.command(tc.args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// A listen that is not refused would listen for ever.
			code := exitStatus(t, waitCmd(t, cmd))
			if tc.stderr == "" {
				if code != 0 {
					t.Fatalf("securepeer %s exited %d:\n%s", strings.Join(tc.args, " "), code, stderr.String())
				}
			} else {
				want := "securepeer: " + strings.ReplaceAll(tc.stderr, "$DIR", te.dir) + "\n"
				if code != exitFailure || stderr.String() != want {
					t.Errorf("securepeer %s exited %d with\n%s\nwant exit %d with\n%s", strings.Join(tc.args, " "), code, stderr.String(), exitFailure, want)
				}
			}
			if tc.absent != "" {
				if _, err := os.Lstat(filepath.Join(te.dir, tc.absent)); err == nil {
					t.Errorf("%s was written", tc.absent)
				}
			}
			if tc.made != "" {
				fi, err := os.Stat(filepath.Join(te.dir, tc.made))
				if err != nil {
					t.Fatal(err)
				}
				if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
					t.Errorf("%s was made with mode %v, want a directory of mode 0700", tc.made, fi.Mode())
				}
			}
		})
	}
}
