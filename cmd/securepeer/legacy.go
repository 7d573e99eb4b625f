package main

// This file is the -legacy mode: the Node secure-peer 0.2 protocol of
// package legacy behind the same handshaker the native protocol uses, and
// the key, pin and allow-list forms that go with RSA keys.
//
// Legacy keys never enter known_hosts: its format and the knownhosts
// package hold ssh-ed25519 keys only, and trusting a key on first use is
// worth even less for a protocol whose handshake can be replayed. So
// connect -legacy needs a pin (-expect); without one it shows the peer's
// fingerprint and refuses, as a non-interactive first contact does.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/securepeer/securepeer/internal/pkgerr"
	"github.com/securepeer/securepeer/legacy"
)

// legacyProtocol names the legacy protocol in -v logs.
const legacyProtocol = "secure-peer-0.2"

// legacyWarning is printed by every listen or connect in -legacy mode.
const legacyWarning = "warning: -legacy speaks the insecure Node secure-peer 0.2 protocol (identities in clear, replayable handshake, no forward secrecy); use it only to migrate"

// legacyKeyFile is the default legacy key file in the securepeer home.
const legacyKeyFile = "id_legacy_rsa.json"

// maxLegacyFile bounds -expect and -allow files in -legacy mode.
const maxLegacyFile = 1 << 20

// legacyKey is a peer's RSA key in the legacy protocol.
type legacyKey struct {
	pub *rsa.PublicKey
}

// String is the public key as PKCS #1 PEM, which -expect and -allow take.
// It is made from the parsed key, never the text the peer sent: that text
// may carry anything before its PEM block (terminal escapes, shell syntax,
// a decoy key), and -exec hands String to a command as SECUREPEER_PEER_KEY.
func (k legacyKey) String() string {
	return strings.TrimRight(legacy.MarshalPublicKey(k.pub), "\n")
}

// Fingerprint is legacy.Fingerprint: SHA256 of the DER SubjectPublicKeyInfo.
func (k legacyKey) Fingerprint() string { return legacy.Fingerprint(k.pub) }

// legacyHandshaker speaks the Node secure-peer 0.2 protocol.
type legacyHandshaker struct {
	keys    *legacy.Keys
	ciphers []string // nil: legacy.DefaultCiphers
	// timeout bounds each handshake, Verify included.
	timeout time.Duration
	// tcp bounds the TCP connect (connect -w; 0: dialTimeout).
	tcp time.Duration
}

var _ handshaker = (*legacyHandshaker)(nil)

func (h *legacyHandshaker) tcpTimeout() time.Duration { return h.tcp }

func (h *legacyHandshaker) publicKey() peerKey {
	return legacyKey{h.keys.Public()}
}

// firstFlight says that a legacy peer's first flight is its header line:
// complete at the first newline, or once longer than legacy.MaxHeaderLine,
// which the handshake then reports.
func (h *legacyHandshaker) firstFlight(b []byte) int {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return i + 1
	}
	if len(b) > legacy.MaxHeaderLine {
		return len(b)
	}
	return len(b) + 1
}

// handshake runs the legacy handshake. The protocol is symmetric; initiator
// only says who dialed. A peer that refuses this side's key is not seen
// here: secure-peer just closes the connection, which the first read of
// the stream reports (see streamError).
func (h *legacyHandshaker) handshake(ctx context.Context, raw net.Conn, initiator bool, verify verifyFunc) (*stream, error) {
	cfg := &legacy.Config{
		Keys:             h.keys,
		Ciphers:          h.ciphers,
		HandshakeTimeout: h.timeout,
		Verify: func(ctx context.Context, pub *rsa.PublicKey) error {
			return verify(ctx, legacyKey{pub})
		},
	}
	c := legacy.NewConn(raw, cfg)
	start := time.Now()
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		var nc *legacy.NoCommonCipherError
		if errors.As(err, &nc) {
			// The package's advice names Config.Ciphers; say it in flags.
			return nil, pkgerr.Plainf("no cipher in common with the peer (names are case-sensitive, this side: %q, peer: %q); set -ciphers to a name the peer lists (opts.ciphers on the Node side), spelled as it spells it", nc.Local, nc.Peer)
		}
		return nil, err
	}
	return &stream{
		conn:       c,
		raw:        raw,
		self:       h.publicKey(),
		peer:       legacyKey{c.RemoteKey()},
		remoteAddr: raw.RemoteAddr().String(),
		protocol:   legacyProtocol,
		cipher:     c.Cipher(),
		initiator:  initiator,
		took:       time.Since(start),
	}, nil
}

