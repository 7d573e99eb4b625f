package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/pkgerr"
	"github.com/securepeer/securepeer/legacy"
)

const keygenUsage = `Usage: securepeer keygen [-f FILE] [-force] [-C COMMENT]
       securepeer keygen -legacy [-f FILE] [-force] [-bits N]

Makes a new identity: an Ed25519 key pair written as an OpenSSH private key
FILE (mode 0600) and its public key FILE.pub, the form ssh-keygen writes, and
prints the public key and its fingerprint. Give the public key to the peers
that should accept you; keep FILE secret.

On a terminal it asks for a passphrase twice, as ssh-keygen does, and
encrypts FILE with it (empty for none); later commands ask for it on the
terminal, or use the key's copy in ssh-agent. It never takes a passphrase
on the command line. Without a terminal FILE is written unencrypted, for a
service that starts unattended: protect it by its mode, or keep the key in
ssh-agent only and pass -i FILE.pub.

Flags:
    -f FILE       where to write the key (default $SECUREPEER_HOME/id_ed25519,
                  or ~/.securepeer/id_ed25519)
    -force        overwrite an existing FILE and FILE.pub; the old identity is lost
    -C COMMENT    the comment stored in the key and FILE.pub (default user@host)
    -legacy       make an RSA key for the insecure Node secure-peer 0.2 protocol
                  instead, as one rsa-json file ({"private": PEM, "public": PEM},
                  mode 0600) that the Node module loads too; prints its public
                  key PEM and legacy fingerprint (default FILE
                  $SECUREPEER_HOME/id_legacy_rsa.json)
    -bits N       -legacy only: the RSA key size (default 2048)

Examples:
    securepeer keygen
    securepeer keygen -f server.key
    cat server.key.pub >> friends.pub      # on a server: allow this key
    securepeer keygen -legacy -f keys.json # for securepeer listen -legacy -i keys.json
`

const idUsage = `Usage: securepeer id [-i FILE]
       securepeer id -legacy [-i KEYS.json]

Prints the public key of an identity, in the "ssh-ed25519 AAAA..." form that
allow files and -expect take, and its SHA256 fingerprint, as ssh-keygen -lf
prints it. Without -i, the default identity is created if it does not exist.
An encrypted key is printed without its passphrase when FILE.pub lists the
key that the key file keeps in clear (OpenSSH's format does); otherwise
the passphrase is asked for, as FILE.pub alone proves nothing. A default
identity whose private key file is gone and whose .pub is still there is
read from ssh-agent, which must hold it.

Flags:
    -i FILE    the identity (private key) file; an ssh-keygen -t ed25519 key works,
               encrypted or not; FILE.pub prints the public key from that alone
    -legacy    FILE is an rsa-json key file of the Node secure-peer 0.2 protocol
               (default $SECUREPEER_HOME/id_legacy_rsa.json, never created
               here): print its public key PEM, exactly as it is sent to
               peers, then its legacy fingerprint (SHA256 of the DER public
               key), which -expect and -allow take in -legacy mode

Examples:
    securepeer id
    securepeer id -i ~/.ssh/id_ed25519
    securepeer id | head -1 | ssh server 'cat >> friends.pub'
    securepeer id -legacy -i keys.json > keys.pub.pem   # -expect takes this file
`

// homeDir returns the directory that holds the default identity and
// known_hosts: $SECUREPEER_HOME, or ~/.securepeer. It refuses one that
// others can write (see checkHome); whoever creates it creates it 0700.
func (e *env) homeDir() (string, error) {
	if h := e.getenv("SECUREPEER_HOME"); h != "" {
		return h, checkHome(h, "$SECUREPEER_HOME "+h)
	}
	home := e.getenv("HOME")
	if home == "" {
		var err error
		if home, err = os.UserHomeDir(); err != nil {
			return "", pkgerr.Plainf("cannot find the home directory; set SECUREPEER_HOME: %v", err)
		}
	}
	dir := filepath.Join(home, ".securepeer")
	return dir, checkHome(dir, "~/.securepeer ("+dir+")")
}

func (e *env) defaultIdentityPath() (string, error) {
	dir, err := e.homeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "id_ed25519"), nil
}

