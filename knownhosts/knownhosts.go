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
// A malformed line is skipped, as OpenSSH skips it, and listed by
// [DB.SkippedLines]; it never lets a key in. An address that it lists, with
// a key that cannot be read, is neither known nor unknown: [DB.Check]
// returns *[BadLineError], so that a client does not offer trust on first
// use over a record it cannot read. A malformed @revoked line is taken at
// its widest: if its key cannot be read it revokes every key of the
// addresses it lists, and if its addresses cannot be read it revokes its
// key for every address.
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
	"github.com/securepeer/securepeer/internal/pkgerr"
)

// Every error this package returns starts with "knownhosts: ", once
// (internal/pkgerr); the typed errors say it themselves. The sentinels
// state their fact alone, and the errors returned wrap them.

// errorf returns an error of this package, formatted as fmt.Errorf does,
// its text prefixed "knownhosts: ".
func errorf(format string, a ...any) error { return pkgerr.Errorf("knownhosts", format, a...) }

// newError returns an error of this package, its text prefixed
// "knownhosts: ".
func newError(text string) error { return pkgerr.New("knownhosts", text) }

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
	bad     []badLine
}

type hostEntry struct {
	Entry
	patterns []string // lowercase; "!" prefix for negation; nil when hashed
	hashed   *hashedHost
}

type hashedHost struct {
	salt, sum []byte
}

// A badLine is a line that cannot be read, with what could be read of it:
// its host field (entry.hostsKnown) and its key (entry.Key, zero if not).
// It vouches for nothing, but a host it may list is never taken for
// unknown, and a key it may revoke is never accepted (see [DB.Check]).
type badLine struct {
	entry      hostEntry
	hostsKnown bool
	reason     string
}

// Parse reads a known_hosts file from r. Comments, blank lines, lines with
// key types other than ssh-ed25519 and @cert-authority lines are skipped.
// As OpenSSH does, a malformed line is skipped too, not fatal, and reported
// by [DB.SkippedLines]; [DB.Check] never accepts a key through it. Only a
// line too long to read is an error.
func Parse(r io.Reader) (*DB, error) {
	db := &DB{}
	err := scanLines(r, func(n int, line string) error {
		e, ok, err := parseHostLine(n, line)
		switch {
		case err != nil:
			db.bad = append(db.bad, badLine{entry: e, hostsKnown: e.patterns != nil || e.hashed != nil, reason: err.reason})
		case ok:
			db.entries = append(db.entries, e)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return db, nil
}

// SkippedLines returns the malformed lines that [Parse] skipped, and why,
// in file order.
func (db *DB) SkippedLines() []SkippedLine {
	out := make([]SkippedLine, len(db.bad))
	for i, b := range db.bad {
		out[i] = SkippedLine{Line: b.entry.Line, Reason: b.reason}
	}
	return out
}

// Load reads the known_hosts file at path. A file that does not exist is an
// empty DB, as every host is unknown before the first connection. As sshd's
// StrictModes does, a file that others than its owner may write is refused
// ([ErrFileWritable]), and so is one owned by another user than this
// process's, or root ([ErrFileOwner]); [Add] and the authorized_keys
// loaders refuse them too.
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
		return nil, errorf("%w (in %s)", err, path)
	}
	db.file = path
	return db, nil
}

// File returns the path the DB was loaded from, or "" if it was parsed from a
// reader.
func (db *DB) File() string { return db.file }

// Entries returns the file's usable lines, revoked ones included, in file
// order: for a program that finds a key by its fingerprint, say.
func (db *DB) Entries() []Entry {
	out := make([]Entry, len(db.entries))
	for i, e := range db.entries {
		out[i] = e.Entry
	}
	return out
}

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
	if err := db.checkBadRevoked(host, key); err != nil {
		return err
	}
	switch {
	case found:
		return nil
	case len(want) > 0:
		return &KeyChangedError{File: db.file, Addr: host, Key: key, Want: want}
	}
	var doubt []SkippedLine
	for _, b := range db.bad {
		if !b.entry.Revoked && b.hostsKnown && b.entry.matches(host) {
			doubt = append(doubt, SkippedLine{Line: b.entry.Line, Reason: b.reason})
		}
	}
	if len(doubt) > 0 {
		return &BadLineError{File: db.file, Addr: host, Lines: doubt}
	}
	unknown := &UnknownHostError{File: db.file, Addr: host, Key: key}
	for _, e := range db.entries {
		if !e.Revoked && e.Key.Equal(key) {
			unknown.KnownAs = append(unknown.KnownAs, e.Entry)
		}
	}
	return unknown
}

// checkBadRevoked refuses key for host if a malformed @revoked line may
// revoke it: one whose host field cannot be read, or matches host, and
// whose key cannot be read, or is key. A revocation fails closed: what it
// meant cannot be known, so it is taken at its widest.
func (db *DB) checkBadRevoked(host string, key securepeer.PublicKey) error {
	for _, b := range db.bad {
		if !b.entry.Revoked {
			continue
		}
		hostMay := !b.hostsKnown || b.entry.matches(host)
		keyMay := b.entry.Key.IsZero() || b.entry.Key.Equal(key)
		if hostMay && keyMay {
			return &BadLineError{File: db.file, Addr: host, Revoked: true,
				Lines: []SkippedLine{{Line: b.entry.Line, Reason: b.reason}}}
		}
	}
	return nil
}

