package main

// This file is the command's StrictModes, after sshd's: a directory that
// holds an identity, known_hosts or an -allow file must not be writable by
// anyone but its owner, or whoever can write it can swap the key or the
// list of trusted peers. The libraries check the files themselves:
// securepeer.LoadIdentity the key file's mode, the knownhosts package the
// mode and owner of known_hosts and -allow files (writable by their owner
// only; owned by the user or root); this checks the directories around
// them.
//
// The rules, for the directory and every directory above it (both the path
// as given and the one its symbolic links lead to):
//
//   - The securepeer home ($SECUREPEER_HOME, default ~/.securepeer) must
//     not be writable by its group or others, even with the sticky bit:
//     in a directory such as /tmp anyone can create known_hosts or
//     id_ed25519 before securepeer does, and ssh refuses it too.
//   - The directory of a key or known_hosts file named on the command line
//     may be sticky and world-writable, as /tmp is: there others cannot
//     remove or rename a file they do not own, and the key file's own
//     mode is checked when it is read.
//   - Every directory above either may be writable by others only with the
//     sticky bit, which stops them renaming what it holds.
//
// The ownership of directories is not checked. On Windows there is no
// check at all: file
// modes there are made up by Go from the read-only attribute, and access
// is governed by ACLs, which this does not read.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/securepeer/securepeer/internal/pkgerr"
)

// checkHome refuses the securepeer home dir if others can write it or a
// directory above it. name is how the user set it, for messages.
func checkHome(dir, name string) error {
	return checkTrustedDir(dir, name, true)
}

// checkFileDir refuses the directory of a key, known_hosts or -allow file
// named on the command line if others can replace the file.
func checkFileDir(path string) error {
	dir := filepath.Dir(path)
	name := fmt.Sprintf("%s, the directory of %s,", dir, path)
	if dir == "." {
		name = fmt.Sprintf("the current directory, which holds %s,", path)
	}
	return checkTrustedDir(dir, name, false)
}

// checkTrustedDir checks dir and the directories above it by the rules in
// the file comment; home selects the rule for the securepeer home. name
// stands for dir at the start of a message. A dir that does not exist yet
// is not an error (it is created 0700), but the directories above it that
// exist are checked.
func checkTrustedDir(dir, name string, home bool) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	var chain []string // abs, then each directory above; then the same for the real path
	seen := map[string]bool{}
	add := func(p string) {
		for {
			if !seen[p] {
				seen[p] = true
				chain = append(chain, p)
			}
			parent := filepath.Dir(p)
			if parent == p {
				return
			}
			p = parent
		}
	}
	add(abs)
	real, err := evalExisting(abs)
	if err == nil {
		add(real)
	}
	for _, d := range chain {
		fi, err := os.Stat(d)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return pkgerr.Plainf("cannot check %s: %v", d, err)
		}
		perm := fi.Mode().Perm()
		if perm&0o022 == 0 {
			continue
		}
		mode := uint32(perm)
		sticky := fi.Mode()&fs.ModeSticky != 0
		if sticky {
			mode |= 0o1000
		}
		who := "its group"
		if perm&0o002 != 0 {
			who = "others"
		}
		self := d == abs || d == real
		switch {
		case self && home && sticky:
			return pkgerr.Plainf("%s is writable by %s (mode %04o), who can create its files before securepeer does; set SECUREPEER_HOME to a directory of your own, such as one made with mkdir -m 700", name, who, mode)
		case self && home:
			return pkgerr.Plainf("%s is writable by %s (mode %04o); run chmod 700 %s", name, who, mode, dir)
		case self && !sticky:
			return pkgerr.Plainf("%s is writable by %s (mode %04o), who could replace the file; run chmod go-w %s", name, who, mode, dir)
		case !self && !sticky:
			return pkgerr.Plainf("%s, which holds %s, is writable by %s (mode %04o), who could replace what it holds; run chmod go-w %s, or use a directory elsewhere", d, abs, who, mode, d)
		}
	}
	return nil
}

// evalExisting resolves the symbolic links in path, which may not exist
// yet: the part that does not is appended to the resolved part that does.
func evalExisting(path string) (string, error) {
	real, err := filepath.EvalSymlinks(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return real, err
	}
	parent := filepath.Dir(path)
	if parent == path {
		return "", err
	}
	realParent, err := evalExisting(parent)
	if err != nil {
		return "", err
	}
	return filepath.Join(realParent, filepath.Base(path)), nil
}
