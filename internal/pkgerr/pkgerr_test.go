package pkgerr

import (
	"errors"
	"fmt"
	"io"
	"testing"
)

var errSentinel = errors.New("the sentinel")

// selfNamed is a library's error that names its package itself, as those
// that must stay net.Errors at the top do.
type selfNamed struct{}

func (selfNamed) Error() string  { return "securepeer: what it is" }
func (selfNamed) Unnamed() error { return errors.New("what it is") }

func TestErrorf(t *testing.T) {
	inner := Errorf("knownhosts", "line %d: %w", 3, io.ErrUnexpectedEOF)
	named := New("securepeer", "a named error")
	tests := []struct {
		name string
		err  error
		want string
		is   []error
	}{
		{"plain", New("securepeer", "x"), "securepeer: x", nil},
		{"sentinel", Errorf("securepeer", "%w (context)", errSentinel), "securepeer: the sentinel (context)", []error{errSentinel}},
		{"own error inside", Errorf("securepeer", "reading: %w", Errorf("securepeer", "%w", errSentinel)), "securepeer: reading: the sentinel", []error{errSentinel}},
		{"another package's", Errorf("securepeer", "refused: %w", inner), "securepeer: refused: line 3: unexpected EOF", []error{inner, io.ErrUnexpectedEOF}},
		{"a named error, as %v", Errorf("legacy", "%v; and more", named), "legacy: a named error; and more", nil},
		{"twice", Errorf("securepeer", "%w and %w", named, errSentinel), "securepeer: a named error and the sentinel", []error{named, errSentinel}},
		{"one with an Unnamed method", Errorf("securepeer", "writing: %w", selfNamed{}), "securepeer: writing: what it is", []error{selfNamed{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
			for _, target := range tt.is {
				if !errors.Is(tt.err, target) {
					t.Errorf("errors.Is(%q, %q) = false", tt.err, target)
				}
			}
			var e *Error
			if !errors.As(tt.err, &e) || error(e) != tt.err || e.Err.Error() != tt.want[len(e.Pkg)+2:] {
				t.Errorf("the outermost *Error does not give the text after the name")
			}
		})
	}
}

// TestErrorfKeepsArgs checks that formatting does not change the caller's
// arguments.
func TestErrorfKeepsArgs(t *testing.T) {
	named := New("securepeer", "x")
	args := []any{named}
	Errorf("legacy", "%w", args...)
	if args[0] != named {
		t.Error("Errorf changed its caller's argument")
	}
}

func TestUnnamed(t *testing.T) {
	named := Errorf("securepeer", "reading: %w", io.EOF)
	if got := Unnamed(named).Error(); got != "reading: EOF" {
		t.Errorf("Unnamed(%q) = %q", named, got)
	}
	if !errors.Is(Unnamed(named), io.EOF) {
		t.Error("Unnamed lost the wrapped error")
	}
	wrapped := fmt.Errorf("context: %w", named)
	if Unnamed(wrapped) != wrapped || Unnamed(io.EOF) != io.EOF {
		t.Error("Unnamed changed an error that is not an *Error")
	}
}