// loadIdentity loads the identity at path, or the default identity if path
// is empty, creating the default one (with a notice) if it does not exist.
// A default identity whose private key file is gone while its .pub is
// still there is kept in ssh-agent (agentOnlyIdentity).
func (e *env) loadIdentity(path string) (*securepeer.Identity, error) {
	id, _, err := e.loadKey(path, false)
	return id, err
}

// loadPublicKey is loadIdentity for securepeer id, which needs no secret:
// an encrypted key's public key is read without its passphrase when that
// is safe (publicKeyInClear), and the agent is only asked whether it holds
// a key, not to sign.
func (e *env) loadPublicKey(path string) (securepeer.PublicKey, error) {
	_, pk, err := e.loadKey(path, true)
	return pk, err
}

// loadKey is loadIdentity, or with publicOnly loadPublicKey, which returns
// no identity.
func (e *env) loadKey(path string, publicOnly bool) (*securepeer.Identity, securepeer.PublicKey, error) {
	explicit := path != ""
	if !explicit {
		var err error
		if path, err = e.defaultIdentityPath(); err != nil {
			return nil, securepeer.PublicKey{}, err
		}
	}
	if strings.HasSuffix(path, ".pub") {
		// A public key: the private key is in ssh-agent, as with ssh -i.
		return withPublicKey(e.agentIdentity(path))
	}
	if explicit {
		if err := checkFileDir(path); err != nil {
			return nil, securepeer.PublicKey{}, err
		}
	}
	_, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !explicit:
		if _, err := os.Lstat(path + ".pub"); err == nil {
			if publicOnly {
				pk, err := e.agentOnlyPublicKey(path)
				return nil, pk, err
			}
			return withPublicKey(e.agentOnlyIdentity(path))
		}
		id, err := securepeer.GenerateIdentity()
		if err != nil {
			return nil, securepeer.PublicKey{}, err
		}
		if err := writeIdentity(path, id, defaultComment(), false); err != nil {
			return nil, securepeer.PublicKey{}, err
		}
		e.notef("created a new identity %s (%s); share %s.pub with your peers", path, id.PublicKey().Fingerprint(), path)
		return id, id.PublicKey(), nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, securepeer.PublicKey{}, pkgerr.Plainf("identity file %s does not exist; create it with securepeer keygen -f %s, or leave out -i to use the default identity", path, path)
	}
	id, err := securepeer.LoadIdentity(path)
	switch {
	case errors.Is(err, securepeer.ErrIdentityFileMode):
		return nil, securepeer.PublicKey{}, pkgerr.Plainf("%w; run chmod 600 %s", err, path)
	case errors.Is(err, securepeer.ErrPassphraseNeeded):
		if publicOnly {
			if pk, ok := publicKeyInClear(path); ok {
				return nil, pk, nil
			}
		}
		// As ssh does: the agent's copy if it has one, else ask.
		if e.getenv("SSH_AUTH_SOCK") != "" {
			if id, err := e.agentIdentity(path + ".pub"); err == nil {
				return id, id.PublicKey(), nil
			}
		}
		return withPublicKey(askPassphrase(path))
	case err != nil:
		return nil, securepeer.PublicKey{}, err
	}
	return id, id.PublicKey(), nil
}

// withPublicKey adds id's public key to loadKey's results.
func withPublicKey(id *securepeer.Identity, err error) (*securepeer.Identity, securepeer.PublicKey, error) {
	if err != nil {
		return nil, securepeer.PublicKey{}, err
	}
	return id, id.PublicKey(), nil
}

func runKeygen(_ context.Context, e *env, args []string) error {
	fset := flag.NewFlagSet("keygen", flag.ContinueOnError)
	file := fset.String("f", "", "")
	force := fset.Bool("force", false, "")
	comment := fset.String("C", defaultComment(), "")
	legacyMode := fset.Bool("legacy", false, "")
	bits := fset.Int("bits", 0, "")
	rest, err := parseFlags(fset, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("keygen: unexpected argument %q; the file goes after -f, as in securepeer keygen -f %s", rest[0], rest[0])
	}
	if *legacyMode {
		if isFlagSet(fset, "C") {
			return usageErrorf("keygen: -C does not apply to -legacy; rsa-json files have no comment")
		}
		if *bits == 0 {
			*bits = legacy.MinGenerateBits
		}
		return runKeygenLegacy(e, *file, *bits, *force)
	}
	if *bits != 0 {
		return usageErrorf("keygen: -bits is for -legacy RSA keys only; Ed25519 keys have one size")
	}
	if strings.ContainsAny(*comment, "\r\n") {
		return usageErrorf("keygen: the comment must be one line")
	}
	path := *file
	if path == "" {
		if path, err = e.defaultIdentityPath(); err != nil {
			return err
		}
	}
	if strings.HasSuffix(path, ".pub") {
		return usageErrorf("keygen: -f names the private key file; %s.pub is written next to it", strings.TrimSuffix(path, ".pub"))
	}
	if *file != "" {
		if err := checkFileDir(path); err != nil {
			return err
		}
	}
	id, err := securepeer.GenerateIdentity()
	if err != nil {
		return err
	}
	passphrase, err := askNewPassphrase()
	if err != nil {
		return err
	}
	defer clear(passphrase)
	if err := writeIdentityWithPassphrase(path, id, *comment, *force, passphrase); err != nil {
		return err
	}
	printPublicKey(e, id.PublicKey())
	return nil
}

