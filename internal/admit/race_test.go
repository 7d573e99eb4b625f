//go:build race

package admit

// raceEnabled reports whether the race detector is on, which slows the
// replay cache's statistical tests twentyfold: they use a smaller table.
const raceEnabled = true
