package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/pkgerr"
	"github.com/securepeer/securepeer/knownhosts"
)

// hostPolicy is how connect decides whether the peer at addr is the one the
// user means: a key pinned with -expect, or else known_hosts, as ssh does.
type hostPolicy struct {
	e         *env
	log       *slog.Logger
	addr      string         // the address as the user wrote it
	file      string         // the known_hosts file
	expect    string         // the pinned fingerprint, if any
	acceptNew bool           // -accept-new: trust and record an unknown host's key
	self      func() peerKey // this side's identity, to say so if the peer has it too

	mu sync.Mutex // serializes prompts and updates of file
}

// parseExpect turns the argument of -expect into a fingerprint: it takes a
// fingerprint, a public key line, or a file holding one (such as a .pub).
func parseExpect(s string) (string, error) {
	s = strings.TrimSpace(s)
	switch {
	case strings.HasPrefix(s, "SHA256:"):
		fp := strings.TrimRight(s, "=")
		if len(fp) != len("SHA256:")+43 {
			return "", usageErrorf("-expect %q: a SHA256 fingerprint has 43 characters after \"SHA256:\"; copy it whole from securepeer id", s)
		}
		return fp, nil
	case strings.HasPrefix(s, "ssh-"):
		k, err := securepeer.ParsePublicKey(s)
		if err != nil {
			return "", usageErrorf("-expect: %v", describe(err))
		}
		return k.Fingerprint(), nil
	}
	data, err := os.ReadFile(s)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", usageErrorf("-expect %s: no such file; -expect takes a fingerprint (SHA256:...), a key (ssh-ed25519 AAAA...) or a key file such as the peer's .pub", s)
	case err != nil:
		return "", usageErrorf("-expect %q is not a fingerprint (SHA256:...), a key (ssh-ed25519 AAAA...) or a readable key file: %v", s, err)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
	k, err := securepeer.ParsePublicKey(line)
	if err != nil {
		return "", usageErrorf("-expect %s: %v", s, describe(err))
	}
	return k.Fingerprint(), nil
}

