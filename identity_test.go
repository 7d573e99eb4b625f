package securepeer

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/securepeer/securepeer/internal/testenv"
)

func TestIdentityOpenSSHRoundTrip(t *testing.T) {
	id, err := GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	data, err := id.MarshalOpenSSH("alice@example")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), "-----BEGIN OPENSSH PRIVATE KEY-----") {
		t.Fatalf("not an OpenSSH key:\n%s", data)
	}
	back, err := ParseIdentity(data)
	if err != nil {
		t.Fatal(err)
	}
	if back.PublicKey() != id.PublicKey() || !back.priv.Equal(id.priv) {
		t.Fatal("round trip changed the key")
	}
	if !back.static.Equal(id.static) {
		t.Fatal("the derived static key is not deterministic")
	}
}

func TestParseIdentityPKCS8(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	id, err := ParseIdentity(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	if !id.priv.Equal(priv) {
		t.Fatal("wrong key")
	}
}

func TestParseIdentityErrors(t *testing.T) {
	tests := []struct {
		name, data, want string
	}{
		{"empty", "", "not an OpenSSH"},
		{"garbage", "hello", "not an OpenSSH"},
		{"public key", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl", "not an OpenSSH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseIdentity([]byte(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// TestSSHKeygenCompatibility checks that a key made by ssh-keygen is an
// identity, and that our fingerprint and public key line are ssh-keygen's.
func TestSSHKeygenCompatibility(t *testing.T) {
	keygen := testenv.RequireTool(t, "ssh-keygen")
	dir := t.TempDir()
	path := filepath.Join(dir, "id_ed25519")
	if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	id, err := LoadIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := id.PublicKey().String(), strings.Join(strings.Fields(string(pub))[:2], " "); got != want {
		t.Errorf("String() = %q, ssh-keygen wrote %q", got, want)
	}
	out, err := exec.Command(keygen, "-l", "-E", "sha256", "-f", path+".pub").Output()
	if err != nil {
		t.Fatal(err)
	}
	if fp := strings.Fields(string(out))[1]; fp != id.PublicKey().Fingerprint() {
		t.Errorf("Fingerprint() = %s, ssh-keygen -l says %s", id.PublicKey().Fingerprint(), fp)
	}
	parsed, err := ParsePublicKey(string(pub))
	if err != nil || parsed != id.PublicKey() {
		t.Errorf("ParsePublicKey of the .pub file: %v, %v", parsed, err)
	}

	// Our own keys are accepted by ssh-keygen.
	ours := filepath.Join(dir, "ours")
	data, _ := id.MarshalOpenSSH("again")
	os.WriteFile(ours, data, 0o600)
	out, err = exec.Command(keygen, "-y", "-f", ours).Output()
	if err != nil {
		t.Fatalf("ssh-keygen -y on our key: %v", err)
	}
	if !strings.HasPrefix(string(out), id.PublicKey().String()) {
		t.Errorf("ssh-keygen -y = %q", out)
	}

}

// TestEncryptedIdentities loads keys that ssh-keygen encrypted, and has
// ssh-keygen read the keys this package encrypts.
func TestEncryptedIdentities(t *testing.T) {
	keygen := testenv.RequireTool(t, "ssh-keygen")
	dir := t.TempDir()
	locked := filepath.Join(dir, "locked")
	if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "correct horse", "-C", "test", "-f", locked).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pubLine, err := os.ReadFile(locked + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	want, err := ParsePublicKey(string(pubLine))
	if err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	data, _ := testIdentity(t, 8).MarshalOpenSSH("")
	if err := os.WriteFile(plain, data, 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		path       string
		passphrase string // "" means LoadIdentity
		wantErr    error
		wantMsg    string
	}{
		{"no passphrase given", locked, "", ErrPassphraseNeeded, ""},
		{"right passphrase", locked, "correct horse", nil, ""},
		{"wrong passphrase", locked, "battery staple", ErrWrongPassphrase, ""},
		{"passphrase for a plain key", plain, "x", nil, "has none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var id *Identity
			var err error
			if tt.passphrase == "" {
				id, err = LoadIdentity(tt.path)
			} else {
				id, err = LoadIdentityWithPassphrase(tt.path, []byte(tt.passphrase))
			}
			switch {
			case tt.wantMsg != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("error %v, want one saying %q", err, tt.wantMsg)
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("error %v, want %v", err, tt.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case id.PublicKey() != want:
				t.Errorf("loaded %v, want the key of %s.pub", id.PublicKey(), locked)
			}
		})
	}

	// Ours, read back by ssh-keygen with the passphrase.
	id := testIdentity(t, 9)
	enc, err := id.MarshalOpenSSHWithPassphrase("ours", []byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	ours := filepath.Join(dir, "ours")
	if err := os.WriteFile(ours, enc, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(keygen, "-y", "-P", "s3cret", "-f", ours).Output()
	if err != nil {
		t.Fatalf("ssh-keygen -y on our encrypted key: %v", err)
	}
	if !strings.HasPrefix(string(out), id.PublicKey().String()) {
		t.Errorf("ssh-keygen -y = %q", out)
	}
	if _, err := exec.Command(keygen, "-y", "-P", "wrong", "-f", ours).Output(); err == nil {
		t.Error("ssh-keygen read our encrypted key with a wrong passphrase")
	}
}

// startAgent starts a real ssh-agent holding a new Ed25519 key, whose file
// is then deleted, and returns the agent's socket and the key's file name
// (for ssh-add -d) and public key.
func startAgent(t *testing.T) (sock, keyPath string, pub PublicKey) {
	t.Helper()
	agentBin := testenv.RequireTool(t, "ssh-agent")
	keygen := testenv.RequireTool(t, "ssh-keygen")
	dir := t.TempDir()
	sock = filepath.Join(dir, "agent.sock")
	agentCmd := exec.Command(agentBin, "-D", "-a", sock)
	if err := agentCmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agentCmd.Process.Kill(); agentCmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ssh-agent did not create its socket")
		}
		time.Sleep(10 * time.Millisecond)
	}
	keyPath = filepath.Join(dir, "id")
	if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-C", "agent", "-f", keyPath).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	sshAdd(t, sock, keyPath)
	pubLine, _ := os.ReadFile(keyPath + ".pub")
	pub, err := ParsePublicKey(string(pubLine))
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(keyPath) // only the agent has it now
	return sock, keyPath, pub
}

// sshAdd runs ssh-add with args against the agent at sock.
func sshAdd(t *testing.T, sock string, args ...string) {
	t.Helper()
	add := exec.Command(testenv.RequireTool(t, "ssh-add"), args...)
	add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestAgentIdentity runs a handshake in which one side's identity lives
// only in a real ssh-agent: the key file is gone, and the private key never
// enters this process.
func TestAgentIdentity(t *testing.T) {
	sock, _, want := startAgent(t)
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := agent.NewClient(conn)
	signers, err := client.Signers()
	if err != nil || len(signers) != 1 {
		t.Fatalf("agent signers: %d, %v", len(signers), err)
	}
	id, err := NewIdentityFromSSHSigner(signers[0])
	if err != nil {
		t.Fatal(err)
	}
	if id.PublicKey() != want {
		t.Fatalf("agent identity is %v, want %v", id.PublicKey(), want)
	}
	if _, err := id.MarshalOpenSSH(""); err == nil {
		t.Error("MarshalOpenSSH wrote out a key it does not have")
	}

	a, b := tcpPair(t)
	x := Client(a, &Config{Identity: id, Verify: pin(testIdentity(t, 2).PublicKey())})
	y := Server(b, &Config{Identity: testIdentity(t, 2), Verify: pin(want)})
	srv := run(func() error { return echoUpper(y) })
	x.Write([]byte("agent"))
	x.CloseWrite()
	got, err := io.ReadAll(x)
	if err != nil || string(got) != "AGENT" {
		t.Fatalf("read %q, %v", got, err)
	}
	if err := wait(t, srv); err != nil {
		t.Fatal(err)
	}
	if y.RemoteKey() != want {
		t.Errorf("the peer saw %v, want the agent's key", y.RemoteKey())
	}

	// A locked agent refuses to sign: a clear error, no identity.
	if err := client.Lock([]byte("pw")); err != nil {
		t.Fatal(err)
	}
	if _, err := NewIdentityFromSSHSigner(signers[0]); err == nil || !strings.Contains(err.Error(), "refused to sign") {
		t.Errorf("a locked agent gave %v, want a refusal to sign", err)
	}
}

func TestLoadIdentityPermissions(t *testing.T) {
	id := testIdentity(t, 7)
	data, _ := id.MarshalOpenSSH("")
	dir := t.TempDir()
	tests := []struct {
		mode    os.FileMode
		wantErr bool
	}{
		{0o600, false},
		{0o400, false},
		{0o640, true},
		{0o644, true},
		{0o602, true},
	}
	for _, tt := range tests {
		p := filepath.Join(dir, tt.mode.String())
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, tt.mode)
		_, err := LoadIdentity(p)
		if (err != nil) != tt.wantErr {
			t.Errorf("mode %v: error %v, want error %v", tt.mode, err, tt.wantErr)
		}
		if err != nil && !errors.Is(err, ErrIdentityFileMode) {
			t.Errorf("mode %v: error %v, want ErrIdentityFileMode", tt.mode, err)
		}
	}
	if _, err := LoadIdentity(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestLoadIdentityFileKinds(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "id")
	data, _ := testIdentity(t, 7).MarshalOpenSSH("")
	if err := os.WriteFile(good, data, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "huge")
	if err := os.WriteFile(huge, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	subdir := filepath.Join(dir, "keys")
	if err := os.Mkdir(subdir, 0o755); err != nil { // as most directories are
		t.Fatal(err)
	}
	tests := []struct {
		name, path, wantErr string
	}{
		{"key file", good, ""},
		{"symlink to a key file", link, ""},
		{"directory", subdir, "is a directory"},
		{"too large", huge, "too large"},
		{"device", os.DevNull, "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadIdentity(tt.path)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("LoadIdentity(%s) = %v, want an error saying %q", tt.path, err, tt.wantErr)
			}
		})
	}
}

func TestParsePublicKey(t *testing.T) {
	k := testIdentity(t, 9).PublicKey()
	tests := []struct {
		in      string
		wantErr string
	}{
		{k.String(), ""},
		{k.String() + " alice@laptop", ""},
		{"  " + k.String() + "\n", ""},
		{"", "empty"},
		{"ssh-ed25519", "malformed"},
		{"ssh-ed25519 !!!", "malformed"},
		{"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC1", "malformed"},
		{ecdsaLine(t), "not supported"},
	}
	for _, tt := range tests {
		got, err := ParsePublicKey(tt.in)
		if tt.wantErr == "" {
			if err != nil || got != k {
				t.Errorf("ParsePublicKey(%q) = %v, %v", tt.in, got, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParsePublicKey(%q) error %v, want %q", tt.in, err, tt.wantErr)
		}
	}
}

// ecdsaLine returns the authorized_keys line of a fresh ECDSA key.
func ecdsaLine(t *testing.T) string {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := ssh.NewPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(ssh.MarshalAuthorizedKey(pk))
}

func TestPublicKeyText(t *testing.T) {
	k := testIdentity(t, 3).PublicKey()
	text, err := k.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	var back PublicKey
	if err := back.UnmarshalText(text); err != nil || back != k {
		t.Fatalf("text round trip: %v, %v", back, err)
	}
	var zero PublicKey
	if !zero.IsZero() || zero.String() != "<none>" || zero.Ed25519() != nil {
		t.Error("the zero PublicKey is not 'no key'")
	}
	if _, err := zero.MarshalText(); err == nil {
		t.Error("marshalled the zero PublicKey")
	}
	if !k.Equal(k) || k.Equal(zero) {
		t.Error("Equal is wrong")
	}
	if _, err := NewPublicKey(make([]byte, 32)); err == nil {
		t.Error("accepted the all-zero key")
	}
	m := map[PublicKey]bool{k: true}
	if !m[testIdentity(t, 3).PublicKey()] {
		t.Error("PublicKey does not work as a map key")
	}
}

// weakKeys are Ed25519 public keys that prove no identity: small-order
// points (for which crypto/ed25519 accepts forged signatures) and
// non-canonical encodings.
var weakKeys = []struct {
	name, hex, wantErr string
}{
	{"neutral element (order 1)", "0100000000000000000000000000000000000000000000000000000000000000", "small order"},
	{"order 2", "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", "small order"},
	{"order 4", "0000000000000000000000000000000000000000000000000000000000000080", "small order"},
	{"order 8", "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", "small order"},
	{"order 8, other", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", "small order"},
	{"neutral, non-canonical (y = p + 1)", "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", "canonical"},
	{"not on the curve", "0200000000000000000000000000000000000000000000000000000000000000", "not a valid curve point"},
}

func TestNewPublicKeyRejectsWeakKeys(t *testing.T) {
	for _, tt := range weakKeys {
		t.Run(tt.name, func(t *testing.T) {
			b, err := hex.DecodeString(tt.hex)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := NewPublicKey(b); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewPublicKey = %v, want an error saying %q", err, tt.wantErr)
			}
			line := "ssh-ed25519 " + base64.StdEncoding.EncodeToString(PublicKey{key: [32]byte(b)}.sshWire())
			if _, err := ParsePublicKey(line); err == nil {
				t.Errorf("ParsePublicKey(%q) accepted the key", line)
			}
		})
	}
	for seed := range byte(20) {
		if _, err := NewPublicKey(testIdentity(t, seed).PublicKey().Ed25519()); err != nil {
			t.Errorf("a generated key was refused: %v", err)
		}
	}
}

// TestHandshakeRejectsNeutralIdentity runs a handshake against a peer that
// claims the neutral element as its identity, with the signature that
// crypto/ed25519 accepts for it over any message (R = neutral, S = 0).
func TestHandshakeRejectsNeutralIdentity(t *testing.T) {
	forged := *testIdentity(t, 7)
	forged.pub = PublicKey{key: [32]byte{1}}
	forged.staticSig = make([]byte, 64)
	forged.staticSig[0] = 1
	if !ed25519.Verify(forged.pub.key[:], staticSignedMessage(forged.static.PublicKey().Bytes()), forged.staticSig) {
		t.Fatal("crypto/ed25519 no longer accepts the forgery; the test needs another one")
	}
	for _, forgerInitiates := range []bool{true, false} {
		t.Run(fmt.Sprintf("forger initiates %v", forgerInitiates), func(t *testing.T) {
			a, b := tcpPair(t)
			var verified []PublicKey
			var mu sync.Mutex
			honestCfg := &Config{Identity: testIdentity(t, 1), Verify: func(_ context.Context, k PublicKey) error {
				mu.Lock()
				verified = append(verified, k)
				mu.Unlock()
				return nil
			}}
			forgerCfg := &Config{Identity: &forged, HandshakeTimeout: 5 * time.Second}
			var honest, forger *Conn
			if forgerInitiates {
				forger, honest = Client(a, forgerCfg), Server(b, honestCfg)
			} else {
				honest, forger = Client(a, honestCfg), Server(b, forgerCfg)
			}
			fc := run(forger.Handshake)
			err := honest.Handshake()
			if !errors.Is(err, errAuth) {
				t.Errorf("honest side's handshake = %v, want the authentication failure", err)
			}
			a.Close()
			b.Close()
			wait(t, fc)
			if len(verified) != 0 {
				t.Errorf("Verify was asked about %v", verified)
			}
		})
	}
}

// TestIdentitySigner checks that Signer signs with the identity's key,
// for a key in memory and for one behind a signer, whose signer it is.
func TestIdentitySigner(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	inMemory, err := NewIdentity(priv)
	if err != nil {
		t.Fatal(err)
	}
	signer := &testSigner{key: priv}
	behind, err := NewIdentityFromSigner(signer)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		id   *Identity
		own  func(crypto.Signer) bool
	}{
		{"in memory", inMemory, func(s crypto.Signer) bool { k, ok := s.(ed25519.PrivateKey); return ok && k.Equal(priv) }},
		{"behind a signer", behind, func(s crypto.Signer) bool { return s == crypto.Signer(signer) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.id.Signer()
			if !tt.own(s) {
				t.Fatalf("Signer returned a %T that is not the identity's own", s)
			}
			if !ed25519.PublicKey(tt.id.PublicKey().Ed25519()).Equal(s.Public()) {
				t.Fatalf("signer's public key %x, want the identity's", s.Public())
			}
			msg := []byte("a libp2p peer record")
			sig, err := s.Sign(rand.Reader, msg, crypto.Hash(0))
			if err != nil {
				t.Fatal(err)
			}
			if !ed25519.Verify(tt.id.PublicKey().Ed25519(), msg, sig) {
				t.Error("the signature does not verify under the identity's key")
			}
		})
	}
}
