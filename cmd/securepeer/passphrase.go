package main

// Keys as ssh users keep them: encrypted with a passphrase, which is asked
// for on the terminal as ssh asks for it, or only in ssh-agent, whose
// private key never enters this process.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/term"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/pkgerr"
)

// passphraseTries is how many times a passphrase is asked for, as ssh does.
const passphraseTries = 3

// askPassphrase asks on the terminal for the passphrase of the key at path,
// without echo, until it decrypts the key or three tries have failed. It
// never reads a passphrase from anywhere but the terminal.
func askPassphrase(path string) (*securepeer.Identity, error) {
	tty, err := openTerminal()
	if err != nil {
		return nil, pkgerr.Plainf("the key %s is protected by a passphrase and there is no terminal to ask for it; add it to ssh-agent (ssh-add %s) and pass -i %s.pub", path, path, path)
	}
	defer tty.Close()
	for try := 1; ; try++ {
		fmt.Fprintf(tty, "Enter passphrase for key '%s': ", path)
		pass, err := term.ReadPassword(tty.fd())
		fmt.Fprintln(tty)
		if err != nil {
			return nil, pkgerr.Plainf("reading the passphrase from the terminal: %v", err)
		}
		if len(pass) == 0 {
			return nil, rejectedErrorf("no passphrase given for %s", path)
		}
		id, err := securepeer.LoadIdentityWithPassphrase(path, pass)
		clear(pass)
		switch {
		case err == nil:
			return id, nil
		case !errors.Is(err, securepeer.ErrWrongPassphrase):
			return nil, err
		case try == passphraseTries:
			return nil, pkgerr.Plainf("%d wrong passphrases for %s (%w)", passphraseTries, path, securepeer.ErrWrongPassphrase)
		}
		fmt.Fprintln(tty, "Bad passphrase, try again.")
	}
}

// askNewPassphrase asks twice on the terminal for the passphrase of a new
// key, as ssh-keygen does; empty means none. Without a terminal there is
// no passphrase (a key for unattended use; README, "Keys").
func askNewPassphrase() ([]byte, error) {
	tty, err := openTerminal()
	if err != nil {
		return nil, nil
	}
	defer tty.Close()
	for {
		fmt.Fprint(tty, "Enter passphrase (empty for no passphrase): ")
		first, err := term.ReadPassword(tty.fd())
		fmt.Fprintln(tty)
		if err != nil {
			return nil, pkgerr.Plainf("reading the passphrase from the terminal: %v", err)
		}
		fmt.Fprint(tty, "Enter same passphrase again: ")
		second, err := term.ReadPassword(tty.fd())
		fmt.Fprintln(tty)
		if err != nil {
			return nil, pkgerr.Plainf("reading the passphrase from the terminal: %v", err)
		}
		if bytes.Equal(first, second) {
			clear(second)
			return first, nil
		}
		clear(first)
		clear(second)
		fmt.Fprintln(tty, "Passphrases do not match. Try again.")
	}
}

// agentOnlyIdentity is the default identity at path when the private key
// file is gone and path.pub is still there, which is how ssh users keep a
// key in ssh-agent only; as ssh does, the agent's copy is used, and
// nothing is made or overwritten. The agent proves it holds the key by
// signing, so a .pub whose key the agent does not hold is never used.
func (e *env) agentOnlyIdentity(path string) (*securepeer.Identity, error) {
	ak, err := e.agentOnlyKey(path)
	if err != nil {
		return nil, err
	}
	defer ak.close()
	id, err := securepeer.NewIdentityFromSSHSigner(ak.signer)
	if err != nil {
		return nil, pkgerr.Plainf("ssh-agent: %v; is it locked? (ssh-add -X unlocks it)", describe(err))
	}
	return id, nil
}

// agentOnlyPublicKey is agentOnlyIdentity for securepeer id: the agent is
// asked whether it holds the key of path.pub, not to sign with it.
func (e *env) agentOnlyPublicKey(path string) (securepeer.PublicKey, error) {
	ak, err := e.agentOnlyKey(path)
	if err != nil {
		return securepeer.PublicKey{}, err
	}
	ak.close()
	return ak.want, nil
}

// agentOnlyKey finds the key of path.pub in ssh-agent, for a default
// identity whose private key file path is gone, or says what to do.
func (e *env) agentOnlyKey(path string) (*agentKey, error) {
	fix := fmt.Sprintf("restore %s, or remove %s.pub so that a new identity is made", path, path)
	if e.getenv("SSH_AUTH_SOCK") == "" {
		return nil, pkgerr.Plainf("the private key %s is missing and %s.pub is there, so the key can only come from ssh-agent, but SSH_AUTH_SOCK is not set; start ssh-agent and add the key to it, or %s", path, path, fix)
	}
	ak, err := e.agentKey(path + ".pub")
	if err != nil {
		return nil, pkgerr.Plainf("the private key %s is missing, and its key could not be had from ssh-agent: %v; %s", path, err, fix)
	}
	if ak.signer == nil {
		ak.close()
		return nil, pkgerr.Plainf("the private key %s is missing, and ssh-agent does not hold the key of %s.pub (%s); add it to the agent, or %s", path, path, ak.want.Fingerprint(), fix)
	}
	return ak, nil
}

