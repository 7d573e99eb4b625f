// Package knownhosts reads the two files with which a securepeer user decides
// whom to trust, in the formats OpenSSH uses for the same purposes:
//
//   - known_hosts maps peer addresses to the keys they presented before, so a
//     client can trust a peer on first use and notice when its key changes
//     ([DB], [Load], [Add]);
//   - authorized_keys lists the keys that may connect to a server
//     ([AuthorizedKeys], [AuthorizedKeysFile]).
//
// Parsing works on an [io.Reader], so a program can keep these lists anywhere;
// the functions that touch files ([Load], [Add], [LoadAuthorizedKeys],
// [AuthorizedKeysFile]) are thin wrappers at the edge.
//
// # Checking a peer
//
// [DB.Check] tells apart the three outcomes a client must handle differently:
// the address is listed with this key (nil), the address is not listed at
// all (*[UnknownHostError]: ask the user, or refuse), and the address is
// listed with other keys only (*[KeyChangedError]: refuse loudly, it may be a
// man-in-the-middle). Both errors carry the line numbers a user needs to act.
// A key listed after an @revoked marker is refused with *[RevokedError].
//
// # Format
//
// Lines are those of OpenSSH: "hosts keytype base64key [comment]", where hosts
// is a comma-separated list of patterns ("*" and "?" wildcards, "!" negation)
// or one hashed name "|1|salt|hash" as `ssh-keygen -H` writes it. Addresses
// always carry a port, written "[host]:port" as ssh does for ports other than
// 22, so `ssh-keygen -F '[host]:port' -f FILE` and `ssh-keygen -R` work on
// these files too. Only ssh-ed25519 keys can identify a securepeer peer; lines
// with other key types are skipped, and @cert-authority lines are ignored
// because securepeer has no certificates.
//
// Keys are compared with [securepeer.PublicKey.Equal], in constant time.
package knownhosts

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/securepeer/securepeer"
)

// maxLineLength bounds one line of a known_hosts or authorized_keys file. An
// ssh-ed25519 line is under 200 bytes; long comments and host lists fit too.
const maxLineLength = 64 << 10

// maxFileSize bounds what [Load] and [AuthorizedKeysFile] read into memory.
const maxFileSize = 16 << 20

// An Entry is one usable line of a known_hosts or authorized_keys file.
type Entry struct {
	// Line is the 1-based line number in the file.
	Line int
	// Hosts is the host pattern field as written (known_hosts only).
	Hosts string
	// Key is the line's key.
	Key securepeer.PublicKey
	// Comment is whatever followed the key on the line.
	Comment string
	// Revoked reports an @revoked line (known_hosts only).
	Revoked bool
}

// A DB is a parsed known_hosts file. It is immutable and safe for concurrent
// use.
type DB struct {
	file    string
	entries []hostEntry
}

type hostEntry struct {
	Entry
	patterns []string // lowercase; "!" prefix for negation; nil when hashed
	hashed   *hashedHost
}

type hashedHost struct {
	salt, sum []byte
}

