package main

// Naming the peer connect reaches: a TCP address, as always, or the
// peer's key, which the p2p engine reaches through relays and hole
// punching wherever the peer is.

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/pkgerr"
	"github.com/securepeer/securepeer/knownhosts"
)

// A peerTarget is the peer connect names: an address, or a key.
type peerTarget struct {
	addr string               // HOST:PORT, when the peer is reached over TCP
	key  securepeer.PublicKey // the peer's key, when it is reached by key
	// how says how the key was found, for -v: "key file bob.pub",
	// "known_hosts line 3".
	how string
}

// byKey reports whether the peer is reached by its key, through the p2p
// engine.
func (t peerTarget) byKey() bool { return !t.key.IsZero() }

// resolvePeer reads connect's PEER argument. In order, it is:
//
//   - a fingerprint, SHA256:..., of a key that known_hosts lists (a
//     fingerprint names a key but does not hold it, and the key is what
//     is dialed);
//   - a key line, "ssh-ed25519 AAAA...", as securepeer id prints it;
//   - HOST:PORT, a TCP address, as always;
//   - a file that holds a key line, such as the peer's .pub;
//   - a name that known_hosts lists with one key, as the line "bob
//     ssh-ed25519 AAAA..." does.
//
// knownHosts returns the known_hosts file to look fingerprints and names
// up in; it is called only for them, so that connect -expect HOST:PORT
// reads no known_hosts. Anything else is a usage error that says what
// PEER may be.
func resolvePeer(arg string, knownHosts func() (string, error)) (peerTarget, error) {
	s := strings.TrimSpace(arg)
	switch {
	case strings.HasPrefix(s, "SHA256:"):
		return resolveFingerprint(s, knownHosts)
	case strings.HasPrefix(s, "ssh-") && strings.ContainsAny(s, " \t"):
		k, err := securepeer.ParsePublicKey(s)
		if err != nil {
			return peerTarget{}, usageErrorf("connect: the peer key %q: %v", s, describe(err))
		}
		return peerTarget{key: k, how: "key given"}, nil
	case isHostPort(s):
		return peerTarget{addr: arg}, nil
	}
	if t, ok, err := resolveKeyFile(s); ok || err != nil {
		return t, err
	}
	if t, ok, err := resolveName(s, knownHosts); ok || err != nil {
		return t, err
	}
	if looksLikeName(s) {
		kh, _ := knownHosts()
		return peerTarget{}, usageErrorf("connect: %q is neither HOST:PORT nor a peer known by key: no file has that name, and %s lists no such name; name the peer by its .pub file, its key line (securepeer id prints it) or its fingerprint, or add a line \"%s ssh-ed25519 AAAA...\" to known_hosts; or did you mean %s:5000?", s, kh, s, s)
	}
	if err := checkAddr("peer address", arg, true); err != nil {
		return peerTarget{}, err
	}
	return peerTarget{addr: arg}, nil
}

// looksLikeName reports whether s could only be a name for a key: a word
// that is neither an IP address nor a DNS name with a dot, which would be
// a host whose port is missing.
func looksLikeName(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil || strings.Contains(s, ".") || isDigits(s) {
		return false
	}
	return s != "" && !strings.ContainsAny(s, " \t:/[],#*?!|")
}

// isHostPort reports whether s has the form HOST:PORT, with a host and a
// port, whatever they are; checkAddr says what is wrong with them.
func isHostPort(s string) bool {
	host, port, err := net.SplitHostPort(s)
	return err == nil && host != "" && port != ""
}

