package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/securepeer/securepeer/p2p"
)

// TestRelayOptions checks that relay's command line parses into options
// and limits, and that validate refuses what cannot work, with a usage
// error that says why.
func TestRelayOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		args string
		err  string
		// check, if set, checks the options parsed.
		check func(*relayOptions) error
	}{
		{name: "defaults", args: "", check: func(o *relayOptions) error {
			if fmt.Sprint(o.addrs) != "[:4001]" || o.limits != p2p.DefaultRelayLimits {
				return fmt.Errorf("addrs %q, limits %+v", o.addrs, o.limits)
			}
			return nil
		}},
		{name: "limits", args: "-max-conns 100 -max-reservations 10 -circuit-data 10GiB -circuit-duration 2h -conn-rate 0.5 198.51.100.7:4001", check: func(o *relayOptions) error {
			l := o.limits
			if l.Conns != 100 || l.Reservations != 10 || l.CircuitData != 10<<30 || l.CircuitDuration != 2*time.Hour || l.ConnRate != 0.5 {
				return fmt.Errorf("limits %+v", l)
			}
			return nil
		}},
		{name: "public address", args: "-public relay.example:4001 -public 203.0.113.7:4001"},
		{name: "no port", args: "4001", err: "did you mean :4001"},
		{name: "DNS name to listen on", args: "relay.example:4001", err: "takes an IP address"},
		{name: "public without a port", args: "-public relay.example", err: "has no port"},
		{name: "zero circuits", args: "-max-circuits 0", err: "-max-circuits must be more than 0"},
		{name: "bad size", args: "-circuit-data lots", err: "want a positive size"},
		{name: "short reservations", args: "-reservation-ttl 10s", err: "at least a minute"},
		{name: "short circuits", args: "-circuit-duration 100ms", err: "at least a second"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseRelay(strings.Fields(tc.args))
			checkUsage(t, err, tc.err)
			if err == nil && tc.check != nil {
				if err := tc.check(o); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1048576": 1 << 20, "1GiB": 1 << 30, "500MB": 500e6, "1.5KiB": 1536, "2 TiB": 2 << 40, "7B": 7,
		"0": 0, "-1GiB": 0, "lots": 0, "1PB": 0, "9e18": 0,
	} {
		got, err := parseSize(in)
		if want == 0 && err == nil || want != 0 && (err != nil || got != want) {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

func TestPublicMultiaddr(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.7:4001":   "/ip4/203.0.113.7/tcp/4001",
		"[2001:db8::1]:4001": "/ip6/2001:db8::1/tcp/4001",
		"relay.example:4001": "/dns/relay.example/tcp/4001",
	} {
		if got, err := publicMultiaddr(in); got != want || err != nil {
			t.Errorf("publicMultiaddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestHandOutOrder: the relay prints public addresses first, loopback
// last.
func TestHandOutOrder(t *testing.T) {
	in := []string{
		"/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWMdqpaP35hL5pyPTjStvPcEby59Bgs4n5na8ogGAQcmLQ", "/ip4/192.168.1.2/tcp/4001/p2p/12D3KooWMdqpaP35hL5pyPTjStvPcEby59Bgs4n5na8ogGAQcmLQ",
		"/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWMdqpaP35hL5pyPTjStvPcEby59Bgs4n5na8ogGAQcmLQ", "/ip6/::1/tcp/4001/p2p/12D3KooWMdqpaP35hL5pyPTjStvPcEby59Bgs4n5na8ogGAQcmLQ", "/dns/relay.example/tcp/4001/p2p/12D3KooWMdqpaP35hL5pyPTjStvPcEby59Bgs4n5na8ogGAQcmLQ",
	}
	want := []string{
		"/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWMdqpaP35hL5pyPTjStvPcEby59Bgs4n5na8ogGAQcmLQ", "/dns/relay.example/tcp/4001/p2p/12D3KooWMdqpaP35hL5pyPTjStvPcEby59Bgs4n5na8ogGAQcmLQ",
		"/ip4/192.168.1.2/tcp/4001/p2p/12D3KooWMdqpaP35hL5pyPTjStvPcEby59Bgs4n5na8ogGAQcmLQ", "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWMdqpaP35hL5pyPTjStvPcEby59Bgs4n5na8ogGAQcmLQ", "/ip6/::1/tcp/4001/p2p/12D3KooWMdqpaP35hL5pyPTjStvPcEby59Bgs4n5na8ogGAQcmLQ",
	}
	if got := handOutOrder(in); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("handOutOrder:\n%q\nwant\n%q", got, want)
	}
}