// legacyFlags are the flags that select and tune -legacy mode.
type legacyFlags struct {
	enabled bool
	ciphers string
}

func (l *legacyFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&l.enabled, "legacy", false, "")
	fs.StringVar(&l.ciphers, "ciphers", "", "")
}

// check rejects -ciphers without -legacy and parses the list.
func (l *legacyFlags) check(cmd string) ([]string, error) {
	if !l.enabled {
		if l.ciphers != "" {
			return nil, usageErrorf("%s: -ciphers is for -legacy mode only; the native protocol picks its own AEAD", cmd)
		}
		return nil, nil
	}
	if l.ciphers == "" {
		return nil, nil
	}
	return parseCiphers(l.ciphers)
}

// parseCiphers parses a -ciphers list: comma-separated names, sent as
// spelled, since the Node side compares them exactly.
func parseCiphers(list string) ([]string, error) {
	supported := legacy.SupportedCiphers()
	var names []string
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		switch {
		case n == "":
			return nil, usageErrorf("-ciphers %q has an empty name; separate names with single commas, as in -ciphers AES-256-CBC,RC4", list)
		case !slices.Contains(supported, strings.ToLower(n)):
			return nil, usageErrorf("-ciphers: unsupported cipher %q; the supported ones are %s (any capitalisation, spelled as the Node side spells it)", n, strings.Join(supported, ", "))
		case slices.Contains(names, n):
			return nil, usageErrorf("-ciphers lists %q twice", n)
		}
		names = append(names, n)
	}
	return names, nil
}

// legacyStart is the handshaker of -legacy: it parses -ciphers, loads the
// key file and prints the warning.
func legacyStart(e *env, cmd, keyFile string, lf *legacyFlags, spec handshakeSpec) (*legacyHandshaker, error) {
	ciphers, err := lf.check(cmd)
	if err != nil {
		return nil, err
	}
	keys, err := e.loadLegacyKeys(keyFile)
	if err != nil {
		return nil, err
	}
	e.notef("%s", legacyWarning)
	return &legacyHandshaker{keys: keys, ciphers: ciphers, timeout: spec.timeout, tcp: spec.tcp}, nil
}

func (e *env) defaultLegacyKeyPath() (string, error) {
	dir, err := e.homeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, legacyKeyFile), nil
}

// loadLegacyKeys loads an rsa-json key file, or the default one if path is
// empty. Unlike the native identity, a missing default is not created: the
// legacy mode is only ever used on purpose.
func (e *env) loadLegacyKeys(path string) (*legacy.Keys, error) {
	explicit := path != ""
	if !explicit {
		var err error
		if path, err = e.defaultLegacyKeyPath(); err != nil {
			return nil, err
		}
	}
	if explicit {
		if err := checkFileDir(path); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		if explicit {
			return nil, pkgerr.Plainf("legacy key file %s does not exist; create it with securepeer keygen -legacy -f %s, or use the rsa-json file of the Node deployment", path, path)
		}
		return nil, pkgerr.Plainf("no legacy key file %s; create one with securepeer keygen -legacy, or give the Node deployment's rsa-json file with -i", path)
	}
	keys, err := legacy.LoadKeys(path)
	if err != nil {
		return nil, pkgerr.Plainf("%v; in -legacy mode -i takes an rsa-json file {\"private\": PEM, \"public\": PEM}", describe(err))
	}
	return keys, nil
}

// readBoundedFile reads at most maxLegacyFile bytes of path.
func readBoundedFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxLegacyFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxLegacyFile {
		return nil, pkgerr.Plainf("%s is larger than %d bytes", path, maxLegacyFile)
	}
	return data, nil
}

// checkLegacyFingerprint validates a "SHA256:..." legacy fingerprint.
func checkLegacyFingerprint(what, s string) (string, error) {
	fp := strings.TrimRight(s, "=")
	if len(fp) != len("SHA256:")+43 {
		return "", pkgerr.Plainf("%s %q: a SHA256 fingerprint has 43 characters after \"SHA256:\"; copy it whole from securepeer id -legacy", what, s)
	}
	return fp, nil
}

