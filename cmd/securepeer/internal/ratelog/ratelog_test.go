package ratelog

import (
	"testing"
	"time"

	"github.com/securepeer/securepeer/cmd/securepeer/internal/testutil"
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
			notes := new(testutil.NoteLog)
			l := New(notes.Notef)
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
			if n := notes.Len(); n != tc.shown {
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
				if notes.Count(s) != 1 {
					t.Errorf("no summary %q:\n%s", s, notes)
				}
			}
			// The next window shows notices again.
			l.Printf("refused peers", "refused peer %s", "after the window")
			if notes.Count("after the window") != 1 {
				t.Errorf("a notice after the window was not shown:\n%s", notes)
			}
		})
	}
}
