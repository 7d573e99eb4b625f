package ratelog

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRateLog checks that a Log shows Burst notices of a kind per
// window, counts the rest, says how many in one line once the window is
// over, and then shows notices again; kinds have windows of their own. Its
// clock is the test's.
func TestRateLog(t *testing.T) {
	for _, tc := range []struct {
		name      string
		peers     int      // "refused peers" notices
		streams   int      // "stream notices"
		shown     int      // at once
		summaries []string // at the window's end
	}{
		{"under the burst", Burst, 3, Burst + 3, nil},
		{"a flood of one kind", 25, 3, Burst + 3, []string{"15 more refused peers in the last 10s were not shown (at most 10 of them are, every 10s)"}},
		{"two floods", 4000, 12, 2 * Burst, []string{"3990 more refused peers in the last 10s", "2 more stream notices in the last 10s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			notes := new(noteLog)
			l := New(notes.notef)
			clock := time.Unix(1000, 0)
			l.now = func() time.Time { return clock }
			var due []func() // the summaries l has asked for
			l.after = func(d time.Duration, f func()) {
				if d != l.Window {
					t.Errorf("a summary asked for in %v, want at the window's end, %v", d, l.Window)
				}
				due = append(due, f)
			}
			for i := range max(tc.peers, tc.streams) {
				if i < tc.peers {
					l.Printf("refused peers", "refused peer %d", i)
				}
				if i < tc.streams {
					l.Printf("stream notices", "stream %d", i)
				}
			}
			if n := notes.len(); n != tc.shown {
				t.Errorf("%d notices shown at once, want %d:\n%s", n, tc.shown, notes)
			}
			if len(due) != len(tc.summaries) {
				t.Fatalf("%d summaries asked for, want %d", len(due), len(tc.summaries))
			}
			clock = clock.Add(l.Window)
			for _, f := range due {
				f()
			}
			for _, s := range tc.summaries {
				if notes.count(s) != 1 {
					t.Errorf("no summary %q:\n%s", s, notes)
				}
			}
			// The next window shows notices again.
			l.Printf("refused peers", "refused peer %s", "after the window")
			if notes.count("after the window") != 1 {
				t.Errorf("a notice after the window was not shown:\n%s", notes)
			}
		})
	}
}

// noteLog collects notices.
type noteLog struct {
	mu    sync.Mutex
	lines []string
}

func (n *noteLog) notef(format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.lines = append(n.lines, strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (n *noteLog) String() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.lines, "\n")
}

func (n *noteLog) len() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.lines)
}

// count is the number of notices that contain s.
func (n *noteLog) count(s string) int {
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
