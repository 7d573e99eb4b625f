package main

// Which relays listen and connect use to meet a peer by key: the -relay
// flags, or else the relays file in the securepeer home.

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/securepeer/securepeer/internal/pkgerr"
	"github.com/securepeer/securepeer/knownhosts"
)

// relayList is the repeatable -relay flag: relay multiaddrs, each ending
// with the relay's peer ID, as securepeer relay prints them.
type relayList []string

func (l *relayList) String() string { return strings.Join(*l, ",") }

func (l *relayList) Set(v string) error {
	if err := checkRelayAddr(v); err != nil {
		return err
	}
	*l = append(*l, v)
	return nil
}

// checkRelayAddr checks that s is a relay's address as securepeer relay
// prints it: /ip4/ADDR/tcp/PORT/p2p/ID, or /ip6/ or /dns/.
func checkRelayAddr(s string) error {
	const want = "a relay address is what securepeer relay prints, as /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW..."
	a, err := ma.NewMultiaddr(s)
	if err != nil {
		return pkgerr.Plainf("relay address %q: %v; %s", s, err, want)
	}
	transport, id := peer.SplitAddr(a)
	if id == "" {
		return pkgerr.Plainf("relay address %q does not end with /p2p/ and the relay's ID, which names its key; %s", s, want)
	}
	if len(transport) != 2 || transport[1].Code() != ma.P_TCP {
		return pkgerr.Plainf("relay address %q is not a host and a TCP port followed by /p2p/ID; %s", s, want)
	}
	return nil
}

// relaysFileName is the relays file in the securepeer home.
const relaysFileName = "relays"

// maxRelaysFile bounds the relays file: a few lines.
const maxRelaysFile = 64 << 10

// relays returns the relays to use: flags if any were given, else the
// lines of $SECUREPEER_HOME/relays, if it exists. from says where they
// came from, for messages. The file is refused, as known_hosts is, if
// others can write it or its directory, or another user owns it: whoever
// can change it chooses the relay that learns whom this side talks to.
func (e *env) relays(flags relayList) (list []string, from string, err error) {
	if len(flags) > 0 {
		return flags, "-relay", nil
	}
	dir, err := e.homeDir()
	if err != nil {
		return nil, "", err
	}
	path := filepath.Join(dir, relaysFileName)
	list, err = readRelaysFile(path)
	return list, path, err
}

// readRelaysFile reads a relays file: one relay address a line; blank
// lines and lines starting with # are skipped. A file that does not exist
// lists no relay.
func readRelaysFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, pkgerr.Plainf("reading the relays file: %v", err)
	}
	defer f.Close()
	if err := checkTrustedFile(f, path); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxRelaysFile+1))
	if err != nil {
		return nil, pkgerr.Plainf("reading %s: %v", path, err)
	}
	if len(data) > maxRelaysFile {
		return nil, pkgerr.Plainf("%s is larger than %d bytes; it lists relays, one a line", path, maxRelaysFile)
	}
	var list []string
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := checkRelayAddr(line); err != nil {
			return nil, pkgerr.Plainf("%s line %d: %v", path, n+1, err)
		}
		list = append(list, line)
	}
	return list, nil
}

// checkTrustedFile refuses the file f opened at path if others than its
// owner may write it, or another user than this one (or root) owns it, as
// knownhosts refuses such a known_hosts file; and if others can replace
// it in its directory (checkFileDir).
func checkTrustedFile(f *os.File, path string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	if err := checkFileDir(path); err != nil {
		return err
	}
	err := knownhosts.CheckFile(f, path)
	switch {
	case errors.Is(err, knownhosts.ErrFileWritable):
		return pkgerr.Plainf("%w, so others could choose your relays; run chmod go-w %s", err, path)
	case errors.Is(err, knownhosts.ErrFileOwner):
		return pkgerr.Plainf("%w, so another user could choose your relays; use a file of your own", err)
	}
	return err
}
