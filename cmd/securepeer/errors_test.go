package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/securepeer/securepeer"
)

func TestDescribe(t *testing.T) {
	// A real handshake timeout, for its error's type.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
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

	tests := []struct {
		name string
		err  error
		want string
	}{
		{"plain", errors.New("connection refused"), "connection refused"},
		{"library prefix", errors.New("securepeer: message authentication failed"), "message authentication failed"},
		{"stacked prefixes", fmt.Errorf("handshake with x failed: %w", fmt.Errorf("securepeer: reading: %w", errors.New("knownhosts: bad line"))),
			"handshake with x failed: reading: bad line"},
		{"legacy peer", fmt.Errorf("handshake with x failed: %w", securepeer.ErrLegacyPeer),
			"handshake with x failed: the peer speaks the legacy secure-peer (Node) protocol, not securepeer; talk to it with -legacy"},
		{"handshake timeout", fmt.Errorf("handshake with x failed: %w", timeout),
			"handshake with x failed: " + describeNoHint(timeout) + "; is the peer a securepeer peer, and reachable?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := describe(tt.err); got != tt.want {
				t.Errorf("describe =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

// describeNoHint is describe without the hint, to build expectations.
func describeNoHint(err error) string {
	return describe(errors.New(err.Error()))
}
