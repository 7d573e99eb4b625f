//go:build linux

package natlab

// ProcessStart is processStart, for the tests of stale labs.
var ProcessStart = processStart

// LookSbin is lookSbin, for tests that run ip themselves.
var LookSbin = lookSbin

// ParseDropped is parseDropped, for its own test.
var ParseDropped = parseDropped

// AddHostErr is AddHost returning its error instead of failing the test.
func (l *Lab) AddHostErr(name string, k Kind) (*Host, error) { return l.addHost(name, k) }