// resolveFingerprint finds the key with fingerprint fp in known_hosts.
func resolveFingerprint(fp string, knownHostsPath func() (string, error)) (peerTarget, error) {
	fp = strings.TrimRight(fp, "=")
	if len(fp) != len("SHA256:")+43 {
		return peerTarget{}, usageErrorf("connect: %q: a SHA256 fingerprint has 43 characters after \"SHA256:\"; copy it whole from securepeer id", fp)
	}
	knownHosts, db, err := loadKnownHosts(knownHostsPath)
	if err != nil {
		return peerTarget{}, err
	}
	for _, e := range db.Entries() {
		if !e.Revoked && e.Key.Fingerprint() == fp && !revokedIn(db, e.Key) {
			return peerTarget{key: e.Key, how: fmt.Sprintf("%s line %d", knownHosts, e.Line)}, nil
		}
	}
	return peerTarget{}, usageErrorf("connect: %s is not a key you know: a fingerprint names a key but does not hold it, and securepeer dials the key; give the peer's .pub file or its key line (securepeer id prints it), or add it to %s as \"NAME ssh-ed25519 AAAA...\"", fp, knownHosts)
}

// loadKnownHosts loads the known_hosts file that path returns.
func loadKnownHosts(path func() (string, error)) (string, *knownhosts.DB, error) {
	file, err := path()
	if err != nil {
		return "", nil, err
	}
	db, err := knownhosts.Load(file)
	if err != nil {
		return "", nil, pkgerr.Plainf("%v%s", describe(err), fileFix(err, file, "fix or move the file"))
	}
	return file, db, nil
}

// revokedIn reports whether an @revoked line of db lists key.
func revokedIn(db *knownhosts.DB, key securepeer.PublicKey) bool {
	for _, e := range db.Entries() {
		if e.Revoked && e.Key.Equal(key) {
			return true
		}
	}
	return false
}

// resolveKeyFile reads a key from the file path, if there is one: the
// first line, as in a .pub. ok is false if there is no such file and the
// name does not end with .pub (so it may be a name).
func resolveKeyFile(path string) (t peerTarget, ok bool, err error) {
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && strings.HasSuffix(path, ".pub"):
		return peerTarget{}, true, usageErrorf("connect: %s: no such file; name the peer by its .pub file, its key line, its fingerprint or a known_hosts name", path)
	case errors.Is(err, fs.ErrNotExist):
		return peerTarget{}, false, nil
	case err != nil:
		return peerTarget{}, true, pkgerr.Plainf("reading the peer's key from %s: %v", path, err)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
	k, err := securepeer.ParsePublicKey(line)
	if err != nil {
		return peerTarget{}, true, usageErrorf("connect: %s does not hold a peer key: %v; it should hold the line securepeer id prints", path, describe(err))
	}
	return peerTarget{key: k, how: "key file " + path}, true, nil
}

// resolveName finds the key known_hosts lists for name, a host pattern
// with no port, as ssh writes port 22 (the line "bob ssh-ed25519 AAAA...").
// ok is false if known_hosts does not list name.
func resolveName(name string, knownHostsPath func() (string, error)) (t peerTarget, ok bool, err error) {
	if name == "" || strings.ContainsAny(name, " \t:/[],#*?!|") {
		return peerTarget{}, false, nil
	}
	knownHosts, db, err := loadKnownHosts(knownHostsPath)
	if err != nil {
		return peerTarget{}, true, err
	}
	// known_hosts writes a host on port 22 without its port, so this is
	// the lookup of the bare name.
	entries, err := db.Lookup(net.JoinHostPort(name, "22"))
	if err != nil {
		return peerTarget{}, false, nil
	}
	var live []knownhosts.Entry // one line for each key, not revoked
	revoked := false
	for _, e := range entries {
		switch {
		case e.Revoked || revokedIn(db, e.Key):
			revoked = true
		case !slices.ContainsFunc(live, func(l knownhosts.Entry) bool { return l.Key.Equal(e.Key) }):
			live = append(live, e)
		}
	}
	switch {
	case len(live) == 0 && revoked:
		return peerTarget{}, true, rejectedErrorf("the key %s lists for %s is revoked there; refusing it", knownHosts, name)
	case len(live) == 0:
		return peerTarget{}, false, nil
	case len(live) > 1:
		return peerTarget{}, true, usageErrorf("connect: %s lists %s with several keys (lines %d and %d); keep one, or name the peer by its .pub file", knownHosts, name, live[0].Line, live[1].Line)
	}
	return peerTarget{key: live[0].Key, how: fmt.Sprintf("%s line %d", knownHosts, live[0].Line)}, true, nil
}
