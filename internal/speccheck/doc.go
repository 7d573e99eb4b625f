// Package speccheck is a test-only, independent second implementation of
// the parts of the securepeer wire protocol that session resumption relies
// on, written from PROTOCOL.md alone (it does not read or import the root
// package or internal/wire). Its test reproduces the resumption known-answer
// vectors in testdata/vectors byte for byte, and the example of "Work
// under load", so that a gap between the specification and the
// implementation shows up as a failing test.
//
// The package has no non-test code.
package speccheck
