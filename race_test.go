//go:build race

package securepeer

// raceEnabled reports whether the race detector is on, which makes
// allocation counts meaningless.
const raceEnabled = true