func (p *hostPolicy) verify(ctx context.Context, key peerKey) error {
	fp := key.Fingerprint()
	if p.expect != "" {
		if subtle.ConstantTimeCompare([]byte(fp), []byte(p.expect)) != 1 {
			return rejectedErrorf("the peer at %s has key %s, not the %s given with -expect; check the address, and where you got the expected key", p.addr, fp, p.expect)
		}
		p.log.Info("peer key matches -expect", "peer", fp)
		return nil
	}
	pk, ok := key.(securepeer.PublicKey)
	if !ok {
		return rejectedErrorf("known_hosts holds only ssh-ed25519 keys; pin the peer at %s with -expect %s", p.addr, fp)
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	db, err := knownhosts.Load(p.file)
	if err != nil {
		return pkgerr.Plainf("%v%s", describe(err), fileFix(err, p.file, "fix or move the file"))
	}
	for _, l := range db.SkippedLines() {
		p.e.notef("%s line %d skipped: %s", p.file, l.Line, l.Reason)
	}
	err = db.Check(p.addr, pk)
	var (
		unknown *knownhosts.UnknownHostError
		changed *knownhosts.KeyChangedError
		revoked *knownhosts.RevokedError
		bad     *knownhosts.BadLineError
	)
	switch {
	case err == nil:
		p.log.Info("peer key is in known_hosts", "peer", fp, "file", p.file)
		return nil
	case errors.As(err, &changed):
		p.warnChanged(changed)
		w := changed.Want[0]
		return rejectedErrorf("peer key %s does not match known_hosts line %d for %s; if the key changed on purpose, remove that line from %s (ssh-keygen -R '%s' -f %s does it)",
			fp, w.Line, p.addr, p.file, changed.Addr, p.file)
	case errors.As(err, &revoked):
		return rejectedErrorf("peer key %s for %s is revoked in %s line %d; refusing it", fp, p.addr, p.file, revoked.Entry.Line)
	case errors.As(err, &bad) && bad.Revoked:
		return rejectedErrorf("%s line %d is an @revoked line that cannot be read, and may revoke the key %s of %s, so it is refused; fix or remove that line",
			p.file, bad.Lines[0].Line, fp, p.addr)
	case errors.As(err, &bad):
		return rejectedErrorf("%s line %d lists %s but cannot be read, so whether key %s is the one recorded there cannot be told; fix or remove that line",
			p.file, bad.Lines[0].Line, p.addr, fp)
	case errors.As(err, &unknown):
		return p.firstContact(ctx, pk, unknown)
	}
	return pkgerr.Plainf("%v", describe(err))
}

// firstContact handles a host that known_hosts does not list: -accept-new
// records it, a terminal is asked, anything else refuses.
func (p *hostPolicy) firstContact(ctx context.Context, key securepeer.PublicKey, unknown *knownhosts.UnknownHostError) error {
	fp := key.Fingerprint()
	// The peer may use this side's own identity: a listen with the same home
	// directory, or a relay that connects this side to another session of
	// itself (PROTOCOL.md, "A peer with this side's own key"). Say so.
	own := key == p.self()
	if own && p.acceptNew {
		p.e.notef("the peer at %s uses your own identity (%s): it is another securepeer with your key, such as a listen with the same home directory", p.addr, fp)
	}
	if !p.acceptNew {
		var also string
		if own {
			also += "\nThis is YOUR OWN identity: the peer is another securepeer with your key (such as a listen with\nthe same home directory), or someone relaying your connection to one."
		}
		for _, e := range unknown.KnownAs {
			also += fmt.Sprintf("\nThis key is already known as %s (%s line %d).", e.Hosts, p.file, e.Line)
		}
		question := fmt.Sprintf("The authenticity of peer '%s' can't be established.\nED25519 key fingerprint is %s.%s\nAre you sure you want to continue connecting (yes/no/[fingerprint])? ", p.addr, fp, also)
		yes, err := askYesNo(ctx, question, fp)
		switch {
		case errors.Is(err, errNoTerminal):
			return rejectedErrorf("%s is not a known host and there is no terminal to ask; its key is %s. Check that fingerprint with the peer's owner, then run again with -accept-new (or -expect %s)", p.addr, fp, fp)
		case err != nil:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		case !yes:
			return rejectedErrorf("host key verification failed: the key of %s was not confirmed", p.addr)
		}
	}
	line, err := knownhosts.Line([]string{p.addr}, key)
	if err != nil {
		return err
	}
	n, err := knownhosts.Add(p.file, line)
	if err != nil {
		return pkgerr.Plainf("%v; the key was not recorded%s", describe(err), fileFix(err, p.file, ""))
	}
	p.e.notef("permanently added %s (%s) to %s line %d", p.addr, fp, p.file, n)
	return nil
}

// warnChanged prints ssh's kind of loud warning before the one-line error.
func (p *hostPolicy) warnChanged(err *knownhosts.KeyChangedError) {
	const bar = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@"
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n@    WARNING: REMOTE PEER IDENTIFICATION HAS CHANGED!     @\n%s\n", bar, bar)
	b.WriteString("IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n")
	b.WriteString("Someone could be eavesdropping on you right now (man-in-the-middle attack)!\n")
	b.WriteString("It is also possible that the peer's key has just been changed.\n")
	fmt.Fprintf(&b, "The key sent by %s is\n%s.\n", p.addr, err.Key.Fingerprint())
	for _, w := range err.Want {
		fmt.Fprintf(&b, "Expected %s (%s line %d).\n", w.Key.Fingerprint(), p.file, w.Line)
	}
	fmt.Fprint(p.e.stderr, b.String())
}

// allowPolicy is how listen -allow decides who may connect: the keys in an
// authorized_keys file, read again whenever it changes.
type allowPolicy struct {
	e    *env
	log  *slog.Logger
	file *knownhosts.AuthorizedKeysFile
}

func newAllowPolicy(e *env, log *slog.Logger, path string) (*allowPolicy, error) {
	f, err := knownhosts.OpenAuthorizedKeys(path)
	if err != nil {
		return nil, pkgerr.Plainf("-allow: %v%s", describe(err), fileFix(err, path, ""))
	}
	keys, _, _ := f.Current()
	noteSkipped(e, path, keys)
	if keys.Len() == 0 {
		e.notef("warning: %s lists no ssh-ed25519 key, so every peer will be refused until one is added", path)
	}
	log.Info("allow file loaded", "file", path, "keys", keys.Len(), "skipped", keys.Skipped())
	return &allowPolicy{e: e, log: log, file: f}, nil
}

// noteSkipped tells of each line of an -allow file that admits nobody, as
// sshd logs the authorized_keys lines it skips.
func noteSkipped(e *env, path string, keys *knownhosts.AuthorizedKeys) {
	for _, l := range keys.SkippedLines() {
		e.notef("%s line %d skipped: %s", path, l.Line, l.Reason)
	}
}

func (p *allowPolicy) verify(_ context.Context, key peerKey) error {
	pk, ok := key.(securepeer.PublicKey)
	if !ok {
		return rejectedErrorf("%s is not an ssh-ed25519 key, which is all -allow files hold", key.Fingerprint())
	}
	keys, changed, err := p.file.Current()
	if err != nil {
		p.e.notef("cannot use the -allow file, refusing every peer until it is fixed: %v%s", describe(err), fileFix(err, p.file.Path(), ""))
		return rejectedErrorf("the -allow file is unusable")
	}
	if changed {
		noteSkipped(p.e, p.file.Path(), keys)
		p.log.Info("allow file reloaded", "file", p.file.Path(), "keys", keys.Len(), "skipped", keys.Skipped())
	}
	e, ok := keys.Lookup(pk)
	if !ok {
		return rejectedErrorf("key %s is not listed in %s; to let it in, add its public key line (securepeer id prints it) to that file", pk.Fingerprint(), p.file.Path())
	}
	p.log.Info("peer allowed", "peer", pk.Fingerprint(), "line", e.Line, "comment", e.Comment)
	return nil
}

// fileFix says, after "; ", how to fix a known_hosts or -allow file at
// path that could not be used for err, or else what otherwise says, if
// anything.
func fileFix(err error, path, otherwise string) string {
	switch {
	case errors.Is(err, knownhosts.ErrFileWritable):
		return "; run chmod go-w " + path
	case errors.Is(err, knownhosts.ErrFileOwner):
		return "; use a file of your own"
	case otherwise != "":
		return "; " + otherwise
	}
	return ""
}

// knownHostsPath returns the known_hosts file: -known-hosts, or known_hosts
// next to the default identity. Either way it refuses a directory that
// others can write, and a file that others can write or that another user
// owns, before any connection is made.
func (e *env) knownHostsPath(flagValue string) (string, error) {
	path := flagValue
	if path != "" {
		if err := checkFileDir(path); err != nil {
			return "", err
		}
	} else {
		dir, err := e.homeDir()
		if err != nil {
			return "", err
		}
		path = filepath.Join(dir, "known_hosts")
	}
	if _, err := knownhosts.Load(path); errors.Is(err, knownhosts.ErrFileWritable) || errors.Is(err, knownhosts.ErrFileOwner) {
		return "", pkgerr.Plainf("%v%s", describe(err), fileFix(err, path, ""))
	}
	return path, nil
}