// A BadLineError is returned by [DB.Check] when a malformed line may
// concern the address, so that its key can be neither trusted nor offered
// for trust on first use: a line whose host field lists the address but
// whose key cannot be read (the address may have been recorded with
// another key), or an @revoked line that may revoke the key. The lines
// must be fixed or removed.
type BadLineError struct {
	File    string // the known_hosts file, if loaded from one
	Addr    string // the normalized address
	Revoked bool   // the line is an @revoked line
	Lines   []SkippedLine
}

func (e *BadLineError) Error() string {
	nums := make([]string, len(e.Lines))
	for i, l := range e.Lines {
		nums[i] = strconv.Itoa(l.Line)
	}
	where := "known_hosts"
	if e.File != "" {
		where = e.File
	}
	what := "lists " + e.Addr
	if e.Revoked {
		what = "is an @revoked line that may apply to " + e.Addr
	}
	return fmt.Sprintf("knownhosts: %s line %s, which %s, cannot be read (%s)", where, strings.Join(nums, ", "), what, e.Lines[0].Reason)
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
		return "", errorf("address %q: want host:port", addr)
	}
	if host == "" {
		return "", errorf("address %q has no host", addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "", errorf("address %q: port must be a number from 1 to 65535", addr)
	}
	if strings.ContainsAny(host, " \t,#*?!|[]") {
		return "", errorf("address %q: invalid host name", addr)
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
		return "", newError("no address for the line")
	}
	if key.IsZero() {
		return "", newError("no key for the line")
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
		return "", newError("no key for the line")
	}
	salt := make([]byte, sha1.Size)
	if _, err := rand.Read(salt); err != nil {
		return "", errorf("%w", err)
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
		return 0, newError("a line to add must not contain a newline")
	}
	if _, ok, err := parseHostLine(1, line); err != nil {
		return 0, errorf("a line to add must be well formed: %s", err.reason)
	} else if !ok {
		return 0, newError("a line to add must list an ssh-ed25519 key")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return 0, errorf("%w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return 0, errorf("%w", err)
	}
	defer f.Close()
	if err := CheckFile(f, path); err != nil {
		return 0, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize))
	if err != nil {
		return 0, errorf("reading %s: %w", path, err)
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
		return 0, errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return 0, errorf("writing %s: %w", path, err)
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

// A lineError says why a line cannot be used, in words fit for a list of
// skipped lines.
type lineError struct {
	line   int
	reason string
}

func (e *lineError) Error() string {
	return fmt.Sprintf("knownhosts: line %d: %s", e.line, e.reason)
}

// parseHostLine parses line number n of a known_hosts file. ok is false for
// lines that are valid but carry nothing securepeer can use. A malformed
// line returns an error, and as much of the entry as could be read: its
// marker, its host patterns (nil if they cannot be read) and its key (zero
// if it cannot be read).
func parseHostLine(n int, line string) (e hostEntry, ok bool, err *lineError) {
	e.Line = n
	bad := func(format string, args ...any) (hostEntry, bool, *lineError) {
		return e, false, &lineError{n, fmt.Sprintf(format, args...)}
	}
	fields := strings.Fields(line)
	if len(fields) > 0 && strings.HasPrefix(fields[0], "@") {
		switch fields[0] {
		case "@revoked":
			e.Revoked = true
		case "@cert-authority":
			return e, false, nil
		default:
			return bad("unknown marker %.20q (want @revoked or @cert-authority)", fields[0])
		}
		fields = fields[1:]
	}
	if len(fields) == 0 {
		return bad("no host field")
	}
	if len(fields) >= 3 && fields[1] != "ssh-ed25519" {
		return e, false, nil // another key type, of no use here
	}
	e.Hosts = fields[0]
	hostsErr := e.parseHosts()
	if len(fields) < 3 {
		return bad("want \"host:port ssh-ed25519 AAAA...\", got %d fields", len(fields))
	}
	key, keyErr := securepeer.ParsePublicKey(fields[1] + " " + fields[2])
	if keyErr == nil {
		e.Key = key
	}
	switch {
	case keyErr != nil:
		return bad("the ssh-ed25519 key cannot be read (cut short or mistyped?)")
	case hostsErr != nil:
		return bad("%s", hostsErr)
	}
	e.Comment = strings.Join(fields[3:], " ")
	return e, true, nil
}

// parseHosts reads e.Hosts into e.patterns or e.hashed.
func (e *hostEntry) parseHosts() error {
	if rest, ok := strings.CutPrefix(e.Hosts, "|"); ok {
		h, err := parseHashed(rest)
		if err != nil {
			return err
		}
		e.hashed = h
		return nil
	}
	var patterns []string
	for p := range strings.SplitSeq(e.Hosts, ",") {
		if p == "" || p == "!" {
			return fmt.Errorf("empty host pattern in %.40q", e.Hosts)
		}
		patterns = append(patterns, strings.ToLower(p))
	}
	e.patterns = patterns
	return nil
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
		return errorf("line %d is longer than %d bytes", n+1, maxLineLength)
	}
	if err := sc.Err(); err != nil {
		return errorf("%w", err)
	}
	return nil
}