func runID(_ context.Context, e *env, args []string) error {
	fset := flag.NewFlagSet("id", flag.ContinueOnError)
	idFile := fset.String("i", "", "")
	legacyMode := fset.Bool("legacy", false, "")
	rest, err := parseFlags(fset, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErrorf("id: unexpected argument %q; the identity file goes after -i, as in securepeer id -i %s", rest[0], rest[0])
	}
	if *legacyMode {
		keys, err := e.loadLegacyKeys(*idFile)
		if err != nil {
			return err
		}
		printLegacyKey(e, keys)
		return nil
	}
	if strings.HasSuffix(*idFile, ".pub") {
		// The public key alone is enough to print it.
		data, err := os.ReadFile(*idFile)
		if err != nil {
			return err
		}
		k, err := securepeer.ParsePublicKey(string(data))
		if err != nil {
			return pkgerr.Plainf("%s: %w", *idFile, err)
		}
		printPublicKey(e, k)
		return nil
	}
	pk, err := e.loadPublicKey(*idFile)
	if err != nil {
		return err
	}
	printPublicKey(e, pk)
	return nil
}

func printPublicKey(e *env, k securepeer.PublicKey) {
	fmt.Fprintln(e.stdout, k.String())
	fmt.Fprintln(e.stdout, k.Fingerprint())
}

// writeIdentity writes id to path (mode 0600) and its public key to
// path.pub, creating the directory (mode 0700) if needed. Without force it
// refuses to replace either file. Each file is written to a temporary name
// and renamed, so a crash never leaves half a key.
func writeIdentity(path string, id *securepeer.Identity, comment string, force bool) error {
	return writeIdentityWithPassphrase(path, id, comment, force, nil)
}

// writeIdentityWithPassphrase is writeIdentity with the private key
// encrypted with passphrase, unless it is empty.
func writeIdentityWithPassphrase(path string, id *securepeer.Identity, comment string, force bool, passphrase []byte) error {
	pubPath := path + ".pub"
	if !force {
		for _, p := range []string{path, pubPath} {
			if _, err := os.Lstat(p); err == nil {
				return pkgerr.Plainf("%s already exists; use -force to overwrite it (the identity in it will be lost) or -f to write elsewhere", p)
			}
		}
	}
	var priv []byte
	var err error
	if len(passphrase) > 0 {
		priv, err = id.MarshalOpenSSHWithPassphrase(comment, passphrase)
	} else {
		priv, err = id.MarshalOpenSSH(comment)
	}
	if err != nil {
		return err
	}
	pub := id.PublicKey().String()
	if comment != "" {
		pub += " " + comment
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := writeFileAtomic(path, priv, 0o600, force); err != nil {
		return err
	}
	return writeFileAtomic(pubPath, []byte(pub+"\n"), 0o644, force)
}

func writeFileAtomic(path string, data []byte, perm os.FileMode, replace bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename, this fails harmlessly
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if !replace {
		// Link fails if path exists, closing the race with another keygen
		// between the check in writeIdentity and here.
		if err := os.Link(tmp.Name(), path); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return pkgerr.Plainf("%s already exists; use -force to overwrite it", path)
			}
			return err
		}
		return nil
	}
	return os.Rename(tmp.Name(), path)
}

// defaultComment is what ssh-keygen puts in keys: user@host.
func defaultComment() string {
	name := "securepeer"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		name += "@" + h
	}
	return name
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
