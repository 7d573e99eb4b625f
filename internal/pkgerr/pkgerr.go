// Package pkgerr names the package an error comes from exactly once. The
// library's packages (securepeer, knownhosts, legacy, p2p) build every error
// they return with it, so that its text starts with the package's name,
// "securepeer: " say, and never repeats a name inside, however the
// packages wrap their own errors or each other's. A program that prints its
// own name first, as the securepeer command does with the same name, takes
// the text after the name from [Error.Err], without parsing any text.
package pkgerr

import (
	"errors"
	"fmt"
)

// An Error is an error of a library package: its text is Pkg, a colon and
// the text of Err, which names no package.
type Error struct {
	Pkg string
	Err error
}

func (e *Error) Error() string { return e.Pkg + ": " + e.Err.Error() }

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// New returns an error of package pkg whose text, after the package's
// name, is text.
func New(pkg, text string) error { return &Error{pkg, errors.New(text)} }

// Errorf returns an error of package pkg formatted as [fmt.Errorf] formats
// format and a. An argument that is a library's error, of any package (an
// *Error, or one with an Unnamed method, see [Unnamed]), is formatted
// without its package's name, and is still wrapped by a %w verb.
func Errorf(pkg, format string, a ...any) error {
	return &Error{pkg, fmt.Errorf(format, Args(a)...)}
}

// Plainf returns an error formatted as [fmt.Errorf] formats format and a,
// naming no package, with every library error among a formatted without
// its package's name and still wrapped by a %w verb: for a program that
// puts a library's error in a sentence of its own and names itself once,
// at the start of the line it prints.
func Plainf(format string, a ...any) error { return fmt.Errorf(format, Args(a)...) }

// Args returns a, with every library error in it (an *Error, or one with an
// Unnamed method) replaced by one that formats without its package's name
// and unwraps to it, for any printf-like function.
func Args(a []any) []any {
	args := make([]any, len(a))
	for i, x := range a {
		if e, ok := x.(error); ok && named(e) {
			x = unnamed{e}
		}
		args[i] = x
	}
	return args
}

// named reports whether err names its package, as Unnamed sees it.
func named(err error) bool {
	switch err.(type) {
	case *Error, interface{ Unnamed() error }:
		return true
	}
	return false
}

// unnamed is a library's error formatted without its package's name.
type unnamed struct{ err error }

func (u unnamed) Error() string { return Unnamed(u.err).Error() }
func (u unnamed) Unwrap() error { return u.err }

// Unnamed returns err as a program that names the package itself, or a
// package that puts err in a sentence of its own, shows it: Err if err is
// an *Error; what its Unnamed method returns if it has one, as a library's
// errors that must stay net.Errors at the top have; else err as it is.
func Unnamed(err error) error {
	switch e := err.(type) {
	case *Error:
		return e.Err
	case interface{ Unnamed() error }:
		return e.Unnamed()
	}
	return err
}
