package main

import (
	"fmt"
	"testing"
	"time"
)

// TestRateLog checks that a rateLog shows rateBurst notices of a kind per
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
		{"under the burst", rateBurst, 3, rateBurst + 3, nil},
		{"a flood of one kind", 25, 3, rateBurst + 3, []string{"15 more refused peers in the last 10s were not shown (at most 10 of them are, every 10s)"}},
		{"two floods", 4000, 12, 2 * rateBurst, []string{"3990 more refused peers in the last 10s", "2 more stream notices in the last 10s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			notes := new(noteLog)
			l := newRateLog(notes.notef)
			clock := time.Unix(1000, 0)
			l.now = func() time.Time { return clock }
			var due []func() // the summaries l has asked for
			l.after = func(d time.Duration, f func()) {
				if d != l.window {
					t.Errorf("a summary asked for in %v, want at the window's end, %v", d, l.window)
				}
				due = append(due, f)
			}
			for i := range max(tc.peers, tc.streams) {
				if i < tc.peers {
					l.printf("refused peers", "refused peer %d", i)
				}
				if i < tc.streams {
					l.printf("stream notices", "stream %d", i)
				}
			}
			if n := notes.len(); n != tc.shown {
				t.Errorf("%d notices shown at once, want %d:\n%s", n, tc.shown, notes)
			}
			if len(due) != len(tc.summaries) {
				t.Fatalf("%d summaries asked for, want %d", len(due), len(tc.summaries))
			}
			clock = clock.Add(l.window)
			for _, f := range due {
				f()
			}
			for _, s := range tc.summaries {
				if notes.count(s) != 1 {
					t.Errorf("no summary %q:\n%s", s, notes)
				}
			}
			// The next window shows notices again.
			l.printf("refused peers", "refused peer %s", "after the window")
			if notes.count("after the window") != 1 {
				t.Errorf("a notice after the window was not shown:\n%s", notes)
			}
		})
	}
}

var _ fmt.Stringer = (*noteLog)(nil)
