// Package testutil holds helpers that the command's tests share: package
// main's and those of the packages under internal/. It is for tests only;
// no production code may import it.
package testutil

import (
	"fmt"
	"strings"
	"sync"
)

// A NoteLog collects notices, such as those a ratelog.Log or a
// subcommand's notef prints, for a test to count. Its zero value is an
// empty log ready to use; it is safe for concurrent use.
type NoteLog struct {
	mu    sync.Mutex
	lines []string
}

// Notef adds a notice, formatted as fmt.Sprintf does, without the white
// space around it.
func (n *NoteLog) Notef(format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.lines = append(n.lines, strings.TrimSpace(fmt.Sprintf(format, args...)))
}

// String returns the notices, one a line.
func (n *NoteLog) String() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.lines, "\n")
}

// Len returns the number of notices.
func (n *NoteLog) Len() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.lines)
}

// Count returns the number of notices that contain s.
func (n *NoteLog) Count(s string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, l := range n.lines {
		if strings.Contains(l, s) {
			c++
		}
	}
	return c
}
