//go:build race

package p2p

// raceEnabled reports whether the tests run under the race detector,
// which doubles what memory figures allow.
const raceEnabled = true
