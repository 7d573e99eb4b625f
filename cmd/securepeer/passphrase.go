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
)

// passphraseTries is how many times a passphrase is asked for, as ssh does.
const passphraseTries = 3

// askPassphrase asks on the terminal for the passphrase of the key at path,
// without echo, until it decrypts the key or three tries have failed. It
// never reads a passphrase from anywhere but the terminal.
func askPassphrase(path string) (*securepeer.Identity, error) {
	tty, err := openTerminal()
	if err != nil {
		return nil, fmt.Errorf("the key %s is protected by a passphrase and there is no terminal to ask for it; add it to ssh-agent (ssh-add %s) and pass -i %s.pub", path, path, path)
	}
	defer tty.Close()
	for try := 1; ; try++ {
		fmt.Fprintf(tty, "Enter passphrase for key '%s': ", path)
		pass, err := term.ReadPassword(tty.fd())
		fmt.Fprintln(tty)
		if err != nil {
			return nil, fmt.Errorf("reading the passphrase from the terminal: %v", err)
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
			return nil, fmt.Errorf("%d wrong passphrases for %s (%w)", passphraseTries, path, securepeer.ErrWrongPassphrase)
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
			return nil, fmt.Errorf("reading the passphrase from the terminal: %v", err)
		}
		fmt.Fprint(tty, "Enter same passphrase again: ")
		second, err := term.ReadPassword(tty.fd())
		fmt.Fprintln(tty)
		if err != nil {
			return nil, fmt.Errorf("reading the passphrase from the terminal: %v", err)
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

// agentIdentity returns the identity whose public key is in the file
// pubPath, held by the ssh-agent at $SSH_AUTH_SOCK, or an error that says
// why it cannot be had. The agent signs here, and again each hour while
// the identity is in use (securepeer.NewIdentityFromSigner): once it no
// longer holds the key, the identity stops working within 90 minutes.
func (e *env) agentIdentity(pubPath string) (*securepeer.Identity, error) {
	data, err := os.ReadFile(pubPath)
	if err != nil {
		return nil, fmt.Errorf("reading the public key: %v", err)
	}
	want, err := securepeer.ParsePublicKey(string(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %v", pubPath, err)
	}
	sock := e.getenv("SSH_AUTH_SOCK")
	if sock == "" {
		return nil, fmt.Errorf("%s is a public key, and its private key can only come from ssh-agent, but SSH_AUTH_SOCK is not set; start ssh-agent and ssh-add the key, or pass the private key file", pubPath)
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("cannot reach ssh-agent at %s: %v", sock, err)
	}
	defer conn.Close()
	signers, err := agent.NewClient(conn).Signers()
	if err != nil {
		return nil, fmt.Errorf("asking ssh-agent for its keys: %v", err)
	}
	wantWire := sshWire(want)
	for _, s := range signers {
		if bytes.Equal(s.PublicKey().Marshal(), wantWire) {
			id, err := securepeer.NewIdentityFromSSHSigner(agentSigner{sock, s.PublicKey()})
			if err != nil {
				return nil, fmt.Errorf("ssh-agent: %v; is it locked? (ssh-add -X unlocks it)", describe(err))
			}
			return id, nil
		}
	}
	if len(signers) == 0 {
		return nil, fmt.Errorf("ssh-agent holds no keys (or is locked); add the key with ssh-add %s", strings.TrimSuffix(pubPath, ".pub"))
	}
	return nil, fmt.Errorf("ssh-agent does not hold the key in %s (%s); add it with ssh-add %s", pubPath, want.Fingerprint(), strings.TrimSuffix(pubPath, ".pub"))
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
		return nil, fmt.Errorf("cannot reach ssh-agent at %s: %v", a.sock, err)
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