// parsePEMPublicKey parses the first PEM block in data as an RSA public
// key, ignoring text around it (such as the fingerprint line that
// securepeer id -legacy prints after the key).
func parsePEMPublicKey(data []byte) (*rsa.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	return legacy.ParsePublicKey(pem.EncodeToMemory(block))
}

// parseLegacyExpect turns the argument of -expect in -legacy mode into a
// legacy fingerprint: it takes a fingerprint (SHA256:...), a PEM public key
// file, or an rsa-json file (whose "public" key is used).
func parseLegacyExpect(s string) (string, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "SHA256:") {
		fp, err := checkLegacyFingerprint("-expect", s)
		if err != nil {
			return "", &codeError{exitUsage, err}
		}
		return fp, nil
	}
	data, err := readBoundedFile(s)
	if err != nil {
		return "", usageErrorf("-expect %q is not a legacy fingerprint (SHA256:..., from securepeer id -legacy), a PEM public key file or an rsa-json file: %v", s, err)
	}
	var pub *rsa.PublicKey
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '{' {
		var file struct {
			Public string `json:"public"`
		}
		if err := json.Unmarshal(trimmed, &file); err != nil || file.Public == "" {
			return "", usageErrorf("-expect %s: not an rsa-json file with a \"public\" key", s)
		}
		data = []byte(file.Public)
	}
	if pub, err = parsePEMPublicKey(data); err != nil {
		return "", usageErrorf("-expect %s: %v; want a PEM public key (RSA PUBLIC KEY or PUBLIC KEY) or an rsa-json file", s, describe(err))
	}
	return legacy.Fingerprint(pub), nil
}

// legacyPinPolicy is how connect -legacy checks the peer: against the
// -expect pin only.
type legacyPinPolicy struct {
	log    *slog.Logger
	addr   string
	expect string // the pinned legacy fingerprint; "" refuses every key
}

func (p *legacyPinPolicy) verify(_ context.Context, key peerKey) error {
	fp := key.Fingerprint()
	if p.expect == "" {
		return rejectedErrorf("-legacy does not use known_hosts; the peer at %s has legacy key %s. Check that fingerprint with the peer's owner (securepeer id -legacy prints it), then pin it with -expect %s, or with -expect and its PEM or rsa-json file", p.addr, fp, fp)
	}
	if subtle.ConstantTimeCompare([]byte(fp), []byte(p.expect)) != 1 {
		return rejectedErrorf("the peer at %s has legacy key %s, not the %s given with -expect; check the address, and where you got the expected key", p.addr, fp, p.expect)
	}
	p.log.Info("peer key matches -expect", "peer", fp)
	return nil
}

// legacyAllowPolicy is how listen -legacy -allow decides who may connect:
// the keys in a file of PEM public keys and legacy fingerprints, read again
// whenever its contents change.
type legacyAllowPolicy struct {
	e    *env
	log  *slog.Logger
	path string

	mu      sync.Mutex     // guards the fields below
	data    []byte         // the contents allowed was parsed from
	allowed map[string]int // fingerprint → line where it is listed; nil until parsed, or while the file is unusable
	loaded  bool           // a parse has succeeded: the next ones are reloads
}

func newLegacyAllowPolicy(e *env, log *slog.Logger, path string) (*legacyAllowPolicy, error) {
	p := &legacyAllowPolicy{e: e, log: log, path: path}
	allowed, err := p.current()
	if err != nil {
		return nil, pkgerr.Plainf("-allow: %v", err)
	}
	if len(allowed) == 0 {
		e.notef("warning: %s lists no legacy key, so every peer will be refused until one is added", path)
	}
	log.Info("allow file loaded", "file", path, "keys", len(allowed))
	return p, nil
}

