// Package fuzzseed writes the files of a fuzz target's seed corpus
// (testdata/fuzz/FuzzName/name) in the format go test reads. It is for
// tests only, and imports nothing of the project, so that any package's
// own tests may use it.
package fuzzseed

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// File returns data as a seed corpus file.
func File(data []byte) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", data)
}

// Write writes data at path as a seed corpus file ([File]), making its
// directory if need be, and fails the test if it cannot.
func Write(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, File(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
