package libp2psec

import (
	"os"
	"strings"
	"testing"
)

// TestREADMEQuotesExample checks that the go-libp2p snippet in the
// repository's README quotes Example_withNoise: its lines, in order, are
// lines of the example, so that the snippet compiles and runs as the
// example does.
func TestREADMEQuotesExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "## Inside libp2p")
	if !ok {
		t.Fatal("README.md has no section \"Inside libp2p\"")
	}
	_, block, ok := strings.Cut(section, "```go\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("the section \"Inside libp2p\" has no go snippet")
	}
	lines := strings.Split(string(example), "\n")
	for _, want := range strings.Split(block, "\n") {
		want = strings.TrimSpace(want)
		if want == "" || want == "import (" || want == ")" {
			continue
		}
		for len(lines) > 0 && strings.TrimSpace(lines[0]) != want {
			lines = lines[1:]
		}
		if len(lines) == 0 {
			t.Fatalf("README.md's snippet has %q, which example_test.go does not have there", want)
		}
		lines = lines[1:]
	}
}