// publicKeyInClear returns the public key of the encrypted private key
// file at path without its passphrase, if path.pub lists the same key as
// the file's own clear copy. OpenSSH's key format ("openssh-key-v1", what
// ssh-keygen and keygen write) keeps each public key in clear beside the
// encrypted private key, and ssh reads it there to offer a key before
// asking for its passphrase. Nothing authenticates that copy, so it serves
// only to print the key, where no secret is needed and a wrong key can
// grant nothing: whoever could change it could replace the key file. Every
// use of the identity decrypts the key. A .pub that does not match, or a
// format without the clear copy (PEM), is not trusted: ok is false.
func publicKeyInClear(path string) (pk securepeer.PublicKey, ok bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return pk, false
	}
	var missing *ssh.PassphraseMissingError
	if _, err := ssh.ParseRawPrivateKey(data); !errors.As(err, &missing) || missing.PublicKey == nil {
		return pk, false
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		return pk, false
	}
	line, _, _ := strings.Cut(string(pub), "\n")
	if pk, err = securepeer.ParsePublicKey(line); err != nil {
		return pk, false
	}
	return pk, bytes.Equal(sshWire(pk), missing.PublicKey.Marshal())
}

// agentIdentity returns the identity whose public key is in the file
// pubPath, held by the ssh-agent at $SSH_AUTH_SOCK, or an error that says
// why it cannot be had. The agent signs here, and again each hour while
// the identity is in use (securepeer.NewIdentityFromSigner): once it no
// longer holds the key, the identity stops working within 90 minutes.
func (e *env) agentIdentity(pubPath string) (*securepeer.Identity, error) {
	ak, err := e.agentKey(pubPath)
	if err != nil {
		return nil, err
	}
	defer ak.close()
	if ak.signer == nil {
		return nil, ak.missing(strings.TrimSuffix(pubPath, ".pub"))
	}
	id, err := securepeer.NewIdentityFromSSHSigner(ak.signer)
	if err != nil {
		return nil, pkgerr.Plainf("ssh-agent: %v; is it locked? (ssh-add -X unlocks it)", describe(err))
	}
	return id, nil
}

// An agentKey is the key of a .pub file, looked up in ssh-agent.
type agentKey struct {
	pubPath string
	want    securepeer.PublicKey
	signer  ssh.Signer // nil if the agent does not hold want
	keys    int        // how many keys the agent holds
	conn    net.Conn
}

// agentKey reads the public key in pubPath and looks for it among the keys
// of the ssh-agent at $SSH_AUTH_SOCK, without asking the agent to sign. An
// error says why the agent could not be asked; an agent that was asked and
// does not hold the key is a nil signer. The caller closes it.
func (e *env) agentKey(pubPath string) (*agentKey, error) {
	data, err := os.ReadFile(pubPath)
	if err != nil {
		return nil, pkgerr.Plainf("reading the public key: %v", err)
	}
	want, err := securepeer.ParsePublicKey(string(data))
	if err != nil {
		return nil, pkgerr.Plainf("%s: %v", pubPath, err)
	}
	sock := e.getenv("SSH_AUTH_SOCK")
	if sock == "" {
		return nil, pkgerr.Plainf("%s is a public key, and its private key can only come from ssh-agent, but SSH_AUTH_SOCK is not set; start ssh-agent and ssh-add the key, or pass the private key file", pubPath)
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return nil, pkgerr.Plainf("cannot reach ssh-agent at %s: %v", sock, err)
	}
	signers, err := agent.NewClient(conn).Signers()
	if err != nil {
		conn.Close()
		return nil, pkgerr.Plainf("asking ssh-agent for its keys: %v", err)
	}
	ak := &agentKey{pubPath: pubPath, want: want, keys: len(signers), conn: conn}
	wantWire := sshWire(want)
	for _, s := range signers {
		if bytes.Equal(s.PublicKey().Marshal(), wantWire) {
			// Sign through a connection of its own each time, so that
			// the identity can renew its proofs after this one closes.
			ak.signer = agentSigner{sock, s.PublicKey()}
			break
		}
	}
	return ak, nil
}

func (ak *agentKey) close() { ak.conn.Close() }

// missing says that the agent does not hold the key, and how to add it
// from the private key file privPath.
func (ak *agentKey) missing(privPath string) error {
	if ak.keys == 0 {
		return pkgerr.Plainf("ssh-agent holds no keys (or is locked); add the key with ssh-add %s", privPath)
	}
	return pkgerr.Plainf("ssh-agent does not hold the key in %s (%s); add it with ssh-add %s", ak.pubPath, ak.want.Fingerprint(), privPath)
}

// agentSigner signs with a key of the ssh-agent at sock, connecting for each
// signature, so that an identity can renew its proofs for as long as the
// process runs, across agent restarts, without holding a connection open.
type agentSigner struct {
	sock string
	pub  ssh.PublicKey
}

func (a agentSigner) PublicKey() ssh.PublicKey { return a.pub }

func (a agentSigner) Sign(_ io.Reader, data []byte) (*ssh.Signature, error) {
	conn, err := net.Dial("unix", a.sock)
	if err != nil {
		return nil, pkgerr.Plainf("cannot reach ssh-agent at %s: %v", a.sock, err)
	}
	defer conn.Close()
	return agent.NewClient(conn).Sign(a.pub, data)
}

// sshWire is k in the SSH wire encoding, as an agent lists its keys.
func sshWire(k securepeer.PublicKey) []byte {
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k.String()))
	if err != nil {
		return nil
	}
	return pk.Marshal()
}
