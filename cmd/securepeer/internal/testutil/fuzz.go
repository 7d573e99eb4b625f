package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// RequireFuzzSeeds fails a fuzz target whose seed corpus,
// testdata/fuzz/<target>, is missing or empty, so that a moved directory
// cannot make it silently test nothing. writer names the test that writes
// the corpus with -update, for the hint in the failure.
func RequireFuzzSeeds(f *testing.F, writer string) {
	f.Helper()
	dir := filepath.Join("testdata", "fuzz", f.Name())
	entries, err := os.ReadDir(dir)
	if err != nil {
		f.Fatalf("seed corpus: %v (go test -run %s -update writes it)", err, writer)
	}
	for _, e := range entries {
		if e.Type().IsRegular() {
			return
		}
	}
	f.Fatalf("seed corpus %s has no files (go test -run %s -update writes it)", dir, writer)
}

// UpdateFuzzSeeds writes seeds, by file name, as the whole seed corpus of
// the fuzz target named target, testdata/fuzz/<target>, if update (the
// package's -update flag) is set; without it, it fails t for each seed
// whose file is missing or other than what it would write. writer names
// the test calling it, for the hint in the failure.
func UpdateFuzzSeeds(t testing.TB, target string, seeds map[string][]byte, update bool, writer string) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	if update {
		os.RemoveAll(dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	names := make([]string, 0, len(seeds))
	for name := range seeds {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		path := filepath.Join(dir, name)
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", seeds[name])
		if update {
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Errorf("%s is missing or stale (go test -run %s -update rewrites it): %v", path, writer, err)
		}
	}
}
