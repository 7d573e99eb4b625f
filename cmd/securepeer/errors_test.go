package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/securepeer/securepeer"
	"github.com/securepeer/securepeer/internal/pkgerr"
	"github.com/securepeer/securepeer/knownhosts"
	"github.com/securepeer/securepeer/legacy"
)

// TestDescribe checks what the user reads of library errors: no library's
// name (the command prints its own once), got without parsing any text;
// the hint once; a truncated stream's clause once.
func TestDescribe(t *testing.T) {
	// Real library errors, for their types and texts.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go io.Copy(io.Discard, b)
	id, err := securepeer.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	timeout := securepeer.Client(a, &securepeer.Config{Identity: id}).HandshakeContext(ctx)
	if timeout == nil {
		t.Fatal("the handshake with nobody did not time out")
	}
	_, badKey := securepeer.ParsePublicKey("ssh-ed25519 AAAA")
	missing := filepath.Join(t.TempDir(), "nosuchfile")
	_, noFile := knownhosts.LoadAuthorizedKeys(missing)
	c, d := net.Pipe()
	go func() {
		d.Write([]byte(`{"hi":1}`)) // a Node secure-peer's first bytes
		d.Close()
	}()
	nodePeer := securepeer.Server(c, &securepeer.Config{Identity: id}).Handshake()
	_, noKeys := legacy.LoadKeys(filepath.Join(t.TempDir(), "missing.json"))
	truncated := fmt.Errorf("reading: %w", io.ErrUnexpectedEOF)
	h := &nativeHandshaker{id: id}

	tests := []struct {
		name string
		err  error
		want string
	}{
		{"plain", errors.New("connection refused"), "connection refused"},
		{"a library error", badKey, pkgerr.Unnamed(badKey).Error()},
		{"a knownhosts error", noFile, "open " + missing + ": no such file or directory"},
		{"a legacy error", noKeys, pkgerr.Unnamed(noKeys).Error()},
		{"legacy peer", handshakeError("x", h, nodePeer),
			"handshake with x failed: the peer speaks the legacy secure-peer (Node) protocol, not securepeer; talk to it with -legacy"},
		{"handshake timeout, limit unknown", handshakeError("x", h, timeout),
			"handshake with x failed: " + pkgerr.Unnamed(timeout).Error() + "; is the peer a securepeer peer, and reachable?"},
		{"passphrase", fmt.Errorf("key: %w", securepeer.ErrPassphraseNeeded),
			"key: the private key is protected by a passphrase; securepeer asks for the passphrase on a terminal; without one, add the key to ssh-agent (ssh-add) and pass its .pub with -i"},
		{"a library error in the command's own sentence", pkgerr.Plainf("reading %s: %w", "x", badKey),
			"reading x: " + pkgerr.Unnamed(badKey).Error()},
		{"a usage error around a library error", usageErrorf("-expect %s: %v", "x", badKey),
			"-expect x: " + pkgerr.Unnamed(badKey).Error()},
		{"truncated stream", streamError(&stream{remoteAddr: "x"}, truncated),
			"the connection with x ended without the peer's end of stream, so data may be missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := describe(tt.err)
			if got != tt.want {
				t.Errorf("describe =\n%q\nwant\n%q", got, tt.want)
			}
			if strings.Contains(got, "securepeer:") || strings.Contains(got, "knownhosts:") || strings.Contains(got, "legacy:") {
				t.Errorf("describe = %q names a library", got)
			}
		})
	}
}

// TestNoticeNamesNoLibrary checks that a notice naming a library's error
// shows it without the library's name: the line names securepeer once.
func TestNoticeNamesNoLibrary(t *testing.T) {
	_, badKey := securepeer.ParsePublicKey("ssh-ed25519 AAAA")
	var stderr strings.Builder
	e := &env{stderr: &stderr}
	e.notef("refused %s: %v", "x", badKey)
	want := "securepeer: refused x: " + pkgerr.Unnamed(badKey).Error() + "\n"
	if got := stderr.String(); got != want {
		t.Errorf("notef wrote %q, want %q", got, want)
	}
	if !errors.Is(pkgerr.Plainf("x: %w", badKey), badKey) {
		t.Errorf("Plainf does not wrap its %%w argument")
	}
}
