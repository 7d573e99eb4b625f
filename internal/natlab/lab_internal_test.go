//go:build linux

package natlab

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// recorder is a testing.TB that records whether it was skipped or failed
// instead of ending the goroutine.
type recorder struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (r *recorder) Helper() {}

func (r *recorder) Skip(args ...any) { r.skipped, r.msg = true, fmt.Sprint(args...) }

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed, r.msg = true, fmt.Sprintf(format, args...)
}

// TestUnavailable checks that a machine that cannot build a lab skips the
// test, and fails it when RequireEnv is 1, as in CI.
func TestUnavailable(t *testing.T) {
	err := fmt.Errorf("%w: it needs root", errUnavailable)
	tests := []struct {
		env          string
		skip, failed bool
	}{
		{"", true, false},
		{"0", true, false},
		{"1", false, true},
	}
	for _, tt := range tests {
		t.Run("env="+tt.env, func(t *testing.T) {
			t.Setenv(RequireEnv, tt.env)
			r := &recorder{TB: t}
			unavailable(r, err)
			if r.skipped != tt.skip || r.failed != tt.failed {
				t.Errorf("skipped %v, failed %v; want %v, %v", r.skipped, r.failed, tt.skip, tt.failed)
			}
			if !strings.Contains(r.msg, "it needs root") {
				t.Errorf("the message %q does not say why", r.msg)
			}
			if tt.failed && !strings.Contains(r.msg, RequireEnv+"=1") {
				t.Errorf("the message %q does not say why it fails", r.msg)
			}
		})
	}
	if !errors.Is(err, errUnavailable) {
		t.Fatal("the error does not wrap errUnavailable")
	}
}