// Parse reads a known_hosts file from r. Comments, blank lines, lines with
// key types other than ssh-ed25519 and @cert-authority lines are skipped; any
// other malformed line is an error naming its line number.
func Parse(r io.Reader) (*DB, error) {
	db := &DB{}
	err := scanLines(r, func(n int, line string) error {
		e, ok, err := parseHostLine(n, line)
		if err != nil || !ok {
			return err
		}
		db.entries = append(db.entries, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return db, nil
}

// Load reads the known_hosts file at path. A file that does not exist is an
// empty DB, as every host is unknown before the first connection.
func Load(path string) (*DB, error) {
	data, err := readBounded(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &DB{file: path}, nil
	}
	if err != nil {
		return nil, err
	}
	db, err := Parse(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	db.file = path
	return db, nil
}

// File returns the path the DB was loaded from, or "" if it was parsed from a
// reader.
func (db *DB) File() string { return db.file }

// Lookup returns the entries whose host patterns match addr, revoked ones
// included, in file order.
func (db *DB) Lookup(addr string) ([]Entry, error) {
	host, err := Normalize(addr)
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, e := range db.entries {
		if e.matches(host) {
			out = append(out, e.Entry)
		}
	}
	return out, nil
}

// Check reports whether key is the key known for addr, a "host:port"
// address. It returns nil if a line lists addr with key, *[RevokedError] if
// key is revoked for addr, *[KeyChangedError] if addr is listed only with
// other keys, and *[UnknownHostError] if addr is not listed at all.
func (db *DB) Check(addr string, key securepeer.PublicKey) error {
	host, err := Normalize(addr)
	if err != nil {
		return err
	}
	if key.IsZero() {
		return errNoKey
	}
	var want []Entry
	found := false
	for _, e := range db.entries {
		if !e.matches(host) {
			continue
		}
		same := e.Key.Equal(key)
		if e.Revoked {
			if same {
				return &RevokedError{File: db.file, Addr: host, Entry: e.Entry}
			}
			continue
		}
		if same {
			found = true
		} else {
			want = append(want, e.Entry)
		}
	}
	switch {
	case found:
		return nil
	case len(want) > 0:
		return &KeyChangedError{File: db.file, Addr: host, Key: key, Want: want}
	}
	unknown := &UnknownHostError{File: db.file, Addr: host, Key: key}
	for _, e := range db.entries {
		if !e.Revoked && e.Key.Equal(key) {
			unknown.KnownAs = append(unknown.KnownAs, e.Entry)
		}
	}
	return unknown
}

// An UnknownHostError is returned by [DB.Check] when no line lists the
// address. A client asks its user whether to trust the key, or refuses.
type UnknownHostError struct {
	File string // the known_hosts file, if loaded from one
	Addr string // the normalized address
	Key  securepeer.PublicKey
	// KnownAs lists lines that hold the same key for other addresses, such
	// as the peer's name when it was reached by IP.
	KnownAs []Entry
}

func (e *UnknownHostError) Error() string {
	return fmt.Sprintf("knownhosts: %s is not a known host (its key is %s)", e.Addr, e.Key.Fingerprint())
}

// A KeyChangedError is returned by [DB.Check] when lines list the address,
// but none with the presented key. This is what a man-in-the-middle looks
// like, and also what a peer that replaced its key looks like; a client
// refuses the connection either way and lets the user edit the file.
type KeyChangedError struct {
	File string // the known_hosts file, if loaded from one
	Addr string // the normalized address
	Key  securepeer.PublicKey
	// Want holds the lines that list Addr, with the keys expected instead.
	Want []Entry
}

func (e *KeyChangedError) Error() string {
	where := "known_hosts"
	if e.File != "" {
		where = e.File
	}
	return fmt.Sprintf("knownhosts: key %s for %s does not match %s %s", e.Key.Fingerprint(), e.Addr, where, e.lines())
}

// lines returns "line 3" or "lines 3, 7".
func (e *KeyChangedError) lines() string {
	nums := make([]string, len(e.Want))
	for i, w := range e.Want {
		nums[i] = strconv.Itoa(w.Line)
	}
	if len(nums) == 1 {
		return "line " + nums[0]
	}
	return "lines " + strings.Join(nums, ", ")
}

// A RevokedError is returned by [DB.Check] when the key is listed after an
// @revoked marker for the address.
type RevokedError struct {
	File  string
	Addr  string
	Entry Entry
}

func (e *RevokedError) Error() string {
	return fmt.Sprintf("knownhosts: key %s for %s is revoked (line %d)", e.Entry.Key.Fingerprint(), e.Addr, e.Entry.Line)
}

// Normalize returns the form in which known_hosts lists the "host:port"
// address addr: the host in lower case, and "[host]:port" unless the port is
// 22, as ssh writes it.
func Normalize(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("knownhosts: address %q: want host:port", addr)
	}
	if host == "" {
		return "", fmt.Errorf("knownhosts: address %q has no host", addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "", fmt.Errorf("knownhosts: address %q: port must be a number from 1 to 65535", addr)
	}
	if strings.ContainsAny(host, " \t,#*?!|[]") {
		return "", fmt.Errorf("knownhosts: address %q: invalid host name", addr)
	}
	host = strings.ToLower(host)
	if port == "22" {
		return host, nil
	}
	return "[" + host + "]:" + port, nil
}

// Line returns the known_hosts line, without a newline, that lists key for
// the addresses addrs.
func Line(addrs []string, key securepeer.PublicKey) (string, error) {
	if len(addrs) == 0 {
		return "", errors.New("knownhosts: no address for the line")
	}
	if key.IsZero() {
		return "", errors.New("knownhosts: no key for the line")
	}
	hosts := make([]string, len(addrs))
	for i, a := range addrs {
		h, err := Normalize(a)
		if err != nil {
			return "", err
		}
		hosts[i] = h
	}
	return strings.Join(hosts, ",") + " " + key.String(), nil
}

// HashedLine is like [Line] for one address, but writes the address hashed
// with a random salt, as `ssh-keygen -H` does, so the file does not tell
// who reads it which peers this user talks to.
func HashedLine(addr string, key securepeer.PublicKey) (string, error) {
	host, err := Normalize(addr)
	if err != nil {
		return "", err
	}
	if key.IsZero() {
		return "", errors.New("knownhosts: no key for the line")
	}
	salt := make([]byte, sha1.Size)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("knownhosts: %w", err)
	}
	return "|1|" + base64.StdEncoding.EncodeToString(salt) + "|" +
		base64.StdEncoding.EncodeToString(hashHost(salt, host)) + " " + key.String(), nil
}

func hashHost(salt []byte, host string) []byte {
	mac := hmac.New(sha1.New, salt)
	mac.Write([]byte(host))
	return mac.Sum(nil)
}

// Add appends line, as made by [Line] or [HashedLine], to the known_hosts
// file at path, creating the file (mode 0600) and its directory (mode 0700)
// if needed. It returns the number of the new line.
func Add(path, line string) (int, error) {
	if strings.ContainsAny(line, "\r\n") {
		return 0, errors.New("knownhosts: a line to add must not contain a newline")
	}
	if _, ok, err := parseHostLine(1, line); err != nil {
		return 0, err
	} else if !ok {
		return 0, errors.New("knownhosts: a line to add must list an ssh-ed25519 key")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return 0, fmt.Errorf("knownhosts: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return 0, fmt.Errorf("knownhosts: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize))
	if err != nil {
		return 0, fmt.Errorf("knownhosts: reading %s: %w", path, err)
	}
	// A file edited by hand may lack its final newline; appending without one
	// would merge the new line into the last one.
	var buf []byte
	if len(data) > 0 && data[len(data)-1] != '\n' {
		buf = append(buf, '\n')
	}
	buf = append(buf, line...)
	buf = append(buf, '\n')
	if _, err := f.Write(buf); err != nil {
		return 0, fmt.Errorf("knownhosts: writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("knownhosts: writing %s: %w", path, err)
	}
	n := bytes.Count(data, []byte("\n")) + 1
	if len(data) > 0 && data[len(data)-1] != '\n' {
		n++
	}
	return n, nil
}

// matches reports whether the entry's host field matches the normalized
// address host, with OpenSSH's rules: a matching negated pattern excludes
// the host whatever the other patterns say.
func (e *hostEntry) matches(host string) bool {
	if e.hashed != nil {
		return hmac.Equal(hashHost(e.hashed.salt, host), e.hashed.sum)
	}
	matched := false
	for _, p := range e.patterns {
		if neg, ok := strings.CutPrefix(p, "!"); ok {
			if wildcardMatch(neg, host) {
				return false
			}
			continue
		}
		if wildcardMatch(p, host) {
			matched = true
		}
	}
	return matched
}

// wildcardMatch matches name against pattern, where "*" stands for any run
// of characters and "?" for one character. It runs in time proportional to
// len(pattern)*len(name), never exponentially.
func wildcardMatch(pattern, name string) bool {
	p, n := 0, 0
	starP, starN := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == name[n]):
			p++
			n++
		case p < len(pattern) && pattern[p] == '*':
			starP, starN = p, n
			p++
		case starP >= 0:
			starN++
			p, n = starP+1, starN
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// parseHostLine parses line number n of a known_hosts file. ok is false for
// lines that are valid but carry nothing securepeer can use.
func parseHostLine(n int, line string) (e hostEntry, ok bool, err error) {
	e.Line = n
	fields := strings.Fields(line)
	if len(fields) > 0 && strings.HasPrefix(fields[0], "@") {
		switch fields[0] {
		case "@revoked":
			e.Revoked = true
		case "@cert-authority":
			return e, false, nil
		default:
			return e, false, fmt.Errorf("knownhosts: line %d: unknown marker %q (want @revoked or @cert-authority)", n, fields[0])
		}
		fields = fields[1:]
	}
	if len(fields) < 3 {
		return e, false, fmt.Errorf("knownhosts: line %d: want \"host:port ssh-ed25519 AAAA...\", got %d fields", n, len(fields))
	}
	e.Hosts = fields[0]
	if fields[1] != "ssh-ed25519" {
		return e, false, nil
	}
	if e.Key, err = securepeer.ParsePublicKey(fields[1] + " " + fields[2]); err != nil {
		return e, false, fmt.Errorf("knownhosts: line %d: %v", n, err)
	}
	e.Comment = strings.Join(fields[3:], " ")
	if rest, ok := strings.CutPrefix(e.Hosts, "|"); ok {
		e.hashed, err = parseHashed(rest)
		if err != nil {
			return e, false, fmt.Errorf("knownhosts: line %d: %v", n, err)
		}
		return e, true, nil
	}
	for p := range strings.SplitSeq(e.Hosts, ",") {
		if p == "" || p == "!" {
			return e, false, fmt.Errorf("knownhosts: line %d: empty host pattern in %q", n, e.Hosts)
		}
		e.patterns = append(e.patterns, strings.ToLower(p))
	}
	return e, true, nil
}

// parseHashed parses "1|salt|hash", a hashed host name without its leading
// "|".
func parseHashed(s string) (*hashedHost, error) {
	parts := strings.Split(s, "|")
	if len(parts) != 3 || parts[0] != "1" {
		return nil, errors.New("malformed hashed host name (want |1|salt|hash)")
	}
	salt, err := base64.StdEncoding.DecodeString(parts[1])
	if err != nil || len(salt) != sha1.Size {
		return nil, errors.New("malformed salt in hashed host name")
	}
	sum, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(sum) != sha1.Size {
		return nil, errors.New("malformed hash in hashed host name")
	}
	return &hashedHost{salt: salt, sum: sum}, nil
}

// scanLines calls fn for each line of r that is neither blank nor a comment,
// with its 1-based number and without surrounding space.
func scanLines(r io.Reader, fn func(n int, line string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLineLength)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if err := fn(n, line); err != nil {
			return err
		}
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		return fmt.Errorf("knownhosts: line %d is longer than %d bytes", n+1, maxLineLength)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("knownhosts: %w", err)
	}
	return nil
}
