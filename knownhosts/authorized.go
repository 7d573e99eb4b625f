package knownhosts

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/pkgerr"
)

// AuthorizedKeys is a parsed authorized_keys file: the keys a server lets
// connect. It is immutable and safe for concurrent use.
type AuthorizedKeys struct {
	entries []Entry
	skipped []SkippedLine
}

// A SkippedLine is a line of an authorized_keys file that admits nobody,
// and why.
type SkippedLine struct {
	Line   int
	Reason string
}

// ParseAuthorizedKeys reads an authorized_keys file from r: lines of
// "ssh-ed25519 AAAA... [comment]". As sshd does, a line that cannot be used
// is skipped, not fatal, and reported by [AuthorizedKeys.SkippedLines]:
// keys of other types (so an OpenSSH authorized_keys file can be shared),
// malformed lines, and lines with OpenSSH options ("from=...", "no-pty",
// ...), which securepeer cannot enforce: such a line admits nobody rather
// than more than it says.
func ParseAuthorizedKeys(r io.Reader) (*AuthorizedKeys, error) {
	a := &AuthorizedKeys{}
	skip := func(n int, format string, args ...any) error {
		a.skipped = append(a.skipped, SkippedLine{Line: n, Reason: fmt.Sprintf(format, args...)})
		return nil
	}
	err := scanLines(r, func(n int, line string) error {
		fields := strings.Fields(line)
		switch {
		case len(fields) < 2:
			return skip(n, "want \"ssh-ed25519 AAAA... [comment]\"")
		case !isKeyType(fields[0]) && !slices.ContainsFunc(fields, isKeyType):
			return skip(n, "not a key line; want \"ssh-ed25519 AAAA... [comment]\"")
		case !isKeyType(fields[0]):
			return skip(n, "options such as %q are not supported, as securepeer cannot enforce them; the line admits nobody", firstOption(line))
		case fields[0] != "ssh-ed25519":
			return skip(n, "%s keys are not securepeer identities", fields[0])
		}
		key, err := securepeer.ParsePublicKey(fields[0] + " " + fields[1])
		if err != nil {
			return skip(n, "%v", pkgerr.Unnamed(err))
		}
		a.entries = append(a.entries, Entry{Line: n, Key: key, Comment: strings.Join(fields[2:], " ")})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// LoadAuthorizedKeys reads the authorized_keys file at path. Unlike
// [Load], a missing file is an error: a server told to admit only the keys
// in a file must not start admitting nobody, or everybody, by mistake.
func LoadAuthorizedKeys(path string) (*AuthorizedKeys, error) {
	data, err := readBounded(path)
	if err != nil {
		return nil, err
	}
	a, err := ParseAuthorizedKeys(bytes.NewReader(data))
	if err != nil {
		return nil, errorf("%w (in %s)", err, path)
	}
	return a, nil
}

// Len returns the number of usable (ssh-ed25519) keys.
func (a *AuthorizedKeys) Len() int { return len(a.entries) }

// Skipped returns the number of lines skipped (see [ParseAuthorizedKeys]).
func (a *AuthorizedKeys) Skipped() int { return len(a.skipped) }

// SkippedLines returns the lines skipped, and why, in file order.
func (a *AuthorizedKeys) SkippedLines() []SkippedLine {
	return append([]SkippedLine(nil), a.skipped...)
}

// Entries returns the usable lines, in file order.
func (a *AuthorizedKeys) Entries() []Entry { return append([]Entry(nil), a.entries...) }

// Lookup returns the first line that lists key. It compares key with every
// line, in constant time, whether or not an earlier line matched.
func (a *AuthorizedKeys) Lookup(key securepeer.PublicKey) (Entry, bool) {
	found := 0
	index := 0
	for i, e := range a.entries {
		eq := 0
		if e.Key.Equal(key) {
			eq = 1
		}
		first := eq & (found ^ 1)
		index = subtle.ConstantTimeSelect(first, i, index)
		found |= eq
	}
	if found == 0 || key.IsZero() {
		return Entry{}, false
	}
	return a.entries[index], true
}

// A NotAuthorizedError is returned by [AuthorizedKeysFile.Verify] for a key
// that the file does not list.
type NotAuthorizedError struct {
	File string
	Key  securepeer.PublicKey
}

func (e *NotAuthorizedError) Error() string {
	return fmt.Sprintf("knownhosts: key %s is not listed in %s", e.Key.Fingerprint(), e.File)
}

// An AuthorizedKeysFile is an authorized_keys file that is read again when
// its contents change, so keys can be added and removed while a server runs.
// It is safe for concurrent use.
type AuthorizedKeysFile struct {
	path string

	mu   sync.Mutex // guards data and keys
	data []byte     // the contents keys were parsed from
	keys *AuthorizedKeys
}

// OpenAuthorizedKeys reads the authorized_keys file at path, failing if it
// is missing or malformed now.
func OpenAuthorizedKeys(path string) (*AuthorizedKeysFile, error) {
	f := &AuthorizedKeysFile{path: path}
	if _, _, err := f.Current(); err != nil {
		return nil, err
	}
	return f, nil
}

// Path returns the file's path.
func (f *AuthorizedKeysFile) Path() string { return f.path }

// Current returns the keys the file lists now, reading it again; changed
// reports whether they differ from those of the previous call. If the file
// has become unreadable or malformed, Current returns the error and no keys:
// a server fails closed rather than trusting a list it can no longer check.
func (f *AuthorizedKeysFile) Current() (keys *AuthorizedKeys, changed bool, err error) {
	data, err := readBounded(f.path)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.data, f.keys = nil, nil
		return nil, true, err
	}
	if f.keys != nil && bytes.Equal(data, f.data) {
		return f.keys, false, nil
	}
	keys, err = ParseAuthorizedKeys(bytes.NewReader(data))
	if err != nil {
		f.data, f.keys = nil, nil
		return nil, true, errorf("%w (in %s)", err, f.path)
	}
	f.data, f.keys = data, keys
	return keys, true, nil
}

// Verify accepts key if the file lists it now, and returns a
// *[NotAuthorizedError] otherwise. Its signature fits
// [securepeer.Config.Verify].
func (f *AuthorizedKeysFile) Verify(_ context.Context, key securepeer.PublicKey) error {
	if key.IsZero() {
		return errNoKey
	}
	keys, _, err := f.Current()
	if err != nil {
		return err
	}
	if _, ok := keys.Lookup(key); !ok {
		return &NotAuthorizedError{File: f.path, Key: key}
	}
	return nil
}

// readBounded reads the known_hosts or authorized_keys file at path, at
// most maxFileSize bytes of it, after checking the file it opened with
// CheckFile, so that the file read is the file checked.
func readBounded(path string) ([]byte, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, errorf("%w", err)
	}
	defer file.Close()
	if err := CheckFile(file, path); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(file, maxFileSize+1))
	if err != nil {
		return nil, errorf("reading %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, errorf("%s is larger than %d bytes", path, maxFileSize)
	}
	return data, nil
}

// isKeyType reports whether s names an OpenSSH public key type, as opposed
// to beginning a list of options.
func isKeyType(s string) bool {
	switch {
	case s == "ssh-ed25519", s == "ssh-rsa", s == "ssh-dss":
		return true
	case strings.HasPrefix(s, "ecdsa-sha2-"), strings.HasPrefix(s, "sk-"),
		strings.HasPrefix(s, "ssh-") && strings.HasSuffix(s, "@openssh.com"):
		return true
	}
	return false
}

// firstOption returns the first option of an authorized_keys line, for the
// error message.
func firstOption(line string) string {
	opt, _, _ := strings.Cut(line, ",")
	opt, _, _ = strings.Cut(opt, " ")
	opt, _, _ = strings.Cut(opt, "=")
	return opt
}

// ErrFileWritable is returned, wrapped, for a known_hosts or
// authorized_keys file that others than its owner may write: whoever can
// write it decides whom a program trusts. sshd's StrictModes refuses such
// an authorized_keys file too.
var ErrFileWritable = errors.New("file is writable by others than its owner")

// ErrFileOwner is returned, wrapped, for a known_hosts or authorized_keys
// file owned by a user other than the one running the program, or root,
// as sshd's StrictModes refuses it.
var ErrFileOwner = errors.New("file is owned by another user")

// CheckFile refuses a regular file that others than its owner may write,
// or that belongs to a user other than this process's or root. Other
// kinds of file (/dev/null, the pipe of a shell's <(...)) are not
// checked, nor is anything on Windows, whose modes say nothing of ACLs.
// It is the check Load and LoadAuthorizedKeys make, for a program that
// trusts a file of its own the same way: f is the open file, so that the
// file read is the file checked, and path names it in the error.
func CheckFile(f *os.File, path string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	fi, err := f.Stat()
	if err != nil {
		return errorf("%w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return errorf("%w: %s (mode %04o)", ErrFileWritable, path, perm)
	}
	if uid, ok := fileOwner(fi); ok && uid != os.Geteuid() && uid != 0 {
		return errorf("%w: %s belongs to uid %d", ErrFileOwner, path, uid)
	}
	return nil
}

// errNoKey guards against checking the zero key, which no file may list.
var errNoKey = newError("no key to check")