// current returns the allowed fingerprints, reading the file on every call
// and parsing it again when its contents differ from the last parse, as
// knownhosts.AuthorizedKeysFile does for the native -allow. Size and
// modification time are no guide: an edit can keep both (cp -p, touch -r,
// a same-length change within the clock's granularity). A file that has
// become unreadable or malformed yields an error and no keys, so the
// listener fails closed. p.mu must not be held.
func (p *legacyAllowPolicy) current() (map[string]int, error) {
	data, err := readBoundedFile(p.path)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.data, p.allowed = nil, nil
		return nil, err
	}
	if p.allowed != nil && bytes.Equal(data, p.data) {
		return p.allowed, nil
	}
	allowed, err := parseLegacyAllow(p.path, data)
	if err != nil {
		p.data, p.allowed = nil, nil
		return nil, err
	}
	if p.loaded {
		p.log.Info("allow file reloaded", "file", p.path, "keys", len(allowed))
	}
	p.data, p.allowed, p.loaded = data, allowed, true
	return allowed, nil
}

// parseLegacyAllow parses a legacy allow file: PEM public keys (as in an
// rsa-json "public" field, or several concatenated), legacy fingerprints
// one per line (text after the fingerprint is a comment), blank lines and
// # comments.
func parseLegacyAllow(path string, data []byte) (map[string]int, error) {
	allowed := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, maxLegacyFile)
	var block []string // the PEM block being read
	start := 0
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case block != nil:
			block = append(block, line)
			if strings.HasPrefix(line, "-----END ") {
				pub, err := legacy.ParsePublicKey([]byte(strings.Join(block, "\n") + "\n"))
				if err != nil {
					return nil, pkgerr.Plainf("%s line %d: %v", path, start, describe(err))
				}
				allowed[legacy.Fingerprint(pub)] = start
				block = nil
			}
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "-----BEGIN "):
			block, start = []string{line}, n
		case strings.HasPrefix(line, "SHA256:"):
			fp, err := checkLegacyFingerprint("fingerprint", strings.Fields(line)[0])
			if err != nil {
				return nil, pkgerr.Plainf("%s line %d: %v", path, n, err)
			}
			allowed[fp] = n
		default:
			return nil, pkgerr.Plainf("%s line %d: want a PEM public key or a legacy fingerprint (SHA256:...); securepeer id -legacy prints both", path, n)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, pkgerr.Plainf("%s: %v", path, err)
	}
	if block != nil {
		return nil, pkgerr.Plainf("%s line %d: PEM block without an END line", path, start)
	}
	return allowed, nil
}

func (p *legacyAllowPolicy) verify(_ context.Context, key peerKey) error {
	allowed, err := p.current()
	if err != nil {
		p.e.notef("cannot use the -allow file, refusing every peer until it is fixed: %v", err)
		return rejectedErrorf("the -allow file is unusable")
	}
	fp := key.Fingerprint()
	line := 0
	for want, n := range allowed {
		if subtle.ConstantTimeCompare([]byte(fp), []byte(want)) == 1 {
			line = n
		}
	}
	if line == 0 {
		return rejectedErrorf("legacy key %s is not listed in %s; to let it in, add its PEM public key or fingerprint (securepeer id -legacy prints both) to that file", fp, p.path)
	}
	p.log.Info("peer allowed", "peer", fp, "line", line)
	return nil
}

// runKeygenLegacy is keygen -legacy: a new RSA key pair as an rsa-json
// file, which both this command and the Node module load.
func runKeygenLegacy(e *env, path string, bits int, force bool) error {
	if path == "" {
		var err error
		if path, err = e.defaultLegacyKeyPath(); err != nil {
			return err
		}
	} else if err := checkFileDir(path); err != nil {
		return err
	}
	if !force {
		if _, err := os.Lstat(path); err == nil {
			return pkgerr.Plainf("%s already exists; use -force to overwrite it (the key in it will be lost) or -f to write elsewhere", path)
		}
	}
	keys, err := legacy.GenerateKeys(bits)
	if err != nil {
		return usageErrorf("keygen: -bits: %v", describe(err))
	}
	data, err := keys.MarshalJSON()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if err := writeFileAtomic(path, append(data, '\n'), 0o600, force); err != nil {
		return err
	}
	printLegacyKey(e, keys)
	return nil
}

// printLegacyKey prints the public key PEM, exactly as it is sent to peers,
// then the legacy fingerprint.
func printLegacyKey(e *env, keys *legacy.Keys) {
	fmt.Fprint(e.stdout, strings.TrimRight(keys.PublicPEM(), "\n")+"\n")
	fmt.Fprintln(e.stdout, legacy.Fingerprint(keys.Public()))
}
